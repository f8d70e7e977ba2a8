"""Engine-build and TensorRT-runtime logic that needs no GPU: profiles, records, timing-cache files,
return-value checks, backend fallback and errors.

Where a TensorRT object is needed, a small stand-in models only the documented behaviour under test
(``create_timing_cache`` returns None for a blob it cannot read, ``set_*`` calls return False when
refused); whether the names the code uses exist in TensorRT 10 and 11 is checked by
tests/test_tensorrt_api.py against the real bindings.
"""

from __future__ import annotations

import shutil
import sys
import time
import types
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

from trt_quant.artifacts import ENGINE, EngineRecord, load_manifest, write_manifest
from trt_quant.engine.build import (
    BuildConfig,
    Profile,
    attach_timing_cache,
    build_engine,
    default_profiles,
    parse_profiles,
    parse_range,
    require_tensorrt,
    save_timing_cache,
    update_file,
)
from trt_quant.errors import (
    ArtifactError,
    EngineMismatchError,
    GpuUnavailableError,
    InputError,
    TrtQuantError,
)
from trt_quant.runtime import load_runtime
from trt_quant.runtime.trt import CheckedContext, engine_mismatch, tensorrt_usable, torch_dtype

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


def test_engine_mismatch_explains_version_and_gpu() -> None:
    record = EngineRecord(tensorrt="10.13.0", gpu="NVIDIA A10", compute_capability="8.6")
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


def test_load_runtime_tensorrt_backend_needs_tensorrt(artifact: Path, no_tensorrt: None) -> None:
    with pytest.raises(GpuUnavailableError, match=r"pip install 'trt-quant\[gpu\]'"):
        load_runtime(artifact, backend="tensorrt")


def test_auto_backend_falls_back_to_onnxruntime_with_an_engine(artifact: Path, no_tensorrt: None) -> None:
    (artifact / ENGINE).write_bytes(b"an engine this machine cannot run")
    runtime = load_runtime(artifact, backend="auto")
    assert runtime.backend in ("onnxruntime", "openvino")  # OpenVINO where its INT8 GEMMs are exact


def test_build_with_tensorrt_but_no_gpu(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(GpuUnavailableError, match=r"No CUDA GPU is visible .*onnxruntime backend"):
        build_engine(artifact)


def test_seven_bit_artifact_warns_when_an_engine_is_built(artifact: Path, no_tensorrt: None) -> None:
    manifest = load_manifest(artifact)
    manifest.quantization.weight_bits = 7
    write_manifest(artifact, manifest)
    warning = r"--weight-bits 7.*convert it again with --weight-bits 8"
    with pytest.warns(UserWarning, match=warning), pytest.raises(GpuUnavailableError):
        build_engine(artifact)


def test_eight_bit_artifact_builds_without_that_warning(artifact: Path, no_tensorrt: None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(GpuUnavailableError):
            build_engine(artifact)


# --- backend fallback for an engine of another TensorRT version or GPU ------------------------------------


@pytest.fixture
def tensorrt_11_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine whose TensorRT is 11.4.0 and whose GPU has compute capability 9.0. The runtime reads only
    the version before it compares the manifest's engine record, which is what these tests exercise."""
    module = types.ModuleType("tensorrt")
    module.__version__ = "11.4.0"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))


def engine_from(artifact: Path, tensorrt: str, capability: str) -> Path:
    (artifact / ENGINE).write_bytes(b"plan")
    manifest = load_manifest(artifact)
    manifest.engine = EngineRecord(tensorrt, "NVIDIA A10", capability)
    write_manifest(artifact, manifest)
    return artifact


@pytest.mark.parametrize(
    ("tensorrt", "capability", "reason"),
    [("10.13.0", "9.0", r"built with TensorRT 10\.13\.0 and this machine has 11\.4\.0"),
     ("11.4.0", "8.6", r"compute capability 8\.6 \(NVIDIA A10\) and this GPU has 9\.0")],
)  # fmt: skip
def test_auto_backend_falls_back_from_an_engine_built_elsewhere(
    artifact: Path, tensorrt_11_on_a_gpu: None, tensorrt: str, capability: str, reason: str
) -> None:
    engine_from(artifact, tensorrt, capability)
    with pytest.warns(UserWarning, match=f"{reason}.*Running on the CPU instead"):
        runtime = load_runtime(artifact, backend="auto")
    assert runtime.backend in ("onnxruntime", "openvino")  # OpenVINO where its INT8 GEMMs are exact
    with pytest.raises(EngineMismatchError, match=f"{reason}: rebuild it with 'trt-quant build"):
        load_runtime(artifact, backend="tensorrt")


# --- TensorRT return values ------------------------------------------------------------------------------


class RefusingContext:
    """An execution context that refuses what ``refuse`` names, as TensorRT does by returning False."""

    def __init__(self, refuse: str = "") -> None:
        self.refuse = refuse
        self.calls: list[tuple[str, Any]] = []

    def _answer(self, call: str, argument: Any) -> bool:
        self.calls.append((call, argument))
        return call != self.refuse

    def set_optimization_profile_async(self, profile: int, stream: int) -> bool:
        return self._answer("profile", profile)

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        return self._answer("shape", (name, shape))

    def set_tensor_address(self, name: str, address: int) -> bool:
        return self._answer("address", name)

    def execute_async_v3(self, stream: int) -> bool:
        return self._answer("execute", stream)


