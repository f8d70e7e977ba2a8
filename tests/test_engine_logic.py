"""Engine-build and TensorRT-runtime logic that needs no GPU: profiles, profile selection, records, errors.

``build_engine`` is also run end to end against a small stand-in ``tensorrt`` module (``FakeTensorRT``)
that records what the builder was asked for; whether those names exist in the real TensorRT 11 is
checked by tests/test_tensorrt_api.py.
"""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch

from trt_quant.artifacts import ENGINE, load_manifest
from trt_quant.engine import (
    LAYERS_REPORT,
    BuildConfig,
    Profile,
    build_engine,
    default_profiles,
    parse_profiles,
    parse_range,
    require_tensorrt,
)
from trt_quant.errors import ArtifactError, GpuUnavailableError, InputError, TrtQuantError
from trt_quant.runtime import OrtRuntime, load_runtime
from trt_quant.runtime.trt import engine_mismatch, select_profile, tensorrt_usable, torch_dtype

INSTALL = "pip install 'trt-quant[gpu]'"


@pytest.mark.parametrize(
    ("spec", "expected"), [("1,8,32", (1, 8, 32)), (" 16, 128 ,512", (16, 128, 512)), ("8", (8, 8, 8))]
)
def test_parse_range(spec: str, expected: tuple[int, int, int]) -> None:
    assert parse_range(spec, "--batch") == expected


@pytest.mark.parametrize(
    ("spec", "reason"),
    [("1,8", "one or three integers"), ("a,b,c", "one or three integers"), ("1,8,32,64", "one or three"),
     ("-1,2,3", "one or three integers"), ("", "one or three"), ("0,1,2", "below 1"),
     ("8,4,32", "min <= opt <= max"), ("1,64,32", "min <= opt <= max")],
)  # fmt: skip
def test_parse_range_errors_name_the_option_and_an_example(spec: str, reason: str) -> None:
    with pytest.raises(TrtQuantError, match=reason) as caught:
        parse_range(spec, "--seq")
    assert "--seq 1,8,32" in str(caught.value)


def test_parse_profiles_makes_one_profile_per_sequence_bucket() -> None:
    profiles = parse_profiles("1,8,32", ["1,64,128", "129,256,512"], max_length=512)
    assert profiles == [Profile((1, 8, 32), (1, 64, 128)), Profile((1, 8, 32), (129, 256, 512))]
    assert parse_profiles("1,8,32", "16,128,512") == [Profile((1, 8, 32), (16, 128, 512))]


def test_parse_profiles_refuses_sequences_beyond_the_model() -> None:
    with pytest.raises(TrtQuantError, match="maximum length of 128 tokens: pass --seq with a maximum of 128"):
        parse_profiles("1,8,32", ["1,64,128", "1,256,512"], max_length=128)
    with pytest.raises(TrtQuantError, match="--seq"):
        parse_profiles("1,8,32", [])


def test_profile_shapes_and_manifest_form() -> None:
    profile = Profile((1, 8, 32), (16, 128, 512))
    assert profile.to_dict() == {"min": [1, 16], "opt": [8, 128], "max": [32, 512]}
    assert profile.contains((32, 16)) and profile.contains((1, 512))
    assert not profile.contains((33, 64)) and not profile.contains((4, 15)) and not profile.contains((4,))
    assert profile.describe() == "batch 1-32, sequence 16-512"


def test_default_profiles_follow_the_model_length() -> None:
    assert default_profiles(64) == [Profile((1, 8, 32), (1, 64, 64))]
    assert default_profiles(512) == [Profile((1, 8, 32), (1, 128, 512))]
    assert default_profiles(4096) == [Profile((1, 8, 32), (1, 128, 512))]


def test_build_config_validation() -> None:
    with pytest.raises(TrtQuantError, match="fp16, bf16, fp32"):
        BuildConfig(precision="int8")
    with pytest.raises(TrtQuantError, match="from 0 to 5"):
        BuildConfig(optimization_level=6)
    with pytest.raises(TrtQuantError, match="at least 1 MiB"):
        BuildConfig(workspace_mib=0)
    config = BuildConfig(profiles=(Profile((1, 1, 1), (1, 64, 256)),))
    with pytest.raises(TrtQuantError, match="maximum length of 128"):
        config.resolved_profiles(128)
    assert BuildConfig().resolved_profiles(64) == default_profiles(64)


def test_select_profile_picks_the_tightest_fitting_profile() -> None:
    buckets = [Profile((1, 8, 32), (1, 64, 128)), Profile((1, 8, 32), (129, 256, 512))]
    assert select_profile(buckets, (4, 100)) == 0
    assert select_profile(buckets, (32, 129)) == 1
    overlapping = [Profile((1, 8, 32), (1, 128, 512)), Profile((1, 8, 32), (1, 64, 128))]
    assert select_profile(overlapping, (2, 64)) == 1
    assert select_profile(overlapping, (2, 300)) == 0


