"""Tests for trt_quant.onnx.check: each TensorRT explicit-quantization rule on a small graph built by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from trt_quant.errors import ArtifactError
from trt_quant.onnx.check import NO_FINDINGS, SUPPORTED_OPS, Finding, check_model, check_onnx, format_findings

RNG = np.random.default_rng(0)


def init(name: str, value: object, dtype: type | None = None) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def make_model(
    nodes: list[onnx.NodeProto],
    initializers: list[onnx.TensorProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    opset: int = 17,
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def activation_qdq(src: str, prefix: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    """Per-tensor symmetric INT8 Q -> DQ of an activation; nodes are named '<prefix>/Q' and '<prefix>/DQ'."""
    scale, zp = f"{prefix}_scale", f"{prefix}_zp"
    nodes = [
        helper.make_node("QuantizeLinear", [src, scale, zp], [f"{prefix}_q"], name=f"{prefix}/Q"),
        helper.make_node(
            "DequantizeLinear", [f"{prefix}_q", scale, zp], [f"{prefix}_dq"], name=f"{prefix}/DQ"
        ),
    ]
    return nodes, [init(scale, 0.05, np.float32), init(zp, 0, np.int8)], f"{prefix}_dq"


def weight_dq(
    prefix: str, shape: tuple[int, ...], axis: int
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    """An INT8 weight initializer with a per-channel DequantizeLinear '<prefix>/DQ' along ``axis``."""
    channels = shape[axis]
    inits = [
        init(f"{prefix}_w", RNG.integers(-127, 128, shape), np.int8),
        init(f"{prefix}_scale", np.full(channels, 0.01), np.float32),
        init(f"{prefix}_zp", np.zeros(channels), np.int8),
    ]
    dq = helper.make_node(
        "DequantizeLinear",
        [f"{prefix}_w", f"{prefix}_scale", f"{prefix}_zp"],
        [f"{prefix}_wdq"],
        name=f"{prefix}/DQ",
        axis=axis,
    )
    return [dq], inits, f"{prefix}_wdq"


def clean_model(fc1_axis: int = 1, fc2_axis: int = 0, fc3_axis: int = 0, opset: int = 17) -> onnx.ModelProto:
    """Three quantized linear layers the way TensorRT wants them.

    fc1: MatMul with weights [K, N] (channel axis 1); fc2: Gemm transB=1 with weights [N, K] (axis 0);
    fc3: MatMul with weights [N, K] stored transposed and fed through a Transpose (axis 0).
    """
    nodes, inits = [], []

    def add(part: tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]) -> str:
        nodes.extend(part[0])
        inits.extend(part[1])
        return part[2]

    a = add(activation_qdq("x", "in"))
    w1 = add(weight_dq("fc1", (4, 3), fc1_axis))
    nodes.append(helper.make_node("MatMul", [a, w1], ["h1"], name="fc1/MatMul"))
    nodes.append(helper.make_node("Relu", ["h1"], ["r1"], name="relu"))
    b = add(activation_qdq("r1", "mid"))
    w2 = add(weight_dq("fc2", (5, 3), fc2_axis))
    nodes.append(helper.make_node("Gemm", [b, w2], ["h2"], name="fc2/Gemm", transB=1))
    c = add(activation_qdq("h2", "out"))
    w3 = add(weight_dq("fc3", (6, 5), fc3_axis))
    nodes.append(helper.make_node("Transpose", [w3], ["w3t"], name="fc3/Transpose", perm=[1, 0]))
    nodes.append(helper.make_node("MatMul", [c, "w3t"], ["y"], name="fc3/MatMul"))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6])
    return make_model(nodes, inits, [x], [y], opset)


def with_initializer(model: onnx.ModelProto, tensor: onnx.TensorProto) -> onnx.ModelProto:
    """A copy of ``model`` with the initializer of the same name replaced by ``tensor``."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    (old,) = [t for t in copy.graph.initializer if t.name == tensor.name]
    old.CopyFrom(tensor)
    return copy


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    (found,) = [n for n in model.graph.node if n.name == name]
    return found


def ids(findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.rule, f.node) for f in findings]


# --- a clean graph ---------------------------------------------------------------------------------------


