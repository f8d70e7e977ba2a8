"""Triton repository: configs parsed with Triton's ModelConfig, validation, bad input, the Python-backend models'
imports. What the models do on a server is tested on a real one in test_triton_server.py."""

from __future__ import annotations

import ast
import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
import pytest
from tiny_models import sentences

import trt_quant
from trt_quant.artifacts import ENGINE, INT8_ONNX, EngineRecord, load_manifest, write_manifest
from trt_quant.errors import ArtifactError, TrtQuantError
from trt_quant.runtime import load_runtime
from trt_quant.runtime.ort import dequantize_after_lookup
from trt_quant.triton import validate_repository, write_triton_repository
from trt_quant.triton.repository import runtime_model_source, tokenizer_source

text_format = pytest.importorskip("google.protobuf.text_format")
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")

TESTS = Path(__file__).resolve().parent
CLIENT = TESTS.parent / "scripts" / "triton_client.py"
NAME = "tiny"
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
TWO_PROFILES = [
    {"min": [1, 1], "opt": [4, 32], "max": [8, 64]},
    {"min": [1, 1], "opt": [16, 16], "max": [32, 16]},
]


def load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse(path: Path) -> Any:
    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def dtype(value: int) -> str:
    return model_config_pb2.DataType.Name(value)


def tensors(config_tensors: Any) -> list[tuple[str, str, list[int], bool]]:
    return [(t.name, dtype(t.data_type), list(t.dims), getattr(t, "optional", False)) for t in config_tensors]


def with_engine(
    source: Path, target: Path, plan: bytes, profiles: list[dict[str, Any]], **record: str
) -> Path:
    """A copy of an artifact with a fake engine file; its manifest records ``profiles`` and ``record``."""
    shutil.copytree(source, target)
    (target / ENGINE).write_bytes(plan)
    manifest = load_manifest(target, verify=False)
    fields = {"tensorrt": "10.13.0", "gpu": "NVIDIA A10", "compute_capability": "8.6", **record}
    manifest.engine = EngineRecord(profiles=profiles, **fields)
    write_manifest(target, manifest)
    return target


