"""ONNX export with explicit quantization (QuantizeLinear/DequantizeLinear), INT8 or FP8 weight storage.

The TorchScript exporter writes Model Optimizer's INT8 quantizers as Q/DQ pairs. Weight quantizers come
out as float weight -> QuantizeLinear -> DequantizeLinear -> Transpose -> MatMul;
:func:`fold_weight_quantizers` turns each into an INT8 initializer (already transposed) -> DequantizeLinear
-> MatMul, so weights are stored in INT8 (about a quarter of the float size) and TensorRT/ONNX Runtime see
the standard pattern.

FP8 (:func:`export_quantized` with precision "fp8", opset >= 19): Model Optimizer 0.47 writes its FP8
activation quantizers as the custom ops ``trt::TRT_FP8QuantizeLinear``/``trt::TRT_FP8DequantizeLinear``
(uint8-typed, no zero point); :func:`standard_fp8_qdq` turns them into standard QuantizeLinear/
DequantizeLinear with a float8e4m3fn zero point of 0. Weights leave the exporter as fake-quantized float
initializers; :func:`store_fp8_weights` stores each as a float8e4m3fn initializer -> per-channel
DequantizeLinear -> MatMul.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from trt_quant.artifacts import TensorSpec
from trt_quant.errors import TrtQuantError
from trt_quant.tasks.base import TaskModel

BATCH_AXIS = "batch"
SEQUENCE_AXIS = "sequence"


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence the exporter's tracer warnings and its stdout chatter."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def dynamic_axes(model: TaskModel) -> dict[str, dict[int, str]]:
    """Batch and sequence axes of every input, batch (and sequence for per-token outputs) of every output."""
    axes: dict[str, dict[int, str]] = {name: {0: BATCH_AXIS, 1: SEQUENCE_AXIS} for name in model.input_names}
    for name, per_token in zip(model.task.outputs, model.task.per_token, strict=True):
        axes[name] = {0: BATCH_AXIS, 1: SEQUENCE_AXIS} if per_token else {0: BATCH_AXIS}
    return axes


@torch.no_grad()
def export_onnx(
    model: TaskModel, example: dict[str, torch.Tensor], path: Path, opset: int
) -> onnx.ModelProto:
    """Export ``model`` with the TorchScript exporter (Q/DQ for active quantizers) and return the graph."""
    model.eval()
    arguments = tuple(example[name] for name in model.input_names)
    with _quiet_export():
        torch.onnx.export(
            model,
            arguments,
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=model.input_names,
            output_names=list(model.task.outputs),
            dynamic_axes=dynamic_axes(model),
            do_constant_folding=True,
        )
    return onnx.load(str(path))


FP8_OPSET = 19  # QuantizeLinear/DequantizeLinear accept float8e4m3fn from opset 19 on
_TRT_FP8_OPS = {"TRT_FP8QuantizeLinear": "QuantizeLinear", "TRT_FP8DequantizeLinear": "DequantizeLinear"}


def export_quantized(
    model: TaskModel, example: dict[str, torch.Tensor], path: Path, opset: int, precision: str = "int8"
) -> tuple[onnx.ModelProto, dict[str, tuple[Any, int]]]:
    """Export a fake-quantized ``model``: INT8 as :func:`export_onnx` does; FP8 at opset >= 19 with
    standard float8e4m3fn Q/DQ and the per-channel weight scales :func:`store_fp8_weights` needs."""
    if precision != "fp8":
        return export_onnx(model, example, path, opset), {}
    if opset < FP8_OPSET:
        raise TrtQuantError(f"FP8 Q/DQ needs ONNX opset {FP8_OPSET} or newer: pass --opset {FP8_OPSET}.")
    from trt_quant.quantize.quantizers import fp8_weights_for_export

    with fp8_weights_for_export(model) as scales:
        graph = export_onnx(model, example, path, opset)
    standard_fp8_qdq(graph)
    static_output_dims(graph)
    return graph, scales


def static_output_dims(model: onnx.ModelProto) -> None:
    """Give graph outputs back the fixed sizes (number of classes, hidden size) that the exporter could not
    infer through custom ops and named instead; batch and sequence stay dynamic."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for output in probe.graph.output:
        output.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(probe).graph.output
    for ours, theirs in zip(model.graph.output, inferred, strict=True):
        for mine, known in zip(
            ours.type.tensor_type.shape.dim, theirs.type.tensor_type.shape.dim, strict=False
        ):
            if known.HasField("dim_value") and mine.dim_param not in ("", BATCH_AXIS, SEQUENCE_AXIS):
                mine.dim_value = known.dim_value