def test_clean_graph_is_valid_onnx_and_has_no_findings() -> None:
    model = clean_model()
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": RNG.standard_normal((2, 4)).astype(np.float32)})
    assert y.shape == (2, 6)
    assert check_model(model) == []
    assert format_findings(check_model(model)) == NO_FINDINGS


def test_scale_from_constant_node_through_identity_is_constant() -> None:
    model = clean_model()
    model.graph.initializer.remove(next(t for t in model.graph.initializer if t.name == "in_scale"))
    value = numpy_helper.from_array(np.asarray(0.05, np.float32))
    model.graph.node.insert(0, helper.make_node("Constant", [], ["raw_scale"], name="const", value=value))
    model.graph.node.insert(1, helper.make_node("Identity", ["raw_scale"], ["in_scale"], name="ident"))
    assert check_model(model) == []


# --- zero-point -------------------------------------------------------------------------------------------


def test_uint8_zero_point_is_an_error_on_both_q_and_dq() -> None:
    model = with_initializer(clean_model(), init("in_zp", 0, np.uint8))
    findings = check_model(model)
    assert ids(findings) == [("zero-point", "in/Q"), ("zero-point", "in/DQ")]
    assert all(f.severity == "error" for f in findings)
    assert "'in_zp'" in findings[0].message
    assert "UINT8" in findings[0].message and "symmetric INT8" in findings[0].message


def test_nonzero_zero_point_is_an_error() -> None:
    model = with_initializer(clean_model(), init("fc1_zp", [0, 3, 0], np.int8))
    (finding,) = check_model(model)
    assert ids([finding]) == [("zero-point", "fc1/DQ")]
    assert "not all zeros" in finding.message and "zero-points of 0" in finding.message


def test_quantize_without_zero_point_outputs_uint8() -> None:
    model = clean_model()
    del node(model, "in/Q").input[2]
    (finding,) = check_model(model)
    assert ids([finding]) == [("zero-point", "in/Q")]
    assert "no zero-point" in finding.message and "outputs UINT8" in finding.message


def test_dequantize_of_int8_weights_without_zero_point_is_fine() -> None:
    model = clean_model()
    del node(model, "fc1/DQ").input[2]
    assert check_model(model) == []


def test_quantize_without_zero_point_but_int8_output_dtype_is_fine() -> None:
    q = helper.make_node("QuantizeLinear", ["x", "s"], ["q"], name="q", output_dtype=TensorProto.INT8)
    dq = helper.make_node("DequantizeLinear", ["q", "s"], ["y"], name="dq")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    model = make_model([q, dq], [init("s", 0.1, np.float32)], [x], [y], opset=21)
    assert check_model(model) == []


def test_zero_point_computed_at_run_time_is_an_error() -> None:
    model = clean_model()
    model.graph.initializer.remove(next(t for t in model.graph.initializer if t.name == "out_zp"))
    model.graph.node.insert(
        0, helper.make_node("Cast", ["x"], ["out_zp"], name="zp_cast", to=TensorProto.INT8)
    )
    findings = [f for f in check_model(model) if f.rule == "zero-point"]
    assert ids(findings) == [("zero-point", "out/Q"), ("zero-point", "out/DQ")]
    assert "computed at run time" in findings[0].message


# --- scale ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0.0, -0.05, np.inf, np.nan])
def test_non_positive_or_non_finite_scale_is_an_error(value: float) -> None:
    model = with_initializer(clean_model(), init("mid_scale", value, np.float32))
    findings = check_model(model)
    assert ids(findings) == [("scale", "mid/Q"), ("scale", "mid/DQ")]
    assert "'mid_scale'" in findings[0].message
    assert "1 zero, negative or non-finite value(s)" in findings[0].message


def test_bad_per_channel_scale_values_are_counted() -> None:
    model = with_initializer(clean_model(), init("fc1_scale", [0.01, 0.0, -1.0], np.float32))
    (finding,) = check_model(model)
    assert ids([finding]) == [("scale", "fc1/DQ")]
    assert "2 zero, negative or non-finite" in finding.message and "positive and finite" in finding.message


