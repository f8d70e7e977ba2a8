"""The TensorRT-ready graph: the rewrites that turn an exported (INT8) graph into ``model_trt.onnx``.

:func:`tensorrt_graph` applies, in order:

1. :func:`embedding_tables_to_constants`: a constant table -> DequantizeLinear -> Gather becomes a float
   constant table (FP16 after step 3), so no engine dequantizes a whole table on every call; the compact
   INT8 storage stays in ``model_int8.onnx``.
2. :func:`fold_attention_scales`: the 1/sqrt(d) Mul (or Div) after the first attention MatMul moves into
   the query projection's weight scales (or float weights) and bias, and into the scales of any Q/DQ on
   the query path, so the scale sits on Q before the product, where TensorRT's fused attention wants it.
   Scaling a DequantizeLinear's scales is exact: the quantized weights are not touched.
3. :func:`~trt_quant.onnx.precision.convert_float_precision`: the float part in FP16 (or BF16), Q/DQ with
   half-precision scales directly on their MatMuls, optionally FP32 LayerNorm/Softmax islands.

Quantize/DequantizeLinear are recognised whatever their quantized type (INT8, FP8, INT4).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from trt_quant.onnx import graph
from trt_quant.onnx.export import remove_unused
from trt_quant.onnx.precision import convert_float_precision

SHAPE_OPS = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity")


@dataclass
class TensorRTGraph:
    """A TensorRT-ready graph and how many of each rewrite it received."""

    model: onnx.ModelProto
    edits: dict[str, int] = field(default_factory=dict)


def _single_use(tensor: gs.Tensor, outputs: set[str]) -> bool:
    """Whether exactly one node reads ``tensor`` and it is not a graph output."""
    return len(tensor.outputs) == 1 and tensor.name not in outputs


def dequantize(values: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int) -> np.ndarray:
    """ONNX DequantizeLinear of constant ``values`` (any quantized type) in FP32."""
    shape = [1] * values.ndim
    if scale.size > 1:
        shape[axis % values.ndim] = scale.size
    result = values.astype(np.float32)
    if zero_point is not None:
        result = result - zero_point.astype(np.float32).reshape(shape if zero_point.size > 1 else [1])
    return (result * scale.astype(np.float32).reshape(shape)).astype(np.float32)


def embedding_tables_to_constants(model: onnx.ModelProto) -> int:
    """Replace each constant table -> DequantizeLinear read only as a Gather's data by the dequantized FP32
    table; return how many tables were replaced."""
    with graph.edit(model, cleanup=False) as editor:
        return _embedding_tables_to_constants(editor)


def _embedding_tables_to_constants(editor: graph.Editor) -> int:
    outputs = {tensor.name for tensor in editor.graph.outputs}
    replaced = 0
    for node in list(editor.graph.nodes):
        if node.op != "DequantizeLinear" or node.outputs[0].name in outputs:
            continue
        readers = graph.readers(node.outputs[0])
        if not readers or any(r.op != "Gather" or r.inputs[0] is not node.outputs[0] for r in readers):
            continue
        values, scale = graph.constant_value(node.inputs[0]), graph.constant_value(node.inputs[1])
        zero_point = graph.constant_value(node.inputs[2]) if len(node.inputs) > 2 else None
        if values is None or scale is None or scale.ndim > 1:
            continue
        table = dequantize(values, scale, zero_point, node.attrs.get("axis", 1))
        editor.bypass(node, editor.constant(f"{node.outputs[0].name}/table", table))
        replaced += 1
    return replaced


@dataclass
class _QueryProjection:
    """What scaling the query by a factor touches: the projection and the Q/DQ pairs after it."""

    projection: gs.Node  # MatMul or Gemm
    bias: tuple[gs.Node, int] | None  # (node, input slot) of the constant bias
    quantize_pairs: list[tuple[gs.Node, gs.Node]]


def _scale_factor(node: gs.Node) -> tuple[float, gs.Tensor] | None:
    """(factor, scores) for ``scores * c``, ``c * scores`` or ``scores / c`` with a positive scalar c."""
    if node.op not in ("Mul", "Div") or len(node.inputs) != 2:
        return None
    slots = (1, 0) if node.op == "Mul" else (1,)
    for slot in slots:
        value = graph.constant_value(node.inputs[slot])
        if value is not None and value.size == 1 and np.issubdtype(value.dtype, np.floating):
            factor = float(value.reshape(()))
            factor = 1.0 / factor if node.op == "Div" else factor
            if factor > 0 and np.isfinite(factor):
                return factor, node.inputs[1 - slot]
    return None


def _query_projection(query: gs.Tensor, outputs: set[str]) -> _QueryProjection | None:
    """Trace the first attention MatMul's query input back to its projection, through shape ops and Q/DQ
    pairs; None unless every value on the way is read only by the next step."""
    pairs: list[tuple[gs.Node, gs.Node]] = []
    tensor = query
    while True:
        producer = graph.producer(tensor)
        if producer is None or not _single_use(tensor, outputs):
            return None
        if producer.op in SHAPE_OPS:
            tensor = producer.inputs[0]
        elif producer.op == "DequantizeLinear":
            quantize = graph.producer(producer.inputs[0])
            if (
                quantize is None
                or quantize.op != "QuantizeLinear"
                or not _single_use(quantize.outputs[0], outputs)
            ):
                return None
            pairs.append((quantize, producer))
            tensor = quantize.inputs[0]
        elif producer.op == "Add":
            constant = [slot for slot in (0, 1) if graph.constant_value(producer.inputs[slot]) is not None]
            matmul = graph.producer(producer.inputs[1 - constant[0]]) if len(constant) == 1 else None
            if matmul is None or matmul.op != "MatMul" or not _single_use(matmul.outputs[0], outputs):
                return None
            return _QueryProjection(matmul, (producer, constant[0]), pairs)
        elif producer.op in ("MatMul", "Gemm"):
            bias = (producer, 2) if producer.op == "Gemm" and len(producer.inputs) > 2 else None
            return _QueryProjection(producer, bias, pairs)
        else:
            return None


def _is_weight(tensor: gs.Tensor) -> bool:
    """Whether ``tensor`` is a constant or the DequantizeLinear of one."""
    producer = graph.producer(tensor)
    if producer is not None and producer.op == "DequantizeLinear":
        tensor = producer.inputs[0]
    return graph.constant_value(tensor) is not None


def _scale_weight(editor: graph.Editor, projection: gs.Node, factor: float, outputs: set[str]) -> bool:
    """Multiply the projection's weight by ``factor``: its DequantizeLinear scales, or its float constant."""
    weight = projection.inputs[1]
    dequantize_node = graph.producer(weight)
    if dequantize_node is not None and dequantize_node.op == "DequantizeLinear":
        scale = graph.constant_value(dequantize_node.inputs[1])
        if (
            not _single_use(weight, outputs)
            or scale is None
            or graph.constant_value(dequantize_node.inputs[0]) is None
        ):
            return False
        scaled = (scale.astype(np.float64) * factor).astype(scale.dtype)
        dequantize_node.inputs[1] = editor.constant(f"{dequantize_node.inputs[1].name}/query_scaled", scaled)
        return True
    values = graph.constant_value(weight)
    if values is None or not np.issubdtype(values.dtype, np.floating) or not _single_use(weight, outputs):
        return False
    projection.inputs[1] = editor.constant(
        f"{weight.name}/query_scaled", (values * factor).astype(values.dtype)
    )
    return True