def standard_fp8_qdq(model: onnx.ModelProto) -> int:
    """Replace Model Optimizer's ``trt::TRT_FP8QuantizeLinear``/``TRT_FP8DequantizeLinear`` by standard
    QuantizeLinear/DequantizeLinear with a float8e4m3fn zero point of 0 and their scales as initializers
    (as the INT8 export has them); return how many were replaced."""
    graph = model.graph
    constants = {node.output[0]: node for node in graph.node if node.op_type == "Constant"}
    replaced = 0
    for node in graph.node:
        if node.domain != "trt" or node.op_type not in _TRT_FP8_OPS:
            continue
        zero_point = f"{node.name or node.output[0]}_fp8_zero_point"
        graph.initializer.append(helper.make_tensor(zero_point, onnx.TensorProto.FLOAT8E4M3FN, [], [0.0]))
        node.name = node.name.replace(node.op_type, _TRT_FP8_OPS[node.op_type])
        node.op_type, node.domain = _TRT_FP8_OPS[node.op_type], ""
        del node.input[2:]
        node.input.append(zero_point)
        del node.attribute[:]
        scale = constants.pop(node.input[1], None)
        if scale is not None:
            graph.initializer.append(
                numpy_helper.from_array(numpy_helper.to_array(scale.attribute[0].t), scale.output[0])
            )
            graph.node.remove(scale)
        replaced += 1
    if replaced:
        fp8_values = {node.output[0] for node in graph.node if node.op_type == "QuantizeLinear"}
        kept = [value for value in graph.value_info if value.name not in fp8_values]
        del graph.value_info[:]
        graph.value_info.extend(kept)
    uses_trt = any(node.domain == "trt" for node in graph.node)
    kept_opsets = [entry for entry in model.opset_import if entry.domain != "trt" or uses_trt]
    del model.opset_import[:]
    model.opset_import.extend(kept_opsets)
    return replaced


def store_fp8_weights(model: onnx.ModelProto, scales: dict[str, tuple[Any, int]]) -> int:
    """Store every float MatMul/Gemm weight initializer listed in ``scales`` (by fingerprint, see
    ``quantize.fp8_weights_for_export``) as float8e4m3fn -> DequantizeLinear along its output-channel
    axis; return how many. The values are already on the FP8 grid, so the stored weights are exact."""
    from trt_quant.quantize.quantizers import weight_fingerprint

    graph = model.graph
    _bypass_initializer_identities(graph)
    index = _GraphIndex(graph)
    stored = 0
    for name, tensor in list(index.initializers.items()):
        readers = index.consumers.get(name, [])
        if len(tensor.dims) != 2 or tensor.data_type != onnx.TensorProto.FLOAT or not readers:
            continue
        if not all(
            node.op_type in ("MatMul", "Gemm") and list(node.input[1:2]) == [name] for node in readers
        ):
            continue
        weight = numpy_helper.to_array(tensor)
        found = scales.get(weight_fingerprint(weight))
        if found is None:
            continue
        scale = np.asarray(found[0], dtype=np.float32).reshape(-1)
        axis = found[1]
        shape = [1, 1]
        shape[axis] = scale.size
        stored_name = f"{name}_fp8"
        fp8 = (weight / scale.reshape(shape)).astype(ml_dtypes.float8_e4m3fn)
        graph.initializer.extend(
            [
                _fp8_tensor(fp8, stored_name),
                numpy_helper.from_array(scale, f"{name}_fp8_scale"),
                helper.make_tensor(
                    f"{name}_fp8_zero_point", onnx.TensorProto.FLOAT8E4M3FN, [scale.size], [0.0] * scale.size
                ),
            ]
        )
        dequantized = f"{name}_dequantized"
        position = min(list(graph.node).index(node) for node in readers)
        graph.node.insert(
            position,
            helper.make_node(
                "DequantizeLinear",
                [stored_name, f"{name}_fp8_scale", f"{name}_fp8_zero_point"],
                [dequantized],
                name=f"{name}/DequantizeLinear",
                axis=axis,
            ),
        )
        for node in readers:
            node.input[1] = dequantized
        stored += 1
    remove_unused(model)
    return stored


