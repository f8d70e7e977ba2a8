"""Write a Triton model repository for a converted model: encoder, Python tokenizer and an ensemble.

Layout (``NAME`` defaults to the artifact's name)::

    REPO/README.md                    how to serve it and call it
    REPO/NAME/config.pbtxt            ensemble: TEXT (+ TEXT_PAIR) -> NAME_tokenizer -> NAME_model -> outputs
    REPO/NAME/1/
    REPO/NAME_model/config.pbtxt      tensorrt_plan (1/model.plan), onnxruntime_onnx (1/model.onnx) or
                                      python (1/model.py running trt-quant's runtime on 1/artifact/)
    REPO/NAME_tokenizer/config.pbtxt  python backend: 1/model.py and 1/tokenizer/
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from trt_quant.artifacts import (
    ENGINE,
    FP8_ONNX,
    INT8_ONNX,
    MANIFEST,
    TOKENIZER_DIR,
    Manifest,
    load_manifest,
    staged_directory,
)
from trt_quant.errors import ArtifactError, TrtQuantError
from trt_quant.runtime.ort import dequantize_after_lookup, fold_lookup_dequantization
from trt_quant.triton.configs import (
    ONNX_PLATFORM,
    PAIR_INPUT,
    TENSORRT_PLATFORM,
    TEXT_INPUT,
    Scheduling,
    TensorConfig,
    config_text,
    ensemble_config,
    model_config,
    python_model_config,
    tensor_config,
    tokenizer_config,
)

BACKENDS = ("tensorrt", "onnxruntime", "python")
KINDS = ("gpu", "cpu")
VERSION = "1"
MODEL_FILES = {"tensorrt": "model.plan", "onnxruntime": "model.onnx", "python": "model.py"}
ARTIFACT_FILES = {"tensorrt": ENGINE, "onnxruntime": INT8_ONNX, "python": INT8_ONNX}
PLATFORMS = {"tensorrt": TENSORRT_PLATFORM, "onnxruntime": ONNX_PLATFORM, "python": "python backend"}
PYTHON_ARTIFACT = "artifact"  # NAME_model/1/artifact: what trt-quant's runtime loads in the Python backend
SMALLEST_BUCKET = 16
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
COMPUTE_CAPABILITY = re.compile(r"[1-9][0-9]?\.[0-9]")
NGC_RELEASE = "25.10"  # the release of docker/Dockerfile and docker/Dockerfile.triton
TENSORRT_NOTE = (
    "The TensorRT engine only loads in a Triton image with the TensorRT version that built it (same NGC "
    f"release, e.g. tritonserver {NGC_RELEASE} for an engine built in tensorrt {NGC_RELEASE}) and on the GPU "
    "architecture it was built for.\n\n"
)
VNNI_NOTE = (
    "ONNX Runtime's INT8 matrix products can saturate on x86 CPUs without AVX-VNNI or AVX512-VNNI; "
    "trt-quant's own runtime switches to exact kernels there, Triton's ONNX Runtime backend cannot, so serve "
    "on a CPU with VNNI (or from a TensorRT engine on a GPU) for the accuracy trt-quant measured.\n\n"
)


@dataclass(frozen=True)
class Engine:
    """A TensorRT engine file, (max batch, max sequence) of each optimization profile, and what built it;
    ``sequences``: (min, max) sequence length of each profile."""

    path: Path
    profiles: list[tuple[int, int]]
    tensorrt: str
    compute_capability: str
    sequences: list[tuple[int, int]] = field(default_factory=list)


def check_model_name(name: str) -> str:
    """Refuse names Triton rejects or that would leave the repository directory (``..``, ``a/b``)."""
    if not MODEL_NAME.fullmatch(name):
        raise TrtQuantError(
            f"Model name '{name}' cannot be a Triton model directory: pass --name with letters, digits, "
            "'_', '-' or '.', starting with a letter or digit."
        )
    return name


def resolve_backend(artifact: Path, backend: str | None) -> str:
    """The chosen backend (default: tensorrt when the artifact has an engine), its model file checked."""
    backend = backend or ("tensorrt" if (artifact / ENGINE).is_file() else "onnxruntime")
    if backend not in BACKENDS:
        raise TrtQuantError(f"Unknown Triton backend '{backend}': use one of {', '.join(BACKENDS)}.")
    if backend != "tensorrt" and (artifact / FP8_ONNX).is_file():
        raise TrtQuantError(
            f"{artifact} holds an FP8 graph, which Triton serves with TensorRT only (ONNX Runtime's FP8 "
            "Q/DQ needs a session option its backend cannot set): build an engine and pass --backend tensorrt."
        )
    if not (artifact / ARTIFACT_FILES[backend]).is_file():
        fix = "build a TensorRT engine for it first" if backend == "tensorrt" else "convert the model again"
        raise ArtifactError(
            f"{artifact} has no {ARTIFACT_FILES[backend]}, which the {backend} backend serves: {fix} "
            f"or pass --backend {'onnxruntime' if backend == 'tensorrt' else 'tensorrt'}."
        )
    return backend


def resolve_kind(backend: str, kind: str | None, artifact: Path | None = None) -> str:
    """Instance kind: gpu for TensorRT, cpu for ONNX Runtime and the Python backend unless asked otherwise;
    a GPU instance of the Python backend runs the artifact's TensorRT engine, so it needs one."""
    kind = kind or ("gpu" if backend == "tensorrt" else "cpu")
    if kind not in KINDS:
        raise TrtQuantError(f"Unknown instance kind '{kind}': use one of {', '.join(KINDS)}.")
    if backend == "tensorrt" and kind == "cpu":
        raise TrtQuantError("TensorRT engines run only on GPUs: pass --kind gpu or --backend onnxruntime.")
    if backend == "python" and kind == "gpu" and artifact is not None and not (artifact / ENGINE).is_file():
        raise ArtifactError(
            f"{artifact} has no {ENGINE}, which GPU instances of the python backend run: build a TensorRT "
            "engine for it first or pass --kind cpu."
        )
    return kind


