"""TensorRT engine build: strongly typed network, optimization profiles, timing cache, layer report.

TensorRT 10 and 11 share one path here. The INT8 graph is made TensorRT-ready first
(:mod:`trt_quant.onnx.tensorrt_graph`: float part in FP16 or BF16, attention scale on the query, embedding tables
as constants), because a strongly typed network takes every tensor's type from the ONNX graph; TensorRT
11 has no INT8/FP16 builder flags and no calibrators. The engine is built from exactly the bytes written
to ``model_trt.onnx``. ``tensorrt`` is imported only
inside the functions that talk to it, so profile parsing and validation work on any machine.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from tqdm.auto import tqdm

from trt_quant.artifacts import (
    ENGINE,
    TRT_ONNX,
    EngineRecord,
    load_manifest,
    quantized_precision,
    write_atomically,
    write_manifest,
)
from trt_quant.errors import GpuUnavailableError, TrtQuantError
from trt_quant.onnx.precision import PRECISIONS
from trt_quant.onnx.tensorrt_graph import tensorrt_graph
from trt_quant.onnx.tensorrt_onnx import prepare_tensorrt_onnx, store_tensorrt_onnx

LAYERS_REPORT = "engine_layers.json"
DEFAULT_BATCH = "1,8,32"
INSTALL_HINT = "pip install 'trt-quant[gpu]'"
FP8_MIN_CAPABILITY = (8, 9)  # FP8 tensor cores: Ada (8.9), Hopper (9.0), Blackwell (10.0, 12.0)


@dataclass(frozen=True)
class Profile:
    """One optimization profile: (min, opt, max) of the batch size and of the sequence length."""

    batch: tuple[int, int, int]
    sequence: tuple[int, int, int]

    def shape(self, which: int) -> tuple[int, int]:
        """The (batch, sequence) shape at ``which``: 0 min, 1 opt, 2 max."""
        return self.batch[which], self.sequence[which]

    def contains(self, shape: Sequence[int]) -> bool:
        """Whether a (batch, sequence) shape lies within this profile's min and max."""
        return len(shape) == 2 and all(
            low <= size <= high for low, size, high in zip(self.shape(0), shape, self.shape(2), strict=True)
        )

    def describe(self) -> str:
        return f"batch {self.batch[0]}-{self.batch[2]}, sequence {self.sequence[0]}-{self.sequence[2]}"

    def to_dict(self) -> dict[str, list[int]]:
        """The manifest form: ``{"min": [batch, sequence], "opt": [...], "max": [...]}``."""
        return {key: list(self.shape(which)) for which, key in enumerate(("min", "opt", "max"))}


def parse_range(spec: str, option: str) -> tuple[int, int, int]:
    """Parse "min,opt,max" (or one number for a fixed size) into three positive, ordered integers."""
    parts = [part.strip() for part in str(spec).split(",")]
    example = f"pass e.g. {option} 1,8,32 (min,opt,max) or {option} 8 (fixed)"
    if len(parts) not in (1, 3) or not all(part.isdigit() for part in parts):
        raise TrtQuantError(f"{option} '{spec}' is not one or three integers: {example}.")
    low, opt, high = [int(part) for part in parts] * (3 if len(parts) == 1 else 1)
    if low < 1:
        raise TrtQuantError(f"{option} '{spec}' starts below 1: {example}.")
    if not low <= opt <= high:
        raise TrtQuantError(f"{option} '{spec}' is not ordered min <= opt <= max: {example}.")
    return low, opt, high


def parse_profiles(batch: str, seq: str | Sequence[str], max_length: int | None = None) -> list[Profile]:
    """Profiles from a batch spec and one sequence spec per profile (sequence-length buckets).

    ``parse_profiles("1,8,32", ["1,64,128", "129,256,512"])`` gives two profiles sharing the batch
    range. With ``max_length`` (the model's maximum), a sequence beyond it is an error.
    """
    specs = [seq] if isinstance(seq, str) else list(seq)
    if not specs:
        raise TrtQuantError("No sequence range was given: pass --seq min,opt,max at least once.")
    batch_range = parse_range(batch, "--batch")
    profiles = [Profile(batch_range, parse_range(spec, "--seq")) for spec in specs]
    if max_length is not None:
        check_profiles(profiles, max_length)
    return profiles


def check_profiles(profiles: Sequence[Profile], max_length: int) -> None:
    """Refuse profiles whose sequence range exceeds the model's maximum length."""
    for profile in profiles:
        if profile.sequence[2] > max_length:
            raise TrtQuantError(
                f"Sequence range {profile.describe()} exceeds the model's maximum length of {max_length} "
                f"tokens: pass --seq with a maximum of {max_length} or less."
            )


