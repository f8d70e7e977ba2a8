"""The engine-layer report check on handwritten reports in TensorRT's inspector JSON format, against the
tiny INT8 BERT graph: INT8 proven from input formats (not from names), attention fusion, lost INT8 fails."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import onnx
import pytest

from trt_quant.artifacts import INT8_ONNX
from trt_quant.engine.layer_report import (
    attention_blocks,
    check_engine_layers,
    parse_layer_report,
    quantized_linears,
)
from trt_quant.errors import TrtQuantError


@pytest.fixture(scope="module")
def graph(tiny_artifact: Path) -> onnx.ModelProto:
    return onnx.load(str(tiny_artifact / INT8_ONNX))


def tensor(name: str, datatype: str, dims: list[int]) -> dict[str, Any]:
    return {"Name": name, "Location": "Device", "Dimensions": dims, "Format/Datatype": datatype}


def layer(name: str, kind: str, inputs: list[dict], tactic: str, nodes: list[str]) -> dict[str, Any]:
    """One layer as the inspector writes it with ProfilingVerbosity.DETAILED (TensorRT 10, Myelin)."""
    return {
        "Name": name,
        "LayerType": kind,
        "Inputs": inputs,
        "Outputs": [tensor(f"__mye{len(name)}", "Half", [1, 40, 32])],
        "TacticName": tactic,
        "StreamId": 0,
        "Metadata": "".join(f"[ONNX Layer: {node}]" for node in nodes),
    }


def report(graph: onnx.ModelProto, half: set[str] = frozenset(), split_attention: bool = False) -> str:
    """A report where each quantized Linear is a Myelin gemm reading Int8 (Half for those in ``half``)
    and each attention block one fused _gemm_mha kernel (two gemms with ``split_attention``)."""
    layers = []
    for index, node in enumerate(quantized_linears(graph)):
        weight = f"model.encoder.weight_int8_{index}"  # names mention int8 even when the math is FP16
        datatype = "Half" if node in half else "Int8"
        tactic = "sm80_xmma_gemm_f16f16" if node in half else "sm80_xmma_gemm_i8i8_i8i32_f32_tn_n"
        layers.append(layer(f"{node}_myl0_{index}", "gemm", [tensor(f"__mye{index}", datatype, [1, 40, 32]),
                            tensor(weight, "Int8", [32, 32])], tactic, [node, node.replace("MatMul", "Add")]))  # fmt: skip
    for index, (scores, context) in enumerate(attention_blocks(graph)):
        softmax = scores.rsplit("/", 1)[0] + "/Softmax"
        inputs = [tensor(f"__q{index}", "Half", [4, 40, 8]), tensor(f"__k{index}", "Half", [4, 8, 40])]
        if split_attention:
            layers.append(layer(f"{scores}_myl1_{index}", "gemm", inputs, "sm80_xmma_gemm_f16f16", [scores]))
            layers.append(layer(f"{context}_myl1_{index}", "gemm", inputs, "sm80_xmma_gemm_f16f16",
                                [softmax, context]))  # fmt: skip
        else:
            layers.append(layer(f"_gemm_mha_v2_myl1_{index}", "kgen", inputs, "_gemm_mha_v2_0x957a",
                                [scores, softmax, context]))  # fmt: skip
    return json.dumps(
        {"Layers": layers, "Bindings": ["input_ids", "attention_mask", "token_type_ids", "logits"]}
    )


def test_graph_parts_are_found(graph: onnx.ModelProto) -> None:
    linears = quantized_linears(graph)
    assert len(linears) == 14  # 2 layers x 6 Linears, the pooler and the classifier
    assert "/model/bert/encoder/layer.0/attention/self/query/MatMul" in linears
    assert "/model/classifier/Gemm" in linears
    assert "/model/bert/encoder/layer.0/attention/self/MatMul" not in linears  # activations only
    assert attention_blocks(graph) == [
        (f"/model/bert/encoder/layer.{i}/attention/self/MatMul", f"/model/bert/encoder/layer.{i}/attention/self/MatMul_1")
        for i in range(2)
    ]  # fmt: skip


def test_all_int8_and_fused_passes(graph: onnx.ModelProto) -> None:
    check = check_engine_layers(graph, report(graph))
    assert check.failures() == [] and len(check.int8) == 14 and len(check.fused) == 2
    assert check.summary().splitlines()[:2] == [
        "quantized Linears in INT8: 14/14",
        "attention blocks fused: 2/2",
    ]


def test_lost_int8_fails_although_the_report_says_int8(graph: onnx.ModelProto) -> None:
    lost = "/model/bert/encoder/layer.1/intermediate/dense/MatMul"
    text = report(graph, half={lost})
    assert re.search("int8", text, re.IGNORECASE)  # what the old check accepted
    check = check_engine_layers(graph, text)
    [failure] = check.failures()
    assert failure.startswith(f"{lost} does not run in INT8: {lost}_myl0_")
    assert "(gemm) reads Half, Int8" in failure and len(check.int8) == 13


def test_unfused_attention_fails(graph: onnx.ModelProto) -> None:
    check = check_engine_layers(graph, report(graph, split_attention=True))
    assert check.failures() == [
        f"attention /model/bert/encoder/layer.{i}/attention/self/MatMul -> "
        f"/model/bert/encoder/layer.{i}/attention/self/MatMul_1 did not fuse"
        for i in range(2)
    ]
    assert check.failures(require_fusion=False) == []
    assert "NOT fused: /model/bert/encoder/layer.0/attention/self/MatMul" in check.summary()


def test_linear_missing_from_the_report_fails(graph: onnx.ModelProto) -> None:
    data = json.loads(report(graph))
    data["Layers"] = [item for item in data["Layers"] if "classifier" not in item["Metadata"]]
    [failure] = check_engine_layers(graph, json.dumps(data)).failures()
    assert (
        failure
        == "/model/classifier/Gemm does not run in INT8: no engine layer names it (no [ONNX Layer] metadata)"
    )


def test_layer_names_stand_in_for_missing_metadata() -> None:
    """TensorRT 8.6-style layers: no Metadata, fused nodes joined by " + " in the name."""
    text = json.dumps({"Layers": [{
        "Name": "/q/MatMul + /q/Add", "LayerType": "CaskGemm", "Metadata": "",
        "Inputs": [tensor("x", "Row major Int8 format", [8, 128, 384])],
        "Outputs": [tensor("y", "Row major linear FP16 format", [8, 128, 384])],
    }]})  # fmt: skip
    [parsed] = parse_layer_report(text)
    assert parsed.onnx_nodes == {"/q/MatMul", "/q/Add"} and parsed.reads_int8 and parsed.kind == "CaskGemm"


@pytest.mark.parametrize(
    ("text", "message"),
    [('{"Layers": ["/q/MatMul + /q/Add", "/k/MatMul"], "Bindings": ["x"]}', "without detailed profiling"),
     ('{"Layers": []}', "lists no layer details"), ("not json", "not inspector JSON")],
)  # fmt: skip
def test_reports_without_details_are_refused(text: str, message: str) -> None:
    with pytest.raises(TrtQuantError, match=message):
        parse_layer_report(text)
