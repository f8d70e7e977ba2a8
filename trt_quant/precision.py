"""Float precision of the non-quantized part of an ONNX graph, for TensorRT's strongly typed networks.

TensorRT 10 and 11 build strongly typed networks: every tensor keeps the type the ONNX graph gives it, so
the precision of the float part (everything outside the INT8 Q/DQ pairs) must be chosen in the graph.
:func:`convert_float_precision` turns it into FP16 (or BF16) and keeps INT8 Q/DQ with half-precision
scales, so each DequantizeLinear fuses into its MatMul. Numerically fragile parts stay FP32 behind Casts:

* LayerNormalization statistics, Softmax and the Reduce ops (sums over a sequence overflow FP16);
* float arithmetic whose result becomes an index or a mask (a Cast to an integer type, a comparison),
  so half-precision rounding cannot move a position bucket;
* a Q/DQ node whose scales FP16 cannot represent.

Graph inputs keep their types and float outputs are cast back to FP32, so the manifest stays valid.
Float constants are clipped to the half type's finite range (a -3.4e38 attention-mask fill becomes
-65504 in FP16) and tiny non-zero values keep their sign as the smallest subnormal. Subgraphs (If/Loop
bodies, which the encoder exports do not have) are not converted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference, version_converter

from .errors import TrtQuantError

PRECISIONS = ("fp16", "bf16", "fp32")
MIN_OPSET = 19  # float16/bfloat16 Q/DQ scales need QuantizeLinear/DequantizeLinear-19
HALF_TYPES: dict[str, int] = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}
NUMPY_TYPES: dict[int, np.dtype] = {
    TensorProto.FLOAT16: np.dtype(np.float16),
    TensorProto.BFLOAT16: np.dtype(ml_dtypes.bfloat16),
}
FP32_OPS = frozenset({
    "LayerNormalization", "Softmax", "LogSoftmax", "ReduceSum", "ReduceMean", "ReduceSumSquare",
    "ReduceL2", "ReduceLogSumExp",
})  # fmt: skip
SHAPE_READERS = frozenset({"Shape", "Size"})  # read only the shape, so any float type will do
_DEFAULT_DOMAINS = ("", "ai.onnx")
_QDQ = ("QuantizeLinear", "DequantizeLinear")
_FLOAT = TensorProto.FLOAT


def convert_float_precision(model: onnx.ModelProto, precision: str = "fp16") -> onnx.ModelProto:
    """Return a copy of ``model`` at opset >= 19 with its float part in ``precision`` (fp16, bf16, fp32)."""
    if precision not in PRECISIONS:
        raise TrtQuantError(f"Unknown precision '{precision}': use one of {', '.join(PRECISIONS)}.")
    converted = upgrade_opset(model)
    if precision != "fp32":
        _HalfConversion(converted, HALF_TYPES[precision]).run()
        del converted.graph.value_info[:]  # types changed; consumers re-infer them
    return converted


def default_opset(model: onnx.ModelProto) -> int:
    """The default-domain opset the model imports (0 when it imports none)."""
    return next((entry.version for entry in model.opset_import if entry.domain in _DEFAULT_DOMAINS), 0)


def upgrade_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` at default-domain opset >= 19, with the IR version that opset needs."""
    if default_opset(model) >= MIN_OPSET:
        upgraded = onnx.ModelProto()
        upgraded.CopyFrom(model)
        return upgraded
    try:
        upgraded = version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:  # the converter raises RuntimeError or ValueError with C++ messages
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise TrtQuantError(
            f"ONNX cannot convert the graph from opset {default_opset(model)} to {MIN_OPSET} ({reason}); "
            f"re-export it with opset {MIN_OPSET} (trt-quant convert --opset {MIN_OPSET})."
        ) from exc
    ir_version = helper.find_min_ir_version_for(list(upgraded.opset_import), ignore_unknown=True)
    upgraded.ir_version = max(upgraded.ir_version, ir_version)
    return upgraded


def to_half_array(values: np.ndarray, half_type: int) -> np.ndarray:
    """``values`` in the half type: clipped to its finite range, non-zero values never rounded to zero."""
    dtype = NUMPY_TYPES[half_type]
    info = ml_dtypes.finfo(dtype)
    values = np.clip(values.astype(np.float32), float(info.min), float(info.max))
    tiny = float(info.smallest_subnormal)
    values = np.where((values != 0) & (np.abs(values) < tiny), np.sign(values) * tiny, values)
    return values.astype(dtype)


