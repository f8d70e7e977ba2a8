"""Float precision of the non-quantized part of an ONNX graph, for TensorRT's strongly typed networks.

TensorRT 10 and 11 build strongly typed networks: every tensor keeps the type the ONNX graph gives it, so
the precision of the float part (everything outside the quantized Q/DQ pairs) must be chosen in the graph.
:func:`convert_float_precision` turns it into FP16 (or BF16) and gives every Q/DQ a half-precision scale,
so each DequantizeLinear outputs the type its MatMul reads and fuses into it (no Cast between them).
LayerNormalization and Softmax run in the half type, as Model Optimizer's own INT8 flow does; these parts
stay FP32 behind Casts:

* the Reduce ops (sums over a sequence overflow FP16) and what follows them up to the graph output
  without another GEMM (mean pooling's division);
* float arithmetic whose result becomes an index or a mask (a Cast to an integer type, a comparison),
  so half-precision rounding cannot move a position bucket;
* with ``fp32_islands``, also LayerNormalization, Softmax and LogSoftmax; a QuantizeLinear reading such
  an FP32 value quantizes it directly (FP32 scale), and its DequantizeLinear outputs the half type.

No Q/DQ has to stay FP32 for a scale below the half type's smallest normal value (FP16: 6.1e-5): a
quantized GEMM's weight scales move up by a power of two that its input's Q/DQ scale gives up (exact),
and any scale still below is raised to that value, with the INT8 (or FP8) weights of the raised
channels requantized.
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

from trt_quant.errors import TrtQuantError

PRECISIONS = ("fp16", "bf16", "fp32")
MIN_OPSET = 19  # float16/bfloat16 Q/DQ scales need QuantizeLinear/DequantizeLinear-19
HALF_TYPES: dict[str, int] = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}
NUMPY_TYPES: dict[int, np.dtype] = {
    TensorProto.FLOAT16: np.dtype(np.float16),
    TensorProto.BFLOAT16: np.dtype(ml_dtypes.bfloat16),
}
REDUCE_OPS = frozenset({"ReduceSum", "ReduceMean", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp"})
ISLAND_OPS = frozenset({"LayerNormalization", "Softmax", "LogSoftmax"})  # FP32 only with fp32_islands
GEMM_OPS = frozenset({"MatMul", "Gemm", "Conv", "Einsum"})
SHAPE_READERS = frozenset({"Shape", "Size"})  # read only the shape, so any float type will do
_DEFAULT_DOMAINS = ("", "ai.onnx")
_QDQ = ("QuantizeLinear", "DequantizeLinear")
_FLOAT = TensorProto.FLOAT


def convert_float_precision(
    model: onnx.ModelProto, precision: str = "fp16", fp32_islands: bool = False
) -> onnx.ModelProto:
    """Return a copy of ``model`` at opset >= 19 with its float part in ``precision`` (fp16, bf16, fp32).

    ``fp32_islands`` keeps LayerNormalization and Softmax in FP32 (they run in the half type otherwise).
    """
    if precision not in PRECISIONS:
        raise TrtQuantError(f"Unknown precision '{precision}': use one of {', '.join(PRECISIONS)}.")
    converted = upgrade_opset(model)
    if precision != "fp32":
        _HalfConversion(converted, HALF_TYPES[precision], fp32_islands).run()
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


def requantize(values: np.ndarray, ratio: np.ndarray, zero_point: np.ndarray, axis: int) -> np.ndarray:
    """Quantized ``values`` re-expressed for new scales, ``ratio`` being old scale / new scale.

    ``ratio`` (one value, or one per channel along ``axis``) multiplies each value's offset from
    ``zero_point``; integers round half to even and saturate, float8 values round by casting.
    """
    shape = [1] * values.ndim
    if ratio.size > 1:
        shape[axis] = ratio.size
    zero = zero_point.astype(np.float64).reshape(shape if zero_point.size > 1 else [1] * values.ndim)
    scaled = (values.astype(np.float64) - zero) * ratio.astype(np.float64).reshape(shape) + zero
    if np.issubdtype(values.dtype, np.integer):
        limits = np.iinfo(values.dtype)
        return np.clip(np.rint(scaled), limits.min, limits.max).astype(values.dtype)
    limit = float(ml_dtypes.finfo(values.dtype).max)
    return np.clip(scaled, -limit, limit).astype(values.dtype)


def clamped_scales(scales: np.ndarray, half_type: int) -> np.ndarray:
    """``scales`` (FP32) with positive values below the half type's smallest normal value raised to it."""
    smallest = float(ml_dtypes.finfo(NUMPY_TYPES[half_type]).smallest_normal)
    scales = scales.astype(np.float32)
    return np.where((scales > 0) & (scales < smallest), np.float32(smallest), scales).astype(np.float32)