def fold_attention_scales(model: onnx.ModelProto) -> int:
    """Fold each attention-score scale (a constant Mul or Div right after a MatMul of two activations)
    into the query projection; return how many were folded. See the module docstring."""
    with graph.edit(model, cleanup=False) as editor:
        return _fold_attention_scales(editor)


def _fold_attention_scales(editor: graph.Editor) -> int:
    outputs = {tensor.name for tensor in editor.graph.outputs}
    folded = 0
    for node in list(editor.graph.nodes):
        found = _scale_factor(node)
        if found is None or node.outputs[0].name in outputs:
            continue
        factor, scores = found
        matmul = graph.producer(scores)
        if matmul is None or matmul.op != "MatMul" or not _single_use(scores, outputs):
            continue
        if any(_is_weight(tensor) for tensor in matmul.inputs):
            continue  # a projection, not a product of two activations
        query = _query_projection(matmul.inputs[0], outputs)
        if query is None or not _scale_weight(editor, query.projection, factor, outputs):
            continue
        if query.bias is not None:
            bias_node, slot = query.bias
            bias = graph.constant_value(bias_node.inputs[slot])
            assert bias is not None
            scaled = (bias.astype(np.float64) * factor).astype(bias.dtype)
            bias_node.inputs[slot] = editor.constant(f"{bias_node.inputs[slot].name}/query_scaled", scaled)
        for quantize, dequantize_node in query.quantize_pairs:
            scale = graph.constant_value(quantize.inputs[1])
            assert scale is not None
            scaled_scale = editor.constant(
                f"{quantize.inputs[1].name}/query_scaled", (scale * factor).astype(scale.dtype)
            )
            quantize.inputs[1] = scaled_scale
            dequantize_node.inputs[1] = scaled_scale
        editor.bypass(node, scores)
        folded += 1
    return folded


def inline_constant_identities(model: onnx.ModelProto) -> int:
    """Let the readers of an Identity of an initializer (the exporter's way of sharing equal weights) read
    the initializer itself, so precision conversion sees a constant; return how many Identities went."""
    with graph.edit(model, cleanup=False) as editor:
        return editor.inline_initializer_identities()


def tensorrt_graph(
    model: onnx.ModelProto, precision: str = "fp16", fp32_islands: bool = False
) -> TensorRTGraph:
    """The TensorRT-ready copy of ``model`` (``model`` is not modified); see the module docstring."""
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    with graph.edit(rewritten) as editor:
        editor.inline_initializer_identities()
        edits = {
            "embedding_tables_as_constants": _embedding_tables_to_constants(editor),
            "attention_scales_folded": _fold_attention_scales(editor),
        }
    converted = convert_float_precision(rewritten, precision, fp32_islands)
    remove_unused(converted)
    onnx.checker.check_model(converted)
    return TensorRTGraph(converted, edits)


__all__ = [
    "TensorRTGraph",
    "dequantize",
    "embedding_tables_to_constants",
    "fold_attention_scales",
    "tensorrt_graph",
]
