"""TensorRT explicit-quantization rules checked on an ONNX graph, with a node name in every finding.

``check_model`` runs small independent rules over a prebuilt index of the main graph (producers,
consumers, constant tensors: :class:`~trt_quant.onnx.graph.ValueIndex`) and returns the findings in
graph order: model-level findings first, then graph inputs, then nodes. ``check_onnx`` does the same
for a file and raises ``ArtifactError`` when the file is missing or is not a valid ONNX model.
Subgraphs (``If``/``Loop`` bodies) are not inspected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from trt_quant.errors import ArtifactError
from trt_quant.onnx import graph

# Operators marked "Y" in the onnx-tensorrt operator support matrix: onnx/onnx-tensorrt docs/operators.md,
# branch 10.1-GA (commit 96e781103cfc, "ONNX-TensorRT 10.1 GA release", June 2024), which covers TensorRT 10
# (opsets 9 to 20). These names are default-domain ONNX operators.
SUPPORTED_OPS: frozenset[str] = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh",
    "AveragePool", "BatchNormalization", "Cast", "CastLike", "Ceil", "Celu", "Clip", "Concat",
    "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum",
    "DeformConv", "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "Einsum", "Elu",
    "Equal", "Erf", "Exp", "Expand", "EyeLike", "Flatten", "Floor", "GRU", "Gather",
    "GatherElements", "GatherND", "Gelu", "Gemm", "GlobalAveragePool", "GlobalLpPool",
    "GlobalMaxPool", "Greater", "GreaterOrEqual", "GridSample", "GroupNormalization",
    "HardSigmoid", "HardSwish", "Hardmax", "Identity", "If", "ImageScaler",
    "InstanceNormalization", "IsInf", "IsNaN", "LRN", "LSTM", "LayerNormalization", "LeakyRelu",
    "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop", "LpNormalization", "LpPool", "MatMul",
    "Max", "MaxPool", "Mean", "MeanVarianceNormalization", "Min", "Mish", "Mod", "Mul", "Neg",
    "NonMaxSuppression", "NonZero", "Not", "OneHot", "Or", "PRelu", "Pad", "ParametricSoftplus",
    "Pow", "QuantizeLinear", "RNN", "RandomNormal", "RandomNormalLike", "RandomUniform",
    "RandomUniformLike", "Range", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum",
    "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
    "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence", "RoiAlign", "Round",
    "ScaledTanh", "Scan", "Scatter", "ScatterElements", "ScatterND", "Selu", "Shape", "Shrink",
    "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax", "Softplus", "Softsign",
    "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu",
    "Tile", "TopK", "Transpose", "Trilu", "Unsqueeze", "Upsample", "Where", "Xor",
})  # fmt: skip

NO_FINDINGS = "No findings: the graph follows TensorRT's explicit-quantization rules."

_DEFAULT_DOMAINS = ("", "ai.onnx")
_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# Quantized types TensorRT accepts for Q/DQ (INT8 is what this project produces; FP8 and INT4 are also valid).
_QUANTIZED_TYPES = (TensorProto.INT8, TensorProto.FLOAT8E4M3FN, TensorProto.INT4)
_SCALE_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16)
_HALF_TYPES = (TensorProto.FLOAT16, TensorProto.BFLOAT16)
_BINDABLE_INPUT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT32, TensorProto.INT64)
_MODEL = "opset_import"  # the `node` of findings about the model as a whole


@dataclass(frozen=True)
class Finding:
    """One broken rule: ``rule`` is a stable id, ``severity`` is "error" or "warning"."""

    rule: str
    severity: str
    node: str
    message: str


@dataclass
class _GraphIndex(graph.ValueIndex):
    """The main graph with the lookups the rules share (see :class:`~trt_quant.onnx.graph.ValueIndex`)."""

    opset: int | None = None  # default-domain opset version, None when not imported

    def qdq_nodes(self, op_types: tuple[str, ...] = _QDQ_OPS) -> Iterator[onnx.NodeProto]:
        """QuantizeLinear and DequantizeLinear nodes (those with a scale input), in graph order."""
        return (node for node in self.graph.node if node.op_type in op_types and len(node.input) > 1)


def _node_name(node: onnx.NodeProto) -> str:
    """The node's name, or its op type and outputs when the exporter left it unnamed."""
    return node.name or f"{node.op_type}({', '.join(node.output)})"