def test_select_profile_error_names_every_range() -> None:
    profiles = [Profile((1, 8, 32), (1, 64, 128)), Profile((1, 4, 8), (129, 256, 512))]
    with pytest.raises(InputError) as caught:
        select_profile(profiles, (16, 300))
    message = str(caught.value)
    assert "batch 16, sequence 300" in message
    assert "profile 0: batch 1-32, sequence 1-128; profile 1: batch 1-8, sequence 129-512" in message
    assert "--batch/--seq" in message


def test_engine_mismatch_explains_version_and_gpu() -> None:
    record = {"tensorrt": "10.13.0", "compute_capability": "8.6", "gpu": "NVIDIA A10"}
    assert engine_mismatch(record, "10.13.0", "8.6") is None
    assert "TensorRT 10.13.0 and this machine has 11.4.0" in str(engine_mismatch(record, "11.4.0", "8.6"))
    other_gpu = str(engine_mismatch(record, "10.13.0", "9.0"))
    assert "compute capability 8.6 (NVIDIA A10) and this GPU has 9.0" in other_gpu
    assert "records no engine" in str(engine_mismatch(None, "10.13.0", "8.6"))


def test_torch_dtypes_of_engine_tensors() -> None:
    assert torch_dtype("INT64") is torch.int64 and torch_dtype("INT32") is torch.int32
    assert torch_dtype("FLOAT") is torch.float32 and torch_dtype("HALF") is torch.float16
    with pytest.raises(ArtifactError, match="FP8"):
        torch_dtype("FP8")


@pytest.fixture
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import tensorrt`` fail, as on a machine without it (also on GPU machines).

    Request it after ``artifact``, so the session's conversion runs with the real import machinery.
    """
    monkeypatch.setitem(sys.modules, "tensorrt", None)


@pytest.mark.usefixtures("no_tensorrt")
def test_tensorrt_is_not_usable_without_it() -> None:
    assert tensorrt_usable() is False


def test_tensorrt_usable_never_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tensorrt.py").write_text("raise OSError('libnvinfer.so.11: cannot open shared object')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    assert tensorrt_usable() is False
    with pytest.raises(GpuUnavailableError, match=r"\(OSError\)"):
        require_tensorrt()


@pytest.fixture
def artifact(tiny_artifact: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny artifact, free to modify."""
    return Path(shutil.copytree(tiny_artifact, tmp_path / "artifact"))


def test_build_without_tensorrt_says_how_to_install(artifact: Path, no_tensorrt: None) -> None:
    before = (artifact / "manifest.json").read_bytes()
    with pytest.raises(GpuUnavailableError, match="TensorRT is not installed") as caught:
        build_engine(artifact)
    assert INSTALL in str(caught.value) and str(caught.value).count(". ") == 0
    assert not (artifact / ENGINE).exists() and (artifact / "manifest.json").read_bytes() == before


