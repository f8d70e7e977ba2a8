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

import ml_dtypes
import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper, numpy_helper, shape_inference, version_converter
from onnx_graphsurgeon.ir.tensor import LazyValues

from trt_quant.errors import TrtQuantError
from trt_quant.onnx import graph

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
        types = _value_types(converted)
        with graph.edit(converted, cleanup=False) as editor:
            _HalfConversion(editor, types, HALF_TYPES[precision], fp32_islands).run()
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

    def __init__(
        self, editor: graph.Editor, types: dict[str, int], half_type: int, fp32_islands: bool
    ) -> None:
        self.editor = editor
        self.nodes: list[gs.Node] = editor.graph.nodes
        self.half = half_type
        self.fragile = REDUCE_OPS | ISLAND_OPS if fp32_islands else REDUCE_OPS
        self.types = types  # element type of every value, by name
        self.casts: dict[tuple[str, int], gs.Tensor] = {}

    def is_float(self, tensor: gs.Tensor) -> bool:
        return bool(tensor.name) and self.types.get(tensor.name) == _FLOAT

    def run(self) -> None:
        for node in self.nodes:
            if node.op == "DequantizeLinear":
                self.clear_zero_channel_scales(node)
        for node in list(self.nodes):
            if node.op in ("MatMul", "Gemm"):
                self.shift_tiny_weight_scales(node)
        self.clamp_tiny_scales()
        kept = self.fp32_nodes()
        fp32_values = {tensor.name for tensor in self.editor.graph.inputs if self.is_float(tensor)}
        fp32_values |= self.convert_constants(kept)
        for node in self.nodes:
            if id(node) in kept:
                fp32_values.update(tensor.name for tensor in node.outputs if self.is_float(tensor))
            else:
                self.convert_attributes(node)
        self.insert_casts(kept, fp32_values)
        self.cast_outputs(fp32_values)

    def fp32_nodes(self) -> set[int]:
        """Ids of the nodes that compute in FP32: fragile ops and what follows a reduction to the output,
        index arithmetic, and QuantizeLinear nodes that read an FP32 value."""
        nodes = self.nodes
        kept = {id(node) for node in nodes if node.op in self.fragile and self.float_inputs(node)}
        kept |= self.fp32_tail(kept)
        stack = [node for node in nodes if self.makes_index(node)]
        while stack:
            node = stack.pop()
            for tensor in self.float_inputs(node):
                producer = graph.producer(tensor)
                if producer is not None and producer.op != "Constant" and id(producer) not in kept:
                    kept.add(id(producer))
                    stack.append(producer)
        kept |= {
            id(node)
            for node in nodes
            if node.op == "QuantizeLinear" and id(graph.producer(node.inputs[0])) in kept
        }
        return kept

    def fp32_tail(self, kept: set[int]) -> set[int]:
        """Nodes fed by FP32 nodes that lead only to graph outputs, through no GEMM or Q/DQ.

        Mean pooling divides an FP32 ReduceSum by the token count; in FP16 the sum would overflow.
        """
        outputs = {tensor.name for tensor in self.editor.graph.outputs}
        leads_out: set[int] = set()
        for node in reversed(self.nodes):  # ONNX graphs are topologically sorted
            values = [tensor for tensor in node.outputs if self.is_float(tensor)]
            if node.op in GEMM_OPS or node.op in _QDQ or not values:
                continue
            if all(
                (tensor.name in outputs or tensor.outputs)
                and all(id(reader) in leads_out for reader in tensor.outputs)
                for tensor in values
            ):
                leads_out.add(id(node))
        fp32, tail = set(kept), set()
        for node in self.nodes:
            if id(node) in leads_out and any(
                id(graph.producer(tensor)) in fp32 for tensor in self.float_inputs(node)
            ):
                fp32.add(id(node))
                tail.add(id(node))
        return tail

    def float_inputs(self, node: gs.Node) -> list[gs.Tensor]:
        return [tensor for tensor in node.inputs if self.is_float(tensor)]

    def makes_index(self, node: gs.Node) -> bool:
        """A node that reads float values and produces only integers or booleans (Cast to int, Equal...)."""
        if node.op in SHAPE_READERS or node.op in _QDQ or not self.float_inputs(node):
            return False
        return not any(self.is_float(tensor) for tensor in node.outputs)

    def clear_zero_channel_scales(self, node: gs.Node) -> None:
        """Set to 1 the scales of constant INT8 channels that hold only zeros (exact, as 0 * s = 0).

        A zero row (a padding token's embedding) gets a scale of ~1e-38, which no half type can store.
        """
        data, scale = self.constant(node.inputs[0]), self.constant(node.inputs[1])
        if data is None or scale is None or len(scale.dims) != 1 or scale.dims[0] <= 1:
            return
        values = numpy_helper.to_array(data)
        axis = node.attrs.get("axis", 1) % values.ndim
        zero = ~np.any(values != 0, axis=tuple(i for i in range(values.ndim) if i != axis))
        if zero.any() and len(node.inputs[1].outputs) == 1:
            scales = numpy_helper.to_array(scale).copy()
            scales[zero] = 1.0
            scale.CopyFrom(numpy_helper.from_array(scales, scale.name))

    def shift_tiny_weight_scales(self, gemm: gs.Node) -> None:
        """Multiply a quantized GEMM's weight scales by 2^k when the smallest is below the half type's
        smallest normal value, and its input's Q/DQ scale by 2^-k, behind a Mul by 2^-k (exact).

        Q(x * 2^-k, s * 2^-k) gives the integers Q(x, s) gives, and (s * 2^-k)(w * 2^k) = s * w, so no
        weight loses precision (SmoothQuant can make a whole layer's weight scales tiny). Left to
        :meth:`clamp_tiny_scales` when the input has no Q/DQ pair of its own or the shifted scale would
        itself be tiny.
        """
        weight_dq, input_dq = (graph.producer(tensor) for tensor in gemm.inputs[1::-1])
        if weight_dq is None or input_dq is None or input_dq.op != "DequantizeLinear":
            return
        quantize = graph.producer(input_dq.inputs[0])
        scales = self.constant(weight_dq.inputs[1]) if weight_dq.op == "DequantizeLinear" else None
        if quantize is None or quantize.op != "QuantizeLinear" or scales is None:
            return
        data, input_scale = self.constant(weight_dq.inputs[0]), self.constant(quantize.inputs[1])
        values = numpy_helper.to_array(scales).astype(np.float32)
        info = ml_dtypes.finfo(NUMPY_TYPES[self.half])
        positive = values[values > 0]
        single = len(quantize.outputs[0].outputs) == 1 and len(input_dq.outputs[0].outputs) == 1
        if data is None or input_scale is None or not positive.size or not single:
            return
        if positive.min() >= float(info.smallest_normal) or not self.is_float(quantize.inputs[0]):
            return
        shift = 2.0 ** int(np.ceil(np.log2(float(info.smallest_normal) / positive.min())))
        activation = numpy_helper.to_array(input_scale).astype(np.float32) / np.float32(shift)
        if activation.min() < float(info.smallest_normal) or values.max() * shift > float(info.max):
            return
        weight_dq.inputs[1] = self.add_initializer(f"{weight_dq.inputs[1].name}/shifted", values * shift)
        shifted_scale = self.add_initializer(f"{quantize.inputs[1].name}/shifted", activation)
        quantize.inputs[1] = shifted_scale
        input_dq.inputs[1] = shifted_scale
        source = quantize.inputs[0]
        factor = self.add_initializer(f"{source.name}/shift", np.array(1.0 / shift, np.float32))
        shifted = self.editor.variable(f"{source.name}/shifted")
        self.types[shifted.name] = _FLOAT
        multiply = gs.Node(
            "Mul",
            name=f"{quantize.name or shifted.name}/Mul_shift",
            inputs=[source, factor],
            outputs=[shifted],
        )
        self.editor.insert_before(quantize, multiply)
        quantize.inputs[0] = shifted

    def clamp_tiny_scales(self) -> None:
        """Raise Q/DQ scales below the half type's smallest normal value to it (see :func:`clamped_scales`).

        A DequantizeLinear of constant weights gets its own raised scales and weights requantized for the
        raised channels, so weight x scale changes by at most half a step of the new scale; any other
        Q/DQ reads a raised copy of its scale, which a Q/DQ pair shares, so the pair stays consistent.
        """
        raised: dict[str, gs.Constant] = {}
        for node in self.nodes:
            scale = self.constant(node.inputs[1]) if node.op in _QDQ and len(node.inputs) > 1 else None
            if scale is None or len(scale.dims) > 1:
                continue
            old = numpy_helper.to_array(scale).astype(np.float32)
            new = clamped_scales(old, self.half)
            if np.array_equal(old, new):
                continue
            data = self.constant(node.inputs[0]) if node.op == "DequantizeLinear" else None
            if data is not None:
                values = numpy_helper.to_array(data)
                zero = self.constant(node.inputs[2]) if len(node.inputs) > 2 else None
                zero_point = numpy_helper.to_array(zero) if zero is not None else np.zeros(1, values.dtype)
                axis = node.attrs.get("axis", 1) % max(values.ndim, 1)
                weights = requantize(values, old / new, zero_point, axis)
                node.inputs[0] = self.add_initializer(f"{node.inputs[0].name}/requantized", weights)
                node.inputs[1] = self.add_initializer(f"{node.inputs[1].name}/raised", new)
                continue
            if node.inputs[1].name not in raised:
                raised[node.inputs[1].name] = self.add_initializer(f"{node.inputs[1].name}/raised", new)
            node.inputs[1] = raised[node.inputs[1].name]

    def add_initializer(self, name: str, values: np.ndarray) -> gs.Constant:
        """A new initializer holding ``values``, named ``name`` (made unique)."""
        constant = self.editor.constant(name, values)
        self.types[constant.name] = helper.np_dtype_to_tensor_dtype(values.dtype)
        return constant

    @staticmethod
    def constant(tensor: gs.Tensor) -> TensorProto | None:
        """An initializer's or Constant node's value (Identity nodes are not followed)."""
        return graph.tensor_proto(tensor, through_identity=False)

    def convert_constants(self, kept: set[int]) -> set[str]:
        """Convert float initializers and Constant nodes read by any half node; return the FP32 ones.

        A constant also read by FP32 nodes gets an FP32 twin holding the same half-rounded values (a
        QuantizeLinear in FP32 and its DequantizeLinear in half precision then share one scale value).
        """
        fp32: set[str] = set()
        for tensor in self.editor.initializers():
            values = graph.tensor_proto(tensor)
            if values is None or values.data_type != _FLOAT:
                continue
            if self.read_only_by(tensor, kept):
                fp32.add(tensor.name)
            else:
                half = _half_tensor(values, self.half)
                graph.set_values(tensor, half)
                self.add_fp32_twin(tensor, half, kept)
        for node in self.nodes:
            value = graph.constant_node_value(node) if node.op == "Constant" else None
            if value is None or value.data_type != _FLOAT:
                continue
            if self.read_only_by(node.outputs[0], kept):
                fp32.add(node.outputs[0].name)
            else:
                half = _half_tensor(value, self.half)
                node.attrs.clear()
                node.attrs["value"] = gs.Constant("", LazyValues(half))
                self.add_fp32_twin(node.outputs[0], half, kept)
        return fp32

    def read_only_by(self, tensor: gs.Tensor, kept: set[int]) -> bool:
        return bool(tensor.outputs) and all(id(node) in kept for node in tensor.outputs)

    def add_fp32_twin(self, tensor: gs.Tensor, half: TensorProto, kept: set[int]) -> None:
        """When FP32 nodes read the (now half) constant ``tensor``, they read an FP32 copy of it instead."""
        if any(id(node) in kept for node in tensor.outputs):
            values = numpy_helper.to_array(half).astype(np.float32)
            self.casts[(tensor.name, _FLOAT)] = self.add_initializer(f"{tensor.name}/fp32", values)

    def convert_attributes(self, node: gs.Node) -> None:
        """Cast-to-float and ConstantOfShape float fills of a half node produce the half type."""
        if node.op == "Cast" and node.attrs.get("to") == _FLOAT:
            node.attrs["to"] = self.half
        fill = node.attrs.get("value") if node.op == "ConstantOfShape" else None
        if isinstance(fill, gs.Constant):
            values = graph.tensor_proto(fill)
            if values is not None and values.data_type == _FLOAT:
                graph.set_values(fill, _half_tensor(values, self.half))

    def insert_casts(self, kept: set[int], fp32_values: set[str]) -> None:
        """Give every node its float inputs in the precision it computes in, through shared Casts."""
        ordered: list[gs.Node] = []
        for node in self.nodes:
            want_fp32 = id(node) in kept
            for slot, tensor in enumerate(node.inputs):
                wrong = self.is_float(tensor) and (tensor.name in fp32_values) != want_fp32
                if wrong and node.op not in SHAPE_READERS:
                    node.inputs[slot] = self.cast(tensor, _FLOAT if want_fp32 else self.half, ordered)
            ordered.append(node)
        self.nodes[:] = ordered

    def cast(self, tensor: gs.Tensor, to: int, ordered: list[gs.Node]) -> gs.Tensor:
        """``tensor`` cast to ``to``; the Cast is appended to ``ordered`` on first use."""
        key = (tensor.name, to)
        if key not in self.casts:
            suffix = "fp32" if to == _FLOAT else "half"
            self.casts[key] = gs.Variable(f"{tensor.name}/{suffix}")
            cast = gs.Node(
                "Cast",
                name=f"{tensor.name}/Cast_{suffix}",
                attrs={"to": to},
                inputs=[tensor],
                outputs=[self.casts[key]],
            )
            ordered.append(cast)
        return self.casts[key]

    def cast_outputs(self, fp32_values: set[str]) -> None:
        """Float graph outputs computed in half precision get a final Cast back to FP32."""
        for output in self.editor.graph.outputs:
            if not self.is_float(output) or output.name in fp32_values:
                continue
            half = gs.Variable(f"{output.name}/half_output")
            producer = graph.producer(output)
            if producer is not None:
                producer.outputs[producer.outputs.index(output)] = half
            self.editor.replace_uses(output, half)
            self.nodes.append(
                gs.Node(
                    "Cast",
                    name=f"{output.name}/Cast_output",
                    attrs={"to": _FLOAT},
                    inputs=[half],
                    outputs=[output],
                )
            )


def _value_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every value of the main graph, by ONNX type inference."""
    inferred = shape_inference.infer_shapes(model, strict_mode=False).graph
    types = {tensor.name: tensor.data_type for tensor in model.graph.initializer}
    for value in [*inferred.input, *inferred.value_info, *inferred.output]:
        if value.type.HasField("tensor_type"):
            types[value.name] = value.type.tensor_type.elem_type
    return types


__all__ = ["PRECISIONS", "clamped_scales", "convert_float_precision", "requantize", "upgrade_opset"]