def _bypass_initializer_identities(graph: onnx.GraphProto) -> None:
    """Let readers of an Identity of an initializer read the initializer itself: the exporter reads a
    parameter used by several modules (ALBERT's shared layer) through one Identity per extra use, which
    would hide those uses from the weight rewrites."""
    initializers = {tensor.name for tensor in graph.initializer}
    outputs = {value.name for value in graph.output}
    alias: dict[str, str] = {}
    for node in list(graph.node):
        source = alias.get(node.input[0], node.input[0]) if node.input else ""
        if node.op_type == "Identity" and source in initializers and node.output[0] not in outputs:
            alias[node.output[0]] = source
            graph.node.remove(node)
    for node in graph.node:
        for position, name in enumerate(node.input):
            if name in alias:
                node.input[position] = alias[name]


def _fp8_tensor(values: np.ndarray, name: str) -> onnx.TensorProto:
    """A float8e4m3fn initializer holding ``values`` (an ml_dtypes float8_e4m3fn array) as raw bytes."""
    tensor = onnx.TensorProto()
    tensor.name = name
    tensor.data_type = onnx.TensorProto.FLOAT8E4M3FN
    tensor.dims.extend(values.shape)
    tensor.raw_data = np.ascontiguousarray(values).view(np.uint8).tobytes()
    return tensor