def _int_attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((attr.i for attr in node.attribute if attr.name == name), default)


def _type_name(data_type: int) -> str:
    return TensorProto.DataType.Name(data_type)


def _build_index(model: onnx.ModelProto) -> _GraphIndex:
    index = _GraphIndex.of(model.graph)
    index.opset = next((op.version for op in model.opset_import if op.domain in _DEFAULT_DOMAINS), None)
    return index


def _values(tensor: onnx.TensorProto) -> np.ndarray:
    return numpy_helper.to_array(tensor).astype(np.float64)


def _zero_point(index: _GraphIndex) -> Iterator[Finding]:
    """Zero-points must be constant, of a signed quantized type (INT8, not UINT8) and all zero."""
    for node in index.qdq_nodes():
        name = _node_name(node)
        zp_name = node.input[2] if len(node.input) > 2 else ""
        what = f"zero-point '{zp_name}' of {node.op_type} '{name}'"
        if not zp_name:
            output_type = _int_attr(node, "output_dtype", 0)  # 0: UINT8 unless a zero-point says otherwise
            if node.op_type == "QuantizeLinear" and output_type not in _QUANTIZED_TYPES:
                message = (
                    f"QuantizeLinear '{name}' has no zero-point, so it outputs UINT8 where TensorRT needs "
                    "INT8; give it an INT8 zero-point of 0."
                )
                yield Finding("zero-point", "error", name, message)
            continue
        tensor = index.constant(zp_name)
        if tensor is None:
            message = f"{what} is computed at run time; store it as an INT8 initializer of zeros."
        elif tensor.data_type not in _QUANTIZED_TYPES:
            message = (
                f"{what} is {_type_name(tensor.data_type)}, but TensorRT supports only symmetric INT8; "
                "use an INT8 zero-point of 0."
            )
        elif np.any(_values(tensor) != 0):
            message = (
                f"{what} is not all zeros, but TensorRT supports only symmetric quantization; "
                "recalibrate with zero-points of 0."
            )
        else:
            continue
        yield Finding("zero-point", "error", name, message)


def _scale(index: _GraphIndex) -> Iterator[Finding]:
    """Scales must be constant float tensors whose values are all positive and finite."""
    for node in index.qdq_nodes():
        name, scale_name = _node_name(node), node.input[1]
        what = f"scale '{scale_name}' of {node.op_type} '{name}'"
        tensor = index.constant(scale_name)
        if tensor is None:
            message = (
                f"{what} is computed at run time; TensorRT needs constant scales, so make it an initializer."
            )
        elif tensor.data_type not in _SCALE_TYPES:
            message = f"{what} is {_type_name(tensor.data_type)}; store it as float32, float16 or bfloat16."
        else:
            values = _values(tensor)
            bad = int(np.count_nonzero(~np.isfinite(values) | (values <= 0)))
            if not bad:
                continue
            message = (
                f"{what} has {bad} zero, negative or non-finite value(s); "
                "recalibrate so every scale is positive and finite."
            )
        yield Finding("scale", "error", name, message)


def _quantized_weight(index: _GraphIndex, node: onnx.NodeProto) -> onnx.TensorProto | None:
    """The constant a Q/DQ node quantizes (directly, or through the QuantizeLinear feeding a DQ)."""
    data = node.input[0]
    producer = index.producer.get(data)
    if producer is not None and producer.op_type == "QuantizeLinear":
        data = producer.input[0]
    return index.constant(data)


