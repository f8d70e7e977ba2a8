"""Read TensorRT's engine-layer report: does every quantized Linear run in INT8, which attention fused?

The report (``engine_layers.json``) is the engine inspector's JSON (``trtexec --exportLayerInfo``), written
with ``ProfilingVerbosity.DETAILED``: ``{"Layers": [{"Name", "LayerType", "Inputs": [{"Name",
"Dimensions", "Format/Datatype"}], "Outputs": [...], "TacticName", "Metadata": "[ONNX Layer: a][ONNX
Layer: b]"}], "Bindings": [...]}``. ``Metadata`` names the ONNX nodes each engine layer implements (a
Myelin ``gemm`` or a fused ``_gemm_mha`` kernel lists several); without it, a layer's name is its nodes'
names joined by " + ".

A quantized Linear (a MatMul or Gemm whose weight comes from a DequantizeLinear of a constant) runs in
INT8 when an engine layer implementing it reads its first input (the activation) in an Int8 format: INT8
weights with FP16 activations are an FP16 GEMM, and an initializer's name containing "int8" proves
nothing. An attention block (the MatMul before a Softmax and the MatMul after
it) is fused when one engine layer implements both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import onnx

from trt_quant.errors import TrtQuantError
from trt_quant.onnx import graph

ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]]+)\]")
INT8_FORMAT = re.compile(
    r"\bint8\b", re.IGNORECASE
)  # "Int8", "Row major Int8 format", "Channel major INT8 ..."
MATMULS = ("MatMul", "Gemm")
PASS_THROUGH = ("Cast", "Transpose", "Reshape", "Identity", "Unsqueeze", "Squeeze")
SCORE_OPS = ("Add", "Mul", "Div", "Sub", "Where", "Cast", "QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class EngineLayer:
    """One engine layer: its name, type, tactic, input formats and the ONNX nodes it implements."""

    name: str
    kind: str
    tactic: str
    input_formats: tuple[str, ...]
    onnx_nodes: frozenset[str]

    @property
    def reads_int8(self) -> bool:
        """Whether the first input (the activation operand of a GEMM) has an Int8 format."""
        return bool(self.input_formats) and bool(INT8_FORMAT.search(self.input_formats[0]))


def parse_layer_report(text: str) -> list[EngineLayer]:
    """The layers of an engine-inspector JSON report; TrtQuantError when it has no per-layer details."""
    try:
        layers = json.loads(text).get("Layers")
    except (json.JSONDecodeError, AttributeError) as error:
        raise TrtQuantError(
            f"The engine layer report is not inspector JSON ({error}): build the engine again."
        ) from None
    if not layers or not all(isinstance(layer, dict) for layer in layers):
        raise TrtQuantError(
            "The engine layer report lists no layer details (the engine was built without detailed profiling "
            "verbosity): build it again with 'trt-quant build'."
        )
    return [_layer(layer) for layer in layers]


def _layer(layer: dict) -> EngineLayer:
    name = str(layer.get("Name", ""))
    nodes = ONNX_LAYER.findall(str(layer.get("Metadata") or ""))
    formats = tuple(str(tensor.get("Format/Datatype", "")) for tensor in layer.get("Inputs") or [])
    return EngineLayer(
        name,
        str(layer.get("LayerType", "")),
        str(layer.get("TacticName", "")),
        formats,
        frozenset(node.strip() for node in nodes) or frozenset(part.strip() for part in name.split(" + ")),
    )


def _source(index: graph.ValueIndex, tensor: str, skip: Sequence[str]) -> onnx.NodeProto | None:
    """The node producing ``tensor``, looking through nodes of the ``skip`` types (first inputs)."""
    node = index.producer.get(tensor)
    while node is not None and node.op_type in skip and node.input:
        node = index.producer.get(node.input[0])
    return node


def quantized_linears(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul/Gemm nodes whose weight is a dequantized constant (the quantized Linears)."""
    index = graph.ValueIndex.of(model.graph)
    names = []
    for node in model.graph.node:
        if node.op_type in MATMULS and len(node.input) > 1:
            weight = _source(index, node.input[1], PASS_THROUGH)
            if (
                weight is not None
                and weight.op_type == "DequantizeLinear"
                and weight.input[0] in index.tensors
            ):
                names.append(node.name)
    return names


def attention_blocks(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(scores MatMul, context MatMul) around each Softmax: the MatMul that feeds it (through the scale,
    mask and casts) and the MatMul reading its output (through casts and Q/DQ)."""
    index = graph.ValueIndex.of(model.graph)
    blocks = []
    for softmax in (node for node in model.graph.node if node.op_type == "Softmax"):
        scores = _source(index, softmax.input[0], SCORE_OPS)
        context = next(_downstream(softmax.output[0], index.consumers), None)
        if scores is not None and scores.op_type in MATMULS and context is not None:
            blocks.append((scores.name, context.name))
    return blocks


def _downstream(tensor: str, consumers: dict[str, list[onnx.NodeProto]]) -> Iterator[onnx.NodeProto]:
    """MatMuls reading ``tensor`` directly or through casts and Q/DQ."""
    for node in consumers.get(tensor, []):
        if node.op_type in MATMULS:
            yield node
        elif node.op_type in ("Cast", "QuantizeLinear", "DequantizeLinear"):
            yield from _downstream(node.output[0], consumers)


@dataclass
class LayerCheck:
    """What the layer report shows: quantized Linears in INT8 or not, attention blocks fused or not."""

    int8: list[str]
    not_int8: dict[str, str]  # node name -> what the report shows instead
    fused: list[tuple[str, str]]
    unfused: list[tuple[str, str]]

    def failures(self, require_fusion: bool = True) -> list[str]:
        """One line per quantized Linear not in INT8 and, with ``require_fusion``, per unfused attention."""
        lines = [f"{node} does not run in INT8: {why}" for node, why in self.not_int8.items()]
        if require_fusion:
            lines += [f"attention {scores} -> {context} did not fuse" for scores, context in self.unfused]
        return lines

    def summary(self) -> str:
        """Counts, then one line per attention block."""
        total = len(self.int8) + len(self.not_int8)
        lines = [f"quantized Linears in INT8: {len(self.int8)}/{total}"]
        lines.append(f"attention blocks fused: {len(self.fused)}/{len(self.fused) + len(self.unfused)}")
        lines += [f"  fused:     {scores} -> {context}" for scores, context in self.fused]
        lines += [f"  NOT fused: {scores} -> {context}" for scores, context in self.unfused]
        return "\n".join(lines)


def check_engine_layers(model: onnx.ModelProto, report: str) -> LayerCheck:
    """Match the ONNX graph the engine was built from against the engine's layer report."""
    layers = parse_layer_report(report)
    check = LayerCheck([], {}, [], [])
    for node in quantized_linears(model):
        implementing = [layer for layer in layers if node in layer.onnx_nodes]
        if any(layer.reads_int8 for layer in implementing):
            check.int8.append(node)
        elif not implementing:
            check.not_int8[node] = "no engine layer names it (no [ONNX Layer] metadata)"
        else:
            shown = "; ".join(f"{layer.name} ({layer.kind}) reads {', '.join(layer.input_formats)}"
                              for layer in implementing)  # fmt: skip
            check.not_int8[node] = shown
    for scores, context in attention_blocks(model):
        fused = any({scores, context} <= layer.onnx_nodes for layer in layers)
        (check.fused if fused else check.unfused).append((scores, context))
    return check


__all__ = [
    "EngineLayer",
    "LayerCheck",
    "attention_blocks",
    "check_engine_layers",
    "parse_layer_report",
    "quantized_linears",
]