def default_sequence(max_length: int) -> str:
    """The default sequence range: 1 to the model's maximum (at most 512), opt 128 or less."""
    longest = min(max_length, 512)
    return f"1,{min(128, longest)},{longest}"


def default_profiles(max_length: int, batch: str = DEFAULT_BATCH) -> list[Profile]:
    """One profile: ``batch`` (default 1-32, opt 8), sequence :func:`default_sequence` (the default of
    both ``trt-quant build`` and :class:`BuildConfig`)."""
    return parse_profiles(batch, default_sequence(max_length))


@dataclass(frozen=True)
class BuildConfig:
    """How to build an engine.

    ``precision`` is the type of the non-quantized float part (fp16, bf16 or fp32); ``profiles`` empty
    means :func:`default_profiles`; ``workspace_mib`` None leaves TensorRT's default (the GPU's memory);
    ``optimization_level`` 0-5 trades build time for engine speed (TensorRT's default is 3);
    ``timing_cache`` is a file read before and written after the build, shared across builds;
    ``fp32_islands`` keeps LayerNorm and Softmax in FP32 (FP16/BF16 otherwise).
    """

    precision: str = "fp16"
    profiles: tuple[Profile, ...] = ()
    workspace_mib: int | None = None
    optimization_level: int = 3
    timing_cache: Path | None = None
    fp32_islands: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise TrtQuantError(f"Unknown precision '{self.precision}': use one of {', '.join(PRECISIONS)}.")
        if not 0 <= self.optimization_level <= 5:
            raise TrtQuantError(
                f"Optimization level {self.optimization_level} is out of range: pass a level from 0 to 5."
            )
        if self.workspace_mib is not None and self.workspace_mib < 1:
            raise TrtQuantError(f"Workspace {self.workspace_mib} MiB is too small: pass at least 1 MiB.")

    def resolved_profiles(self, max_length: int) -> list[Profile]:
        """The profiles to build, checked against the model's maximum length."""
        profiles = list(self.profiles) or default_profiles(max_length)
        check_profiles(profiles, max_length)
        return profiles


@dataclass
class BuiltEngine:
    """A serialized engine and what the build learned about it."""

    plan: bytes
    layers: str  # TensorRT engine-inspector report, JSON
    tensorrt_version: str
    seconds: float


def require_tensorrt() -> Any:
    """The ``tensorrt`` module, when it is installed and a CUDA GPU is visible; else GpuUnavailableError."""
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or OSError when its CUDA libraries are missing
        raise GpuUnavailableError(
            f"TensorRT is not installed or cannot load ({exc.__class__.__name__}): install it with "
            f"{INSTALL_HINT} on a machine with an NVIDIA GPU and driver."
        ) from exc
    import torch

    if not torch.cuda.is_available():
        raise GpuUnavailableError(
            "No CUDA GPU is visible (torch.cuda.is_available() is False): run on a machine with an NVIDIA "
            f"GPU, a CUDA build of torch and {INSTALL_HINT}, or use the onnxruntime backend."
        )
    return trt


def check_fp8_capability(capability: tuple[int, int]) -> None:
    """Refuse an FP8 engine on a GPU below compute capability 8.9, in one sentence."""
    if tuple(capability) < FP8_MIN_CAPABILITY:
        major, minor = capability
        raise GpuUnavailableError(
            f"FP8 TensorRT engines need an NVIDIA GPU of compute capability 8.9 or newer (Ada, Hopper, "
            f"Blackwell) and this one is {major}.{minor}: convert with --precision int8 for this GPU."
        )


def gpu_info() -> dict[str, str]:
    """Name and compute capability ("8.6") of the current CUDA device."""
    import torch

    device = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(device)
    return {"gpu": torch.cuda.get_device_name(device), "compute_capability": f"{major}.{minor}"}


def build_plan(model: onnx.ModelProto, config: BuildConfig, profiles: Sequence[Profile]) -> BuiltEngine:
    """Make ``model`` TensorRT-ready (:func:`~trt_quant.onnx.tensorrt_graph.tensorrt_graph`) and build an engine."""
    graph = tensorrt_graph(model, config.precision, config.fp32_islands)
    return build_plan_from_onnx(graph.model.SerializeToString(), config, profiles)


