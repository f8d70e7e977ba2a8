"""model_trt.onnx, the TensorRT-ready graph written without a GPU: every family and task, each graph fix.

Each converted tiny artifact gets ``write_tensorrt_onnx``; the file must pass ``trt-quant check`` with no
error and no control flow, run on ONNX Runtime within 2 % (of the output range) of the INT8 graph, and
show each fix: attention scale folded into the query projection, FP16 embedding tables, DequantizeLinear
directly on both inputs of every quantized MatMul, mean pooling in FP32 up to the output.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, numpy_helper
from tiny_models import sentences

from trt_quant.artifacts import INT8_ONNX, TRT_ONNX, EngineRecord, load_manifest, write_manifest
from trt_quant.cli.main import main
from trt_quant.config import QuantConfig
from trt_quant.convert import convert
from trt_quant.engine import build as engine
from trt_quant.errors import ArtifactError
from trt_quant.onnx.check import check_onnx
from trt_quant.onnx.tensorrt_graph import fold_attention_scales
from trt_quant.onnx.tensorrt_onnx import write_tensorrt_onnx
from trt_quant.runtime.ort import create_session, session_options, unshare_dequantized_initializers

TOLERANCE = 2e-2  # of the INT8 graph's output range; FP16 rounding measures about 0.3 %
LAYERS, HEAD_SIZE = 2, 8  # tiny models: 2 layers, hidden 32 in 4 heads
FAMILY_TASKS = [
    ("roberta", "feature-extraction"),
    ("deberta-v2", "text-classification"),
    ("electra", "token-classification"),
    ("distilbert", "question-answering"),
]
BERT_TASKS = ["feature-extraction", "sentence-embedding", "token-classification", "question-answering"]


@pytest.fixture(scope="module")
def artifact_of(
    tiny_model: Callable[[str, str], Path], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str, str, bool], Path]:
    """Factory: a converted tiny artifact of (family, task, quantize_attention), calibrated on 32 rows."""
    calib = tmp_path_factory.mktemp("calib32") / "calib.txt"
    calib.write_text("\n".join(sentences(32, seed=3)) + "\n", encoding="utf-8")
    cache: dict[tuple[str, str, bool], Path] = {}

    def build(family: str, task: str, quantize_attention: bool = False) -> Path:
        key = (family, task, quantize_attention)
        if key not in cache:
            output = tmp_path_factory.mktemp("trt") / f"{family}-{task}"
            config = QuantConfig(
                calib_samples=32, batch_size=16, max_length=16, quantize_attention=quantize_attention
            )
            convert(tiny_model(family, task), task, calib, output, config)
            cache[key] = output
        return cache[key]

    return build


def feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Two rows of 12 tokens, the second padded after 7."""
    rng = np.random.default_rng(0)
    mask = np.ones((2, 12), np.int64)
    mask[1, 7:] = 0
    values = {"input_ids": rng.integers(5, 140, (2, 12)), "attention_mask": mask}
    return {
        v.name: values.get(v.name, np.zeros((2, 12), np.int64)).astype(np.int64) for v in model.graph.input
    }


def run(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """ONNX Runtime on CPU with exact integer GEMMs (its fast U8S8 kernels saturate without VNNI)."""
    model = copy.deepcopy(model)
    unshare_dequantized_initializers(model)  # a weight several MatMuls read (DeBERTa's key projection)
    options = session_options(threads=1, exact_int8=True)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, inputs)


def value_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model).graph
    types = {tensor.name: tensor.data_type for tensor in model.graph.initializer}
    for value in [*inferred.input, *inferred.value_info, *inferred.output]:
        types[value.name] = value.type.tensor_type.elem_type
    return types


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {name: node for node in model.graph.node for name in node.output}


def is_weight(model: onnx.ModelProto, name: str) -> bool:
    """A constant, or the DequantizeLinear of one."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    node = producers(model).get(name)
    if node is not None and node.op_type == "DequantizeLinear":
        name = node.input[0]
        node = producers(model).get(name)
    return name in initializers or (node is not None and node.op_type == "Constant")


def attention_products(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Q.K^T: for each Softmax, the nearest MatMul of two activations before it (breadth first)."""
    by_output = producers(model)
    found = []
    for softmax in (node for node in model.graph.node if node.op_type == "Softmax"):
        queue = [softmax.input[0]]
        while queue:
            node = by_output.get(queue.pop(0))
            if node is None:
                continue
            if node.op_type == "MatMul" and not any(is_weight(model, name) for name in node.input):
                found.append(node)
                break
            queue.extend(node.input)
    assert found
    return found