def _expected_channel_axis(index: _GraphIndex, node: onnx.NodeProto, rank: int) -> tuple[int, str] | None:
    """The output-channel axis of the weight ``node`` produces, and a description of the consuming layer.

    Follows the single consumer through DequantizeLinear, Identity and Transpose nodes to a MatMul or
    Gemm (input B) or Conv (input W); None when the weight goes anywhere else.
    """
    tensor, perms = node.output[0], []
    seen: set[str] = set()
    while tensor not in seen:  # the else branch below runs only on a cycle
        seen.add(tensor)
        consumers = index.consumers.get(tensor, [])
        if len(consumers) != 1:
            return None
        consumer = consumers[0]
        if consumer.op_type not in ("DequantizeLinear", "Identity", "Transpose"):
            break
        if consumer.op_type == "Transpose":
            perm = next((list(a.ints) for a in consumer.attribute if a.name == "perm"), None)
            perms.append(perm or list(reversed(range(rank))))
        tensor = consumer.output[0]
    else:
        return None
    if list(consumer.input[1:2]) != [tensor]:
        return None
    if consumer.op_type == "MatMul":
        axis, layout = rank - 1, "[K, N]"
    elif consumer.op_type == "Gemm":
        trans_b = _int_attr(consumer, "transB", 0)
        axis, layout = (0, "[N, K] with transB=1") if trans_b else (1, "[K, N]")
    elif consumer.op_type == "Conv":
        axis, layout = 0, "[C_out, C_in, ...]"
    else:
        return None
    for perm in reversed(perms):  # map the consumer's axis back through each Transpose to the stored weight
        if not 0 <= axis < len(perm):
            return None
        axis = perm[axis]
    via = " through a Transpose" if perms else ""
    return axis, f"{consumer.op_type} '{_node_name(consumer)}' (weights read as {layout}{via})"


def _per_channel_axis(index: _GraphIndex) -> Iterator[Finding]:
    """Per-channel DequantizeLinear only on weights, along the consuming layer's output-channel axis."""
    for node in index.qdq_nodes(("DequantizeLinear",)):
        scale = index.constant(node.input[1])
        if scale is None or len(scale.dims) != 1 or scale.dims[0] <= 1:
            continue
        name = _node_name(node)
        weight = _quantized_weight(index, node)
        if weight is None:
            message = (
                f"DequantizeLinear '{name}' is per-channel ({scale.dims[0]} scales) on an activation, but "
                "TensorRT supports per-channel quantization only for weights; quantize it per-tensor."
            )
            yield Finding("per-channel-axis", "error", name, message)
            continue
        rank = len(weight.dims)
        axis = _int_attr(node, "axis", 1)
        axis = axis + rank if axis < 0 else axis
        expected = _expected_channel_axis(index, node, rank)
        if expected is not None and expected[0] != axis:
            right, layer = expected
            message = (
                f"DequantizeLinear '{name}' quantizes its weight along axis {axis}, but it feeds {layer}, "
                f"so the output-channel axis is {right}; quantize along axis {right}."
            )
            yield Finding("per-channel-axis", "error", name, message)


def _opset(index: _GraphIndex) -> Iterator[Finding]:
    """Default-domain opset >= 13, and >= 19 when any Q/DQ scale is float16 or bfloat16."""
    if index.opset is None:
        message = "the model imports no default-domain ONNX opset; re-export it with opset 13 or newer."
        yield Finding("opset", "error", _MODEL, message)
        return
    if index.opset < 13:
        message = (
            f"the default-domain opset is {index.opset}, but TensorRT's explicit quantization needs "
            "opset 13 or newer; re-export with a newer opset."
        )
        yield Finding("opset", "error", _MODEL, message)
    half = []
    for node in index.qdq_nodes():
        scale = index.constant(node.input[1])
        if scale is not None and scale.data_type in _HALF_TYPES:
            half.append(node)
    if half and index.opset < 19:
        name, others = _node_name(half[0]), len(half) - 1
        rest = f" (and {others} other Q/DQ node(s))" if others else ""
        message = (
            f"{half[0].op_type} '{name}'{rest} has a float16/bfloat16 scale, which needs opset 19 but the "
            f"model uses opset {index.opset}; re-export with opset 19 or keep the scales float32."
        )
        yield Finding("opset", "error", name, message)


def _reaches_dq(index: _GraphIndex, tensor: str) -> bool:
    """Whether ``tensor`` comes from a DequantizeLinear, directly or through Transpose/Reshape/Cast."""
    seen: set[str] = set()
    while tensor not in seen:
        seen.add(tensor)
        producer = index.producer.get(tensor)
        if producer is None or producer.op_type not in ("DequantizeLinear", "Transpose", "Reshape", "Cast"):
            return False
        if producer.op_type == "DequantizeLinear":
            return True
        tensor = producer.input[0]
    return False