def test_build_with_tensorrt_but_no_gpu(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(GpuUnavailableError, match=r"No CUDA GPU is visible .*onnxruntime backend"):
        build_engine(artifact)


def test_load_runtime_tensorrt_backend_needs_tensorrt(artifact: Path, no_tensorrt: None) -> None:
    with pytest.raises(GpuUnavailableError, match=r"pip install 'trt-quant\[gpu\]'"):
        load_runtime(artifact, backend="tensorrt")


def test_auto_backend_falls_back_to_onnxruntime_with_an_engine(artifact: Path, no_tensorrt: None) -> None:
    (artifact / ENGINE).write_bytes(b"an engine this machine cannot run")
    runtime = load_runtime(artifact, backend="auto")
    assert isinstance(runtime, OrtRuntime) and runtime.backend == "onnxruntime"


class FakeTensorRT(types.ModuleType):
    """Just enough of the ``tensorrt`` module for ``build_engine``; records what it was asked."""

    def __init__(self, plan: bytes | None = b"serialized engine", parse_ok: bool = True) -> None:
        super().__init__("tensorrt")
        self.__version__ = "10.99.0"
        self.calls: dict[str, Any] = {"profiles": []}
        self.plan, self.parse_ok = plan, parse_ok
        self.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=5)
        self.ProfilingVerbosity = types.SimpleNamespace(DETAILED="DETAILED")
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
        self.LayerInformationFormat = types.SimpleNamespace(JSON="JSON")
        self.Logger = type("Logger", (), {"WARNING": "WARNING", "__init__": lambda self, severity: None})
        self.IProgressMonitor = type("IProgressMonitor", (), {"__init__": lambda self: None})
        fake = self

        class Builder:
            def __init__(self, logger: Any) -> None:
                pass

            def create_network(self, flags: int) -> Any:
                fake.calls["network_flags"] = flags
                return types.SimpleNamespace(num_inputs=0, get_input=None)

            def create_builder_config(self) -> Any:
                return fake.calls.setdefault("config", BuilderConfig())

            def create_optimization_profile(self) -> Any:
                shapes: dict[str, Any] = {}
                set_shape = lambda name, low, opt, high: shapes.update({name: (low, opt, high)})  # noqa: E731
                return types.SimpleNamespace(shapes=shapes, set_shape=set_shape)

            def build_serialized_network(self, network: Any, config: Any) -> bytes | None:
                config.progress_monitor.phase_start("Building", None, 2)
                config.progress_monitor.step_complete("Building", 1)
                config.progress_monitor.phase_finish("Building")
                return fake.plan

        class BuilderConfig:
            def __init__(self) -> None:
                self.pool_limits: dict[str, int] = {}

            def set_memory_pool_limit(self, pool: str, size: int) -> None:
                self.pool_limits[pool] = size

            def add_optimization_profile(self, profile: Any) -> None:
                fake.calls["profiles"].append(profile.shapes)

            def create_timing_cache(self, data: bytes) -> Any:
                fake.calls["timing_cache_in"] = data
                return types.SimpleNamespace(serialize=lambda: b"timings:" + data)

            def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
                return True

        class OnnxParser:
            num_errors = 1

            def __init__(self, network: Any, logger: Any) -> None:
                self.network = network

            def parse(self, data: bytes) -> bool:
                model = onnx.load_from_string(data)
                fake.calls["onnx"] = model
                names = [value.name for value in model.graph.input]
                self.network.num_inputs = len(names)
                self.network.get_input = lambda index: types.SimpleNamespace(name=names[index])
                return fake.parse_ok

            def get_error(self, index: int) -> Any:
                return types.SimpleNamespace(desc=lambda: "Unsupported operator", node_name=lambda: "/Erf")

        class Runtime:
            def __init__(self, logger: Any) -> None:
                pass

            def deserialize_cuda_engine(self, plan: bytes) -> Any:
                inspector = types.SimpleNamespace(get_engine_information=lambda fmt: '{"Layers": ["gemm"]}')
                return types.SimpleNamespace(create_engine_inspector=lambda: inspector)

        self.Builder, self.OnnxParser, self.Runtime = Builder, OnnxParser, Runtime


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))


def test_build_engine_with_a_stand_in_tensorrt(
    artifact: Path, fake_gpu: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trt = FakeTensorRT()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    profiles = tuple(parse_profiles("1,2,4", ["1,8,16", "17,32,64"]))
    config = BuildConfig(profiles=profiles, workspace_mib=256, optimization_level=2, timing_cache=cache)
    record = build_engine(artifact, config)

    assert trt.calls["network_flags"] == 1 << 5
    assert trt.calls["config"].builder_optimization_level == 2
    assert trt.calls["config"].profiling_verbosity == "DETAILED"
    assert trt.calls["config"].pool_limits == {"WORKSPACE": 256 << 20}
    assert trt.calls["profiles"] == [
        {name: ((1, 1), (2, 8), (4, 16)) for name in ("input_ids", "attention_mask", "token_type_ids")},
        {name: ((1, 17), (2, 32), (4, 64)) for name in ("input_ids", "attention_mask", "token_type_ids")},
    ]
    parsed = trt.calls["onnx"]
    assert max(entry.version for entry in parsed.opset_import if entry.domain == "") >= 19
    assert trt.calls["timing_cache_in"] == b"old" and cache.read_bytes() == b"timings:old"

    assert (artifact / ENGINE).read_bytes() == b"serialized engine"
    assert json.loads((artifact / LAYERS_REPORT).read_text()) == {"Layers": ["gemm"]}
    manifest = load_manifest(artifact)  # checksums cover the new files
    assert manifest.engine == record
    assert {ENGINE, LAYERS_REPORT} <= set(manifest.files)
    assert record["tensorrt"] == "10.99.0" and record["gpu"] == "Fake GPU"
    assert record["compute_capability"] == "8.6" and record["precision"] == "fp16"
    assert record["profiles"] == [profile.to_dict() for profile in profiles]
    assert record["bytes"] == len(b"serialized engine")
    assert not list(artifact.glob(".*"))  # no temporary files left behind


@pytest.mark.parametrize(
    ("trt", "message"),
    [(FakeTensorRT(parse_ok=False), "Unsupported operator at node '/Erf'.*trt-quant check"),
     (FakeTensorRT(plan=None), "could not build the engine.*--workspace")],
)  # fmt: skip
def test_failed_build_writes_nothing(
    artifact: Path, fake_gpu: None, monkeypatch: pytest.MonkeyPatch, trt: FakeTensorRT, message: str
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    before = (artifact / "manifest.json").read_bytes()
    with pytest.raises(TrtQuantError, match=message):
        build_engine(artifact, BuildConfig(profiles=(Profile((1, 1, 2), (1, 8, 16)),)))
    assert not (artifact / ENGINE).exists() and not (artifact / LAYERS_REPORT).exists()
    assert (artifact / "manifest.json").read_bytes() == before