def test_scale_computed_at_run_time_is_an_error() -> None:
    model = clean_model()
    model.graph.initializer.remove(next(t for t in model.graph.initializer if t.name == "in_scale"))
    model.graph.node.insert(0, helper.make_node("ReduceMax", ["x"], ["in_scale"], name="amax", keepdims=0))
    findings = check_model(model)
    assert ids(findings) == [("scale", "in/Q"), ("scale", "in/DQ")]
    assert "computed at run time" in findings[0].message and "initializer" in findings[0].message


def test_integer_scale_is_an_error() -> None:
    model = with_initializer(clean_model(), init("in_scale", 1, np.int32))
    findings = check_model(model)
    assert ids(findings) == [("scale", "in/Q"), ("scale", "in/DQ")]
    assert "INT32" in findings[0].message and "float32" in findings[0].message


# --- per-channel-axis -------------------------------------------------------------------------------------


def test_per_channel_activation_is_an_error() -> None:
    model = with_initializer(clean_model(), init("in_scale", np.full(4, 0.05), np.float32))
    model = with_initializer(model, init("in_zp", np.zeros(4), np.int8))
    (finding,) = check_model(model)  # reported on the DQ, where TensorRT reads the quantization
    assert ids([finding]) == [("per-channel-axis", "in/DQ")]
    assert (
        "activation" in finding.message and "per-tensor" in finding.message and "4 scales" in finding.message
    )


@pytest.mark.parametrize(
    ("kwargs", "dq", "wrong", "right", "words"),
    [
        ({"fc1_axis": 0}, "fc1/DQ", 0, 1, "MatMul 'fc1/MatMul' (weights read as [K, N])"),
        ({"fc2_axis": 1}, "fc2/DQ", 1, 0, "Gemm 'fc2/Gemm' (weights read as [N, K] with transB=1)"),
        ({"fc3_axis": 1}, "fc3/DQ", 1, 0, "MatMul 'fc3/MatMul' (weights read as [K, N] through a Transpose)"),
    ],
)
def test_weight_quantized_along_the_wrong_axis(
    kwargs: dict, dq: str, wrong: int, right: int, words: str
) -> None:
    (finding,) = check_model(clean_model(**kwargs))
    assert ids([finding]) == [("per-channel-axis", dq)]
    assert finding.severity == "error"
    assert f"along axis {wrong}" in finding.message and f"quantize along axis {right}." in finding.message
    assert words in finding.message


def test_negative_axis_is_normalized() -> None:
    model = clean_model()
    axis = next(a for a in node(model, "fc1/DQ").attribute if a.name == "axis")
    axis.i = -1
    assert check_model(model) == []


@pytest.mark.parametrize(("axis", "expected"), [(0, []), (1, [("per-channel-axis", "conv/DQ")])])
def test_conv_weights_use_axis_zero(axis: int, expected: list) -> None:
    nodes, inits, a = activation_qdq("x", "in")
    wnodes, winits, w = weight_dq("conv", (3, 2, 1, 1), axis)
    nodes += [*wnodes, helper.make_node("Conv", [a, w], ["y"], name="conv")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])
    findings = check_model(make_model(nodes, inits + winits, [x], [y]))
    assert ids(findings) == expected
    if findings:
        assert "Conv 'conv'" in findings[0].message and "quantize along axis 0" in findings[0].message