def _matmul_dq(index: _GraphIndex) -> Iterator[Finding]:
    """A MatMul/Gemm with a DequantizeLinear on one input must have one on the other too."""
    for node in index.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
            continue
        quantized = [_reaches_dq(index, tensor) for tensor in node.input[:2]]
        if any(quantized) and not all(quantized):
            name = _node_name(node)
            has, lacks = ("A", "B") if quantized[0] else ("B", "A")
            message = (
                f"{node.op_type} '{name}' is partially quantized: input {has} has a DequantizeLinear but "
                f"input {lacks} does not, so TensorRT runs it in float; add a QuantizeLinear/DequantizeLinear"
                f" pair on input {lacks} or remove the one on input {has}."
            )
            yield Finding("matmul-dq", "warning", name, message)


_SHAPE_OPS = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Flatten")


def _cast_before_gemm(index: _GraphIndex, tensor: str) -> tuple[onnx.NodeProto, onnx.NodeProto] | None:
    """(first Cast, DequantizeLinear) when ``tensor`` comes from a DequantizeLinear through a Cast (and
    shape-only ops), else None."""
    cast = None
    seen: set[str] = set()
    while tensor not in seen:
        seen.add(tensor)
        producer = index.producer.get(tensor)
        if producer is None:
            return None
        if producer.op_type == "DequantizeLinear":
            return (cast, producer) if cast is not None else None
        if producer.op_type == "Cast":
            cast = producer
        elif producer.op_type not in _SHAPE_OPS:
            return None
        tensor = producer.input[0]
    return None


def _dq_cast(index: _GraphIndex) -> Iterator[Finding]:
    """A quantized MatMul/Gemm reads its DequantizeLinear outputs without a Cast between them."""
    for node in index.graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        for slot, tensor in zip("AB", node.input[:2], strict=False):
            found = _cast_before_gemm(index, tensor)
            if found is None:
                continue
            cast, dequantize = found
            name = _node_name(node)
            message = (
                f"{node.op_type} '{name}' reads DequantizeLinear '{_node_name(dequantize)}' on input {slot} "
                f"through Cast '{_node_name(cast)}', so TensorRT cannot fuse them into a quantized GEMM and "
                "computes in float; give the DequantizeLinear a scale of the type the MatMul computes in "
                "(trt-quant build --onnx-only writes such a graph)."
            )
            yield Finding("dq-cast", "error", name, message)


def _rank(value: onnx.ValueInfoProto) -> int | None:
    tensor_type = value.type.tensor_type
    return (
        len(tensor_type.shape.dim)
        if value.type.HasField("tensor_type") and tensor_type.HasField("shape")
        else None
    )


def _control_flow(index: _GraphIndex) -> Iterator[Finding]:
    """Every If/Loop/Scan is reported; an If whose branches return tensors of different ranks is an error."""
    for node in index.graph.node:
        if node.op_type not in ("If", "Loop", "Scan") or node.domain not in _DEFAULT_DOMAINS:
            continue
        name = _node_name(node)
        branches = {attr.name: attr.g for attr in node.attribute if attr.type == onnx.AttributeProto.GRAPH}
        if node.op_type == "If" and {"then_branch", "else_branch"} <= set(branches):
            pairs = zip(branches["then_branch"].output, branches["else_branch"].output, strict=False)
            for position, (then_value, else_value) in enumerate(pairs):
                ranks = _rank(then_value), _rank(else_value)
                if None not in ranks and ranks[0] != ranks[1]:
                    message = (
                        f"If '{name}' returns a rank-{ranks[0]} tensor from then_branch and a rank-{ranks[1]} "
                        f"tensor from else_branch (output {position}); TensorRT needs equal ranks unless the "
                        "condition is a build-time constant, so re-export without the If (trt-quant's DeBERTa "
                        "recipe removes the one of build_rpos)."
                    )
                    yield Finding("if-rank", "error", name, message)
        message = (
            f"{node.op_type} '{name}' is data-dependent control flow; TensorRT builds it as a conditional or "
            "loop layer, which no fusion crosses; re-export without it where the condition is known."
        )
        yield Finding("control-flow", "warning", name, message)


