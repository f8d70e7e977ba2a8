"""Tests for trt_quant.onnx.precision: the FP16/BF16 conversion of the float part of an ONNX graph (CPU only).

Tolerances: the converted graph's outputs stay within 2 % (FP16) or 5 % (BF16, 8-bit mantissa) of the
FP32 graph's output range on the tiny random BERT; measured values are about 0.4 % and 0.8 %.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from trt_quant.artifacts import FLOAT_ONNX, INT8_ONNX, load_manifest
from trt_quant.errors import TrtQuantError
from trt_quant.onnx.check import check_model
from trt_quant.onnx.precision import (
    MIN_OPSET,
    clamped_scales,
    convert_float_precision,
    default_opset,
    requantize,
    to_half_array,
)

FP16_TOLERANCE = 2e-2  # of the FP32 output range
BF16_TOLERANCE = 5e-2
SHAPES = [(1, 5), (3, 16), (2, 32)]
QDQ = ("QuantizeLinear", "DequantizeLinear")


def token_feeds(model: onnx.ModelProto, batch: int, sequence: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Token ids, a mask with padding in the last row and zero segment ids, for the graph's inputs."""
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, sequence), np.int64)
    mask[-1, sequence // 2 + 1 :] = 0
    values = {
        "input_ids": rng.integers(5, 150, (batch, sequence)),
        "attention_mask": mask,
        "token_type_ids": np.zeros((batch, sequence), np.int64),
    }
    return {value.name: values[value.name].astype(np.int64) for value in model.graph.input}


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def value_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
    types = {tensor.name: tensor.data_type for tensor in model.graph.initializer}
    for value in [*inferred.input, *inferred.value_info, *inferred.output]:
        types[value.name] = value.type.tensor_type.elem_type
    for node in model.graph.node:
        if node.op_type == "Constant":
            types[node.output[0]] = node.attribute[0].t.data_type
    return types


def scale_types(model: onnx.ModelProto) -> set[int]:
    types = value_types(model)
    return {types[node.input[1]] for node in model.graph.node if node.op_type in QDQ}


@pytest.fixture(scope="module")
def graphs(tiny_artifact: Path) -> dict[str, onnx.ModelProto]:
    files = {"int8": INT8_ONNX, "float": FLOAT_ONNX}
    return {kind: onnx.load(str(tiny_artifact / name)) for kind, name in files.items()}


@pytest.fixture(scope="module")
def fp16(graphs: dict[str, onnx.ModelProto]) -> dict[str, onnx.ModelProto]:
    return {kind: convert_float_precision(model, "fp16") for kind, model in graphs.items()}


@pytest.mark.parametrize("kind", ["int8", "float"])
def test_converted_graph_is_valid_for_onnx_and_tensorrt(fp16: dict[str, onnx.ModelProto], kind: str) -> None:
    model = fp16[kind]
    onnx.checker.check_model(model, full_check=True)
    assert default_opset(model) >= MIN_OPSET
    assert [finding for finding in check_model(model) if finding.severity == "error"] == []


def test_qdq_stays_int8_with_fp16_scales(
    graphs: dict[str, onnx.ModelProto], fp16: dict[str, onnx.ModelProto]
) -> None:
    original, converted = graphs["int8"], fp16["int8"]
    count = sum(node.op_type in QDQ for node in original.graph.node)
    assert count > 0 and sum(node.op_type in QDQ for node in converted.graph.node) == count
    assert scale_types(converted) == {TensorProto.FLOAT16}  # the zero padding row's scale included
    types = value_types(converted)
    quantized = {types[node.output[0]] for node in converted.graph.node if node.op_type == "QuantizeLinear"}
    assert quantized == {TensorProto.INT8}
    matmuls = [node for node in converted.graph.node if node.op_type == "MatMul"]
    assert {types[name] for node in matmuls for name in node.input} == {TensorProto.FLOAT16}


def fragile_types(model: onnx.ModelProto) -> set[int]:
    """Element types of every input and output of the LayerNormalization and Softmax nodes."""
    types = value_types(model)
    fragile = [node for node in model.graph.node if node.op_type in ("LayerNormalization", "Softmax")]
    assert fragile
    return {types[name] for node in fragile for name in [*node.input, *node.output] if name}


@pytest.mark.parametrize("kind", ["int8", "float"])
def test_layernorm_and_softmax_run_in_fp16_by_default(fp16: dict[str, onnx.ModelProto], kind: str) -> None:
    assert fragile_types(fp16[kind]) == {TensorProto.FLOAT16}


@pytest.mark.parametrize("kind", ["int8", "float"])
def test_fp32_islands_keep_layernorm_and_softmax_in_fp32(
    graphs: dict[str, onnx.ModelProto], kind: str
) -> None:
    model = convert_float_precision(graphs[kind], "fp16", fp32_islands=True)
    onnx.checker.check_model(model, full_check=True)
    assert fragile_types(model) == {TensorProto.FLOAT}
    feeds = token_feeds(model, 2, 12)
    (reference,), (converted,) = run_ort(graphs[kind], feeds), run_ort(model, feeds)
    assert np.abs(converted - reference).max() <= FP16_TOLERANCE * np.ptp(reference)


@pytest.mark.parametrize("kind", ["int8", "float"])
def test_inputs_and_outputs_keep_the_manifest_types(
    tiny_artifact: Path, fp16: dict[str, onnx.ModelProto], kind: str
) -> None:
    manifest = load_manifest(tiny_artifact)
    model = fp16[kind]
    declared = [(spec.name, spec.dtype) for spec in [*manifest.inputs, *manifest.outputs]]
    graph = [
        (value.name, helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name)
        for value in [*model.graph.input, *model.graph.output]
    ]
    assert graph == declared


@pytest.mark.parametrize("kind", ["int8", "float"])
@pytest.mark.parametrize(("batch", "sequence"), SHAPES)
def test_fp16_output_within_tolerance(
    graphs: dict[str, onnx.ModelProto], fp16: dict[str, onnx.ModelProto], kind: str, batch: int, sequence: int
) -> None:
    feeds = token_feeds(graphs[kind], batch, sequence)
    (reference,), (converted,) = run_ort(graphs[kind], feeds), run_ort(fp16[kind], feeds)
    assert converted.dtype == np.float32
    assert np.isfinite(converted).all()
    assert np.abs(converted - reference).max() <= FP16_TOLERANCE * np.ptp(reference)


def test_bf16_output_within_tolerance(graphs: dict[str, onnx.ModelProto]) -> None:
    model = convert_float_precision(graphs["int8"], "bf16")
    onnx.checker.check_model(model, full_check=True)
    assert scale_types(model) == {TensorProto.BFLOAT16}
    feeds = token_feeds(model, 2, 12)
    (reference,) = run_ort(graphs["int8"], feeds)
    (converted,) = ReferenceEvaluator(model).run(None, feeds)  # ONNX Runtime has no CPU BF16 kernels
    assert np.abs(converted - reference).max() <= BF16_TOLERANCE * np.ptp(reference)


def test_fp32_only_raises_the_opset(graphs: dict[str, onnx.ModelProto]) -> None:
    model = convert_float_precision(graphs["int8"], "fp32")
    assert default_opset(model) == MIN_OPSET and default_opset(graphs["int8"]) < MIN_OPSET
    assert scale_types(model) == {TensorProto.FLOAT}
    feeds = token_feeds(model, 2, 9)
    (converted,), (reference,) = run_ort(model, feeds), run_ort(graphs["int8"], feeds)
    np.testing.assert_allclose(converted, reference, rtol=1e-5, atol=1e-6)


def test_the_input_model_is_not_modified(graphs: dict[str, onnx.ModelProto]) -> None:
    before = graphs["int8"].SerializeToString()
    convert_float_precision(graphs["int8"], "fp16")
    assert graphs["int8"].SerializeToString() == before


def test_unknown_precision_names_the_choices(graphs: dict[str, onnx.ModelProto]) -> None:
    with pytest.raises(TrtQuantError, match="fp16, bf16, fp32"):
        convert_float_precision(graphs["int8"], "int4")


def test_constants_are_clipped_and_never_flushed_to_zero() -> None:
    values = np.array([-3.4e38, 1e-9, -1e-9, 0.0, 1.5, 7e4], np.float32)
    half = to_half_array(values, TensorProto.FLOAT16).astype(np.float32)
    tiny = float(np.finfo(np.float16).smallest_subnormal)
    np.testing.assert_array_equal(half, np.array([-65504, tiny, -tiny, 0, 1.5, 65504], np.float32))
    bf16 = to_half_array(values, TensorProto.BFLOAT16).astype(np.float32)
    assert np.isfinite(bf16).all() and bf16[1] > 0


FP16_SMALLEST_NORMAL = np.float32(2.0**-14)  # 6.1e-5


def test_scales_below_the_smallest_normal_are_raised_to_it() -> None:
    scales = np.array([0.01, 6.2e-5, 3e-5, 1e-9, 0.0], np.float32)
    expected = np.array([0.01, 6.2e-5, FP16_SMALLEST_NORMAL, FP16_SMALLEST_NORMAL, 0.0], np.float32)
    np.testing.assert_array_equal(clamped_scales(scales, TensorProto.FLOAT16), expected)
    np.testing.assert_array_equal(clamped_scales(scales[:4], TensorProto.BFLOAT16), scales[:4])


def test_requantize_rounds_half_to_even_per_channel_and_saturates() -> None:
    values = np.array([[127, -128, 5], [3, 1, -7]], np.int8)
    ratio = np.array([0.5, 1.0, 3.0])  # per column (axis 1)
    expected = np.array([[64, -128, 15], [2, 1, -21]], np.int8)  # 63.5 -> 64, 1.5 -> 2
    np.testing.assert_array_equal(requantize(values, ratio, np.zeros(3, np.int8), axis=1), expected)
    np.testing.assert_array_equal(
        requantize(np.array([100, -100], np.int8), np.array([2.0]), np.zeros(1, np.int8), 0), [127, -128]
    )


def small_graph(weight_scales: np.ndarray, quantize_input: bool = True) -> onnx.ModelProto:
    """ids -> embedding -> Q/DQ -> MatMul(DQ INT8 weight) -> Softmax -> logits; ids -> Log -> int bucket.

    The last weight column is all zeros (its scale is irrelevant); the bucket path is float arithmetic
    whose result becomes an integer, so it must stay FP32. Without ``quantize_input`` the MatMul reads
    the embedding directly.
    """
    rng = np.random.default_rng(1)
    weight = rng.integers(-127, 128, (4, 3)).astype(np.int8)
    weight[:, 2] = 0
    initializers = [
        numpy_helper.from_array(rng.normal(size=(10, 4)).astype(np.float32), "table"),
        numpy_helper.from_array(np.array(0.02, np.float32), "act_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "zero"),
        numpy_helper.from_array(weight, "weight"),
        numpy_helper.from_array(weight_scales.astype(np.float32), "weight_scale"),
        numpy_helper.from_array(np.zeros(3, np.int8), "weight_zero"),
        numpy_helper.from_array(np.array(3.0, np.float32), "base"),
    ]
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["embedded"]),
        helper.make_node("QuantizeLinear", ["embedded", "act_scale", "zero"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "act_scale", "zero"], ["dq"]),
        helper.make_node("DequantizeLinear", ["weight", "weight_scale", "weight_zero"], ["w"], axis=1),
        helper.make_node("MatMul", ["dq" if quantize_input else "embedded", "w"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["logits"], axis=-1),
        helper.make_node("Cast", ["ids"], ["ids_float"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["ids_float", "base"], ["shifted"]),
        helper.make_node("Log", ["shifted"], ["log"]),
        helper.make_node("Cast", ["log"], ["bucket"], to=TensorProto.INT64),
    ]
    if not quantize_input:
        nodes = [node for node in nodes if "q" not in node.output and "dq" not in node.output]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2, 3]),
         helper.make_tensor_value_info("bucket", TensorProto.INT64, ["batch", 2])],
        initializers,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_small_graph_conversion() -> None:
    model = small_graph(np.array([0.01, 0.02, 1e-38]))
    converted = convert_float_precision(model, "fp16")
    onnx.checker.check_model(converted, full_check=True)
    types = value_types(converted)
    assert types["log"] == types["shifted"] == TensorProto.FLOAT  # index arithmetic stays FP32
    assert types["scores"] == TensorProto.FLOAT16
    scales = {tensor.name: numpy_helper.to_array(tensor) for tensor in converted.graph.initializer}
    assert scales["weight_scale"].dtype == np.float16 and scales["weight_scale"][2] == 1.0  # zero column
    feeds = {"ids": np.array([[1, 9], [4, 0]], np.int64)}
    reference, converted_out = run_ort(model, feeds), run_ort(converted, feeds)
    np.testing.assert_array_equal(converted_out[1], reference[1])
    np.testing.assert_allclose(converted_out[0], reference[0], atol=2e-3)