@pytest.fixture(scope="module")
def onnx_repo(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_triton_repository(
        tiny_artifact,
        tmp_path_factory.mktemp("triton") / "repo",
        name=NAME,
        max_batch=4,
        preferred_batch_sizes=(2, 4),
    )


@pytest.fixture(scope="module")
def engine_artifact(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("engine") / "tiny-bert"
    return with_engine(
        tiny_artifact, directory, b"plan-a", TWO_PROFILES, tensorrt="10.13.3", compute_capability="8.9"
    )


@pytest.fixture(scope="module")
def runtime(tiny_artifact: Path) -> Any:
    return load_runtime(tiny_artifact, backend="onnxruntime")


# --- repository layout and configs -------------------------------------------------------------------------


def test_onnxruntime_repository_configs(onnx_repo: Path, tiny_artifact: Path) -> None:
    assert sorted(p.name for p in onnx_repo.iterdir()) == [
        "README.md",
        NAME,
        f"{NAME}_model",
        f"{NAME}_tokenizer",
    ]
    model = parse(onnx_repo / f"{NAME}_model" / "config.pbtxt")
    assert (model.name, model.platform, model.max_batch_size) == (f"{NAME}_model", "onnxruntime_onnx", 4)
    assert model.default_model_filename == "model.onnx"
    assert tensors(model.input) == [(name, "TYPE_INT64", [-1], False) for name in INPUTS]
    assert tensors(model.output) == [("logits", "TYPE_FP32", [3], False)]
    assert list(model.dynamic_batching.preferred_batch_size) == [2, 4]
    assert model.dynamic_batching.max_queue_delay_microseconds == 100
    [group] = model.instance_group
    assert (group.count, group.kind, list(group.profile)) == (
        1,
        model_config_pb2.ModelInstanceGroup.KIND_CPU,
        [],
    )
    served = onnx.load(str(onnx_repo / f"{NAME}_model" / "1" / "model.onnx"))
    original = onnx.load(str(tiny_artifact / INT8_ONNX))
    moved = dequantize_after_lookup(original)
    assert moved > 0 and served.graph == original.graph  # tables dequantized after the lookup, nothing else

    tokenizer = parse(onnx_repo / f"{NAME}_tokenizer" / "config.pbtxt")
    assert (tokenizer.backend, tokenizer.platform, tokenizer.max_batch_size) == ("python", "", 4)
    assert tensors(tokenizer.input) == [
        ("TEXT", "TYPE_STRING", [1], True),  # optional so that its absence reaches the tokenizer's error
        ("TEXT_PAIR", "TYPE_STRING", [1], True),
    ]
    assert tensors(tokenizer.output) == tensors(model.input)
    parameters = {key: value.string_value for key, value in tokenizer.parameters.items()}
    assert parameters == {
        "max_length": "64",
        "buckets": "16,32,64",
        "text_input": "TEXT",
        "pair_input": "TEXT_PAIR",
    }
    assert tokenizer.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    version = onnx_repo / f"{NAME}_tokenizer" / "1"
    assert (version / "model.py").read_text(encoding="utf-8") == tokenizer_source()
    assert (version / "tokenizer" / "tokenizer.json").read_bytes() == (
        tiny_artifact / "tokenizer" / "tokenizer.json"
    ).read_bytes()

    ensemble = parse(onnx_repo / NAME / "config.pbtxt")
    assert (ensemble.platform, ensemble.max_batch_size, len(ensemble.instance_group)) == ("ensemble", 4, 0)
    assert tensors(ensemble.input) == tensors(tokenizer.input)
    assert tensors(ensemble.output) == tensors(model.output)
    first, second = ensemble.ensemble_scheduling.step
    assert (first.model_name, second.model_name) == (f"{NAME}_tokenizer", f"{NAME}_model")
    assert dict(first.input_map) == {"TEXT": "TEXT", "TEXT_PAIR": "TEXT_PAIR"}
    assert dict(first.output_map) == dict(second.input_map) == {name: name for name in INPUTS}
    assert dict(second.output_map) == {"logits": "logits"}
    assert (onnx_repo / NAME / "1").is_dir()
    assert validate_repository(onnx_repo) == []

    readme = (onnx_repo / "README.md").read_text(encoding="utf-8")
    assert f'-v "{onnx_repo.resolve()}":/models:ro' in readme
    assert "tritonserver --model-repository=/models" in readme
    assert f"scripts/triton_client.py --model {NAME}" in readme
    assert "--gpus all" not in readme and "without AVX-VNNI" in readme


def test_python_backend_repository_runs_trt_quants_runtime(
    tiny_artifact: Path, engine_artifact: Path, tmp_path: Path
) -> None:
    repo = write_triton_repository(tiny_artifact, tmp_path / "repo", name=NAME, backend="python", max_batch=4)
    model = parse(repo / f"{NAME}_model" / "config.pbtxt")
    assert (model.backend, model.platform, model.max_batch_size) == ("python", "", 4)
    assert tensors(model.input) == [(name, "TYPE_INT64", [-1], False) for name in INPUTS]
    assert tensors(model.output) == [("logits", "TYPE_FP32", [3], False)]
    assert {key: value.string_value for key, value in model.parameters.items()} == {"artifact": "artifact"}
    assert model.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    version = repo / f"{NAME}_model" / "1"
    assert (version / "model.py").read_text(encoding="utf-8") == runtime_model_source()
    package = Path(trt_quant.__file__).parent
    assert (version / "trt_quant" / "runtime" / "ort.py").read_bytes() == (
        package / "runtime" / "ort.py"
    ).read_bytes()
    assert not list((version / "trt_quant").rglob("__pycache__"))
    assert sorted(path.name for path in (version / "artifact").iterdir()) == ["manifest.json", INT8_ONNX]
    served = onnx.load(str(version / "artifact" / INT8_ONNX))
    original = onnx.load(str(tiny_artifact / INT8_ONNX))
    assert dequantize_after_lookup(original) > 0 and served.graph == original.graph
    assert validate_repository(repo) == []
    assert "--backend python" in (repo / "README.md").read_text(encoding="utf-8")

    # a GPU instance runs the artifact's engine, so it needs one and follows its profiles
    with pytest.raises(
        ArtifactError, match=r"has no model\.plan, which GPU instances of the python backend run"
    ):
        write_triton_repository(tiny_artifact, tmp_path / "gpu", backend="python", kind="gpu")
    repo = write_triton_repository(engine_artifact, tmp_path / "gpu", name=NAME, backend="python", kind="gpu")
    artifact = repo / f"{NAME}_model" / "1" / "artifact"
    assert (artifact / ENGINE).read_bytes() == b"plan-a"
    assert parse(repo / f"{NAME}_model" / "config.pbtxt").instance_group[0].kind == (
        model_config_pb2.ModelInstanceGroup.KIND_GPU
    )
    assert parse(repo / f"{NAME}_tokenizer" / "config.pbtxt").parameters["buckets"].string_value == "16,32,64"


def test_runtime_in_the_python_backend_needs_no_torch_nor_onnx(
    tiny_artifact: Path, runtime: Any, tmp_path: Path
) -> None:
    """What the Python-backend model imports runs with torch, Model Optimizer and onnx unimportable."""
    texts = sentences(3, seed=5)
    feeds = runtime.tokenize(texts)
    script = (
        "import sys, numpy as np\n"
        "for blocked in ('torch', 'modelopt', 'onnx'): sys.modules[blocked] = None\n"
        "from trt_quant.runtime import load_runtime\n"
        f"runtime = load_runtime({str(tiny_artifact)!r}, backend='onnxruntime', verify=False)\n"
        f"feeds = dict(np.load({str(tmp_path / 'feeds.npz')!r}))\n"
        "np.save(sys.stdout.buffer, runtime.run(feeds)['logits'])\n"
    )
    np.savez(tmp_path / "feeds.npz", **feeds)
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, env=env, timeout=120, check=True
    )
    logits = np.load(io.BytesIO(done.stdout))
    np.testing.assert_allclose(logits, runtime.run(feeds)["logits"], rtol=1e-5, atol=1e-6)


def test_tensorrt_repository_follows_engine_profiles(engine_artifact: Path, tmp_path: Path) -> None:
    repo = write_triton_repository(engine_artifact, tmp_path / "repo", name=NAME)
    model = parse(repo / f"{NAME}_model" / "config.pbtxt")
    assert (model.platform, model.default_model_filename, model.max_batch_size) == (
        "tensorrt_plan",
        "model.plan",
        8,
    )
    [group] = model.instance_group
    assert (group.kind, list(group.profile)) == (model_config_pb2.ModelInstanceGroup.KIND_GPU, ["0", "1"])
    assert (repo / f"{NAME}_model" / "1" / "model.plan").read_bytes() == b"plan-a"
    assert tensors(model.input) == [(name, "TYPE_INT64", [-1], False) for name in INPUTS]
    assert validate_repository(repo) == []
    readme = (repo / "README.md").read_text(encoding="utf-8")
    assert "--gpus all" in readme and "built with TensorRT 10.13.3, compute capability 8.9." in readme

    # batch 16 fits only the second profile (max [32, 16]): the tokenizer truncates at 16 tokens
    repo = write_triton_repository(engine_artifact, tmp_path / "repo16", name=NAME, max_batch=16)
    tokenizer = parse(repo / f"{NAME}_tokenizer" / "config.pbtxt")
    assert tokenizer.parameters["max_length"].string_value == "16"
    assert parse(repo / NAME / "config.pbtxt").max_batch_size == 16

    repo = write_triton_repository(engine_artifact, tmp_path / "repo32", name=NAME, max_length=32)
    assert parse(repo / f"{NAME}_tokenizer" / "config.pbtxt").parameters["max_length"].string_value == "32"

    with pytest.raises(
        TrtQuantError, match=r"--max-batch 64 is above the largest batch .*\(32, .*pass --max-batch 32"
    ):
        write_triton_repository(engine_artifact, tmp_path / "big", max_batch=64)
    with pytest.raises(TrtQuantError, match=r"--max-length 65 is outside 1\.\.64"):
        write_triton_repository(engine_artifact, tmp_path / "long", max_length=65)
    with pytest.raises(TrtQuantError, match="TensorRT engines run only on GPUs: pass --kind gpu"):
        write_triton_repository(engine_artifact, tmp_path / "cpu", kind="cpu")
    assert not any(path.name in {"big", "long", "cpu"} for path in tmp_path.iterdir())

    repo = write_triton_repository(engine_artifact, tmp_path / "ort", name=NAME, backend="onnxruntime")
    model = parse(repo / f"{NAME}_model" / "config.pbtxt")
    assert (model.platform, model.instance_group[0].kind) == (
        "onnxruntime_onnx",
        model_config_pb2.ModelInstanceGroup.KIND_CPU,
    )


def test_engines_for_other_gpu_architectures(
    engine_artifact: Path, tiny_artifact: Path, tmp_path: Path
) -> None:
    other = with_engine(
        tiny_artifact,
        tmp_path / "sm86",
        b"plan-sm86",
        [TWO_PROFILES[0]],
        tensorrt="10.13.3",
        compute_capability="8.6",
    )
    repo = write_triton_repository(engine_artifact, tmp_path / "repo", name=NAME, cc_engines={"8.6": other})
    model = parse(repo / f"{NAME}_model" / "config.pbtxt")
    assert dict(model.cc_model_filenames) == {"8.6": "model_sm86.plan"}
    assert (repo / f"{NAME}_model" / "1" / "model_sm86.plan").read_bytes() == b"plan-sm86"
    assert list(model.instance_group[0].profile) == []  # only profile 0 is common to both engines
    assert validate_repository(repo) == []

    with pytest.raises(TrtQuantError, match=r"--max-batch 16 is above the largest batch .*\(8, "):
        write_triton_repository(engine_artifact, tmp_path / "r2", max_batch=16, cc_engines={"8.6": other})
    with pytest.raises(TrtQuantError, match=r"'sm86' is not of the form MAJOR\.MINOR"):
        write_triton_repository(engine_artifact, tmp_path / "r3", cc_engines={"sm86": other})
    with pytest.raises(TrtQuantError, match=r"built for compute capability 8\.6, not 9\.0: key it by 8\.6"):
        write_triton_repository(engine_artifact, tmp_path / "r5", cc_engines={"9.0": other})
    older = with_engine(
        tiny_artifact,
        tmp_path / "old",
        b"plan-old",
        TWO_PROFILES,
        tensorrt="10.9.0",
        compute_capability="7.5",
    )
    with pytest.raises(TrtQuantError, match=r"built with TensorRT 10\.9\.0, the served one with 10\.13\.3"):
        write_triton_repository(engine_artifact, tmp_path / "r6", cc_engines={"7.5": older})
    with pytest.raises(TrtQuantError, match="need the tensorrt backend"):
        write_triton_repository(
            engine_artifact, tmp_path / "r4", backend="onnxruntime", cc_engines={"8.6": other}
        )


@pytest.mark.parametrize(
    ("backend", "kind", "platform"),
    [
        ("onnxruntime", "cpu", "onnxruntime_onnx"),
        ("tensorrt", "gpu", "tensorrt_plan"),
        ("python", "cpu", ""),
        ("python", "gpu", ""),
    ],
)
def test_every_config_parses_back_into_triton_model_config(
    engine_artifact: Path, tmp_path: Path, backend: str, kind: str, platform: str
) -> None:
    """Each config.pbtxt read as Triton reads it: names, dtypes, dims, batching, instances, ensemble wiring.
    A zero queue delay still leaves a dynamic_batching section, which is what turns the batcher on."""
    repo = write_triton_repository(
        engine_artifact,
        tmp_path / "repo",
        name=NAME,
        backend=backend,
        kind=kind,
        instances=2,
        max_batch=8,
        preferred_batch_sizes=(4, 8),
        max_queue_delay_us=0,
    )
    configs = {path.parent.name: parse(path) for path in repo.glob("*/config.pbtxt")}
    assert sorted(configs) == [NAME, f"{NAME}_model", f"{NAME}_tokenizer"]
    assert all(config.name == name for name, config in configs.items())
    assert {config.max_batch_size for config in configs.values()} == {8}
    model, tokenizer, ensemble = configs[f"{NAME}_model"], configs[f"{NAME}_tokenizer"], configs[NAME]
    encoder_inputs = [(name, "TYPE_INT64", [-1], False) for name in INPUTS]
    text_inputs = [("TEXT", "TYPE_STRING", [1], True), ("TEXT_PAIR", "TYPE_STRING", [1], True)]
    logits = [("logits", "TYPE_FP32", [3], False)]

    assert (model.platform, model.backend) == (platform, "python" if backend == "python" else "")
    assert (tensors(model.input), tensors(model.output)) == (encoder_inputs, logits)
    assert model.HasField("dynamic_batching")
    assert list(model.dynamic_batching.preferred_batch_size) == [4, 8]
    assert model.dynamic_batching.max_queue_delay_microseconds == 0
    [group] = model.instance_group
    profiles = ["0", "1"] if backend == "tensorrt" else []  # the two profiles of the engine
    assert (group.count, model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind), list(group.profile)) == (
        2,
        f"KIND_{kind.upper()}",
        profiles,
    )
    if backend == "python":
        assert {key: value.string_value for key, value in model.parameters.items()} == {
            "artifact": "artifact"
        }
    else:
        assert (
            model.default_model_filename == {"tensorrt": "model.plan", "onnxruntime": "model.onnx"}[backend]
        )
        assert len(model.parameters) == 0

    assert (tokenizer.backend, tokenizer.platform) == ("python", "")
    assert (tensors(tokenizer.input), tensors(tokenizer.output)) == (text_inputs, encoder_inputs)
    assert (
        tokenizer.HasField("dynamic_batching") and list(tokenizer.dynamic_batching.preferred_batch_size) == []
    )
    assert [(g.count, g.kind) for g in tokenizer.instance_group] == [
        (2, model_config_pb2.ModelInstanceGroup.KIND_CPU)
    ]
    assert set(tokenizer.parameters) >= {"max_length", "buckets", "text_input", "pair_input"}

    assert (ensemble.platform, ensemble.backend) == ("ensemble", "")
    assert (tensors(ensemble.input), tensors(ensemble.output)) == (text_inputs, logits)
    assert not ensemble.HasField("dynamic_batching") and len(ensemble.instance_group) == 0
    steps = [
        (step.model_name, step.model_version, dict(step.input_map), dict(step.output_map))
        for step in ensemble.ensemble_scheduling.step
    ]
    wired = {name: name for name in INPUTS}
    assert steps == [
        (f"{NAME}_tokenizer", -1, {"TEXT": "TEXT", "TEXT_PAIR": "TEXT_PAIR"}, wired),
        (f"{NAME}_model", -1, wired, {"logits": "logits"}),
    ]
    assert validate_repository(repo) == []