def bucket_lengths(max_length: int) -> tuple[int, ...]:
    """Lengths the tokenizer pads requests to: powers of two from 16 below ``max_length``, and ``max_length``.

    Triton's dynamic batcher merges only requests of equal shapes; a few padded lengths make requests of
    different lengths batch together, at the cost of at most doubling a request's padded length."""
    lengths = []
    length = SMALLEST_BUCKET
    while length < max_length:
        lengths.append(length)
        length *= 2
    return (*lengths, max_length)


def engine_of(artifact: Path, manifest: Manifest) -> Engine:
    """The artifact's engine and the profile limits its manifest records."""
    record = manifest.engine
    profiles = record.profiles if record is not None else []
    if record is None or not profiles:
        raise ArtifactError(
            f"The manifest of {artifact} records no optimization profiles for {ENGINE}: build the engine "
            "again with trt-quant so its profiles are recorded."
        )
    limits = [(int(profile["max"][0]), int(profile["max"][1])) for profile in profiles]
    sequences = [(int(profile["min"][1]), int(profile["max"][1])) for profile in profiles]
    return Engine(artifact / ENGINE, limits, record.tensorrt, record.compute_capability, sequences)


def cc_engines_of(
    manifest: Manifest, primary: Engine, cc_engines: Mapping[str, str | Path]
) -> dict[str, Engine]:
    """Engines built on other GPU architectures, keyed by compute capability, checked against the served
    artifact: same inputs and outputs, same TensorRT version, built for the capability they are keyed by."""
    engines = {}
    for capability, directory in cc_engines.items():
        if not COMPUTE_CAPABILITY.fullmatch(capability):
            raise TrtQuantError(
                f"Compute capability '{capability}' is not of the form MAJOR.MINOR: write it like 8.6 or 9.0."
            )
        path = Path(directory)
        resolve_backend(path, "tensorrt")
        other = load_manifest(path)
        if (other.inputs, other.outputs) != (manifest.inputs, manifest.outputs):
            raise ArtifactError(
                f"{path} has other inputs or outputs than the served artifact: pass engines built from the "
                "same model."
            )
        engine = engine_of(path, other)
        if engine.compute_capability != capability:
            raise TrtQuantError(
                f"The engine in {path} was built for compute capability {engine.compute_capability}, "
                f"not {capability}: key it by {engine.compute_capability}."
            )
        if engine.tensorrt != primary.tensorrt:
            raise TrtQuantError(
                f"The engine in {path} was built with TensorRT {engine.tensorrt}, the served one with "
                f"{primary.tensorrt}: build all engines with the TensorRT of the Triton image."
            )
        engines[capability] = engine
    return engines


def sequence_limit(engines: Sequence[Engine], max_batch: int, profiles: int) -> int:
    """Longest sequence every engine serves at ``max_batch`` within its first ``profiles`` profiles."""
    limits = []
    for engine in engines:
        usable = engine.profiles[:profiles]
        largest = max(batch for batch, _ in usable)
        if max_batch > largest:
            raise TrtQuantError(
                f"--max-batch {max_batch} is above the largest batch of the engine's optimization profiles "
                f"({largest}, {engine.path}): pass --max-batch {largest} or less, or build the engine with a "
                "larger profile."
            )
        limits.append(max(length for batch, length in usable if batch >= max_batch))
    return min(limits)