def _half_tensor(tensor: TensorProto, half_type: int) -> TensorProto:
    return numpy_helper.from_array(to_half_array(numpy_helper.to_array(tensor), half_type), tensor.name)


def representable(values: np.ndarray, half_type: int) -> bool:
    """Whether the half type keeps every value finite, non-zero and within 2^-8 relative error.

    2^-8 is BF16's own precision; FP16 meets it from 7.6e-6 up, subnormals included.
    """
    values = values.astype(np.float64)
    converted = to_half_array(values, half_type).astype(np.float64)
    error = np.abs(converted - values)
    return bool(np.all(np.isfinite(converted) & (converted != 0) & (error <= np.abs(values) * 2.0**-8)))


class _HalfConversion:
    """One conversion of a graph's float part to a half type, see the module docstring."""

    def __init__(self, model: onnx.ModelProto, half_type: int) -> None:
        self.graph = model.graph
        self.nodes = list(model.graph.node)  # held here, so ``id(node)`` is stable while converting
        self.half = half_type
        self.types = _value_types(model)
        self.producer = {name: node for node in self.nodes for name in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in self.nodes:
            for name in node.input:
                self.consumers[name].append(node)
        self.initializers = {tensor.name: tensor for tensor in model.graph.initializer}
        self.casts: dict[tuple[str, int], str] = {}

    def is_float(self, name: str) -> bool:
        return bool(name) and self.types.get(name) == _FLOAT

    def run(self) -> None:
        for node in self.nodes:
            if node.op_type == "DequantizeLinear":
                self.clear_zero_channel_scales(node)
        kept = self.fp32_nodes()
        fp32_values = {value.name for value in self.graph.input if self.is_float(value.name)}
        fp32_values |= self.convert_constants(kept)
        for node in self.nodes:
            if id(node) in kept:
                fp32_values.update(name for name in node.output if self.is_float(name))
            else:
                self.convert_attributes(node)
        self.insert_casts(kept, fp32_values)
        self.cast_outputs(fp32_values)

    def fp32_nodes(self) -> set[int]:
        """Ids of the nodes that compute in FP32: fragile ops, index arithmetic, unrepresentable Q/DQ."""
        nodes = self.nodes
        kept = {id(node) for node in nodes if node.op_type in FP32_OPS and self.float_inputs(node)}
        kept |= {id(node) for node in nodes if node.op_type in _QDQ and not self.half_scale_ok(node)}
        stack = [node for node in nodes if self.makes_index(node)]
        while stack:
            node = stack.pop()
            for name in self.float_inputs(node):
                producer = self.producer.get(name)
                if producer is not None and producer.op_type != "Constant" and id(producer) not in kept:
                    kept.add(id(producer))
                    stack.append(producer)
        return kept

    def float_inputs(self, node: onnx.NodeProto) -> list[str]:
        return [name for name in node.input if self.is_float(name)]

    def makes_index(self, node: onnx.NodeProto) -> bool:
        """A node that reads float values and produces only integers or booleans (Cast to int, Equal...)."""
        if node.op_type in SHAPE_READERS or node.op_type in _QDQ or not self.float_inputs(node):
            return False
        return not any(self.is_float(name) for name in node.output)

    def clear_zero_channel_scales(self, node: onnx.NodeProto) -> None:
        """Set to 1 the scales of constant INT8 channels that hold only zeros (exact, as 0 * s = 0).

        A zero row (a padding token's embedding) gets a scale of ~1e-38, which no half type can store.
        """
        data, scale = self.constant(node.input[0]), self.constant(node.input[1])
        if data is None or scale is None or len(scale.dims) != 1 or scale.dims[0] <= 1:
            return
        values = numpy_helper.to_array(data)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % values.ndim
        zero = ~np.any(values != 0, axis=tuple(i for i in range(values.ndim) if i != axis))
        if zero.any() and len(self.consumers[node.input[1]]) == 1:
            scales = numpy_helper.to_array(scale).copy()
            scales[zero] = 1.0
            scale.CopyFrom(numpy_helper.from_array(scales, scale.name))

    def half_scale_ok(self, node: onnx.NodeProto) -> bool:
        scale = self.constant(node.input[1]) if len(node.input) > 1 else None
        return scale is None or representable(numpy_helper.to_array(scale), self.half)

    def constant(self, name: str) -> TensorProto | None:
        if name in self.initializers:
            return self.initializers[name]
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            return _constant_value(node)
        return None

    def convert_constants(self, kept: set[int]) -> set[str]:
        """Convert float initializers and Constant nodes read by any half node; return the FP32 ones."""
        fp32: set[str] = set()
        for tensor in self.graph.initializer:
            if tensor.data_type == _FLOAT:
                if self.read_only_by(tensor.name, kept):
                    fp32.add(tensor.name)
                else:
                    tensor.CopyFrom(_half_tensor(tensor, self.half))
        for node in self.nodes:
            value = _constant_value(node) if node.op_type == "Constant" else None
            if value is None or value.data_type != _FLOAT:
                continue
            if self.read_only_by(node.output[0], kept):
                fp32.add(node.output[0])
            else:
                del node.attribute[:]
                node.attribute.append(helper.make_attribute("value", _half_tensor(value, self.half)))
        return fp32

    def read_only_by(self, name: str, kept: set[int]) -> bool:
        consumers = self.consumers.get(name, [])
        return bool(consumers) and all(id(node) in kept for node in consumers)

    def convert_attributes(self, node: onnx.NodeProto) -> None:
        """Cast-to-float and ConstantOfShape float fills of a half node produce the half type."""
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == _FLOAT:
                attribute.i = self.half
            elif node.op_type == "ConstantOfShape" and attribute.t.data_type == _FLOAT:
                attribute.t.CopyFrom(_half_tensor(attribute.t, self.half))

    def insert_casts(self, kept: set[int], fp32_values: set[str]) -> None:
        """Give every node its float inputs in the precision it computes in, through shared Casts."""
        ordered: list[onnx.NodeProto] = []
        for node in self.nodes:
            want_fp32 = id(node) in kept
            for slot, name in enumerate(node.input):
                wrong = self.is_float(name) and (name in fp32_values) != want_fp32
                if wrong and node.op_type not in SHAPE_READERS:
                    node.input[slot] = self.cast(name, _FLOAT if want_fp32 else self.half, ordered)
            ordered.append(node)
        del self.graph.node[:]
        self.graph.node.extend(ordered)

    def cast(self, name: str, to: int, ordered: list[onnx.NodeProto]) -> str:
        """The name of ``name`` cast to ``to``; the Cast is appended to ``ordered`` on first use."""
        key = (name, to)
        if key not in self.casts:
            suffix = "fp32" if to == _FLOAT else "half"
            self.casts[key] = f"{name}/{suffix}"
            cast = helper.make_node("Cast", [name], [self.casts[key]], name=f"{name}/Cast_{suffix}", to=to)
            ordered.append(cast)
        return self.casts[key]

    def cast_outputs(self, fp32_values: set[str]) -> None:
        """Float graph outputs computed in half precision get a final Cast back to FP32."""
        for output in self.graph.output:
            name = output.name
            if not self.is_float(name) or name in fp32_values:
                continue
            half_name = f"{name}/half_output"
            _rename(self.graph.node, name, half_name)
            self.graph.node.append(
                helper.make_node("Cast", [half_name], [name], name=f"{name}/Cast_output", to=_FLOAT)
            )


def _value_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every value of the main graph, by ONNX type inference."""
    inferred = shape_inference.infer_shapes(model, strict_mode=False).graph
    types = {tensor.name: tensor.data_type for tensor in model.graph.initializer}
    for value in [*inferred.input, *inferred.value_info, *inferred.output]:
        if value.type.HasField("tensor_type"):
            types[value.name] = value.type.tensor_type.elem_type
    return types


def _constant_value(node: onnx.NodeProto) -> TensorProto | None:
    """The value of a Constant node as a tensor (None for sparse or string constants)."""
    for attribute in node.attribute:
        if attribute.name == "value":
            return attribute.t
        if attribute.name in ("value_float", "value_floats"):
            return numpy_helper.from_array(np.array(helper.get_attribute_value(attribute), np.float32))
    return None


def _rename(nodes: Iterable[onnx.NodeProto], old: str, new: str) -> None:
    """Rename value ``old`` to ``new`` wherever a node reads or writes it."""
    for node in nodes:
        for slot, name in enumerate(node.input):
            if name == old:
                node.input[slot] = new
        for slot, name in enumerate(node.output):
            if name == old:
                node.output[slot] = new


__all__ = ["PRECISIONS", "convert_float_precision", "upgrade_opset"]
