"""OpenVINO backend: parity with ONNX Runtime on the same artifact, thread safety, input validation."""

from __future__ import annotations

import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from tiny_models import sentences

from trt_quant.artifacts import INT8_ONNX, load_manifest
from trt_quant.errors import ArtifactError, InputError, TrtQuantError
from trt_quant.runtime import load_runtime
from trt_quant.runtime.openvino import OpenVinoRuntime, compile_config
from trt_quant.runtime.ort import cpu_lacks_vnni

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def artifact7(tmp_path_factory: pytest.TempPathFactory, tiny_model, calib_file: Path) -> Path:
    """The tiny BERT classifier with 7-bit weights: exact INT8 GEMMs on every x86 CPU, VNNI or not."""
    from trt_quant.config import QuantConfig
    from trt_quant.convert import convert

    output = tmp_path_factory.mktemp("openvino") / "tiny-bert-7bit"
    config = QuantConfig(calib_samples=64, batch_size=16, max_length=32, weight_bits=7)
    convert(tiny_model("bert", "text-classification"), "text-classification", calib_file, output, config)
    return output


@pytest.fixture(scope="module")
def openvino_runtime(artifact7: Path):
    return load_runtime(artifact7, backend="openvino", threads=2)


@pytest.fixture(scope="module")
def ort_runtime(artifact7: Path):
    return load_runtime(artifact7, backend="onnxruntime", threads=2)


def test_auto_picks_openvino_where_its_int8_is_exact(artifact7: Path, tiny_artifact: Path) -> None:
    assert load_runtime(artifact7).backend == "openvino"
    assert load_runtime(artifact7, precision="float").backend == "onnxruntime"
    # 8-bit weights: OpenVINO only on VNNI CPUs (without VNNI its u8s8 kernels can saturate).
    expected = "onnxruntime" if cpu_lacks_vnni() else "openvino"
    assert load_runtime(tiny_artifact).backend == expected


def test_int8_graph_on_openvino_matches_onnx_runtime(artifact7: Path, openvino_runtime, ort_runtime) -> None:
    texts = sentences(24, seed=5)
    feeds = ort_runtime.tokenize(texts)
    expected = ort_runtime.run(feeds)["logits"]
    got = openvino_runtime.run(feeds)["logits"]
    assert got.shape == expected.shape == (24, 3) and got.dtype == np.float32
    # Same INT8 graph and exact integer GEMMs: equal up to float rounding, while INT8 vs float differs.
    reference = load_runtime(artifact7, backend="onnxruntime", precision="float").run(feeds)["logits"]
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3 * scale)
    assert np.abs(reference - expected).max() > 20 * np.abs(got - expected).max()


def test_float_graph_on_openvino_f32_matches_onnx_runtime(artifact7: Path) -> None:
    reference = load_runtime(artifact7, backend="onnxruntime", precision="float")
    candidate = OpenVinoRuntime(
        artifact7, load_manifest(artifact7), precision="float", inference_precision="f32"
    )
    assert candidate.inference_precision == "f32"
    feeds = reference.tokenize(sentences(8, seed=6))
    np.testing.assert_allclose(candidate.run(feeds)["logits"], reference.run(feeds)["logits"], atol=1e-4)


def test_run_texts_buckets_like_onnx_runtime(openvino_runtime, ort_runtime) -> None:
    texts = sentences(30, seed=7)
    got = openvino_runtime.run_texts(texts, batch_size=4)
    expected = ort_runtime.run_texts(texts, batch_size=4)
    alone = [openvino_runtime.run_text([text])["logits"][0] for text in texts]
    assert len(got) == len(texts)
    scale = np.abs(np.stack(alone)).max()
    for index, (row, reference) in enumerate(zip(got, expected, strict=True)):
        np.testing.assert_allclose(row["logits"], reference["logits"], rtol=0, atol=1e-3 * scale)
        np.testing.assert_allclose(row["logits"], alone[index], rtol=0, atol=1e-4 * scale)


def test_eight_threads_at_once_match_sequential_calls(openvino_runtime) -> None:
    texts = sentences(40, seed=3)
    jobs = [texts[i : i + 1 + i % 4] for i in range(0, 36)]  # batches of 1 to 4, various lengths
    sequential = [openvino_runtime.run_text(job)["logits"] for job in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(lambda job: openvino_runtime.run_text(job)["logits"], jobs * 3))
    for index, result in enumerate(concurrent):
        np.testing.assert_array_equal(result, sequential[index % len(jobs)])