def build_plan_from_onnx(onnx_bytes: bytes, config: BuildConfig, profiles: Sequence[Profile]) -> BuiltEngine:
    """Build a strongly typed TensorRT engine from a TensorRT-ready graph, parsed exactly as given."""
    trt = require_tensorrt()
    started = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    plan = _serialize_network(trt, logger, onnx_bytes, config, profiles)
    layers = _layer_report(trt, logger, plan)
    return BuiltEngine(plan, layers, trt.__version__, time.perf_counter() - started)


def build_engine(
    artifact_dir: str | Path, config: BuildConfig | None = None, verify: bool = True
) -> EngineRecord:
    """Build the artifact's TensorRT-ready graph into ``model.plan`` and record the engine in its manifest.

    Writes ``model_trt.onnx`` (the graph parsed, see :mod:`trt_quant.onnx.tensorrt_onnx`), ``model.plan`` and
    ``engine_layers.json`` (TensorRT's per-layer report) atomically next to the ONNX files, then rewrites
    the manifest with the engine's TensorRT version, GPU, compute capability, profiles and precision.
    Returns that engine record.
    """
    directory = Path(artifact_dir)
    config = config or BuildConfig()
    manifest = load_manifest(directory, verify=verify)
    if manifest.quantization.weight_bits == 7:
        warnings.warn(
            f"{directory} was converted with --weight-bits 7, a workaround for ONNX Runtime on CPUs without "
            "VNNI that costs accuracy and gains nothing on a GPU: convert it again with --weight-bits 8 "
            "for TensorRT.",
            stacklevel=2,
        )
    profiles = config.resolved_profiles(manifest.max_length)
    if quantized_precision(manifest) == "fp8":
        import torch

        require_tensorrt()
        check_fp8_capability(torch.cuda.get_device_capability())
    prepared = prepare_tensorrt_onnx(directory, manifest, config.precision, config.fp32_islands)
    built = build_plan_from_onnx(prepared.data, config, profiles)
    store_tensorrt_onnx(directory, manifest, prepared)
    write_atomically(directory / ENGINE, built.plan)
    write_atomically(directory / LAYERS_REPORT, _pretty_json(built.layers).encode())
    manifest.engine = engine_record(config, profiles, built, prepared.record.sha256)
    write_manifest(directory, manifest)
    return manifest.engine


def engine_record(
    config: BuildConfig, profiles: Sequence[Profile], built: BuiltEngine, source_sha256: str
) -> EngineRecord:
    """The manifest's ``engine`` section (TensorRT enums stored by name, never as integers)."""
    return EngineRecord(
        tensorrt=built.tensorrt_version,
        **gpu_info(),
        file=ENGINE,
        source=TRT_ONNX,
        source_sha256=source_sha256,
        layers_report=LAYERS_REPORT,
        precision=config.precision,
        profiles=[profile.to_dict() for profile in profiles],
        workspace_mib=config.workspace_mib,
        optimization_level=config.optimization_level,
        timing_cache=str(config.timing_cache) if config.timing_cache else None,
        bytes=len(built.plan),
        build_seconds=round(built.seconds, 1),
    )


def _serialize_network(
    trt: Any, logger: Any, onnx_bytes: bytes, config: BuildConfig, profiles: Sequence[Profile]
) -> bytes:
    """Parse the ONNX graph into a strongly typed network and build it into a serialized engine."""
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        raise TrtQuantError(
            f"TensorRT's ONNX parser rejected the graph ({_parser_errors(parser)}): run 'trt-quant check' "
            "on the INT8 ONNX and fix the named node, or update TensorRT."
        )
    builder_config = _builder_config(trt, builder, network, config, profiles)
    cache = attach_timing_cache(builder_config, config.timing_cache)
    monitor = _progress_monitor(trt)  # referenced here for as long as TensorRT calls it
    builder_config.progress_monitor = monitor
    plan = builder.build_serialized_network(network, builder_config)
    if plan is None:
        raise TrtQuantError(
            "TensorRT could not build the engine (its log above says why): raise --workspace, narrow the "
            "--batch/--seq profiles or check the graph with 'trt-quant check'."
        )
    if config.timing_cache is not None:
        save_timing_cache(builder_config, cache, config.timing_cache)
    return bytes(plan)