class _GraphIndex:
    """Producers, consumers and constant values of a graph, for small rewrites."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.initializers = {tensor.name: tensor for tensor in graph.initializer}
        self.producer = {output: node for node in graph.node for output in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for name in node.input:
                self.consumers[name].append(node)

    def constant(self, name: str) -> np.ndarray | None:
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            return numpy_helper.to_array(node.attribute[0].t)
        if node is not None and node.op_type == "Identity":
            return self.constant(node.input[0])
        return None


def _axis(node: onnx.NodeProto) -> int:
    return next((attribute.i for attribute in node.attribute if attribute.name == "axis"), 1)


def _set_axis(node: onnx.NodeProto, axis: int) -> None:
    for attribute in node.attribute:
        if attribute.name == "axis":
            attribute.i = axis
            return
    node.attribute.append(helper.make_attribute("axis", axis))


def quantize_array(weight: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int) -> np.ndarray:
    """ONNX QuantizeLinear to INT8: round half to even, add zero point, saturate to [-128, 127]."""
    shape = [1] * weight.ndim
    if scale.ndim == 1 and scale.size > 1:
        shape[axis] = scale.size
    scaled = np.rint(weight.astype(np.float32) / scale.reshape(shape).astype(np.float32))
    return np.clip(scaled + zero_point.reshape(shape).astype(np.float32), -128, 127).astype(np.int8)


def _fold_transpose(index: _GraphIndex, dequantize: onnx.NodeProto, name: str) -> None:
    """Move a 2-D Transpose after the weight DQ into the INT8 initializer and the DQ axis."""
    consumers = index.consumers[dequantize.output[0]]
    if len(consumers) != 1 or consumers[0].op_type != "Transpose":
        return
    transpose = consumers[0]
    perm = next((list(a.ints) for a in transpose.attribute if a.name == "perm"), None)
    weight = numpy_helper.to_array(index.initializers[name])
    if weight.ndim != 2 or perm not in (None, [1, 0]):
        return
    index.initializers[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(weight.T), name))
    _set_axis(dequantize, 1 - _axis(dequantize))
    for consumer in index.consumers[transpose.output[0]]:
        for position, value in enumerate(consumer.input):
            if value == transpose.output[0]:
                consumer.input[position] = dequantize.output[0]
    for position, output in enumerate(index.graph.output):
        if output.name == transpose.output[0]:
            index.graph.output[position].name = dequantize.output[0]
    index.graph.node.remove(transpose)


def _initializer_source(index: _GraphIndex, name: str) -> str:
    """The initializer a value is, directly or through Identity nodes (the exporter reads a parameter used
    by several modules, such as ALBERT's shared layer, through one Identity per extra use)."""
    while name not in index.initializers:
        producer = index.producer.get(name)
        if producer is None or producer.op_type != "Identity":
            break
        name = producer.input[0]
    return name


def fold_weight_quantizers(model: onnx.ModelProto) -> int:
    """Replace every float-initializer -> QuantizeLinear pair by an INT8 initializer; return how many.

    A weight quantized identically for several uses (a shared layer) is stored once."""
    graph = model.graph
    index = _GraphIndex(graph)
    folded = 0
    created: list[str] = []
    for node in list(graph.node):
        source = _initializer_source(index, node.input[0]) if node.op_type == "QuantizeLinear" else ""
        if source not in index.initializers:
            continue
        scale = index.constant(node.input[1])
        zero_point = index.constant(node.input[2]) if len(node.input) > 2 else np.zeros(1, np.int8)
        if scale is None or zero_point is None or zero_point.dtype != np.int8:
            continue
        weight = numpy_helper.to_array(index.initializers[source])
        name = f"{source}_int8_{folded}"
        created.append(name)
        quantized = quantize_array(weight, scale, zero_point, _axis(node) % max(weight.ndim, 1))
        graph.initializer.append(numpy_helper.from_array(quantized, name))
        index.initializers[name] = graph.initializer[-1]
        for consumer in index.consumers[node.output[0]]:
            for position, value in enumerate(consumer.input):
                if value == node.output[0]:
                    consumer.input[position] = name
            if consumer.op_type == "DequantizeLinear":
                _fold_transpose(index, consumer, name)
        graph.node.remove(node)
        folded += 1
    _share_identical(graph, created)
    remove_unused(model)
    return folded


def _share_identical(graph: onnx.GraphProto, names: list[str]) -> None:
    """Point every reader of an initializer among ``names`` at the first one with identical contents."""
    tensors = {tensor.name: tensor for tensor in graph.initializer}
    first: dict[tuple, str] = {}
    renamed: dict[str, str] = {}
    for name in names:
        tensor = tensors[name]
        key = (tensor.data_type, tuple(tensor.dims), numpy_helper.to_array(tensor).tobytes())
        renamed[name] = first.setdefault(key, name)
    for node in graph.node:
        for position, value in enumerate(node.input):
            node.input[position] = renamed.get(value, value)


def store_embeddings_int8(model: onnx.ModelProto) -> int:
    """Store every float table read by a Gather as INT8 rows -> DequantizeLinear(axis 0); return how many.

    The lookup result stays float (no activation quantization); only the table's storage shrinks. Apply
    it to a model whose tables were already rounded to INT8 rows (``quantize.round_embeddings``) and
    the stored values are exactly those the PyTorch model computes with.
    """
    graph = model.graph
    index = _GraphIndex(graph)
    stored = 0
    for node in list(graph.node):
        name = node.input[0] if node.op_type == "Gather" else ""
        tensor = index.initializers.get(name)
        if tensor is None or tensor.data_type != onnx.TensorProto.FLOAT or len(tensor.dims) != 2:
            continue
        table = numpy_helper.to_array(tensor)
        scale = np.maximum(np.abs(table).max(axis=1) / 127.0, np.finfo(np.float32).tiny).astype(np.float32)
        quantized = np.clip(np.rint(table / scale[:, None]), -127, 127).astype(np.int8)
        graph.initializer.extend(
            [
                numpy_helper.from_array(quantized, f"{name}_int8"),
                numpy_helper.from_array(scale, f"{name}_scale"),
                numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{name}_zero_point"),
            ]
        )
        dequantized = f"{name}_dequantized"
        position = list(graph.node).index(node)
        graph.node.insert(
            position,
            helper.make_node(
                "DequantizeLinear",
                [f"{name}_int8", f"{name}_scale", f"{name}_zero_point"],
                [dequantized],
                name=f"{name}/DequantizeLinear",
                axis=0,
            ),
        )
        for consumer in index.consumers[name]:
            for slot, value in enumerate(consumer.input):
                if value == name:
                    consumer.input[slot] = dequantized
        index.consumers[name] = []
        stored += 1
    remove_unused(model)
    return stored


# Constants stay separate (ONNX Runtime's QDQ rewrites assume unshared zero points), and so does each
# Q/DQ pair: ONNX Runtime fuses Q -> DQ -> MatMul into an integer MatMul only when the pair feeds one
# MatMul (a QuantizeLinear shared by query/key/value left all three in float).
UNSHARED_OPS = ("Constant", "QuantizeLinear", "DequantizeLinear")


def merge_duplicate_nodes(model: onnx.ModelProto) -> int:
    """Common-subexpression elimination: nodes with the same op, attributes and inputs (constants compared
    by value) are computed once: siblings that read one tensor through identical SmoothQuant scales
    (query/key/value) share one Mul. Returns how many nodes were removed."""
    graph = model.graph
    index = _GraphIndex(graph)
    graph_outputs = {output.name for output in graph.output}
    renamed: dict[str, str] = {}
    seen: dict[tuple, onnx.NodeProto] = {}
    removed = 0
    for node in list(graph.node):
        for position, name in enumerate(node.input):
            node.input[position] = renamed.get(name, name)
        if node.op_type in UNSHARED_OPS or any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute
        ):
            continue
        inputs = []
        for name in node.input:
            value = index.constant(name)
            inputs.append(
                ("value", value.dtype.str, value.shape, value.tobytes()) if value is not None else name
            )
        key = (node.op_type, node.domain, tuple(inputs), tuple(a.SerializeToString() for a in node.attribute))
        first = seen.get(key)
        if first is None or graph_outputs & set(node.output):
            seen.setdefault(key, node)
            continue
        for mine, theirs in zip(node.output, first.output, strict=True):
            renamed[mine] = theirs
        graph.node.remove(node)
        removed += 1
    for node in graph.node:  # outer-scope names read inside subgraphs
        for attribute in node.attribute:
            for subgraph in (
                [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs
            ):
                for inner in subgraph.node:
                    for position, name in enumerate(inner.input):
                        inner.input[position] = renamed.get(name, name)
    remove_unused(model)
    return removed


def _names_read(node: onnx.NodeProto) -> set[str]:
    """Values a node reads, including those its subgraphs (If/Loop bodies) read from the outer scope."""
    names = set(node.input)
    for attribute in node.attribute:
        for subgraph in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs:
            for inner in subgraph.node:
                names |= _names_read(inner)
    return names


def finalize_int8_graph(model: onnx.ModelProto, int8_embeddings: bool) -> dict[str, int]:
    """INT8 weight initializers, INT8 embedding tables (optional), shared duplicate Q/DQ; return counts."""
    return {
        "quantized_weight_initializers": fold_weight_quantizers(model),
        "int8_embedding_tables": store_embeddings_int8(model) if int8_embeddings else 0,
        "merged_duplicate_nodes": merge_duplicate_nodes(model),
    }


def finalize_fp8_graph(
    model: onnx.ModelProto, scales: dict[str, tuple[Any, int]], int8_embeddings: bool
) -> dict[str, int]:
    """FP8 weight initializers, INT8 embedding tables (optional; lookups stay float), shared duplicates."""
    return {
        "quantized_weight_initializers": store_fp8_weights(model, scales),
        "int8_embedding_tables": store_embeddings_int8(model) if int8_embeddings else 0,
        "merged_duplicate_nodes": merge_duplicate_nodes(model),
    }


def remove_unused(model: onnx.ModelProto) -> None:
    """Drop nodes whose outputs nobody reads and initializers no node reads."""
    graph = model.graph
    while True:
        needed = {output.name for output in graph.output}
        needed.update(name for node in graph.node for name in _names_read(node))
        dead = [node for node in graph.node if not any(output in needed for output in node.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in _names_read(node)} | {
        output.name for output in graph.output
    }
    for tensor in [tensor for tensor in graph.initializer if tensor.name not in used]:
        graph.initializer.remove(tensor)


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor_type = value.type.tensor_type
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
    shape: list[int | str] = [dim.dim_param or dim.dim_value for dim in tensor_type.shape.dim]
    return TensorSpec(value.name, dtype, shape)


def graph_inputs(model: onnx.ModelProto) -> list[TensorSpec]:
    """Graph inputs (excluding initializers) with dtypes and symbolic shapes."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    return [_spec(value) for value in model.graph.input if value.name not in initializers]


def graph_outputs(model: onnx.ModelProto) -> list[TensorSpec]:
    """Graph outputs with dtypes and symbolic shapes."""
    return [_spec(value) for value in model.graph.output]


def count_ops(model: onnx.ModelProto, op_type: str) -> int:
    """How many nodes of ``op_type`` the graph holds."""
    return sum(node.op_type == op_type for node in model.graph.node)


def save_onnx(model: onnx.ModelProto, path: Path) -> None:
    """Check the graph with the ONNX checker and save it (a single file; encoder models fit in 2 GB)."""
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


__all__ = [
    "count_ops",
    "export_onnx",
    "fold_weight_quantizers",
    "graph_inputs",
    "graph_outputs",
    "save_onnx",
]