def test_writing_configs_without_tritonclient_names_the_extra(
    tiny_artifact: Path, onnx_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_tritonclient(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.split(".")[0] == "tritonclient":
            raise ImportError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tritonclient)
    with pytest.raises(TrtQuantError) as raised:
        write_triton_repository(tiny_artifact, tmp_path / "repo", name=NAME)
    assert str(raised.value) == (
        "Writing a Triton repository needs tritonclient: pip install 'trt-quant[triton]'."
    )
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a staging directory
    with pytest.raises(TrtQuantError) as raised:
        validate_repository(onnx_repo)
    assert str(raised.value) == (
        "Validating a Triton repository needs tritonclient: pip install 'trt-quant[triton]'."
    )


# --- bad input ---------------------------------------------------------------------------------------------


def test_missing_model_file_for_backend(tiny_artifact: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ArtifactError, match=r"has no model\.plan, which the tensorrt backend serves: build a TensorRT"
    ):
        write_triton_repository(tiny_artifact, tmp_path / "repo", backend="tensorrt")
    broken = tmp_path / "no-int8"
    shutil.copytree(tiny_artifact, broken)
    (broken / INT8_ONNX).unlink()
    with pytest.raises(ArtifactError, match=r"has no model_int8\.onnx, which the onnxruntime backend serves"):
        write_triton_repository(broken, tmp_path / "repo")
    unrecorded = with_engine(tiny_artifact, tmp_path / "no-profiles", b"plan", [])
    with pytest.raises(ArtifactError, match="records no optimization profiles"):
        write_triton_repository(unrecorded, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_existing_repository_needs_overwrite(tiny_artifact: Path, tmp_path: Path) -> None:
    repo = write_triton_repository(tiny_artifact, tmp_path / "repo", name=NAME)
    (repo / "marker").write_text("kept", encoding="utf-8")
    with pytest.raises(TrtQuantError, match="already exists: pass --overwrite"):
        write_triton_repository(tiny_artifact, repo, name="other")
    assert (repo / "marker").is_file() and (repo / NAME).is_dir()
    write_triton_repository(tiny_artifact, repo, name="other", overwrite=True)
    assert sorted(p.name for p in repo.iterdir()) == ["README.md", "other", "other_model", "other_tokenizer"]
    with pytest.raises(TrtQuantError, match="holds the artifact itself"):
        write_triton_repository(tiny_artifact, tiny_artifact.parent, overwrite=True)


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".hidden", "a b", "x\n", "", "-x"])
def test_model_names_triton_rejects(tiny_artifact: Path, tmp_path: Path, name: str) -> None:
    with pytest.raises(TrtQuantError, match="cannot be a Triton model directory: pass --name"):
        write_triton_repository(tiny_artifact, tmp_path / "repo", name=name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"preferred_batch_sizes": (4, 16)}, "Preferred batch size 16 is outside 1..8"),
        ({"max_batch": 0}, "--max-batch 0 is below 1"),
        ({"instances": 0}, "--instances 0 is below 1"),
        ({"max_queue_delay_us": -1}, "queue delay is negative"),
        ({"backend": "tensorflow"}, "Unknown Triton backend 'tensorflow'"),
        ({"kind": "tpu"}, "Unknown instance kind 'tpu'"),
    ],
)
def test_bad_options(tiny_artifact: Path, tmp_path: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(TrtQuantError, match=message):
        write_triton_repository(tiny_artifact, tmp_path / "repo", **options)
    assert not (tmp_path / "repo").exists()


# --- validation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "old", "new", "expected"),
    [
        (
            NAME,
            "data_type: TYPE_FP32",
            "data_type: TYPE_FP16",
            f"{NAME}: tensor 'logits' is TYPE_FP16 at the ensemble output but TYPE_FP32 at output 'logits' "
            f"of '{NAME}_model'.",
        ),
        (
            NAME,
            'key: "token_type_ids"',
            'key: "token_typeids"',
            f"{NAME}: input 'token_type_ids' of '{NAME}_model' is not mapped to any ensemble tensor.",
        ),
        (
            NAME,
            'key: "token_type_ids"',
            'key: "token_typeids"',
            f"{NAME}: tensor 'token_type_ids' is mapped to 'token_typeids', not an input of '{NAME}_model'.",
        ),
        (
            NAME,
            f'model_name: "{NAME}_model"',
            'model_name: "missing"',
            f"{NAME}: step model 'missing' is not in the repository.",
        ),
        (
            NAME,
            "max_batch_size: 4",
            "max_batch_size: 8",
            f"{NAME}: max_batch_size 8 is above the 4 of step model '{NAME}_tokenizer'.",
        ),
        (
            f"{NAME}_model",
            "dims: [3]",
            "dims: [4]",
            f"{NAME}_model: output 'logits' has dims [-1, 4] (with batch) in config.pbtxt but [-1, 3] in the "
            "ONNX graph.",
        ),
        (
            f"{NAME}_model",
            "TYPE_INT64",
            "TYPE_INT32",
            f"{NAME}_model: input 'token_type_ids' is TYPE_INT32 in config.pbtxt but TYPE_INT64 in the "
            "ONNX graph.",
        ),
        (
            f"{NAME}_model",
            'default_model_filename: "model.onnx"',
            'default_model_filename: "other.onnx"',
            f"{NAME}_model: model file 1/other.onnx is missing.",
        ),
        (f"{NAME}_model", "kind: KIND_CPU", "kind: KIND_CPUS", "is not a valid Triton ModelConfig"),
        (
            f"{NAME}_tokenizer",
            f'name: "{NAME}_tokenizer"',
            'name: "renamed"',
            f"{NAME}_tokenizer: config.pbtxt names the model 'renamed'; it must equal its directory name.",
        ),
    ],
)
def test_validate_reports_errors(
    onnx_repo: Path, tmp_path: Path, model: str, old: str, new: str, expected: str
) -> None:
    repo = Path(shutil.copytree(onnx_repo, tmp_path / "repo"))
    config = repo / model / "config.pbtxt"
    text = config.read_text(encoding="utf-8")
    assert old in text
    head, _, tail = text.rpartition(old)  # the last occurrence: in the ensemble, the encoder's step
    config.write_text(head + new + tail, encoding="utf-8")
    errors = validate_repository(repo)
    assert any(expected in error for error in errors), errors