def test_tiny_weight_scales_shift_a_power_of_two_into_the_input_scale() -> None:
    model = small_graph(np.array([0.01, 1e-6, 0.02]))  # 1e-6: clamping would leave 2 of 127 levels
    converted = convert_float_precision(model, "fp16")
    onnx.checker.check_model(converted, full_check=True)
    assert not [finding for finding in check_model(converted) if finding.severity == "error"]
    by_output = {name: node for node in converted.graph.node for name in node.output}
    dequantize, quantize = by_output["w"], by_output["q"]
    assert dequantize.input[0] == "weight"  # the INT8 weights are untouched
    tensors = {tensor.name: numpy_helper.to_array(tensor) for tensor in converted.graph.initializer}
    shift = np.float32(64)  # 2^6: 1e-6 * 64 = 6.4e-5 is the first normal FP16 value above 1e-6 * 2^k
    expected = (np.array([0.01, 1e-6, 1.0], np.float32) * shift).astype(np.float16)  # column 2: zeros
    np.testing.assert_array_equal(tensors[dequantize.input[1]], expected)
    assert quantize.input[1] == by_output["dq"].input[1]
    assert tensors[quantize.input[1]] == np.float16(np.float32(0.02) / shift)
    multiply = by_output[quantize.input[0]]
    assert multiply.op_type == "Mul" and multiply.input[0] == "embedded"
    assert tensors[multiply.input[1]] == np.float16(1 / 64)
    types = value_types(converted)
    assert types["w"] == types["scores"] == TensorProto.FLOAT16
    feeds = {"ids": np.array([[2, 3], [7, 1]], np.int64)}
    np.testing.assert_allclose(run_ort(converted, feeds)[0], run_ort(model, feeds)[0], atol=2e-3)