def _mask_cast(index: _GraphIndex) -> Iterator[Finding]:
    """No Cast to UINT8 inside the network (DeBERTa exports cast attention masks that way)."""
    for node in index.graph.node:
        if node.op_type == "Cast" and _int_attr(node, "to", 0) == TensorProto.UINT8:
            name = _node_name(node)
            message = (
                f"Cast '{name}' converts to UINT8, which TensorRT supports only on network inputs and "
                "outputs (DeBERTa exports do this to attention masks); cast to BOOL or INT32 instead."
            )
            yield Finding("mask-cast", "error", name, message)


def _unsupported_op(index: _GraphIndex) -> Iterator[Finding]:
    """Every node must be an operator the TensorRT ONNX parser supports (see ``SUPPORTED_OPS``)."""
    for node in index.graph.node:
        if node.domain in _DEFAULT_DOMAINS and node.op_type in SUPPORTED_OPS:
            continue
        name = _node_name(node)
        domain = "the default domain" if node.domain in _DEFAULT_DOMAINS else f"domain '{node.domain}'"
        message = (
            f"{node.op_type} '{name}' ({domain}) is not an operator TensorRT's ONNX parser supports; "
            "re-export without it or register a TensorRT plugin for it."
        )
        yield Finding("unsupported-op", "error", name, message)


def _input_dtype(index: _GraphIndex) -> Iterator[Finding]:
    """Graph inputs must be float32, float16, int32 or int64 tensors; BOOL is bound but unusual."""
    initializers = {init.name for init in index.graph.initializer}
    for value in index.graph.input:
        name = value.name
        if name in initializers:
            continue
        elem = value.type.tensor_type.elem_type if value.type.HasField("tensor_type") else None
        if elem == TensorProto.BOOL:
            message = (
                f"graph input '{name}' is BOOL, which TensorRT binds but tokenizers do not produce "
                "(they give int64 masks); export it as int64 unless callers pass booleans on purpose."
            )
            yield Finding("input-dtype", "warning", name, message)
        elif elem not in _BINDABLE_INPUT_TYPES:
            kind = "not a typed tensor" if elem is None else _type_name(elem)
            message = (
                f"graph input '{name}' is {kind}, which the runtimes do not bind; "
                "export it as a float32, float16, int32 or int64 tensor."
            )
            yield Finding("input-dtype", "error", name, message)


def _zero_point_type(index: _GraphIndex, node: onnx.NodeProto) -> int | None:
    """The element type of a Q/DQ node's constant zero point (None without one)."""
    tensor = index.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    return None if tensor is None else tensor.data_type


def _fp8_nodes(index: _GraphIndex) -> Iterator[onnx.NodeProto]:
    """Q/DQ nodes whose zero point is FP8 E4M3FN."""
    return (n for n in index.qdq_nodes() if _zero_point_type(index, n) == TensorProto.FLOAT8E4M3FN)


def _fp8_opset(index: _GraphIndex) -> Iterator[Finding]:
    """FP8 QuantizeLinear/DequantizeLinear exist from opset 19 on."""
    first = next(_fp8_nodes(index), None)
    if first is not None and index.opset is not None and index.opset < 19:
        name = _node_name(first)
        message = (
            f"{first.op_type} '{name}' is FP8 (float8e4m3fn zero-point), which needs opset 19 but the model "
            f"uses opset {index.opset}; re-export with opset 19 (trt-quant convert --precision fp8 does)."
        )
        yield Finding("fp8-opset", "error", name, message)


