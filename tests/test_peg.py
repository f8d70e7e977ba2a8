"""Per-embedding-group quantization: per-tensor Q/DQ only, TensorRT rules hold, ONNX Runtime = PyTorch."""

from __future__ import annotations

import re

import numpy as np
import onnxruntime as ort
import pytest
import torch
from pipeline_steps import SteppedConversion, convert_step_by_step
from tiny_models import sentences

from trt_quant.config import QuantConfig
from trt_quant.onnx.check import check_model
from trt_quant.quantize.peg import GroupedLinear, channel_groups


def assert_int8_graph_matches_pytorch(stepped: SteppedConversion) -> None:
    """The INT8 graph's own semantics (no ONNX Runtime fusions) within 1e-3 of the output range."""
    feeds = stepped.batches[-1]
    with torch.no_grad():
        expected = stepped.quantized_model.run(feeds)[0].numpy()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(stepped.int8_onnx), options, providers=["CPUExecutionProvider"])
    got = session.run(None, {k: v.numpy() for k, v in feeds.items()})[0]
    assert np.abs(got - expected).max() <= 1e-3 * float(expected.max() - expected.min())


def test_channel_groups_sort_by_range_and_cover_every_channel() -> None:
    ranges = torch.tensor([0.1, 9.0, 0.2, 0.3, 8.0, 0.4])
    groups = channel_groups(ranges, 2, permute=True)
    assert [g.tolist() for g in groups] == [[0, 2, 3], [1, 4, 5]]
    assert [g.tolist() for g in channel_groups(ranges, 3, permute=False)] == [[0, 1], [2, 3], [4, 5]]


def test_grouped_linear_equals_the_linear_in_float() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(12, 5)
    grouped = GroupedLinear(linear, channel_groups(torch.rand(12), 3, permute=True))
    inputs = torch.randn(2, 7, 12)
    torch.testing.assert_close(grouped(inputs), linear(inputs), rtol=1e-5, atol=1e-6)


def test_peg_exports_per_tensor_qdq_that_matches_pytorch(tiny_model, tmp_path) -> None:
    config = QuantConfig(calib_samples=48, max_length=32, peg_groups=4)
    stepped = convert_step_by_step(
        tiny_model("bert", "feature-extraction"),
        "feature-extraction",
        sentences(64, seed=2),
        tmp_path,
        config,
    )
    graph = stepped.int8_graph
    assert not [f for f in check_model(graph) if f.severity == "error"]
    # every activation QuantizeLinear has a scalar scale: per-tensor only
    producer = {o: n for n in graph.graph.node for o in n.output}
    constants = {t.name for t in graph.graph.initializer}
    for node in graph.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in constants:
            scale_node = producer.get(node.input[1])
            scale = scale_node.attribute[0].t if scale_node is not None else None
            assert scale is None or len(scale.dims) == 0, node.name
    # 2 layers x 2 feed-forward Linears x 4 groups, plus 4 attention Linears x 2 layers, plus nothing else
    matmuls_with_weights = [
        n
        for n in graph.graph.node
        if n.op_type == "MatMul"
        and producer.get(n.input[1]) is not None
        and producer[n.input[1]].op_type == "DequantizeLinear"
    ]
    assert len(matmuls_with_weights) == 2 * 2 * 4 + 2 * 4
    assert_int8_graph_matches_pytorch(stepped)


@pytest.mark.parametrize("family", ["bert", "roberta", "xlm-roberta", "electra", "distilbert"])
def test_attention_quantization_exports_the_fused_int8_attention_pattern(
    tiny_model, tmp_path, family
) -> None:
    """Q/DQ on query and key before Q.K^T and on the softmax output and value before P.V; ONNX = PyTorch."""
    config = QuantConfig(calib_samples=48, max_length=32, quantize_attention=True)
    stepped = convert_step_by_step(
        tiny_model(family, "feature-extraction"),
        "feature-extraction",
        sentences(64, seed=4),
        tmp_path,
        config,
    )
    graph = stepped.int8_graph.graph
    producer = {o: n for n in graph.node for o in n.output}

    def dequantized(name: str) -> bool:
        node = producer.get(name)
        while node is not None and node.op_type in ("Transpose", "Reshape"):
            node = producer.get(node.input[0])
        return node is not None and node.op_type == "DequantizeLinear"

    # Q.K^T and P.V: ".../attention/self/MatMul(_1)" (DistilBERT: ".../attention/MatMul(_1)")
    attention_matmuls = [
        n
        for n in graph.node
        if n.op_type == "MatMul" and re.search(r"/attention(/self)?/MatMul(_1)?$", n.name)
    ]
    assert len(attention_matmuls) == 4  # Q.K^T and P.V in each of 2 layers
    assert all(dequantized(n.input[0]) and dequantized(n.input[1]) for n in attention_matmuls)
    assert not [f for f in check_model(stepped.int8_graph) if f.severity == "error"]
    assert_int8_graph_matches_pytorch(stepped)


def test_attention_quantization_refuses_deberta(tiny_model, tmp_path) -> None:
    from trt_quant.errors import TrtQuantError

    with pytest.raises(TrtQuantError, match=r"Attention quantization is not available for deberta-v2"):
        convert_step_by_step(
            tiny_model("deberta-v2", "feature-extraction"),
            "feature-extraction",
            sentences(32),
            tmp_path,
            QuantConfig(calib_samples=16, max_length=32, quantize_attention=True),
        )