class _HalfConversion:
    """One conversion of a graph's float part to a half type, see the module docstring."""

    def __init__(self, model: onnx.ModelProto, half_type: int, fp32_islands: bool = False) -> None:
        self.graph = model.graph
        self.nodes = list(model.graph.node)  # held here, so ``id(node)`` is stable while converting
        self.half = half_type
        self.fragile = REDUCE_OPS | ISLAND_OPS if fp32_islands else REDUCE_OPS
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
        for node in list(self.nodes):
            if node.op_type in ("MatMul", "Gemm"):
                self.shift_tiny_weight_scales(node)
        self.clamp_tiny_scales()
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
        """Ids of the nodes that compute in FP32: fragile ops and what follows a reduction to the output,
        index arithmetic, and QuantizeLinear nodes that read an FP32 value."""
        nodes = self.nodes
        kept = {id(node) for node in nodes if node.op_type in self.fragile and self.float_inputs(node)}
        kept |= self.fp32_tail(kept)
        stack = [node for node in nodes if self.makes_index(node)]
        while stack:
            node = stack.pop()
            for name in self.float_inputs(node):
                producer = self.producer.get(name)
                if producer is not None and producer.op_type != "Constant" and id(producer) not in kept:
                    kept.add(id(producer))
                    stack.append(producer)
        kept |= {
            id(node)
            for node in nodes
            if node.op_type == "QuantizeLinear" and id(self.producer.get(node.input[0])) in kept
        }
        return kept

    def fp32_tail(self, kept: set[int]) -> set[int]:
        """Nodes fed by FP32 nodes that lead only to graph outputs, through no GEMM or Q/DQ.

        Mean pooling divides an FP32 ReduceSum by the token count; in FP16 the sum would overflow.
        """
        outputs = {value.name for value in self.graph.output}
        leads_out: set[int] = set()
        for node in reversed(self.nodes):  # ONNX graphs are topologically sorted
            values = [name for name in node.output if self.is_float(name)]
            if node.op_type in GEMM_OPS or node.op_type in _QDQ or not values:
                continue
            if all(
                (name in outputs or self.consumers[name])
                and all(id(consumer) in leads_out for consumer in self.consumers[name])
                for name in values
            ):
                leads_out.add(id(node))
        fp32, tail = set(kept), set()
        for node in self.nodes:
            if id(node) in leads_out and any(
                id(self.producer.get(name)) in fp32 for name in self.float_inputs(node)
            ):
                fp32.add(id(node))
                tail.add(id(node))
        return tail

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

    def shift_tiny_weight_scales(self, gemm: onnx.NodeProto) -> None:
        """Multiply a quantized GEMM's weight scales by 2^k when the smallest is below the half type's
        smallest normal value, and its input's Q/DQ scale by 2^-k, behind a Mul by 2^-k (exact).

        Q(x * 2^-k, s * 2^-k) gives the integers Q(x, s) gives, and (s * 2^-k)(w * 2^k) = s * w, so no
        weight loses precision (SmoothQuant can make a whole layer's weight scales tiny). Left to
        :meth:`clamp_tiny_scales` when the input has no Q/DQ pair of its own or the shifted scale would
        itself be tiny.
        """
        weight_dq, input_dq = (self.producer.get(name) for name in gemm.input[1::-1])
        if weight_dq is None or input_dq is None or input_dq.op_type != "DequantizeLinear":
            return
        quantize = self.producer.get(input_dq.input[0])
        scales = self.constant(weight_dq.input[1]) if weight_dq.op_type == "DequantizeLinear" else None
        if quantize is None or quantize.op_type != "QuantizeLinear" or scales is None:
            return
        data, input_scale = self.constant(weight_dq.input[0]), self.constant(quantize.input[1])
        values = numpy_helper.to_array(scales).astype(np.float32)
        info = ml_dtypes.finfo(NUMPY_TYPES[self.half])
        positive = values[values > 0]
        single = len(self.consumers[quantize.output[0]]) == 1 and len(self.consumers[input_dq.output[0]]) == 1
        if data is None or input_scale is None or not positive.size or not single:
            return
        if positive.min() >= float(info.smallest_normal) or not self.is_float(quantize.input[0]):
            return
        shift = 2.0 ** int(np.ceil(np.log2(float(info.smallest_normal) / positive.min())))
        activation = numpy_helper.to_array(input_scale).astype(np.float32) / np.float32(shift)
        if activation.min() < float(info.smallest_normal) or values.max() * shift > float(info.max):
            return
        self.set_input(weight_dq, 1, self.add_initializer(f"{weight_dq.input[1]}/shifted", values * shift))
        shifted_scale = self.add_initializer(f"{quantize.input[1]}/shifted", activation)
        self.set_input(quantize, 1, shifted_scale)
        self.set_input(input_dq, 1, shifted_scale)
        factor = self.add_initializer(f"{quantize.input[0]}/shift", np.array(1.0 / shift, np.float32))
        shifted = self.unique_name(f"{quantize.input[0]}/shifted")
        multiply = helper.make_node(
            "Mul", [quantize.input[0], factor], [shifted], name=f"{quantize.name or shifted}/Mul_shift"
        )
        for name in multiply.input:
            self.consumers[name].append(multiply)
        self.producer[shifted], self.types[shifted] = multiply, _FLOAT
        self.nodes.insert(self.nodes.index(quantize), multiply)
        self.set_input(quantize, 0, shifted)

    def clamp_tiny_scales(self) -> None:
        """Raise Q/DQ scales below the half type's smallest normal value to it (see :func:`clamped_scales`).

        A DequantizeLinear of constant weights gets its own raised scales and weights requantized for the
        raised channels, so weight x scale changes by at most half a step of the new scale; any other
        Q/DQ reads a raised copy of its scale, which a Q/DQ pair shares, so the pair stays consistent.
        """
        raised: dict[str, str] = {}
        for node in self.nodes:
            scale = self.constant(node.input[1]) if node.op_type in _QDQ and len(node.input) > 1 else None
            if scale is None or len(scale.dims) > 1:
                continue
            old = numpy_helper.to_array(scale).astype(np.float32)
            new = clamped_scales(old, self.half)
            if np.array_equal(old, new):
                continue
            data = self.constant(node.input[0]) if node.op_type == "DequantizeLinear" else None
            if data is not None:
                values = numpy_helper.to_array(data)
                zero = self.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
                zero_point = numpy_helper.to_array(zero) if zero is not None else np.zeros(1, values.dtype)
                axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % max(values.ndim, 1)
                weights = requantize(values, old / new, zero_point, axis)
                self.set_input(node, 0, self.add_initializer(f"{node.input[0]}/requantized", weights))
                self.set_input(node, 1, self.add_initializer(f"{node.input[1]}/raised", new))
                continue
            if node.input[1] not in raised:
                raised[node.input[1]] = self.add_initializer(f"{node.input[1]}/raised", new)
            self.set_input(node, 1, raised[node.input[1]])

    def add_initializer(self, name: str, values: np.ndarray) -> str:
        """Add ``values`` as a new initializer named ``name`` (made unique); return its name."""
        unique = self.unique_name(name)
        tensor = numpy_helper.from_array(values, unique)
        self.graph.initializer.append(tensor)
        self.initializers[unique] = self.graph.initializer[-1]
        self.types[unique] = tensor.data_type
        return unique

    def unique_name(self, name: str) -> str:
        """``name``, or ``name_N`` when a value of that name exists."""
        unique, count = name, 0
        while unique in self.initializers or unique in self.producer or unique in self.types:
            count += 1
            unique = f"{name}_{count}"
        return unique

    def set_input(self, node: onnx.NodeProto, slot: int, name: str) -> None:
        """Make ``node`` read ``name`` at input ``slot``, keeping the consumer index current."""
        self.consumers[node.input[slot]].remove(node)
        node.input[slot] = name
        self.consumers[name].append(node)

    def constant(self, name: str) -> TensorProto | None:
        if name in self.initializers:
            return self.initializers[name]
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            return _constant_value(node)
        return None

    def convert_constants(self, kept: set[int]) -> set[str]:
        """Convert float initializers and Constant nodes read by any half node; return the FP32 ones.

        A constant also read by FP32 nodes gets an FP32 twin holding the same half-rounded values (a
        QuantizeLinear in FP32 and its DequantizeLinear in half precision then share one scale value).
        """
        fp32: set[str] = set()
        for tensor in list(self.graph.initializer):
            if tensor.data_type == _FLOAT:
                if self.read_only_by(tensor.name, kept):
                    fp32.add(tensor.name)
                else:
                    tensor.CopyFrom(_half_tensor(tensor, self.half))
                    self.add_fp32_twin(tensor.name, tensor, kept)
        for node in self.nodes:
            value = _constant_value(node) if node.op_type == "Constant" else None
            if value is None or value.data_type != _FLOAT:
                continue
            if self.read_only_by(node.output[0], kept):
                fp32.add(node.output[0])
            else:
                half = _half_tensor(value, self.half)
                del node.attribute[:]
                node.attribute.append(helper.make_attribute("value", half))
                self.add_fp32_twin(node.output[0], half, kept)
        return fp32

    def read_only_by(self, name: str, kept: set[int]) -> bool:
        consumers = self.consumers.get(name, [])
        return bool(consumers) and all(id(node) in kept for node in consumers)

    def add_fp32_twin(self, name: str, half: TensorProto, kept: set[int]) -> None:
        """When FP32 nodes read the (now half) constant ``name``, they read an FP32 copy of it instead."""
        if any(id(node) in kept for node in self.consumers.get(name, [])):
            values = numpy_helper.to_array(half).astype(np.float32)
            self.casts[(name, _FLOAT)] = self.add_initializer(f"{name}/fp32", values)

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


__all__ = ["PRECISIONS", "clamped_scales", "convert_float_precision", "requantize", "upgrade_opset"]