def check_scheduling(scheduling: Scheduling) -> None:
    """Refuse batch sizes, instance counts and delays Triton would reject."""
    if scheduling.max_batch < 1:
        raise TrtQuantError(
            f"--max-batch {scheduling.max_batch} is below 1: pass a batch size of at least 1."
        )
    wrong = [size for size in scheduling.preferred_batch_sizes if not 1 <= size <= scheduling.max_batch]
    if wrong:
        raise TrtQuantError(
            f"Preferred batch size {wrong[0]} is outside 1..{scheduling.max_batch}: pass preferred sizes no "
            "larger than --max-batch."
        )
    if scheduling.instances < 1:
        raise TrtQuantError(f"--instances {scheduling.instances} is below 1: pass at least 1 instance.")
    if scheduling.max_queue_delay_us < 0:
        raise TrtQuantError("The maximum queue delay is negative: pass 0 or more microseconds.")


def copy_onnx(source: Path, target: Path) -> None:
    """Copy the INT8 graph with its embedding tables dequantized after the lookup (values unchanged).

    trt-quant's own runtime does this when it opens a session; Triton's ONNX Runtime backend cannot, and
    would dequantize every whole embedding table on every request. The tables stay INT8 in the copy.
    """
    import onnx

    model = onnx.load(str(source))
    dequantize_after_lookup(model)
    fold_lookup_dequantization(model)  # tables with zero points or per-column scales, if any
    onnx.save(model, str(target))


def tokenizer_source() -> str:
    """Source of the Python-backend tokenizer model shipped with trt-quant."""
    return resources.files(__package__).joinpath("tokenizer_model.py").read_text(encoding="utf-8")


def runtime_model_source() -> str:
    """Source of the Python-backend model that runs the encoder with trt-quant's runtime."""
    return resources.files(__package__).joinpath("runtime_model.py").read_text(encoding="utf-8")


def copy_runtime_package(target: Path) -> None:
    """Copy this trt-quant's package next to the Python-backend model, which imports its runtime from there
    (only numpy and onnxruntime are needed in the server's Python: the runtime imports no torch on CPU)."""
    package = Path(__file__).resolve().parents[1]
    shutil.copytree(package, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "resources"))


@dataclass(frozen=True)
class Plan:
    """What a repository will hold, every option checked: names, backend, batching, tensors, engines."""

    artifact: Path
    manifest: Manifest
    name: str
    backend: str
    scheduling: Scheduling
    max_length: int
    profiles: int
    inputs: list[TensorConfig]
    outputs: list[TensorConfig]
    engine: Engine | None
    cc_engines: dict[str, Engine]

    @property
    def cc_filenames(self) -> dict[str, str]:
        return {capability: f"model_sm{capability.replace('.', '')}.plan" for capability in self.cc_engines}


def write_python_model(directory: Path, plan: Plan) -> None:
    """``NAME_model`` for the Python backend: model.py, trt-quant's package and the artifact's manifest,
    INT8 graph (embedding dequantization folded) and, for GPU instances, its engine."""
    version = directory / VERSION
    artifact = version / PYTHON_ARTIFACT
    artifact.mkdir(parents=True)
    (version / MODEL_FILES["python"]).write_text(runtime_model_source(), encoding="utf-8")
    copy_runtime_package(version / "trt_quant")
    shutil.copyfile(plan.artifact / MANIFEST, artifact / MANIFEST)
    copy_onnx(plan.artifact / INT8_ONNX, artifact / INT8_ONNX)
    if plan.engine is not None:
        shutil.copyfile(plan.engine.path, artifact / ENGINE)


def write_model(directory: Path, plan: Plan) -> None:
    """``NAME_model``: the engine (and those for other GPUs), the INT8 ONNX graph or the Python model."""
    if plan.backend == "python":
        write_python_model(directory, plan)
        return
    version = directory / VERSION
    version.mkdir(parents=True)
    if plan.backend == "onnxruntime":
        copy_onnx(plan.artifact / INT8_ONNX, version / MODEL_FILES[plan.backend])
    else:
        shutil.copyfile(plan.artifact / ENGINE, version / MODEL_FILES[plan.backend])
    for capability, filename in plan.cc_filenames.items():
        shutil.copyfile(plan.cc_engines[capability].path, version / filename)