@pytest.mark.parametrize(("axis", "flagged"), [(1, False), (0, True)])
def test_float_weight_through_quantize_counts_as_weight(axis: int, flagged: bool) -> None:
    channels = (4, 3)[axis]
    inits = [
        init("w", RNG.standard_normal((4, 3)), np.float32),
        init("s", np.full(channels, 0.01), np.float32),
        init("zp", np.zeros(channels), np.int8),
    ]
    nodes, act_inits, a = activation_qdq("x", "in")
    nodes += [
        helper.make_node("QuantizeLinear", ["w", "s", "zp"], ["wq"], name="w/Q", axis=axis),
        helper.make_node("DequantizeLinear", ["wq", "s", "zp"], ["wdq"], name="w/DQ", axis=axis),
        helper.make_node("MatMul", [a, "wdq"], ["y"], name="mm"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    findings = check_model(make_model(nodes, inits + act_inits, [x], [y]))
    assert ids(findings) == ([("per-channel-axis", "w/DQ")] if flagged else [])


# --- opset ------------------------------------------------------------------------------------------------


def test_opset_below_13_is_an_error() -> None:
    (finding,) = check_model(clean_model(opset=12))
    assert ids([finding]) == [("opset", "opset_import")]
    assert "opset is 12" in finding.message and "13 or newer" in finding.message


def test_missing_default_opset_is_an_error() -> None:
    model = clean_model()
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    (finding,) = check_model(model)
    assert ids([finding]) == [("opset", "opset_import")]
    assert "no default-domain" in finding.message


def half_scale_model(data_type: int, opset: int) -> onnx.ModelProto:
    model = clean_model(opset=opset)
    for tensor in model.graph.initializer:
        if tensor.name.endswith("_scale"):
            values = numpy_helper.to_array(tensor).astype(np.float32)
            tensor.CopyFrom(helper.make_tensor(tensor.name, data_type, values.shape, values.ravel()))
    return model


@pytest.mark.parametrize("data_type", [TensorProto.FLOAT16, TensorProto.BFLOAT16])
def test_half_precision_scales_need_opset_19(data_type: int) -> None:
    (finding,) = check_model(half_scale_model(data_type, opset=17))
    assert ids([finding]) == [("opset", "in/Q")]  # named once, with the count of the others
    assert "(and 8 other Q/DQ node(s))" in finding.message
    assert "needs opset 19" in finding.message and "opset 17" in finding.message
    assert check_model(half_scale_model(data_type, opset=19)) == []


# --- matmul-dq --------------------------------------------------------------------------------------------


def test_matmul_with_dq_on_one_input_is_partially_quantized() -> None:
    model = clean_model()
    node(model, "fc1/MatMul").input[0] = "x"  # bypass the activation Q/DQ
    (finding,) = check_model(model)
    assert ids([finding]) == [("matmul-dq", "fc1/MatMul")]
    assert finding.severity == "warning"
    assert "partially quantized" in finding.message
    assert "input B has a DequantizeLinear but input A does not" in finding.message


def test_dq_is_found_through_reshape_and_float_matmul_is_fine() -> None:
    nodes, inits, w = weight_dq("w", (4, 3), 1)
    inits.append(init("shape", [4, 3], np.int64))
    nodes += [
        helper.make_node("Reshape", [w, "shape"], ["wr"], name="reshape"),
        helper.make_node("MatMul", ["wr", "x"], ["h"], name="quantized_a_only"),
        helper.make_node("MatMul", ["x", "x"], ["y"], name="float_matmul"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 3])
    h = helper.make_tensor_value_info("h", TensorProto.FLOAT, [4, 3])
    (finding,) = check_model(make_model(nodes, inits, [x], [y, h]))
    assert ids([finding]) == [("matmul-dq", "quantized_a_only")]
    assert "input A has a DequantizeLinear but input B does not" in finding.message


# --- dq-cast ----------------------------------------------------------------------------------------------


def fp16_linear_with_cast() -> onnx.ModelProto:
    """An FP16 linear layer whose weight DequantizeLinear kept an FP32 scale, so a Cast sits before the
    MatMul (what precision.py wrote for scales FP16 could not hold before they were clamped)."""
    nodes, inits, w = weight_dq("fc", (4, 3), 1)  # FP32 scale: FP32 output
    nodes += [
        helper.make_node("QuantizeLinear", ["x", "in_scale", "in_zp"], ["xq"], name="in/Q"),
        helper.make_node("DequantizeLinear", ["xq", "in_scale", "in_zp"], ["xdq"], name="in/DQ"),
        helper.make_node("Cast", [w], ["w16"], name="fc/Cast", to=TensorProto.FLOAT16),
        helper.make_node("MatMul", ["xdq", "w16"], ["y"], name="fc/MatMul"),
    ]
    inits += [init("in_scale", 0.05, np.float16), init("in_zp", 0, np.int8)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, [2, 3])
    return make_model(nodes, inits, [x], [y], opset=19)


def test_cast_between_dequantize_and_matmul_is_an_error() -> None:
    model = fp16_linear_with_cast()
    onnx.checker.check_model(model, full_check=True)
    (finding,) = check_model(model)
    assert ids([finding]) == [("dq-cast", "fc/MatMul")]
    assert finding.severity == "error"
    assert finding.message == (
        "MatMul 'fc/MatMul' reads DequantizeLinear 'fc/DQ' on input B through Cast 'fc/Cast', so TensorRT "
        "cannot fuse them into a quantized GEMM and computes in float; give the DequantizeLinear a scale of "
        "the type the MatMul computes in (trt-quant build --onnx-only writes such a graph)."
    )


def test_dequantize_with_the_matmul_type_needs_no_cast() -> None:
    model = fp16_linear_with_cast()
    node(model, "fc/MatMul").input[1] = "fc_wdq"
    model.graph.node.remove(node(model, "fc/Cast"))
    scale = next(t for t in model.graph.initializer if t.name == "fc_scale")
    scale.CopyFrom(init("fc_scale", np.full(3, 0.01), np.float16))
    onnx.checker.check_model(model, full_check=True)
    assert check_model(model) == []


def test_cast_through_a_transpose_is_found_and_a_float_cast_without_dq_is_fine() -> None:
    model = clean_model()
    fc3 = node(model, "fc3/MatMul")
    model.graph.node.insert(
        list(model.graph.node).index(fc3),
        helper.make_node("Cast", ["fc3_wdq"], ["fc3_cast"], name="fc3/Cast", to=TensorProto.FLOAT),
    )
    node(model, "fc3/Transpose").input[0] = "fc3_cast"
    findings = check_model(model)
    assert ids(findings) == [("dq-cast", "fc3/MatMul")]
    assert "through Cast 'fc3/Cast'" in findings[0].message


# --- control flow -------------------------------------------------------------------------------------------


def branch(name: str, rank: int) -> onnx.GraphProto:
    """A subgraph returning a constant of ``rank`` dimensions."""
    shape = [2] * rank
    value = helper.make_node(
        "Constant", [], [f"{name}_out"], value=init(f"{name}_v", np.ones(shape, np.float32))
    )
    output = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, shape)
    return helper.make_graph([value], name, [], [output])


def if_model(then_rank: int, else_rank: int) -> onnx.ModelProto:
    """The shape of DeBERTa's scripted build_rpos: an If on a run-time condition."""
    nodes = [
        helper.make_node("Equal", ["a", "b"], ["same"], name="compare"),
        helper.make_node(
            "If",
            ["same"],
            ["rel_pos"],
            name="build_rpos/If",
            then_branch=branch("then", then_rank),
            else_branch=branch("else", else_rank),
        ),
    ]
    a = helper.make_tensor_value_info("a", TensorProto.INT64, [])
    b = helper.make_tensor_value_info("b", TensorProto.INT64, [])
    out = helper.make_tensor_value_info("rel_pos", TensorProto.FLOAT, [f"d{i}" for i in range(then_rank)])
    return make_model(nodes, [], [a, b], [out])


def test_if_with_branches_of_different_ranks_is_an_error() -> None:
    model = if_model(3, 4)
    onnx.checker.check_model(model)
    findings = check_model(model)
    assert ids(findings) == [("if-rank", "build_rpos/If"), ("control-flow", "build_rpos/If")]
    assert [f.severity for f in findings] == ["error", "warning"]
    assert findings[0].message == (
        "If 'build_rpos/If' returns a rank-3 tensor from then_branch and a rank-4 tensor from else_branch "
        "(output 0); TensorRT needs equal ranks unless the condition is a build-time constant, so re-export "
        "without the If (trt-quant's DeBERTa recipe removes the one of build_rpos)."
    )


def test_if_with_equal_ranks_is_only_reported() -> None:
    (finding,) = check_model(if_model(4, 4))
    assert ids([finding]) == [("control-flow", "build_rpos/If")]
    assert finding.severity == "warning"
    assert finding.message.startswith("If 'build_rpos/If' is data-dependent control flow;")


def test_loop_is_reported() -> None:
    body_in = [
        helper.make_tensor_value_info("i", TensorProto.INT64, []),
        helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
    ]
    body_out = [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, [])]
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"])], "body", body_in, body_out
    )
    loop = helper.make_node("Loop", ["trips", ""], [], name="a/Loop", body=body)
    trips = helper.make_tensor_value_info("trips", TensorProto.INT64, [])
    y = helper.make_tensor_value_info("trips_out", TensorProto.INT64, [])
    model = make_model(
        [loop, helper.make_node("Identity", ["trips"], ["trips_out"], name="id")], [], [trips], [y]
    )
    (finding,) = check_model(model)
    assert ids([finding]) == [("control-flow", "a/Loop")]
    assert finding.message.startswith("Loop 'a/Loop' is data-dependent control flow;")