def check_tensorrt_onnx(artifact: Path, folded: int = LAYERS) -> onnx.ModelProto:
    """Write model_trt.onnx and check what every family and task shares; return the graph."""
    record = write_tensorrt_onnx(artifact)
    path = artifact / TRT_ONNX
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest = load_manifest(artifact)  # verifies every checksum, model_trt.onnx's included
    assert manifest.tensorrt_onnx == record and record.sha256 == digest
    assert manifest.files[TRT_ONNX]["sha256"] == digest
    assert record.precision == "fp16" and record.fp32_islands is False
    assert record.edits["attention_scales_folded"] == folded

    findings = check_onnx(path)
    assert [f for f in findings if f.severity == "error" or f.rule == "control-flow"] == []

    model, int8 = onnx.load(str(path)), onnx.load(str(artifact / INT8_ONNX))
    types, by_output = value_types(model), producers(model)
    # DequantizeLinear directly on both inputs of every quantized MatMul, both in FP16
    quantized = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in by_output]
    quantized = [n for n in quantized if by_output[n.input[1]].op_type == "DequantizeLinear"]
    assert len(quantized) >= 6 * LAYERS
    for node in quantized:
        assert [by_output[name].op_type for name in node.input[:2]] == ["DequantizeLinear"] * 2, node.name
        assert {types[name] for name in node.input[:2]} == {TensorProto.FLOAT16}, node.name
    # embedding tables: FP16 constants where the INT8 graph dequantizes INT8 rows before the Gather
    int8_by_output = producers(int8)
    lookups = {
        n.name
        for n in int8.graph.node
        if n.op_type == "Gather"
        and getattr(int8_by_output.get(n.input[0]), "op_type", "") == "DequantizeLinear"
    }
    assert lookups and record.edits["embedding_tables_as_constants"] == len(lookups)
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    tables = [n.input[0] for n in model.graph.node if n.name in lookups]
    assert len(tables) == len(lookups)
    assert all(initializers[name].data_type == TensorProto.FLOAT16 for name in tables)
    # the attention scale is on the query: no constant Mul/Div right after Q.K^T
    if folded:
        for product in attention_products(model):
            (reader,) = [n for n in model.graph.node if product.output[0] in n.input]
            assert reader.op_type not in ("Mul", "Div"), product.name
    # ONNX Runtime runs it, close to the INT8 graph
    inputs = feeds(int8)
    for expected, actual in zip(run(int8, inputs), run(model, inputs), strict=True):
        assert actual.dtype == np.float32 and np.isfinite(actual).all()
        assert np.abs(actual - expected).max() <= TOLERANCE * np.ptp(expected)
    return model


def test_default_bert_artifact(tiny_artifact: Path, tmp_path: Path) -> None:
    artifact = tmp_path / "bert"
    shutil.copytree(tiny_artifact, artifact)
    check_tensorrt_onnx(artifact)


@pytest.mark.parametrize(("family", "task"), FAMILY_TASKS)
def test_every_family(artifact_of: Callable[..., Path], family: str, task: str) -> None:
    artifact = artifact_of(family, task)
    # DeBERTa divides the key by sqrt(3d) before the product already: nothing to fold
    model = check_tensorrt_onnx(artifact, folded=0 if family == "deberta-v2" else LAYERS)
    if family == "deberta-v2":
        products = [n for n in model.graph.node if n.name.endswith("attention/self/MatMul")]
        assert len(products) == LAYERS
        assert all(producers(model)[product.input[1]].op_type == "Div" for product in products)