def write_tokenizer(directory: Path, plan: Plan) -> None:
    """``NAME_tokenizer``: the Python model and the artifact's tokenizer files."""
    shutil.copytree(plan.artifact / TOKENIZER_DIR, directory / VERSION / "tokenizer")
    (directory / VERSION / "model.py").write_text(tokenizer_source(), encoding="utf-8")


def encoder_config(plan: Plan) -> Any:
    """``NAME_model``'s config: a TensorRT plan, an ONNX Runtime graph or trt-quant's runtime (Python)."""
    name = f"{plan.name}_model"
    if plan.backend == "python":
        parameters = {"artifact": PYTHON_ARTIFACT}
        return python_model_config(name, plan.inputs, plan.outputs, plan.scheduling, parameters)
    return model_config(
        name,
        PLATFORMS[plan.backend],
        MODEL_FILES[plan.backend],
        plan.inputs,
        plan.outputs,
        plan.scheduling,
        plan.profiles,
        plan.cc_filenames,
    )


def tokenizer_model_config(plan: Plan) -> Any:
    """``NAME_tokenizer``'s config: truncation, padding buckets and input names, on CPU."""
    parameters = {
        "max_length": str(plan.max_length),
        "buckets": ",".join(str(length) for length in bucket_lengths(plan.max_length)),
        "text_input": TEXT_INPUT,
        "pair_input": PAIR_INPUT,
    }
    if plan.engine is not None:  # short texts are padded up to a profile's minimum length
        parameters["sequence_ranges"] = json.dumps(plan.engine.sequences[: plan.profiles])
    scheduling = replace(plan.scheduling, preferred_batch_sizes=(), kind="cpu")
    return tokenizer_config(f"{plan.name}_tokenizer", plan.inputs, scheduling, parameters)


def model_configs(plan: Plan) -> dict[str, Any]:
    """The ``ModelConfig`` of each model directory: encoder, tokenizer and the ensemble wiring text through
    the tokenizer into the encoder."""
    ensemble = ensemble_config(
        plan.name,
        plan.scheduling.max_batch,
        f"{plan.name}_tokenizer",
        f"{plan.name}_model",
        plan.inputs,
        plan.outputs,
    )
    return {
        f"{plan.name}_model": encoder_config(plan),
        f"{plan.name}_tokenizer": tokenizer_model_config(plan),
        plan.name: ensemble,
    }


def plan_repository(
    artifact: Path,
    repo: Path,
    name: str | None,
    backend: str,
    scheduling: Scheduling,
    max_length: int | None,
    cc_engines: Mapping[str, str | Path],
    verify: bool = True,
) -> Plan:
    """Check the artifact and the options against each other; raise with the fix, or return the plan."""
    manifest = load_manifest(artifact, verify=verify)
    name = check_model_name(manifest.name if name is None else name)
    check_scheduling(scheduling)
    if artifact.resolve().is_relative_to(repo.resolve()):
        raise TrtQuantError(f"The repository path {repo} holds the artifact itself: choose another --repo.")
    if cc_engines and backend != "tensorrt":
        raise TrtQuantError(
            "Engines for other GPU architectures need the tensorrt backend: pass --backend tensorrt."
        )
    uses_engine = backend == "tensorrt" or (backend == "python" and scheduling.kind == "gpu")
    engines = [engine_of(artifact, manifest)] if uses_engine else []
    extra = cc_engines_of(manifest, engines[0], cc_engines) if cc_engines else {}
    engines += extra.values()
    profiles = min((len(engine.profiles) for engine in engines), default=1)
    limit = manifest.max_length
    if engines:
        limit = min(limit, sequence_limit(engines, scheduling.max_batch, profiles))
    if max_length is not None and not 1 <= max_length <= limit:
        raise TrtQuantError(
            f"--max-length {max_length} is outside 1..{limit}: pass a length of at most {limit}."
        )
    return Plan(
        artifact=artifact,
        manifest=manifest,
        name=name,
        backend=backend,
        scheduling=scheduling,
        max_length=max_length or limit,
        profiles=profiles,
        inputs=[tensor_config(spec) for spec in manifest.inputs],
        outputs=[tensor_config(spec) for spec in manifest.outputs],
        engine=engines[0] if engines else None,
        cc_engines=extra,
    )