# --- mask-cast --------------------------------------------------------------------------------------------


def test_cast_to_uint8_is_an_error() -> None:
    nodes = [
        helper.make_node("Cast", ["mask"], ["b"], name="mask/to_bool", to=TensorProto.BOOL),
        helper.make_node("Cast", ["b"], ["u"], name="mask/to_uint8", to=TensorProto.UINT8),
        helper.make_node("Cast", ["u"], ["y"], name="mask/to_float", to=TensorProto.FLOAT),
    ]
    mask = helper.make_tensor_value_info("mask", TensorProto.INT64, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    (finding,) = check_model(make_model(nodes, [], [mask], [y]))
    assert ids([finding]) == [("mask-cast", "mask/to_uint8")]
    assert "UINT8" in finding.message and "DeBERTa" in finding.message and "BOOL or INT32" in finding.message


# --- unsupported-op ---------------------------------------------------------------------------------------


def test_supported_op_set_matches_the_onnx_tensorrt_matrix() -> None:
    assert {
        "MatMul",
        "Gemm",
        "QuantizeLinear",
        "DequantizeLinear",
        "LayerNormalization",
        "Gelu",
    } <= SUPPORTED_OPS
    assert not {"QLinearMatMul", "MatMulInteger", "DynamicQuantizeLinear", "StringNormalizer"} & SUPPORTED_OPS


@pytest.mark.parametrize(
    ("op", "domain", "where"),
    [
        ("MatMulInteger", "", "(the default domain)"),
        ("FusedMatMul", "com.microsoft", "(domain 'com.microsoft')"),
        ("Gelu", "com.microsoft", "(domain 'com.microsoft')"),  # a supported name in another domain
    ],
)
def test_unsupported_op_is_an_error(op: str, domain: str, where: str) -> None:
    nodes = [helper.make_node(op, ["x", "x"] if "MatMul" in op else ["x"], ["y"], name="odd", domain=domain)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])
    (finding,) = check_model(make_model(nodes, [], [x], [y]))
    assert ids([finding]) == [("unsupported-op", "odd")]
    assert f"{op} 'odd' {where}" in finding.message and "plugin" in finding.message