@pytest.mark.parametrize("task", BERT_TASKS)
def test_every_task_with_quantized_attention(artifact_of: Callable[..., Path], task: str) -> None:
    artifact = artifact_of("bert", task, True)
    model = check_tensorrt_onnx(artifact)
    by_output = producers(model)
    for softmax in (node for node in model.graph.node if node.op_type == "Softmax"):
        readers = [node for node in model.graph.node if softmax.output[0] in node.input]
        assert [node.op_type for node in readers] == ["QuantizeLinear"]  # no Cast between them
    # the query's Q/DQ scale carries the folded 1/sqrt(d)
    int8 = onnx.load(str(artifact / INT8_ONNX))
    for product, original in zip(attention_products(model), attention_products(int8), strict=True):
        scale = onnx_constant(model, by_output[product.input[0]].input[1])
        before = onnx_constant(int8, producers(int8)[original.input[0]].input[1])
        np.testing.assert_allclose(scale, before * HEAD_SIZE**-0.5, rtol=1e-3)  # FP16 rounding


def onnx_constant(model: onnx.ModelProto, name: str) -> np.ndarray:
    for tensor in model.graph.initializer:
        if tensor.name == name:
            return numpy_helper.to_array(tensor).astype(np.float32)
    node = producers(model)[name]
    return numpy_helper.to_array(node.attribute[0].t).astype(np.float32)


def test_mean_pooling_stays_fp32_until_the_output(artifact_of: Callable[..., Path]) -> None:
    model = onnx.load(str(artifact_of("bert", "sentence-embedding", True) / TRT_ONNX))
    types, by_output = value_types(model), producers(model)
    divide = by_output["sentence_embedding"]
    assert divide.op_type == "Div"  # no Cast back to FP32 at the end: it never left FP32
    assert [types[name] for name in divide.input] == [TensorProto.FLOAT] * 2
    assert [by_output[name].op_type for name in divide.input] == ["ReduceSum", "Clip"]
    assert by_output[by_output[divide.input[1]].input[0]].op_type == "ReduceSum"


def test_folding_the_attention_scale_keeps_the_fp32_outputs(tiny_artifact: Path) -> None:
    original = onnx.load(str(tiny_artifact / INT8_ONNX))
    folded = onnx.ModelProto()
    folded.CopyFrom(original)
    assert fold_attention_scales(folded) == LAYERS
    scales = [n for n in folded.graph.node if n.op_type == "Mul" and "attention/self/Mul" in n.name]
    assert scales == []
    inputs = feeds(original)
    (expected,), (actual,) = run(original, inputs), run(folded, inputs)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * np.ptp(expected))


def test_deberta_exports_without_if(artifact_of: Callable[..., Path]) -> None:
    artifact = artifact_of("deberta-v2", "text-classification")
    for name in ("model_fp32.onnx", INT8_ONNX):
        model = onnx.load(str(artifact / name))
        assert [n.name for n in model.graph.node if n.op_type in ("If", "Loop", "Scan")] == [], name
    from transformers.models.deberta_v2 import modeling_deberta_v2

    patched = modeling_deberta_v2.build_rpos
    query, key = torch.zeros(4, 5, 8), torch.zeros(4, 7, 8)
    relative = torch.arange(25).reshape(1, 5, 5)
    assert patched(query, query, relative, 16, 64) is relative  # self-attention: lengths are equal
    torch.testing.assert_close(
        patched(query, key, relative, 16, 64), patched.scripted(query, key, relative, 16, 64)
    )


def test_build_parses_exactly_model_trt_onnx(tiny_artifact: Path, tmp_path: Path, monkeypatch) -> None:
    artifact = tmp_path / "bert"
    shutil.copytree(tiny_artifact, artifact)
    write_tensorrt_onnx(artifact, "bf16")
    written = (artifact / TRT_ONNX).read_bytes()
    parsed: list[bytes] = []

    class Stop(Exception):
        pass

    def parse(onnx_bytes: bytes, *args: object) -> None:
        parsed.append(onnx_bytes)
        raise Stop

    monkeypatch.setattr(engine, "build_plan_from_onnx", parse)
    with pytest.raises(Stop):
        engine.build_engine(artifact, engine.BuildConfig(precision="bf16"))
    assert parsed == [written]


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["trt-quant", *map(str, args)])
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out + captured.err


