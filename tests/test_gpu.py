"""GPU tests (``pytest -m gpu``): build a TensorRT engine from the tiny INT8 BERT and run it.

Skipped unless TensorRT imports and a CUDA GPU is visible. Tolerance: the engine runs the graph that
``convert_float_precision(..., "fp16")`` produces, and ONNX Runtime runs that same graph on the CPU as the
reference; outputs agree within 2 % of the reference output range (INT8 GEMMs accumulate exactly, the
FP16 parts round in another order on the GPU, and an activation on a rounding boundary may quantize to the
neighbouring INT8 step).
"""

from __future__ import annotations

import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from trt_quant.artifacts import ENGINE, TRT_ONNX, load_manifest, write_manifest
from trt_quant.engine.build import LAYERS_REPORT, BuildConfig, build_engine, parse_profiles
from trt_quant.engine.layer_report import check_engine_layers
from trt_quant.errors import ArtifactError, InputError
from trt_quant.runtime import load_runtime
from trt_quant.runtime.trt import TensorRTRuntime, tensorrt_usable

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not tensorrt_usable(),
        reason="needs an NVIDIA GPU, a CUDA build of torch and TensorRT (pip install 'trt-quant[gpu]')",
    ),
]

TOLERANCE = 2e-2  # of the reference output range
REPEAT_TOLERANCE = 1e-4  # absolute, same engine and shape twice (kernels may sum in another order)
PROFILES = parse_profiles("1,4,8", ["1,16,32", "33,48,64"])
SHAPES = [(1, 1), (1, 8), (4, 16), (8, 32), (2, 33), (3, 64), (4, 16)]  # both profiles, their edges, a repeat