# --- input-dtype ------------------------------------------------------------------------------------------


def identity_model(elem_type: int) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", elem_type, [2])
    y = helper.make_tensor_value_info("y", elem_type, [2])
    return make_model([helper.make_node("Identity", ["x"], ["y"], name="id")], [], [x], [y])


@pytest.mark.parametrize(
    "elem_type", [TensorProto.STRING, TensorProto.UINT16, TensorProto.DOUBLE, TensorProto.COMPLEX64]
)
def test_unbindable_input_dtype_is_an_error(elem_type: int) -> None:
    (finding,) = check_model(identity_model(elem_type))
    assert (finding.rule, finding.severity, finding.node) == ("input-dtype", "error", "x")
    assert TensorProto.DataType.Name(elem_type) in finding.message and "int64" in finding.message


def test_bool_input_is_a_warning() -> None:
    (finding,) = check_model(identity_model(TensorProto.BOOL))
    assert (finding.rule, finding.severity, finding.node) == ("input-dtype", "warning", "x")
    assert "BOOL" in finding.message


@pytest.mark.parametrize(
    "elem_type", [TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT32, TensorProto.INT64]
)
def test_bindable_input_dtypes_are_fine(elem_type: int) -> None:
    assert check_model(identity_model(elem_type)) == []


def test_initializer_listed_as_input_and_sequence_input() -> None:
    model = identity_model(TensorProto.FLOAT)
    model.graph.initializer.append(init("w", [1.0], np.float64))
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.DOUBLE, [1]))  # old-IR style
    model.graph.input.append(helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, None))
    (finding,) = check_model(model)
    assert ids([finding]) == [("input-dtype", "seq")]
    assert "not a typed tensor" in finding.message


