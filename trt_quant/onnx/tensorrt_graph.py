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

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from trt_quant.onnx.export import remove_unused
from trt_quant.onnx.precision import convert_float_precision

SHAPE_OPS = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity")


@dataclass
class TensorRTGraph:
    """A TensorRT-ready graph and how many of each rewrite it received."""

    model: onnx.ModelProto
    edits: dict[str, int] = field(default_factory=dict)


class _Index:
    """Producers, consumers and constants of a graph, kept current by :meth:`rewire`."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.initializers = {tensor.name: tensor for tensor in graph.initializer}
        self.producer = {name: node for node in graph.node for name in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for name in node.input:
                self.consumers[name].append(node)
        self.outputs = {value.name for value in graph.output}

    def constant(self, name: str) -> np.ndarray | None:
        """The value behind ``name`` when it is an initializer or a Constant node (through Identity)."""
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            value = next((a for a in node.attribute if a.name == "value"), None)
            return numpy_helper.to_array(value.t) if value is not None else None
        if node is not None and node.op_type == "Identity":
            return self.constant(node.input[0])
        return None

    def single_use(self, name: str) -> bool:
        """Whether exactly one node reads ``name`` and it is not a graph output."""
        return len(self.consumers[name]) == 1 and name not in self.outputs

    def add_initializer(self, name: str, values: np.ndarray) -> str:
        unique, count = name, 0
        while unique in self.initializers or unique in self.producer:
            count += 1
            unique = f"{name}_{count}"
        self.graph.initializer.append(numpy_helper.from_array(values, unique))
        self.initializers[unique] = self.graph.initializer[-1]
        return unique

    def rewire(self, node: onnx.NodeProto, slot: int, name: str) -> None:
        """Make ``node`` read ``name`` at input ``slot``."""
        self.consumers[node.input[slot]].remove(node)
        node.input[slot] = name
        self.consumers[name].append(node)

    def bypass(self, node: onnx.NodeProto, replacement: str) -> None:
        """Remove ``node``; its readers read ``replacement`` instead of its output."""
        for consumer in list(self.consumers[node.output[0]]):
            for slot, name in enumerate(consumer.input):
                if name == node.output[0]:
                    self.rewire(consumer, slot, replacement)
        for name in node.input:
            if node in self.consumers[name]:
                self.consumers[name].remove(node)
        self.graph.node.remove(node)


def _axis(node: onnx.NodeProto) -> int:
    return next((attribute.i for attribute in node.attribute if attribute.name == "axis"), 1)


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
    index = _Index(model.graph)
    replaced = 0
    for node in list(model.graph.node):
        if node.op_type != "DequantizeLinear" or node.output[0] in index.outputs:
            continue
        readers = index.consumers[node.output[0]]
        if not readers or any(r.op_type != "Gather" or r.input[0] != node.output[0] for r in readers):
            continue
        values, scale = index.constant(node.input[0]), index.constant(node.input[1])
        zero_point = index.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if values is None or scale is None or scale.ndim > 1:
            continue
        table = index.add_initializer(
            f"{node.output[0]}/table", dequantize(values, scale, zero_point, _axis(node))
        )
        index.bypass(node, table)
        replaced += 1
    return replaced


@dataclass
class _QueryProjection:
    """What scaling the query by a factor touches: the projection and the Q/DQ pairs after it."""

    projection: onnx.NodeProto  # MatMul or Gemm
    bias: tuple[onnx.NodeProto, int] | None  # (node, input slot) of the constant bias
    quantize_pairs: list[tuple[onnx.NodeProto, onnx.NodeProto]]


def _scale_factor(index: _Index, node: onnx.NodeProto) -> tuple[float, str] | None:
    """(factor, scores) for ``scores * c``, ``c * scores`` or ``scores / c`` with a positive scalar c."""
    if node.op_type not in ("Mul", "Div") or len(node.input) != 2:
        return None
    slots = (1, 0) if node.op_type == "Mul" else (1,)
    for slot in slots:
        value = index.constant(node.input[slot])
        if value is not None and value.size == 1 and np.issubdtype(value.dtype, np.floating):
            factor = float(value.reshape(()))
            factor = 1.0 / factor if node.op_type == "Div" else factor
            if factor > 0 and np.isfinite(factor):
                return factor, node.input[1 - slot]
    return None


def _query_projection(index: _Index, query: str) -> _QueryProjection | None:
    """Trace the first attention MatMul's query input back to its projection, through shape ops and Q/DQ
    pairs; None unless every value on the way is read only by the next step."""
    pairs: list[tuple[onnx.NodeProto, onnx.NodeProto]] = []
    name = query
    while True:
        producer = index.producer.get(name)
        if producer is None or not index.single_use(name):
            return None
        if producer.op_type in SHAPE_OPS:
            name = producer.input[0]
        elif producer.op_type == "DequantizeLinear":
            quantize = index.producer.get(producer.input[0])
            if (
                quantize is None
                or quantize.op_type != "QuantizeLinear"
                or not index.single_use(quantize.output[0])
            ):
                return None
            pairs.append((quantize, producer))
            name = quantize.input[0]
        elif producer.op_type == "Add":
            constant = [slot for slot in (0, 1) if index.constant(producer.input[slot]) is not None]
            matmul = index.producer.get(producer.input[1 - constant[0]]) if len(constant) == 1 else None
            if matmul is None or matmul.op_type != "MatMul" or not index.single_use(matmul.output[0]):
                return None
            return _QueryProjection(matmul, (producer, constant[0]), pairs)
        elif producer.op_type in ("MatMul", "Gemm"):
            bias = (producer, 2) if producer.op_type == "Gemm" and len(producer.input) > 2 else None
            return _QueryProjection(producer, bias, pairs)
        else:
            return None


def _is_weight(index: _Index, name: str) -> bool:
    """Whether ``name`` is a constant or the DequantizeLinear of one."""
    producer = index.producer.get(name)
    if producer is not None and producer.op_type == "DequantizeLinear":
        name = producer.input[0]
    return index.constant(name) is not None


def _scale_weight(index: _Index, projection: onnx.NodeProto, factor: float) -> bool:
    """Multiply the projection's weight by ``factor``: its DequantizeLinear scales, or its float constant."""
    weight = projection.input[1]
    dequantize_node = index.producer.get(weight)
    if dequantize_node is not None and dequantize_node.op_type == "DequantizeLinear":
        scale = index.constant(dequantize_node.input[1])
        if not index.single_use(weight) or scale is None or index.constant(dequantize_node.input[0]) is None:
            return False
        scaled = (scale.astype(np.float64) * factor).astype(scale.dtype)
        index.rewire(
            dequantize_node, 1, index.add_initializer(f"{dequantize_node.input[1]}/query_scaled", scaled)
        )
        return True
    values = index.constant(weight)
    if values is None or not np.issubdtype(values.dtype, np.floating) or not index.single_use(weight):
        return False
    index.rewire(
        projection, 1, index.add_initializer(f"{weight}/query_scaled", (values * factor).astype(values.dtype))
    )
    return True