def serving_note(plan: Plan) -> str:
    """What the served model needs from the server: TensorRT version and GPU, or a CPU with VNNI."""
    if plan.engine is None:
        return VNNI_NOTE if plan.backend == "onnxruntime" and plan.scheduling.kind == "cpu" else ""
    built = []
    if plan.engine.tensorrt:
        built.append(f"TensorRT {plan.engine.tensorrt}")
    if plan.engine.compute_capability:
        built.append(f"compute capability {plan.engine.compute_capability}")
    return TENSORRT_NOTE + (f"This engine was built with {', '.join(built)}.\n\n" if built else "")


def readme_text(repo: Path, plan: Plan) -> str:
    """README of the repository: what is in it, how to serve it and how to call it."""
    name = plan.name
    gpus = "--gpus all " if plan.scheduling.kind == "gpu" else ""
    return f"""# Triton model repository: {name}

Generated by trt-quant from `{plan.manifest.source_model}` ({plan.manifest.task}, backend {plan.backend}).

| model | what it does |
|---|---|
| `{name}` | ensemble: `{TEXT_INPUT}` (and optional `{PAIR_INPUT}`) -> tokenizer -> encoder -> \
{", ".join(f"`{tensor.name}`" for tensor in plan.outputs)} |
| `{name}_tokenizer` | Python backend: tokenizes text into {", ".join(plan.manifest.input_names)} \
(at most {plan.max_length} tokens) |
| `{name}_model` | the INT8 encoder ({PLATFORMS[plan.backend]}) |

{serving_note(plan)}## Serve

The tokenizer model needs `transformers` inside the server image; `docker/Dockerfile.triton` of trt-quant
adds it to the NGC Triton image. From the trt-quant source tree:

Without Docker, on this machine: `trt-quant serve` starts the Triton server of the `nvidia-pytriton` wheel
on loopback (only the python backend is in it: write the repository with `--backend python`).

```bash
docker build -f docker/Dockerfile.triton -t trt-quant-triton:{NGC_RELEASE} docker
docker run {gpus}--rm --shm-size=1g -p 8000:8000 -p 8001:8001 -p 8002:8002 \\
  -v "{repo.resolve()}":/models:ro trt-quant-triton:{NGC_RELEASE} tritonserver --model-repository=/models
```

## Call

```bash
python scripts/triton_client.py --model {name} --text "a first example" --text "a second one"
curl -s localhost:8000/v2/models/{name}/infer -d \\
  '{{"inputs": [{{"name": "{TEXT_INPUT}", "shape": [1, 1], "datatype": "BYTES",
                  "data": ["a first example"]}}]}}'
```
"""


def write_triton_repository(
    artifact_dir: str | Path,
    repo: str | Path,
    name: str | None = None,
    backend: str | None = None,
    max_batch: int = 8,
    instances: int = 1,
    kind: str | None = None,
    preferred_batch_sizes: Sequence[int] = (),
    max_queue_delay_us: int = 100,
    overwrite: bool = False,
    max_length: int | None = None,
    cc_engines: Mapping[str, str | Path] | None = None,
    verify: bool = True,
) -> Path:
    """Write a Triton model repository serving the artifact in ``artifact_dir`` to ``repo``; return ``repo``.

    ``backend`` is ``tensorrt`` (default when the artifact has an engine) or ``onnxruntime``; ``kind`` the
    instance kind (default gpu for tensorrt, cpu for onnxruntime). ``max_length`` caps the tokenizer's
    truncation (default: the model's maximum, within the engine's profiles). ``cc_engines`` maps compute
    capabilities such as ``"8.6"`` to artifact directories of the same model whose engines were built on
    such GPUs; they are served through ``cc_model_filenames``. ``repo`` is written atomically.
    """
    artifact, repo = Path(artifact_dir), Path(repo)
    backend = resolve_backend(artifact, backend)
    kind = resolve_kind(backend, kind, artifact)
    scheduling = Scheduling(max_batch, tuple(preferred_batch_sizes), max_queue_delay_us, instances, kind)
    plan = plan_repository(artifact, repo, name, backend, scheduling, max_length, cc_engines or {}, verify)
    configs = model_configs(plan)  # before anything is written: they need tritonclient's messages
    with staged_directory(repo, overwrite) as stage:
        write_model(stage / f"{plan.name}_model", plan)
        write_tokenizer(stage / f"{plan.name}_tokenizer", plan)
        (stage / plan.name / VERSION).mkdir(parents=True)  # the ensemble's (empty) version directory
        for directory, config in configs.items():
            (stage / directory / "config.pbtxt").write_text(config_text(config), encoding="utf-8")
        (stage / "README.md").write_text(readme_text(repo, plan), encoding="utf-8")
    return repo