# --- order, names, formatting -----------------------------------------------------------------------------


def test_findings_come_in_graph_order_with_unnamed_nodes_described() -> None:
    nodes = [
        helper.make_node("Unique", ["x"], ["u"], name="unique"),
        helper.make_node("Cast", ["u"], ["c"], to=TensorProto.UINT8),  # unnamed
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["y"], name="q"),
    ]
    inits = [init("s", 0.1, np.float32), init("zp", 0, np.uint8)]
    flag = helper.make_tensor_value_info("flag", TensorProto.BOOL, [1])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    outputs = [helper.make_tensor_value_info(n, TensorProto.UINT8, None) for n in ("c", "y")]
    model = make_model(nodes, inits, [flag, x], outputs, opset=12)
    expected = [
        ("opset", "opset_import"),
        ("input-dtype", "flag"),
        ("unsupported-op", "unique"),
        ("mask-cast", "Cast(c)"),
        ("zero-point", "q"),
    ]
    assert ids(check_model(model)) == expected
    assert check_model(model) == check_model(model)


def test_format_findings_is_an_aligned_table() -> None:
    findings = [
        Finding("zero-point", "error", "in/Q", "UINT8 zero-point; use INT8."),
        Finding("matmul-dq", "warning", "encoder/layer.0/MatMul", "partially quantized; add Q/DQ."),
    ]
    lines = format_findings(findings).splitlines()
    assert lines[0] == "2 findings: 1 error, 1 warning"
    assert lines[1].split() == ["severity", "rule", "node", "message"]
    assert lines[2].split()[:3] == ["error", "zero-point", "in/Q"] and lines[2].endswith("use INT8.")
    assert lines[3].split()[:3] == ["warning", "matmul-dq", "encoder/layer.0/MatMul"]
    columns = {
        line.index(word) for line, word in zip(lines[1:], ["message", "UINT8", "partially"], strict=True)
    }
    assert len(columns) == 1
    assert format_findings(findings[:1]).splitlines()[0] == "1 finding: 1 error, 0 warnings"


# --- check_onnx -------------------------------------------------------------------------------------------


def test_check_onnx_reads_a_file(tmp_path: Path) -> None:
    onnx.save(clean_model(), tmp_path / "clean.onnx")
    assert check_onnx(tmp_path / "clean.onnx") == []
    assert check_onnx(str(tmp_path / "clean.onnx")) == []


def test_check_onnx_reads_external_data(tmp_path: Path) -> None:
    model = with_initializer(clean_model(), init("fc2_scale", [0.01, -0.01, 0.01], np.float32))
    path = tmp_path / "model.onnx"
    onnx.save(model, path, save_as_external_data=True, location="model.data", size_threshold=0)
    assert (tmp_path / "model.data").stat().st_size > 0
    assert ids(check_onnx(path)) == [("scale", "fc2/DQ")]
    (tmp_path / "model.data").unlink()
    with pytest.raises(ArtifactError, match="is not a valid ONNX model"):
        check_onnx(path)


def test_check_onnx_missing_file_or_directory(tmp_path: Path) -> None:
    with pytest.raises(
        ArtifactError, match=r"no ONNX file at .*nope\.onnx; pass the path of an exported \.onnx"
    ):
        check_onnx(tmp_path / "nope.onnx")
    with pytest.raises(ArtifactError, match="no ONNX file at"):
        check_onnx(tmp_path)


def assert_rejected(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    with pytest.raises(ArtifactError) as info:
        check_onnx(path)
    message = str(info.value)
    assert str(path) in message and message.endswith("re-export it or copy it again.")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048))
def test_random_bytes_raise_artifact_error(tmp_path: Path, data: bytes) -> None:
    assert_rejected(tmp_path / "random.onnx", data)


VALID_BYTES = clean_model().SerializeToString()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(length=st.integers(min_value=0, max_value=len(VALID_BYTES) - 1))
def test_truncated_model_raises_artifact_error(tmp_path: Path, length: int) -> None:
    assert_rejected(tmp_path / "truncated.onnx", VALID_BYTES[:length])