def test_validate_missing_directory(tmp_path: Path) -> None:
    assert validate_repository(tmp_path / "none") == [
        f"{tmp_path / 'none'} is not a directory: pass the repository written by 'trt-quant triton'."
    ]
    assert validate_repository(tmp_path) == [f"{tmp_path} holds no model directories with a config.pbtxt."]


# --- the Python-backend tokenizer model --------------------------------------------------------------------


def test_tokenizer_model_imports_only_what_the_server_has() -> None:
    tree = ast.parse(tokenizer_source())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported == {"json", "numpy", "transformers", "triton_python_backend_utils"}


def test_runtime_model_imports_trt_quant_from_its_own_folder() -> None:
    tree = ast.parse(runtime_model_source())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported == {
        "json",
        "os",
        "sys",
        "numpy",
        "torch",  # only on GPU instances, for the device
        "triton_python_backend_utils",
        "trt_quant.errors",
        "trt_quant.runtime",
    }


def tokenizer_function(name: str) -> Any:
    """A plain function of the tokenizer's model.py (which imports Triton's module at its top), alone."""
    tree = ast.parse(tokenizer_source())
    [function] = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == name]
    namespace: dict[str, Any] = {}
    exec(compile(ast.Module(body=[function], type_ignores=[]), "model.py", "exec"), namespace)
    return namespace[name]