def _fp8_pair_types(index: _GraphIndex) -> Iterator[Finding]:
    """A strongly typed network takes types from the graph: the DequantizeLinear reading an FP8
    QuantizeLinear must read the same quantized type and use a scale of the same type."""
    for node in _fp8_nodes(index):
        if node.op_type != "QuantizeLinear":
            continue
        scale = index.constant(node.input[1])
        for reader in index.consumers.get(node.output[0], []):
            if reader.op_type != "DequantizeLinear":
                continue
            reader_scale = index.constant(reader.input[1])
            reader_zero = _zero_point_type(index, reader)
            name = _node_name(reader)
            if reader_zero != TensorProto.FLOAT8E4M3FN:
                kind = "none" if reader_zero is None else _type_name(reader_zero)
                message = (
                    f"DequantizeLinear '{name}' reads the FP8 output of '{_node_name(node)}' with a {kind} "
                    "zero-point; give it a float8e4m3fn zero-point of 0 like its QuantizeLinear."
                )
                yield Finding("fp8-types", "error", name, message)
            elif scale is not None and reader_scale is not None and scale.data_type != reader_scale.data_type:
                message = (
                    f"DequantizeLinear '{name}' has a {_type_name(reader_scale.data_type)} scale but its FP8 "
                    f"QuantizeLinear '{_node_name(node)}' a {_type_name(scale.data_type)} one; a strongly typed "
                    "network needs one scale type per pair, so store both alike."
                )
                yield Finding("fp8-types", "error", name, message)


def _fp8_matmul_scale_types(index: _GraphIndex) -> Iterator[Finding]:
    """Both FP8 DequantizeLinear inputs of a MatMul/Gemm produce the same float type (their scales')."""
    fp8 = {id(node) for node in _fp8_nodes(index)}
    for node in index.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
            continue
        sources = [index.producer.get(name) for name in node.input[:2]]
        if not all(s is not None and id(s) in fp8 and s.op_type == "DequantizeLinear" for s in sources):
            continue
        scales = [index.constant(s.input[1]) for s in sources if s is not None]
        types = {scale.data_type for scale in scales if scale is not None}
        if len(types) > 1:
            name = _node_name(node)
            message = (
                f"{node.op_type} '{name}' reads FP8 DequantizeLinear outputs of different types "
                f"({', '.join(sorted(_type_name(t) for t in types))}); a strongly typed network cannot multiply "
                "them, so give both scales one type."
            )
            yield Finding("fp8-types", "error", name, message)


_RULES: tuple[Callable[[_GraphIndex], Iterator[Finding]], ...] = (
    _opset,
    _input_dtype,
    _unsupported_op,
    _zero_point,
    _scale,
    _per_channel_axis,
    _matmul_dq,
    _dq_cast,
    _mask_cast,
    _control_flow,
    _fp8_opset,
    _fp8_pair_types,
    _fp8_matmul_scale_types,
)


def check_model(model: onnx.ModelProto) -> list[Finding]:
    """Check ``model`` against TensorRT's explicit-quantization rules; findings come in graph order."""
    index = _build_index(model)
    position = {value.name: i for i, value in enumerate(model.graph.input)}
    for i, node in enumerate(model.graph.node):
        position.setdefault(_node_name(node), len(model.graph.input) + i)
    findings = [finding for rule in _RULES for finding in rule(index)]
    return sorted(findings, key=lambda finding: position.get(finding.node, -1))


def check_onnx(path: str | Path) -> list[Finding]:
    """Load the ONNX file at ``path`` (with its external data) and check it, see ``check_model``."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"There is no ONNX file at {path}; pass the path of an exported .onnx file.")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(str(path))
    except Exception as exc:  # protobuf, checker and I/O errors alike mean an unusable file
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200].rstrip(".")
        message = f"{path} is not a valid ONNX model ({reason}); re-export it or copy it again."
        raise ArtifactError(message) from exc
    return check_model(model)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def format_findings(findings: list[Finding]) -> str:
    """The findings as a plain-text table, or ``NO_FINDINGS`` when there are none."""
    if not findings:
        return NO_FINDINGS
    errors = sum(finding.severity == "error" for finding in findings)
    header = ("severity", "rule", "node", "message")
    rows = [header, *((f.severity, f.rule, f.node, f.message) for f in findings)]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    summary = f"{_plural(len(findings), 'finding')}: {_plural(errors, 'error')}, "
    summary += _plural(len(findings) - errors, "warning")
    table = [
        "  ".join(row[column].ljust(widths[column]) for column in range(3)) + "  " + row[3] for row in rows
    ]
    return "\n".join([summary, *table])