def test_checked_context_raises_on_every_refusal() -> None:
    with pytest.raises(InputError, match=r"refused shape \(2, 700\) for input 'input_ids' in optimization "
                       r"profile 0: pass a shape within"):  # fmt: skip
        CheckedContext(RefusingContext("shape")).set_input_shapes(["input_ids", "attention_mask"], (2, 700))
    with pytest.raises(TrtQuantError, match="refused to switch to optimization profile 1"):
        CheckedContext(RefusingContext("profile")).select_profile(1, stream=0)
    with pytest.raises(TrtQuantError, match="refused the device buffer of tensor 'logits'"):
        CheckedContext(RefusingContext("address")).set_addresses({"logits": 256})
    with pytest.raises(TrtQuantError, match="failed to run the engine"):
        CheckedContext(RefusingContext("execute")).execute(stream=0)
    with pytest.raises(TrtQuantError, match="could not create an execution context"):
        CheckedContext(None)


def test_checked_context_selects_a_profile_only_when_it_changes() -> None:
    raw = RefusingContext()
    context = CheckedContext(raw)
    context.select_profile(0, stream=7)  # TensorRT starts on profile 0: nothing to do
    context.select_profile(1, stream=7)
    context.select_profile(1, stream=7)
    assert raw.calls == [("profile", 1)] and context.profile == 1
    refused = CheckedContext(RefusingContext("profile"))
    with pytest.raises(TrtQuantError):
        refused.select_profile(2, stream=7)
    assert refused.profile == 0  # a refused switch leaves the profile in use recorded


# --- timing cache ---------------------------------------------------------------------------------------


class TimingCaches:
    """TensorRT's timing-cache calls on a builder config, modelled on NvInfer.h: a cache is a set of
    entries serialized as ``TC1:`` + sorted lines; ``create_timing_cache`` returns None for bytes it cannot
    read; ``set_timing_cache`` refuses a cache of another version; ``combine`` adds another cache's
    entries."""

    def __init__(self, version: bytes = b"TC1:") -> None:
        self.version = version
        self.attached: Cache | None = None

    def create_timing_cache(self, data: bytes) -> Cache | None:
        if data and not data.startswith(b"TC"):
            return None
        version, _, body = data.partition(b":")
        return Cache(version + b":" if data else self.version, set(body.split(b"\n")) - {b""})

    def set_timing_cache(self, cache: Cache, ignore_mismatch: bool) -> bool:
        if cache.version != self.version:
            return False
        self.attached = cache
        return True


class Cache:
    def __init__(self, version: bytes, entries: set[bytes]) -> None:
        self.version, self.entries = version, entries

    def combine(self, other: Cache, ignore_mismatch: bool) -> bool:
        if other.version != self.version:
            return False
        self.entries |= other.entries
        return True

    def serialize(self) -> bytes:
        return self.version + b"\n".join(sorted(self.entries))


def test_timing_cache_file_is_read_when_usable(tmp_path: Path) -> None:
    path = tmp_path / "timing.cache"
    path.write_bytes(b"TC1:gemm 64x64\nsoftmax 128")
    config = TimingCaches()
    cache = attach_timing_cache(config, path)
    assert config.attached is cache and cache.entries == {b"gemm 64x64", b"softmax 128"}
    assert attach_timing_cache(TimingCaches(), tmp_path / "absent.cache").entries == set()


@pytest.mark.parametrize("content", [b"\x00garbage", b"TC0:from another TensorRT"])
def test_unusable_timing_cache_starts_empty_with_a_warning(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "timing.cache"
    path.write_bytes(content)
    config = TimingCaches()
    with pytest.warns(UserWarning, match="cannot use the timing cache .*starts from an empty cache"):
        cache = attach_timing_cache(config, path)
    assert config.attached is cache and cache.entries == set()
    cache.entries.add(b"gemm 32x32")
    with pytest.warns(UserWarning, match="cannot be merged .*replaced by this build's cache"):
        save_timing_cache(config, cache, path)
    assert path.read_bytes() == b"TC1:gemm 32x32"


def test_timing_cache_is_merged_with_what_another_build_wrote_meanwhile(tmp_path: Path) -> None:
    path = tmp_path / "timing.cache"
    path.write_bytes(b"TC1:shared")
    first, second = TimingCaches(), TimingCaches()
    first_cache, second_cache = attach_timing_cache(first, path), attach_timing_cache(second, path)
    first_cache.entries.add(b"first")
    second_cache.entries.add(b"second")
    save_timing_cache(first, first_cache, path)
    save_timing_cache(second, second_cache, path)  # read its cache before the first build saved
    assert path.read_bytes() == b"TC1:first\nsecond\nshared"
    assert sorted(item.name for item in tmp_path.iterdir()) == ["timing.cache", "timing.cache.lock"]


def test_concurrent_file_updates_keep_every_entry(tmp_path: Path) -> None:
    path = tmp_path / "cache"

    def add(entry: bytes) -> None:
        def merge(current: bytes) -> bytes:
            time.sleep(0.01)  # widen the window between reading and writing
            return current + entry

        update_file(path, merge)

    entries = [f"<{index}>".encode() for index in range(12)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(add, entries))
    content = path.read_bytes()
    assert sorted(content.replace(b">", b">\n").split()) == sorted(entries)


def test_failed_merge_leaves_the_file_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "cache"
    path.write_bytes(b"kept")

    def fail(current: bytes) -> bytes:
        raise ValueError("merge failed")

    with pytest.raises(ValueError, match="merge failed"):
        update_file(path, fail)
    assert path.read_bytes() == b"kept" and not list(tmp_path.glob(".cache.*"))