def test_tiny_weight_scale_is_clamped_and_its_channel_requantized() -> None:
    model = small_graph(np.array([0.01, 3e-5, 0.02]), quantize_input=False)  # 3e-5 is an FP16 subnormal
    converted = convert_float_precision(model, "fp16")
    onnx.checker.check_model(converted, full_check=True)
    types = value_types(converted)
    assert types["w"] == types["scores"] == TensorProto.FLOAT16  # no FP32 Q/DQ, no Cast before the MatMul
    assert not [finding for finding in check_model(converted) if finding.severity == "error"]
    (dequantize,) = [n for n in converted.graph.node if n.output[0] == "w"]
    assert dequantize.input[0] != "weight"  # a requantized copy; the original is not edited in place
    tensors = {tensor.name: numpy_helper.to_array(tensor) for tensor in converted.graph.initializer}
    original = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "weight"))
    weights, scales = tensors[dequantize.input[0]], tensors[dequantize.input[1]]
    np.testing.assert_array_equal(scales, np.array([0.01, FP16_SMALLEST_NORMAL, 1.0], np.float16))  # 2: zeros
    np.testing.assert_array_equal(weights[:, [0, 2]], original[:, [0, 2]])
    ratio = np.float64(np.float32(3e-5)) / np.float64(FP16_SMALLEST_NORMAL)
    np.testing.assert_array_equal(weights[:, 1], np.rint(original[:, 1] * ratio).astype(np.int8))
    feeds = {"ids": np.array([[2, 3]], np.int64)}
    np.testing.assert_allclose(run_ort(converted, feeds)[0], run_ort(model, feeds)[0], atol=2e-3)


