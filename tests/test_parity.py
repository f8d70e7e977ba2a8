"""Every family x task: ONNX Runtime matches PyTorch (float and fake-quantized), Q/DQ where it belongs,
and the graph passes the TensorRT rules check before and after the FP16 conversion.

All 45 pairs are quantized and exported in this one process, as Model Optimizer registers its quantized
replacements for transformers classes process-wide: parity must survive that.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from pipeline_steps import SteppedConversion, convert_step_by_step
from tiny_models import FAMILIES, TASKS, sentences

from trt_quant.config import QuantConfig
from trt_quant.onnx.check import check_model
from trt_quant.onnx.precision import convert_float_precision
from trt_quant.quantize.quantizers import WEIGHT_QUANTIZER, quantized_linears, summarize
from trt_quant.runtime.ort import create_session

CONFIG = QuantConfig(calib_samples=48, batch_size=16, max_length=32)


def run_onnx(path: Path, feeds: dict[str, torch.Tensor], optimize: bool) -> list[np.ndarray]:
    """Run with the runtime's own session (optimized) or with every graph optimization off (the graph's
    plain semantics: DequantizeLinear then float MatMul)."""
    if optimize:
        session = create_session(path)
    else:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {name: value.numpy() for name, value in feeds.items()})  # type: ignore[attr-defined]


@pytest.fixture(
    scope="module", params=[(f, t) for f in FAMILIES for t in TASKS], ids=lambda p: f"{p[0]}-{p[1]}"
)
def stepped(
    request: pytest.FixtureRequest,
    tiny_model: Callable[[str, str], Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> SteppedConversion:
    family, task = request.param
    return convert_step_by_step(
        tiny_model(family, task),
        task,
        sentences(64, seed=1),
        tmp_path_factory.mktemp(f"parity-{family}-{task}"),
        CONFIG,
    )


def test_float_onnx_matches_pytorch_float(stepped: SteppedConversion) -> None:
    feeds = stepped.batches[-1]
    with torch.no_grad():
        expected = [t.numpy() for t in stepped.float_model.run(feeds)]
    for want, got in zip(expected, run_onnx(stepped.float_onnx, feeds, optimize=True), strict=True):
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4


def test_int8_onnx_matches_pytorch_fake_quantized(stepped: SteppedConversion) -> None:
    """The INT8 graph's own semantics (what TensorRT consumes) equal the fake-quantized PyTorch model."""
    feeds = stepped.batches[-1]
    with torch.no_grad():
        expected = [t.numpy() for t in stepped.quantized_model.run(feeds)]
    for want, got in zip(expected, run_onnx(stepped.int8_onnx, feeds, optimize=False), strict=True):
        output_range = float(want.max() - want.min())
        assert np.abs(got - want).max() <= 1e-3 * output_range


def test_optimized_onnx_runtime_int8_stays_close(stepped: SteppedConversion) -> None:
    """The runtime's optimized session runs fused integer kernels (exact U8U8 ones on CPUs without VNNI,
    where U8S8 would saturate); their requantization rounds differently, so it is held to cosine >= 0.999."""
    feeds = stepped.batches[-1]
    with torch.no_grad():
        expected = [t.numpy().ravel() for t in stepped.quantized_model.run(feeds)]
    for want, got in zip(expected, run_onnx(stepped.int8_onnx, feeds, optimize=True), strict=True):
        cosine = float(np.dot(want, got.ravel()) / (np.linalg.norm(want) * np.linalg.norm(got)))
        assert cosine >= 0.999


def _constant(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    for tensor in graph.initializer:
        if tensor.name == name:
            return numpy_helper.to_array(tensor)
    for node in graph.node:
        if node.op_type == "Constant" and name in node.output:
            return numpy_helper.to_array(node.attribute[0].t)
    return None


def quantized_linear_calls(stepped: SteppedConversion) -> int:
    """How many times one forward pass runs a quantized Linear (ALBERT runs its shared ones once per layer)."""
    linears = quantized_linears(stepped.quantized_model)
    enabled = [m for m in linears.values() if getattr(m, WEIGHT_QUANTIZER).is_enabled]
    calls = []
    hooks = [module.register_forward_pre_hook(lambda *_: calls.append(1)) for module in enabled]
    try:
        with torch.no_grad():
            stepped.quantized_model.run(stepped.batches[0])
    finally:
        for hook in hooks:
            hook.remove()
    assert len(enabled) == summarize(stepped.quantized_model).quantized_linears
    return len(calls)


def test_every_quantized_matmul_has_qdq_on_both_inputs(stepped: SteppedConversion) -> None:
    graph = stepped.int8_graph.graph
    producer = {output: node for node in graph.node for output in node.output}
    quantized_matmuls = 0
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        sources = [producer.get(name) for name in node.input[:2]]
        if not any(s is not None and s.op_type == "DequantizeLinear" for s in sources):
            continue
        quantized_matmuls += 1
        activation, weight = sources
        assert activation is not None and activation.op_type == "DequantizeLinear", node.name
        # a computed activation is quantized in the graph; one the exporter folded to a constant
        # (DeBERTa's relative position embeddings) is stored quantized
        source = producer.get(activation.input[0])
        assert (source is not None and source.op_type == "QuantizeLinear") or _constant(
            graph, activation.input[0]
        ).dtype == np.int8, node.name
        assert weight is not None and weight.op_type == "DequantizeLinear", node.name
        weight_values = _constant(graph, weight.input[0])
        assert weight_values is not None and weight_values.dtype == np.int8, node.name
    assert quantized_matmuls == quantized_linear_calls(stepped)
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero_point = _constant(graph, node.input[2])
            assert zero_point is not None and zero_point.dtype == np.int8 and not zero_point.any(), node.name


# These families export without data-dependent control flow (ModernBERT's sliding-window mask and rotary
# positions included): no If, Loop or Scan node in either graph.
CONTROL_FLOW_FREE = ("xlm-roberta", "mpnet", "modernbert", "albert")


def test_graph_passes_the_tensorrt_check_before_and_after_fp16(stepped: SteppedConversion) -> None:
    graph = stepped.int8_graph
    for model in (graph, convert_float_precision(graph, "fp16")):
        errors = [f"{f.rule} {f.node}" for f in check_model(model) if f.severity == "error"]
        assert errors == []
    if stepped.loaded.recipe.family in CONTROL_FLOW_FREE:
        for path in (stepped.float_onnx, stepped.int8_onnx):
            ops = {node.op_type for node in onnx.load(str(path)).graph.node}
            assert ops.isdisjoint({"If", "Loop", "Scan"})