def test_thread_count_and_hint_reach_openvino(artifact7: Path) -> None:
    runtime = OpenVinoRuntime(
        artifact7, load_manifest(artifact7), threads=1, performance_hint="THROUGHPUT", streams=2
    )
    assert int(runtime.compiled.get_property("INFERENCE_NUM_THREADS")) == 1
    assert str(runtime.compiled.get_property("PERFORMANCE_HINT")) == "THROUGHPUT"
    assert int(runtime.compiled.get_property("NUM_STREAMS")) == 1  # never more streams than threads


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda f: {k: v for k, v in f.items() if k != "attention_mask"},
            r"Input 'attention_mask' is missing",
        ),
        (
            lambda f: {**f, "input_ids": f["input_ids"].astype(np.float32)},
            r"has dtype float32.*pass int64 ids",
        ),
        (lambda f: {**f, "input_ids": f["input_ids"][0]}, r"has rank 1, the model takes rank 2"),
        (lambda f: {k: np.tile(v, (1, 40)) for k, v in f.items()}, r"exceeds the model's maximum of 64"),
        (lambda f: {**f, "attention_mask": f["attention_mask"][:, :2]}, r"other inputs have"),
    ],
    ids=["missing", "float-dtype", "rank", "too-long", "shape-mismatch"],
)
def test_bad_inputs_raise_input_error(openvino_runtime, change, message) -> None:
    feeds = openvino_runtime.tokenize(["the model is fast ."])
    with pytest.raises(InputError, match=message):
        openvino_runtime.run(change(feeds))
    assert openvino_runtime.run(feeds)["logits"].shape == (1, 3)  # still serving after the error


def test_bad_options_and_corrupt_file_are_named(artifact7: Path, tmp_path: Path) -> None:
    with pytest.raises(TrtQuantError, match=r"^Unknown OpenVINO performance hint 'FAST': use one of LATENCY"):
        compile_config(performance_hint="FAST")
    with pytest.raises(
        TrtQuantError, match=r"^Unknown inference precision 'int4': use one of f32, bf16, f16\.$"
    ):
        compile_config(inference_precision="int4")
    artifact = tmp_path / "a"
    shutil.copytree(artifact7, artifact)
    model = artifact / INT8_ONNX
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    with pytest.raises(
        ArtifactError, match=r"^OpenVINO cannot load .*corrupt or truncated, convert the model again\.$"
    ):
        load_runtime(artifact, backend="openvino", verify=False)


def test_without_openvino_auto_is_onnx_runtime_and_openvino_is_named(
    artifact7: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    assert load_runtime(artifact7).backend == "onnxruntime"
    with pytest.raises(
        TrtQuantError, match=r"^OpenVINO is not installed: pip install 'trt-quant\[openvino\]'"
    ):
        load_runtime(artifact7, backend="openvino")


def test_demo_table_reports_the_fastest_cpu_backend(tiny_artifact: Path) -> None:
    from rich.console import Console

    from trt_quant.bench.latency import Latency
    from trt_quant.cli.reports import demo_table
    from trt_quant.convert import ConvertReport
    from trt_quant.cpuinfo import cpu_info
    from trt_quant.demo import DemoResult

    def latency(p50: float) -> Latency:
        return Latency(8, 128, 30, p50, p50 + 1, p50 + 2, p50, 8000 / p50)

    result = DemoResult(
        ConvertReport(tiny_artifact, load_manifest(tiny_artifact)),
        latency(60.0),
        {"onnxruntime": latency(30.0), "openvino": latency(20.0)},
        cpu_info(),
    )
    assert result.fastest_backend == "openvino" and result.int8_latency.p50_ms == 20.0
    console = Console(width=200, record=True)
    console.print(demo_table(result))
    text = console.export_text()
    assert "INT8 (fastest CPU backend: openvino), batch 8, sequence 128" in text
    assert "│ latency p50 " in text and "60.0 ms" in text and "3.00x faster" in text
    assert "INT8 p50 on onnxruntime" in text and "2.00x faster" in text
    assert f"cpu: {cpu_info().summary()}" in " ".join(text.split())  # the caption wraps at the table's width