def softmax_quantized_graph() -> onnx.ModelProto:
    """x -> Softmax -> Q/DQ -> MatMul with an INT8 weight: attention probabilities quantized for P.V."""
    rng = np.random.default_rng(2)
    initializers = [
        numpy_helper.from_array(np.array(1 / 127, np.float32), "probs_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "zero"),
        numpy_helper.from_array(rng.integers(-127, 128, (4, 3)).astype(np.int8), "v"),
        numpy_helper.from_array(np.full(3, 0.01, np.float32), "v_scale"),
        numpy_helper.from_array(np.zeros(3, np.int8), "v_zero"),
    ]
    nodes = [
        helper.make_node("Softmax", ["x"], ["probs"], axis=-1),
        helper.make_node("QuantizeLinear", ["probs", "probs_scale", "zero"], ["probs_q"]),
        helper.make_node("DequantizeLinear", ["probs_q", "probs_scale", "zero"], ["probs_dq"]),
        helper.make_node("DequantizeLinear", ["v", "v_scale", "v_zero"], ["v_dq"], axis=1),
        helper.make_node("MatMul", ["probs_dq", "v_dq"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "probs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], initializers,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


@pytest.mark.parametrize("fp32_islands", [False, True])
def test_quantize_follows_softmax_directly(fp32_islands: bool) -> None:
    model = softmax_quantized_graph()
    converted = convert_float_precision(model, "fp16", fp32_islands)
    onnx.checker.check_model(converted, full_check=True)
    producer = {name: node for node in converted.graph.node for name in node.output}
    (quantize,) = [node for node in converted.graph.node if node.op_type == "QuantizeLinear"]
    (dequantize,) = [node for node in converted.graph.node if node.output[0] == "probs_dq"]
    assert producer[quantize.input[0]].op_type == "Softmax"  # no Cast between them
    types = value_types(converted)
    softmax_type = TensorProto.FLOAT if fp32_islands else TensorProto.FLOAT16
    assert types["probs"] == types[quantize.input[1]] == softmax_type
    assert types[dequantize.input[1]] == types["probs_dq"] == TensorProto.FLOAT16
    tensors = {tensor.name: numpy_helper.to_array(tensor) for tensor in converted.graph.initializer}
    assert float(tensors[quantize.input[1]]) == float(tensors[dequantize.input[1]])  # one scale value
    x = np.random.default_rng(3).normal(size=(2, 4)).astype(np.float32)
    np.testing.assert_allclose(run_ort(converted, {"x": x})[0], run_ort(model, {"x": x})[0], atol=2e-2)