@pytest.mark.parametrize(
    ("length", "ranges", "padded"),
    [
        (5, [], 5),
        (5, [(16, 64)], 16),
        (20, [(16, 64)], 20),
        (5, [(1, 8), (16, 64)], 5),
        (10, [(1, 8), (16, 64)], 16),
    ],
)
def test_tokenizer_pads_a_bucket_up_to_the_engine_profile_minimum(
    length: int, ranges: list[tuple[int, int]], padded: int
) -> None:
    assert tokenizer_function("padded_length")(length, ranges) == padded


def test_engine_profiles_reach_the_tokenizer_config(tiny_artifact: Path, tmp_path: Path) -> None:
    profiles = [{"min": [1, 16], "opt": [4, 32], "max": [8, 64]}]
    artifact = with_engine(tiny_artifact, tmp_path / "engine16", b"plan", profiles, tensorrt="10.13.3")
    repo = write_triton_repository(artifact, tmp_path / "repo", name=NAME)
    tokenizer = parse(repo / f"{NAME}_tokenizer" / "config.pbtxt")
    assert tokenizer.parameters["sequence_ranges"].string_value == "[[16, 64]]"


@pytest.mark.parametrize(
    ("family", "task", "outputs"),
    [
        ("bert", "question-answering", [("start_logits", [-1]), ("end_logits", [-1])]),
        ("distilbert", "sentence-embedding", [("sentence_embedding", [32])]),
    ],
)
def test_each_task_serves_its_outputs(
    family: str,
    task: str,
    outputs: list[tuple[str, list[int]]],
    tiny_model: Any,
    calib_file: Path,
    tmp_path: Path,
) -> None:
    from trt_quant.config import QuantConfig
    from trt_quant.convert import convert

    artifact = tmp_path / task
    convert(
        tiny_model(family, task),
        task,
        calib_file,
        artifact,
        QuantConfig(calib_samples=64, batch_size=16, max_length=32),
    )
    repo = write_triton_repository(artifact, tmp_path / "repo", name="m")
    assert validate_repository(repo) == []
    ensemble = parse(repo / "m" / "config.pbtxt")
    assert tensors(ensemble.output) == [(name, "TYPE_FP32", dims, False) for name, dims in outputs]
    runtime = load_runtime(artifact, backend="onnxruntime")
    model_inputs = [tensor.name for tensor in parse(repo / "m_model" / "config.pbtxt").input]
    assert model_inputs == runtime.input_names