def fold_attention_scales(model: onnx.ModelProto) -> int:
    """Fold each attention-score scale (a constant Mul or Div right after a MatMul of two activations)
    into the query projection; return how many were folded. See the module docstring."""
    index = _Index(model.graph)
    folded = 0
    for node in list(model.graph.node):
        found = _scale_factor(index, node)
        if found is None or node.output[0] in index.outputs:
            continue
        factor, scores = found
        matmul = index.producer.get(scores)
        if matmul is None or matmul.op_type != "MatMul" or not index.single_use(scores):
            continue
        if any(_is_weight(index, name) for name in matmul.input):
            continue  # a projection, not a product of two activations
        query = _query_projection(index, matmul.input[0])
        if query is None or not _scale_weight(index, query.projection, factor):
            continue
        if query.bias is not None:
            bias_node, slot = query.bias
            bias = index.constant(bias_node.input[slot])
            assert bias is not None
            scaled = (bias.astype(np.float64) * factor).astype(bias.dtype)
            index.rewire(
                bias_node, slot, index.add_initializer(f"{bias_node.input[slot]}/query_scaled", scaled)
            )
        for quantize, dequantize_node in query.quantize_pairs:
            scale = index.constant(quantize.input[1])
            assert scale is not None
            name = index.add_initializer(
                f"{quantize.input[1]}/query_scaled", (scale * factor).astype(scale.dtype)
            )
            index.rewire(quantize, 1, name)
            index.rewire(dequantize_node, 1, name)
        index.bypass(node, scores)
        folded += 1
    return folded


def inline_constant_identities(model: onnx.ModelProto) -> int:
    """Let the readers of an Identity of an initializer (the exporter's way of sharing equal weights) read
    the initializer itself, so precision conversion sees a constant; return how many Identities went."""
    index = _Index(model.graph)
    inlined = 0
    for node in list(model.graph.node):
        if (
            node.op_type == "Identity"
            and node.input[0] in index.initializers
            and node.output[0] not in index.outputs
        ):
            index.bypass(node, node.input[0])
            inlined += 1
    return inlined


def tensorrt_graph(
    model: onnx.ModelProto, precision: str = "fp16", fp32_islands: bool = False
) -> TensorRTGraph:
    """The TensorRT-ready copy of ``model`` (``model`` is not modified); see the module docstring."""
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    inline_constant_identities(rewritten)
    edits = {
        "embedding_tables_as_constants": embedding_tables_to_constants(rewritten),
        "attention_scales_folded": fold_attention_scales(rewritten),
    }
    remove_unused(rewritten)
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