def test_cli_onnx_only_needs_no_tensorrt(tiny_artifact: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    artifact = tmp_path / "bert"
    shutil.copytree(tiny_artifact, artifact)
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt fails, as without TensorRT
    code, output = run_cli(monkeypatch, capsys, "build", artifact, "--onnx-only", "--precision", "bf16")
    assert code == 0, output
    assert f"wrote {artifact / TRT_ONNX} (bf16" in output.replace("\n", "")  # rich wraps long paths
    model = onnx.load(str(artifact / TRT_ONNX))
    dequantize = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert {value_types(model)[n.input[1]] for n in dequantize} == {TensorProto.BFLOAT16}
    assert load_manifest(artifact).tensorrt_onnx.precision == "bf16"

    code, output = run_cli(monkeypatch, capsys, "build", artifact, "--onnx-only", "--fp32-islands")
    assert code == 0, output
    record = load_manifest(artifact).tensorrt_onnx
    assert record.precision == "fp16" and record.fp32_islands is True
    types = value_types(onnx.load(str(artifact / TRT_ONNX)))
    softmax = [n for n in onnx.load(str(artifact / TRT_ONNX)).graph.node if n.op_type == "Softmax"]
    assert {types[n.output[0]] for n in softmax} == {TensorProto.FLOAT}


def test_cli_onnx_only_refuses_a_directory_without_artifact(tmp_path: Path, monkeypatch, capsys) -> None:
    code, output = run_cli(monkeypatch, capsys, "build", tmp_path, "--onnx-only")
    assert code == 2 and "Traceback" not in output
    assert "has no manifest.json, so it is not a trt-quant artifact" in output
    assert not (tmp_path / TRT_ONNX).exists()
    with pytest.raises(ArtifactError, match="does not exist"):
        write_tensorrt_onnx(tmp_path / "missing")


def test_rewriting_model_trt_onnx_warns_when_an_engine_was_built_from_another(
    tiny_artifact: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    artifact = tmp_path / "bert"
    shutil.copytree(tiny_artifact, artifact)
    record = write_tensorrt_onnx(artifact)
    manifest = load_manifest(artifact)
    manifest.engine = EngineRecord("10.13", "NVIDIA A10", "8.6", source_sha256=record.sha256)  # as built
    write_manifest(artifact, manifest)
    with caplog.at_level(logging.WARNING, logger="trt_quant"):
        write_tensorrt_onnx(artifact)  # the same graph again: the engine still matches
        assert caplog.records == []
        write_tensorrt_onnx(artifact, "bf16")
    (warning,) = caplog.records
    assert warning.getMessage() == (
        "The artifact's model.plan was not built from this model_trt.onnx: run 'trt-quant build' "
        "without --onnx-only to rebuild it."
    )


@pytest.mark.parametrize(
    ("family", "task"),
    [
        ("xlm-roberta", "sentence-embedding"),
        ("mpnet", "text-classification"),
        ("modernbert", "token-classification"),
        ("albert", "question-answering"),
    ],
)
def test_new_families_get_a_checked_tensorrt_graph(
    artifact_of: Callable[..., Path], family: str, task: str
) -> None:
    """The families added after the TensorRT-ready graph: model_trt.onnx passes the check (no control
    flow, DequantizeLinear on both inputs of every quantized GEMM) and computes what the INT8 graph does."""
    artifact = artifact_of(family, task)
    write_tensorrt_onnx(artifact)
    findings = check_onnx(artifact / TRT_ONNX)
    assert [f for f in findings if f.severity == "error" or f.rule == "control-flow"] == [], findings
    model = onnx.load(str(artifact / TRT_ONNX))
    by_output = producers(model)
    quantized = [
        n
        for n in model.graph.node
        if n.op_type in ("MatMul", "Gemm")
        and getattr(by_output.get(n.input[1]), "op_type", "") == "DequantizeLinear"
    ]
    assert quantized and all(by_output[n.input[0]].op_type == "DequantizeLinear" for n in quantized)
    inputs = feeds(model)  # sessions as trt-quant's runtime opens them (shared INT8 weights unshared)
    inputs["input_ids"] %= load_manifest(artifact).vocab_size  # XLM-R's tiny SentencePiece vocabulary
    [want, *_] = create_session(artifact / INT8_ONNX, 1, exact_int8=True).run(None, inputs)  # type: ignore[attr-defined]
    [got, *_] = create_session(artifact / TRT_ONNX, 1, exact_int8=True).run(None, inputs)  # type: ignore[attr-defined]
    assert np.abs(got.astype(np.float32) - want).max() <= 0.05 * float(np.abs(want).max())