# --- client script ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_client_builds_the_ensemble_inputs(protocol: str) -> None:
    client = load_module(CLIENT, "triton_client")
    module = client.client_module(protocol)
    text, pair = client.build_inputs(module, ["a question", "another"], ["context", "more"])
    assert [(t.name(), t.shape(), t.datatype()) for t in (text, pair)] == [
        ("TEXT", [2, 1], "BYTES"),
        ("TEXT_PAIR", [2, 1], "BYTES"),
    ]
    assert len(client.build_inputs(module, ["only"])) == 1
    with pytest.raises(SystemExit):
        client.parse_args(["--model", "m", "--text", "a", "--pair", "b", "--pair", "c"])
    assert client.parse_args(["--model", "m", "--text", "a"]).protocol == "http"


def test_client_sends_texts_and_prints_outputs_and_latency(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import tritonclient.http as http

    client = load_module(CLIENT, "triton_client")
    sent: list[tuple[str, list[str]]] = []

    class Result:
        def as_numpy(self, name: str) -> np.ndarray:
            return np.array([[0.5, -0.5]], dtype=np.float32)

    class FakeServer:
        def __init__(self, url: str) -> None:
            assert url == "localhost:8000"

        def get_model_metadata(self, model: str) -> dict[str, Any]:
            return {"outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 2]}]}

        def infer(self, model: str, inputs: list[Any], outputs: list[Any]) -> Result:
            sent.append((model, [tensor.name() for tensor in inputs]))
            assert [output.name() for output in outputs] == ["logits"]
            return Result()

    monkeypatch.setattr(http, "InferenceServerClient", FakeServer)
    client.main(["--model", "m", "--text", "héllo", "--repeat", "4", "--warmup", "1"])
    assert sent == [("m", ["TEXT"])] * 5
    printed = capsys.readouterr().out
    assert "logits float32 [1, 2]" in printed
    assert re.search(
        r"latency over 4 requests of 1 texts \(http\): p50 [\d.]+ ms, p90 [\d.]+ ms, mean", printed
    )


def test_serve_refuses_a_backend_the_built_in_server_lacks(tiny_artifact: Path, tmp_path: Path) -> None:
    from trt_quant.triton.serve import serve

    with pytest.raises(
        TrtQuantError, match="has only the python backend, not onnxruntime: pass --backend python"
    ):
        serve(tiny_artifact, tmp_path / "repo", backend="onnxruntime")
    assert not (tmp_path / "repo").exists()


def test_server_environment_paths_and_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sysconfig

    from trt_quant.triton.environment import ServerEnvironment, default_root

    monkeypatch.setenv("TRT_QUANT_TRITON_ENV", str(tmp_path / "env"))
    assert default_root() == tmp_path / "env"
    monkeypatch.delenv("TRT_QUANT_TRITON_ENV")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_root().parent == tmp_path / "cache" / "trt-quant"
    environment = ServerEnvironment(tmp_path / "env")
    assert not environment.is_built()  # nothing there yet
    monkeypatch.setenv("PYTHONPATH", "/somewhere/with/numpy2")
    monkeypatch.setenv("LD_LIBRARY_PATH", "/usr/lib/other")
    variables = environment.process_environment()
    assert "PYTHONPATH" not in variables and variables["PYTHONDONTWRITEBYTECODE"] == "1"
    libraries = variables["LD_LIBRARY_PATH"].split(os.pathsep)
    # this Python's libpython first (else the stub loads another one), the wheel's libraries, then the caller's
    assert libraries[0] == sysconfig.get_config_var("LIBDIR")
    assert libraries[1] == str(environment.site_packages / "nvidia_pytriton.libs")
    assert libraries[-1] == "/usr/lib/other"
    assert variables["PATH"].split(os.pathsep)[0] == str(tmp_path / "env" / "bin")