def _builder_config(
    trt: Any, builder: Any, network: Any, config: BuildConfig, profiles: Sequence[Profile]
) -> Any:
    """Builder config: detailed profiling (for the layer report), optimization level, workspace, profiles."""
    builder_config = builder.create_builder_config()
    builder_config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    builder_config.builder_optimization_level = config.optimization_level
    if config.workspace_mib is not None:
        builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mib << 20)
    inputs = [network.get_input(index).name for index in range(network.num_inputs)]
    for profile in profiles:
        optimization_profile = builder.create_optimization_profile()
        for name in inputs:
            optimization_profile.set_shape(name, profile.shape(0), profile.shape(1), profile.shape(2))
        builder_config.add_optimization_profile(optimization_profile)
    return builder_config


def _parser_errors(parser: Any) -> str:
    errors = [parser.get_error(index) for index in range(parser.num_errors)]
    described = [f"{error.desc()} at node '{error.node_name()}'" for error in errors[:3]]
    return "; ".join(described) or "no details"


def attach_timing_cache(builder_config: Any, path: Path | None) -> Any:
    """Attach the timing cache stored at ``path`` to the builder config and return it.

    No file (or no ``path``) gives an empty cache. A file TensorRT cannot read (corrupt, or written by
    another TensorRT version or for another GPU: ``create_timing_cache`` returns None or
    ``set_timing_cache`` refuses it) gives an empty cache too, with a warning; the file is replaced when
    the build saves its cache.
    """
    data = path.read_bytes() if path is not None and path.is_file() else b""
    if data:
        cache = builder_config.create_timing_cache(data)
        if cache is not None and builder_config.set_timing_cache(cache, ignore_mismatch=False):
            return cache
        warnings.warn(
            f"TensorRT cannot use the timing cache {path} (corrupt, or from another TensorRT version or "
            "GPU): this build starts from an empty cache and replaces the file.",
            stacklevel=2,
        )
    cache = builder_config.create_timing_cache(b"")
    if cache is None or not builder_config.set_timing_cache(cache, ignore_mismatch=False):
        raise TrtQuantError("TensorRT could not create an empty timing cache: free memory and build again.")
    return cache


def save_timing_cache(builder_config: Any, cache: Any, path: Path) -> None:
    """Write ``cache`` to ``path`` merged with what the file holds by then (another build may have
    written it meanwhile), atomically and under a file lock, so concurrent builds keep every entry."""

    def merge(on_disk: bytes) -> bytes:
        if on_disk:
            other = builder_config.create_timing_cache(on_disk)
            if other is None or not cache.combine(other, ignore_mismatch=False):
                warnings.warn(
                    f"The timing cache {path} cannot be merged (corrupt, or from another TensorRT version or "
                    "GPU): it is replaced by this build's cache.",
                    stacklevel=3,
                )
        return bytes(cache.serialize())

    update_file(path, merge)


def update_file(path: Path, merge: Callable[[bytes], bytes]) -> None:
    """Replace ``path``'s bytes by ``merge(current bytes)`` (b"" when absent), atomically, holding an
    exclusive lock on ``path``.lock meanwhile so concurrent updates apply one after another."""
    import fcntl  # POSIX only; imported here so that the rest of the module loads anywhere

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path.with_name(f"{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        current = path.read_bytes() if path.is_file() else b""
        write_atomically(path, merge(current))
    finally:
        os.close(descriptor)  # releases the lock


def _progress_monitor(trt: Any) -> Any:
    """A TensorRT progress monitor drawing one bar per build phase on a terminal."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.bars: dict[str, Any] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.bars[phase_name] = tqdm(
                total=num_steps, desc=phase_name, leave=False, disable=not sys.stderr.isatty()
            )

        def step_complete(self, phase_name: str, step: int) -> bool:
            bar = self.bars[phase_name]
            bar.update(step + 1 - bar.n)
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            self.bars.pop(phase_name).close()

    return Monitor()


def _layer_report(trt: Any, logger: Any, plan: bytes) -> str:
    """TensorRT's engine-inspector report of every layer (needs ProfilingVerbosity.DETAILED at build)."""
    runtime = trt.Runtime(logger)  # kept alive while its engine is in use
    engine = runtime.deserialize_cuda_engine(plan)
    inspector = engine.create_engine_inspector()
    return str(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


def _pretty_json(text: str) -> str:
    try:
        return json.dumps(json.loads(text), indent=2) + "\n"
    except json.JSONDecodeError:
        return text


__all__ = [
    "LAYERS_REPORT",
    "BuildConfig",
    "BuiltEngine",
    "Profile",
    "attach_timing_cache",
    "build_engine",
    "build_plan",
    "build_plan_from_onnx",
    "default_profiles",
    "default_sequence",
    "parse_profiles",
    "parse_range",
    "require_tensorrt",
    "save_timing_cache",
    "update_file",
]
