"""The graph layer (trt_quant/onnx/graph.py): an edit changes only what it edits."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper, numpy_helper

from trt_quant.onnx import graph


def _model() -> onnx.ModelProto:
    """x -> MatMul(DequantizeLinear(FP8 weight)) -> Mul(Constant) -> y, with a value_info and metadata."""
    weight = np.array([[0.5, -1.0], [2.0, 448.0]], np.float32).astype(ml_dtypes.float8_e4m3fn)
    fp8 = TensorProto(name="w8", data_type=TensorProto.FLOAT8E4M3FN, dims=[2, 2])
    fp8.raw_data = weight.view(np.uint8).tobytes()
    initializers = [
        fp8,
        numpy_helper.from_array(np.array([0.1, 0.2], np.float32), "scale"),
        helper.make_tensor("zero", TensorProto.FLOAT8E4M3FN, [2], [0.0, 0.0]),  # int32_data, not raw
        numpy_helper.from_array(np.ones((2, 2), np.float32), "unused_later"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["w8", "scale", "zero"], ["w"], name="dq", axis=1),
        helper.make_node("MatMul", ["x", "w"], ["h"], name="matmul"),
        helper.make_node("Add", ["h", "unused_later"], ["h2"], name="add"),
        helper.make_node(
            "Constant", [], ["two"], name="two", value=numpy_helper.from_array(np.array(2.0, np.float32))
        ),
        helper.make_node("Mul", ["h2", "two"], ["y"], name="mul"),
    ]
    main = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        initializers,
        value_info=[helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", 2])],
    )
    model = helper.make_model(main, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    model.producer_name, model.producer_version = "pytorch", "2.13"
    helper.set_model_props(model, {"source": "test"})
    onnx.checker.check_model(model)
    return model


def test_an_edit_that_changes_nothing_gives_back_the_same_bytes() -> None:
    model = _model()
    before = model.SerializeToString()
    with graph.edit(model):
        pass
    assert model.SerializeToString() == before


def test_an_edit_keeps_model_fields_order_and_fp8_bytes() -> None:
    model = _model()
    original = {tensor.name: tensor.SerializeToString() for tensor in model.graph.initializer}
    with graph.edit(model) as editor:
        add = next(node for node in editor.graph.nodes if node.name == "add")
        editor.bypass(add, add.inputs[0])  # "unused_later" loses its only reader
        mul = next(node for node in editor.graph.nodes if node.name == "mul")
        mul.inputs[1] = editor.constant("three", np.array(3.0, np.float32))
        offset = editor.constant("offset", np.zeros(2, np.float32))
        editor.insert_before(
            mul,
            gs.Node(
                "Add", name="offset", inputs=[mul.inputs[0], offset], outputs=[h3 := editor.variable("h3")]
            ),
        )
        mul.inputs[0] = h3
    assert (model.ir_version, model.producer_name, model.producer_version) == (9, "pytorch", "2.13")
    assert [(entry.domain, entry.version) for entry in model.opset_import] == [("", 19)]
    assert {prop.key: prop.value for prop in model.metadata_props} == {"source": "test"}
    assert [tensor.name for tensor in model.graph.initializer] == ["w8", "scale", "zero", "three", "offset"]
    for tensor in model.graph.initializer[:3]:  # FP8 weight and int32_data zero point untouched
        assert tensor.SerializeToString() == original[tensor.name]
    assert [node.name for node in model.graph.node] == [
        "dq",
        "matmul",
        "offset",
        "mul",
    ]  # Constant "two" unread
    assert [value.name for value in model.graph.value_info] == ["h"]
    assert [value.name for value in model.graph.output] == ["y"]
    onnx.checker.check_model(model)
    assert graph.constant_value(gs.import_onnx(model).tensors()["w8"]).tolist() == [[0.5, -1.0], [2.0, 448.0]]


def test_external_data_references_survive_an_edit(tmp_path: Path) -> None:
    model = _model()
    big = numpy_helper.from_array(np.arange(4096, dtype=np.float32).reshape(64, 64), "big")
    model.graph.initializer.append(big)
    model.graph.node.append(helper.make_node("Identity", ["big"], ["big_out"], name="keep_big"))
    model.graph.output.append(helper.make_tensor_value_info("big_out", TensorProto.FLOAT, [64, 64]))
    onnx.save(
        model, str(tmp_path / "m.onnx"), save_as_external_data=True, location="m.data", size_threshold=1024
    )
    stored = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    with graph.edit(stored) as editor:
        mul = next(node for node in editor.graph.nodes if node.name == "mul")
        mul.inputs[1] = editor.constant("three", np.array(3.0, np.float32))
    reference = next(tensor for tensor in stored.graph.initializer if tensor.name == "big")
    assert reference.data_location == TensorProto.EXTERNAL
    assert {entry.key: entry.value for entry in reference.external_data}["location"] == "m.data"