def token_feeds(batch: int, sequence: int, seed: int = 0, dtype: type = np.int64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, sequence), dtype)
    mask[-1, sequence // 2 + 1 :] = 0
    return {
        "input_ids": rng.integers(5, 150, (batch, sequence)).astype(dtype),
        "attention_mask": mask,
        "token_type_ids": np.zeros((batch, sequence), dtype),
    }


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_allclose(actual, expected, rtol=0, atol=REPEAT_TOLERANCE)


@pytest.fixture(scope="module")
def engine_artifact(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny artifact with an engine of two sequence-length profiles."""
    directory = Path(shutil.copytree(tiny_artifact, tmp_path_factory.mktemp("gpu") / "artifact"))
    config = BuildConfig(profiles=tuple(PROFILES), workspace_mib=1024, optimization_level=2,
                         timing_cache=directory.parent / "timing.cache")  # fmt: skip
    build_engine(directory, config)
    return directory


@pytest.fixture(scope="module")
def reference(engine_artifact: Path) -> ort.InferenceSession:
    """ONNX Runtime (CPU) on model_trt.onnx, the graph the engine was built from."""
    return ort.InferenceSession(str(engine_artifact / TRT_ONNX), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def runtime(engine_artifact: Path) -> TensorRTRuntime:
    loaded = load_runtime(engine_artifact, backend="tensorrt")
    assert isinstance(loaded, TensorRTRuntime)
    return loaded


def test_build_records_the_engine_in_the_manifest(engine_artifact: Path) -> None:
    import tensorrt

    manifest = load_manifest(engine_artifact)  # checksums include the engine and the layer report
    record = manifest.engine
    assert record is not None and {ENGINE, LAYERS_REPORT} <= set(manifest.files)
    major, minor = torch.cuda.get_device_capability()
    assert record.tensorrt == tensorrt.__version__ and record.compute_capability == f"{major}.{minor}"
    assert record.gpu == torch.cuda.get_device_name() and record.precision == "fp16"
    assert record.profiles == [profile.to_dict() for profile in PROFILES]
    assert (engine_artifact.parent / "timing.cache").stat().st_size > 0


def test_layer_report_shows_every_quantized_linear_in_int8(engine_artifact: Path) -> None:
    """From the layer types and input formats of the report, not from the text "int8" (which initializer
    names put there anyway). The tiny model's 8-wide heads need not fuse; scripts/gpu_check.py requires
    fusion on MiniLM and BERT-base shapes."""
    record = load_manifest(engine_artifact).engine
    assert record is not None
    graph = onnx.load(str(engine_artifact / record["source"]))
    check = check_engine_layers(graph, (engine_artifact / LAYERS_REPORT).read_text())
    print(check.summary())
    assert check.failures(require_fusion=False) == [] and len(check.int8) == 14


def test_engine_profiles_match_the_build(runtime: TensorRTRuntime) -> None:
    assert runtime.profiles == PROFILES
    assert runtime.dtypes["input_ids"] in (torch.int64, torch.int32)


def test_engine_matches_onnx_runtime(runtime: TensorRTRuntime, reference: ort.InferenceSession) -> None:
    results = []
    for batch, sequence in SHAPES:
        feeds = token_feeds(batch, sequence)
        (expected,) = reference.run(["logits"], feeds)
        results.append((runtime.run(feeds)["logits"], expected))
    outputs = np.concatenate([output.ravel() for output, _ in results])
    expected = np.concatenate([value.ravel() for _, value in results])
    assert np.isfinite(outputs).all()
    assert np.abs(outputs - expected).max() <= TOLERANCE * np.ptp(expected)


def test_repeated_shapes_reuse_buffers_and_give_the_same_result(runtime: TensorRTRuntime) -> None:
    first = runtime.run(token_feeds(2, 16))["logits"]
    runtime.run(token_feeds(2, 40, seed=1))  # the other profile in between
    assert_same(runtime.run(token_feeds(2, 16))["logits"], first)


def test_int32_and_torch_inputs(runtime: TensorRTRuntime) -> None:
    expected = runtime.run(token_feeds(3, 12))["logits"]
    int32 = runtime.run(token_feeds(3, 12, dtype=np.int32))["logits"]
    assert_same(int32, expected)
    tensors = {name: torch.from_numpy(array) for name, array in token_feeds(3, 12).items()}
    assert_same(runtime.run(tensors)["logits"], expected)


def test_run_text(runtime: TensorRTRuntime, engine_artifact: Path) -> None:
    texts = ["the model runs fast", "a small graph of the engine"]
    output = runtime.run_text(texts)["logits"]
    expected = load_runtime(engine_artifact, backend="onnxruntime").run_text(texts)["logits"]
    assert output.shape == expected.shape == (2, 3)
    assert np.abs(output - expected).max() <= 5 * TOLERANCE * np.ptp(expected)  # vs the FP32-float-part graph


def test_auto_backend_picks_tensorrt(engine_artifact: Path) -> None:
    assert load_runtime(engine_artifact).backend == "tensorrt"


def test_cuda_graphs_replay_the_same_result(engine_artifact: Path, runtime: TensorRTRuntime) -> None:
    graphs = TensorRTRuntime(engine_artifact, load_manifest(engine_artifact), cuda_graphs=True)
    feeds = token_feeds(4, 20)
    expected = runtime.run(feeds)["logits"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed capture warns and falls back: not here
        for _ in range(3):  # first run executes and captures, the next ones replay
            assert_same(graphs.run(feeds)["logits"], expected)


def test_cuda_graphs_across_profiles_replay_each_shape_on_its_own_context(
    engine_artifact: Path, runtime: TensorRTRuntime
) -> None:
    """Shape A (profile 0), B (profile 1), A again, B again: a graph captured for A must not replay B's
    profile or shapes; each result equals a run without graphs."""
    graphs = TensorRTRuntime(engine_artifact, load_manifest(engine_artifact), cuda_graphs=True)
    shape_a, shape_b = token_feeds(2, 16, seed=3), token_feeds(3, 40, seed=4)
    expected_a, expected_b = runtime.run(shape_a)["logits"], runtime.run(shape_b)["logits"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for feeds, expected in [(shape_a, expected_a), (shape_b, expected_b)] * 3:
            assert_same(graphs.run(feeds)["logits"], expected)


@pytest.fixture(scope="module")
def short_profile_artifact(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny artifact with an engine whose only profile starts at 16 tokens."""
    directory = Path(shutil.copytree(tiny_artifact, tmp_path_factory.mktemp("gpu16") / "artifact"))
    build_engine(
        directory, BuildConfig(profiles=tuple(parse_profiles("1,4,8", "16,24,32")), optimization_level=2)
    )
    return directory


def test_short_texts_run_on_an_engine_whose_profiles_start_above_them(
    short_profile_artifact: Path, reference: ort.InferenceSession
) -> None:
    runtime = load_runtime(short_profile_artifact, backend="tensorrt")
    cpu = load_runtime(short_profile_artifact, backend="onnxruntime")
    texts = ["a model.", "the new model is fast.", "it is."]
    feeds = cpu.tokenize(texts)
    assert feeds["input_ids"].shape[1] < 16
    (expected,) = reference.run(["logits"], feeds)  # the FP16 graph, unpadded
    output = runtime.run_text(texts)["logits"]
    assert output.shape == expected.shape == (3, 3)
    assert np.abs(output - expected).max() <= TOLERANCE * np.ptp(expected)
    for single, row in zip(runtime.run_texts(texts, batch_size=2), expected, strict=True):
        assert np.abs(single["logits"] - row).max() <= TOLERANCE * np.ptp(expected)


def test_auto_backend_falls_back_for_an_engine_of_another_version(
    engine_artifact: Path, tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(engine_artifact, tmp_path / "copy"))
    manifest = load_manifest(copy)
    assert manifest.engine is not None
    manifest.engine.tensorrt = "0.0.0"
    write_manifest(copy, manifest)
    with pytest.warns(UserWarning, match=r"built with TensorRT 0\.0\.0.*ONNX Runtime"):
        assert load_runtime(copy).backend == "onnxruntime"


def test_threads_share_one_runtime(runtime: TensorRTRuntime) -> None:
    shapes = [(1, 8), (4, 16), (2, 40), (8, 32)] * 4
    expected = [runtime.run(token_feeds(*shape))["logits"] for shape in shapes]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda shape: runtime.run(token_feeds(*shape))["logits"], shapes))
    for result, value in zip(results, expected, strict=True):
        assert_same(result, value)


def test_shape_outside_every_profile_names_the_ranges(runtime: TensorRTRuntime) -> None:
    ranges = "profile 0: batch 1-8, sequence 1-32; profile 1: batch 1-8, sequence 33-64"
    with pytest.raises(InputError, match=ranges):
        runtime.run(token_feeds(9, 8))


def test_engine_from_another_tensorrt_version_is_refused(engine_artifact: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(engine_artifact, tmp_path / "copy"))
    manifest = load_manifest(copy)
    assert manifest.engine is not None
    manifest.engine.tensorrt = "0.0.0"
    write_manifest(copy, manifest)
    with pytest.raises(ArtifactError, match=r"built with TensorRT 0\.0\.0.*trt-quant build"):
        load_runtime(copy, backend="tensorrt")


def test_corrupt_engine_is_refused(engine_artifact: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(engine_artifact, tmp_path / "copy"))
    (copy / ENGINE).write_bytes(b"not an engine")
    with pytest.raises(ArtifactError, match=r"cannot load .*rebuild it"):
        load_runtime(copy, backend="tensorrt", verify=False)
