"""ONNX Runtime backend: numpy/torch/text inputs, thread safety, input validation, corrupt files."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import sentences

from trt_quant.artifacts import INT8_ONNX, load_manifest
from trt_quant.errors import ArtifactError, InputError, TrtQuantError
from trt_quant.runtime import load_runtime
from trt_quant.runtime.ort import cpu_lacks_vnni


@pytest.fixture(scope="module")
def runtime(tiny_artifact: Path):
    return load_runtime(tiny_artifact)


def test_auto_backend_is_a_cpu_backend_without_gpu(runtime) -> None:
    # OpenVINO (installed by the dev extra) runs 8-bit weights exactly only on VNNI CPUs.
    assert runtime.backend == ("onnxruntime" if cpu_lacks_vnni() else "openvino")
    assert runtime.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert runtime.output_names == ["logits"]


def test_numpy_torch_and_text_inputs_give_the_same_outputs(runtime) -> None:
    feeds = runtime.tokenize(["the model is fast.", "a small graph"])
    from_numpy = runtime.run(feeds)["logits"]
    from_torch = runtime.run({name: torch.from_numpy(value) for name, value in feeds.items()})["logits"]
    from_text = runtime.run_text(["the model is fast.", "a small graph"])["logits"]
    assert from_numpy.shape == (2, 3) and from_numpy.dtype == np.float32
    np.testing.assert_array_equal(from_numpy, from_torch)
    np.testing.assert_array_equal(from_numpy, from_text)


def test_int32_ids_are_accepted_and_cast(runtime) -> None:
    feeds = runtime.tokenize(["the model"])
    as_int32 = {name: value.astype(np.int32) for name, value in feeds.items()}
    np.testing.assert_array_equal(runtime.run(as_int32)["logits"], runtime.run(feeds)["logits"])


def test_concurrent_calls_match_sequential_calls(runtime) -> None:
    texts = sentences(40, seed=3)
    jobs = [texts[i : i + 1 + i % 4] for i in range(0, 36)]  # batches of 1 to 4, various lengths
    sequential = [runtime.run_text(job)["logits"] for job in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(lambda job: runtime.run_text(job)["logits"], jobs * 3))
    for index, result in enumerate(concurrent):
        np.testing.assert_array_equal(result, sequential[index % len(jobs)])


def test_float_precision_runs_the_float_graph(tiny_artifact: Path, runtime) -> None:
    float_runtime = load_runtime(tiny_artifact, precision="float")
    feeds = runtime.tokenize(["the model is fast."])
    int8, reference = runtime.run(feeds)["logits"], float_runtime.run(feeds)["logits"]
    assert not np.array_equal(int8, reference)
    assert np.abs(int8 - reference).max() < 0.05 * (np.abs(reference).max() + 1e-6) + 1e-3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda f: {k: v for k, v in f.items() if k != "attention_mask"},
            r"Input 'attention_mask' is missing",
        ),
        (lambda f: {**f, "pixel_values": f["input_ids"]}, r"'pixel_values' is not an input of this model"),
        (
            lambda f: {**f, "input_ids": f["input_ids"].astype(np.float32)},
            r"has dtype float32.*pass int64 ids",
        ),
        (lambda f: {**f, "input_ids": f["input_ids"][0]}, r"has rank 1, the model takes rank 2"),
        (lambda f: {k: np.tile(v, (1, 40)) for k, v in f.items()}, r"exceeds the model's maximum of 64"),
        (lambda f: {**f, "attention_mask": f["attention_mask"][:, :2]}, r"other inputs have"),
    ],
    ids=["missing", "unknown", "float-dtype", "rank", "too-long", "shape-mismatch"],
)
def test_bad_inputs_raise_input_error(runtime, change, message) -> None:
    feeds = runtime.tokenize(["the model is fast ."])
    with pytest.raises(InputError, match=message):
        runtime.run(change(feeds))


def test_unknown_backend_and_precision(tiny_artifact: Path) -> None:
    with pytest.raises(
        TrtQuantError, match=r"Unknown backend 'cuda': use one of auto, onnxruntime, openvino, tensorrt"
    ):
        load_runtime(tiny_artifact, backend="cuda")
    with pytest.raises(TrtQuantError, match=r"Unknown precision 'int4'"):
        load_runtime(tiny_artifact, precision="int4")


def copy_artifact(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_truncated_onnx_is_refused_by_checksum_then_by_onnx_runtime(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    artifact = copy_artifact(tiny_artifact, tmp_path / "a")
    model = artifact / INT8_ONNX
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    with pytest.raises(ArtifactError, match=r"model_int8.onnx was modified since conversion"):
        load_runtime(artifact)
    with pytest.raises(ArtifactError, match=r"the file is corrupt or truncated, convert the model again"):
        load_runtime(artifact, verify=False)


def test_missing_file_is_named(tiny_artifact: Path, tmp_path: Path) -> None:
    artifact = copy_artifact(tiny_artifact, tmp_path / "a")
    (artifact / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(ArtifactError, match=r"tokenizer.json is missing"):
        load_runtime(artifact)


def test_directory_without_manifest_is_not_an_artifact(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"has no manifest.json"):
        load_runtime(tmp_path)
    with pytest.raises(ArtifactError, match=r"does not exist: run 'trt-quant convert' first"):
        load_runtime(tmp_path / "missing")


def test_manifest_records_what_the_graph_has(tiny_artifact: Path) -> None:
    manifest = load_manifest(tiny_artifact)
    assert manifest.family == "bert" and manifest.task == "text-classification"
    assert [(s.name, s.dtype, s.shape) for s in manifest.inputs] == [
        (name, "int64", ["batch", "sequence"]) for name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    assert [(s.name, s.dtype, s.shape) for s in manifest.outputs] == [("logits", "float32", ["batch", 3])]
    assert manifest.quantization.method == "max" and manifest.quantization.calib_samples == 64
    assert manifest.quantization.quantized_linears == 14  # 2 layers x 6, pooler, classifier
    assert set(manifest.files) >= {"model_fp32.onnx", "model_int8.onnx", "tokenizer/tokenizer.json"}
    assert all(len(record["sha256"]) == 64 for record in manifest.files.values())
    assert manifest.accuracy.examples == 32 and manifest.accuracy.mean_cosine > 0.99
    assert set(manifest.versions) >= {"torch", "transformers", "nvidia-modelopt", "onnx", "onnxruntime"}


def test_dequantize_after_lookup_keeps_tables_int8_and_outputs_identical(tiny_artifact: Path) -> None:
    import onnx
    import onnxruntime as ort

    from trt_quant.runtime.ort import dequantize_after_lookup

    shipped = onnx.load(str(tiny_artifact / INT8_ONNX))
    model = onnx.load(str(tiny_artifact / INT8_ONNX))
    assert dequantize_after_lookup(model) == 3  # word, position and token-type tables
    onnx.checker.check_model(model)
    producers = {output: node for node in model.graph.node for output in node.output}
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    gathered = [node.input[0] for node in model.graph.node if node.op_type == "Gather"]
    assert all(producers[name].op_type != "DequantizeLinear" for name in gathered if name in producers)
    tables = [initializers[name] for name in gathered if name.endswith("_int8")]
    assert len(tables) == 3 and all(t.data_type == onnx.TensorProto.INT8 for t in tables)
    assert len(model.SerializeToString()) < 1.02 * len(shipped.SerializeToString())
    feeds = load_runtime(tiny_artifact, backend="onnxruntime").tokenize(sentences(6, seed=2))
    expected = ort.InferenceSession(shipped.SerializeToString()).run(None, feeds)
    got = ort.InferenceSession(model.SerializeToString()).run(None, feeds)
    np.testing.assert_array_equal(got[0], expected[0])
