"""trt_quant.onnx.check on FP8 (E4M3) graphs: a clean FP8 linear layer passes, and each TensorRT FP8 rule
fails on a copy edited to break it."""

from __future__ import annotations

from collections.abc import Callable

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from trt_quant.onnx.check import check_model

RNG = np.random.default_rng(0)


def fp8(name: str, values: np.ndarray) -> onnx.TensorProto:
    tensor = onnx.TensorProto(name=name, data_type=TensorProto.FLOAT8E4M3FN, dims=list(values.shape))
    tensor.raw_data = (
        np.asarray(values, dtype=np.float32).astype(ml_dtypes.float8_e4m3fn).view(np.uint8).tobytes()
    )
    return tensor


def fp8_linear(opset: int = 19) -> onnx.ModelProto:
    """x [2, 8] -> FP8 Q/DQ (per tensor) -> MatMul with FP8 weights [8, 4] (per output channel, axis 1)."""
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="act/Q"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"], name="act/DQ"),
        helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zp"], ["w_dq"], name="weight/DQ", axis=1),
        helper.make_node("MatMul", ["x_dq", "w_dq"], ["y"], name="fc/MatMul"),
    ]
    initializers = [
        numpy_helper.from_array(np.array(0.02, np.float32), "x_scale"),
        fp8("x_zp", np.zeros(())),
        fp8("w", RNG.uniform(-448, 448, (8, 4))),
        numpy_helper.from_array(np.full(4, 0.001, np.float32), "w_scale"),
        fp8("w_zp", np.zeros(4)),
    ]
    graph = helper.make_graph(
        nodes,
        "fp8",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def replace(model: onnx.ModelProto, tensor: onnx.TensorProto) -> None:
    for position, existing in enumerate(model.graph.initializer):
        if existing.name == tensor.name:
            model.graph.initializer[position].CopyFrom(tensor)
            return
    model.graph.initializer.append(tensor)


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def test_clean_fp8_linear_has_no_findings_and_runs() -> None:
    model = fp8_linear()
    onnx.checker.check_model(model)
    assert check_model(model) == []
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )  # its QDQ fusion is INT8-only
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = RNG.normal(size=(2, 8)).astype(np.float32)
    (y,) = session.run(None, {"x": x})
    weight = np.frombuffer(model.graph.initializer[2].raw_data, ml_dtypes.float8_e4m3fn).astype(np.float32)
    x_fp8 = (x / 0.02).astype(ml_dtypes.float8_e4m3fn).astype(np.float32) * 0.02
    assert np.allclose(y, x_fp8 @ (weight.reshape(8, 4) * 0.001), rtol=1e-5, atol=1e-6)


def nonzero_zero_point(model: onnx.ModelProto) -> None:
    replace(model, fp8("x_zp", np.array(2.0)))


def per_channel_activation(model: onnx.ModelProto) -> None:
    replace(model, numpy_helper.from_array(np.full(8, 0.02, np.float32), "x_scale"))
    replace(model, fp8("x_zp", np.zeros(8)))
    for name in ("act/Q", "act/DQ"):
        node(model, name).attribute.append(helper.make_attribute("axis", 1))


def weight_on_input_axis(model: onnx.ModelProto) -> None:
    replace(model, numpy_helper.from_array(np.full(8, 0.001, np.float32), "w_scale"))
    replace(model, fp8("w_zp", np.zeros(8)))
    node(model, "weight/DQ").attribute[0].i = 0


def old_opset(model: onnx.ModelProto) -> None:
    model.opset_import[0].version = 17


def int8_dequantize_of_fp8(model: onnx.ModelProto) -> None:
    replace(model, numpy_helper.from_array(np.array(0, np.int8), "x_dq_zp"))
    node(model, "act/DQ").input[2] = "x_dq_zp"


def half_scale_on_one_side_of_a_pair(model: onnx.ModelProto) -> None:
    replace(model, numpy_helper.from_array(np.array(0.02, np.float16), "x_dq_scale"))
    node(model, "act/DQ").input[1] = "x_dq_scale"


def half_activation_float_weight(model: onnx.ModelProto) -> None:
    replace(model, numpy_helper.from_array(np.array(0.02, np.float16), "x_scale"))


@pytest.mark.parametrize(
    ("edit", "rule", "node_name", "message"),
    [
        (nonzero_zero_point, "zero-point", "act/Q", "is not all zeros, but TensorRT supports only symmetric"),
        (per_channel_activation, "per-channel-axis", "act/DQ", "per-channel (8 scales) on an activation"),
        (
            weight_on_input_axis,
            "per-channel-axis",
            "weight/DQ",
            "along axis 0, but it feeds MatMul 'fc/MatMul'",
        ),
        (old_opset, "fp8-opset", "act/Q", "is FP8 (float8e4m3fn zero-point), which needs opset 19"),
        (
            int8_dequantize_of_fp8,
            "fp8-types",
            "act/DQ",
            "reads the FP8 output of 'act/Q' with a INT8 zero-point",
        ),
        (
            half_scale_on_one_side_of_a_pair,
            "fp8-types",
            "act/DQ",
            "has a FLOAT16 scale but its FP8 QuantizeLinear",
        ),
        (
            half_activation_float_weight,
            "fp8-types",
            "fc/MatMul",
            "reads FP8 DequantizeLinear outputs of different",
        ),
    ],
)
def test_each_fp8_rule_fails_on_a_graph_edited_to_break_it(
    edit: Callable[[onnx.ModelProto], None], rule: str, node_name: str, message: str
) -> None:
    model = fp8_linear()
    edit(model)
    findings = [f for f in check_model(model) if f.rule == rule and f.node == node_name]
    assert findings, check_model(model)
    assert findings[0].severity == "error"
    assert message in findings[0].message
