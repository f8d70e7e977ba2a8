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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import onnx
import onnx_graphsurgeon as gs
import torch
from onnx import helper, numpy_helper

from trt_quant.artifacts import TensorSpec
from trt_quant.errors import TrtQuantError
from trt_quant.onnx import graph
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
        exported = export_onnx(model, example, path, opset)
    standard_fp8_qdq(exported)
    static_output_dims(exported)
    return exported, scales


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
    replaced = 0
    with graph.edit(model, cleanup=False) as editor:
        for node in list(editor.graph.nodes):
            if node.domain != "trt" or node.op not in _TRT_FP8_OPS:
                continue
            zero_point = editor.constant(
                f"{node.name or node.outputs[0].name}_fp8_zero_point",
                helper.make_tensor("", onnx.TensorProto.FLOAT8E4M3FN, [], [0.0]),
            )
            node.name = node.name.replace(node.op, _TRT_FP8_OPS[node.op])
            node.op, node.domain = _TRT_FP8_OPS[node.op], ""
            while len(node.inputs) > 2:
                node.inputs.pop()
            node.inputs.append(zero_point)
            node.attrs.clear()
            scale_node = graph.producer(node.inputs[1])
            if scale_node is not None and scale_node.op == "Constant":
                editor.constant_node_to_initializer(scale_node)
            replaced += 1
        if replaced:  # the exporter typed FP8 outputs as uint8
            for node in editor.graph.nodes:
                if node.op == "QuantizeLinear":
                    node.outputs[0].dtype, node.outputs[0].shape = None, None
    uses_trt = any(node.domain == "trt" for node in model.graph.node)
    kept_opsets = [entry for entry in model.opset_import if entry.domain != "trt" or uses_trt]
    del model.opset_import[:]
    model.opset_import.extend(kept_opsets)
    return replaced


def store_fp8_weights(model: onnx.ModelProto, scales: dict[str, tuple[Any, int]]) -> int:
    """Store every float MatMul/Gemm weight initializer listed in ``scales`` (by fingerprint, see
    ``quantize.fp8_weights_for_export``) as float8e4m3fn -> DequantizeLinear along its output-channel
    axis; return how many. The values are already on the FP8 grid, so the stored weights are exact."""
    from trt_quant.quantize.quantizers import weight_fingerprint

    stored = 0
    with graph.edit(model) as editor:
        editor.inline_initializer_identities()
        for tensor in editor.initializers():
            proto = graph.tensor_proto(tensor)
            readers = graph.readers(tensor)
            if (
                proto is None
                or len(proto.dims) != 2
                or proto.data_type != onnx.TensorProto.FLOAT
                or not readers
            ):
                continue
            if not all(
                node.op in ("MatMul", "Gemm") and len(node.inputs) > 1 and node.inputs[1] is tensor
                for node in readers
            ):
                continue
            weight = numpy_helper.to_array(proto)
            found = scales.get(weight_fingerprint(weight))
            if found is None:
                continue
            scale = np.asarray(found[0], dtype=np.float32).reshape(-1)
            axis = found[1]
            shape = [1, 1]
            shape[axis] = scale.size
            fp8 = (weight / scale.reshape(shape)).astype(ml_dtypes.float8_e4m3fn)
            name = tensor.name
            dequantized = editor.variable(f"{name}_dequantized")
            dequantize = gs.Node(
                "DequantizeLinear",
                name=f"{name}/DequantizeLinear",
                attrs={"axis": axis},
                inputs=[
                    editor.constant(f"{name}_fp8", _fp8_tensor(fp8)),
                    editor.constant(f"{name}_fp8_scale", scale),
                    editor.constant(
                        f"{name}_fp8_zero_point",
                        helper.make_tensor(
                            "", onnx.TensorProto.FLOAT8E4M3FN, [scale.size], [0.0] * scale.size
                        ),
                    ),
                ],
                outputs=[dequantized],
            )
            editor.insert_before(min(readers, key=editor.position), dequantize)
            editor.replace_uses(tensor, dequantized)
            stored += 1
    return stored


def _fp8_tensor(values: np.ndarray) -> onnx.TensorProto:
    """A float8e4m3fn tensor holding ``values`` (an ml_dtypes float8_e4m3fn array) as raw bytes."""
    tensor = onnx.TensorProto()
    tensor.data_type = onnx.TensorProto.FLOAT8E4M3FN
    tensor.dims.extend(values.shape)
    tensor.raw_data = np.ascontiguousarray(values).view(np.uint8).tobytes()
    return tensor


def quantize_array(weight: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int) -> np.ndarray:
    """ONNX QuantizeLinear to INT8: round half to even, add zero point, saturate to [-128, 127]."""
    shape = [1] * weight.ndim
    if scale.ndim == 1 and scale.size > 1:
        shape[axis] = scale.size
    scaled = np.rint(weight.astype(np.float32) / scale.reshape(shape).astype(np.float32))
    return np.clip(scaled + zero_point.reshape(shape).astype(np.float32), -128, 127).astype(np.int8)


def _fold_transpose(editor: graph.Editor, dequantize: gs.Node, weight: gs.Constant) -> None:
    """Move a 2-D Transpose after the weight DQ into the INT8 initializer and the DQ axis."""
    readers = graph.readers(dequantize.outputs[0])
    if len(readers) != 1 or readers[0].op != "Transpose":
        return
    transpose = readers[0]
    perm = transpose.attrs.get("perm")
    values = graph.constant_value(weight)
    if values is None or values.ndim != 2 or (perm is not None and list(perm) != [1, 0]):
        return
    graph.set_values(weight, np.ascontiguousarray(values.T))
    dequantize.attrs["axis"] = 1 - dequantize.attrs.get("axis", 1)
    transposed = transpose.outputs[0]
    editor.replace_uses(transposed, dequantize.outputs[0])
    editor.replace_outputs(transposed, dequantize.outputs[0])
    editor.remove(transpose)


def _initializer_source(tensor: gs.Tensor) -> gs.Tensor:
    """The initializer a value is, directly or through Identity nodes (the exporter reads a parameter used
    by several modules, such as ALBERT's shared layer, through one Identity per extra use)."""
    while not isinstance(tensor, gs.Constant):
        producer = graph.producer(tensor)
        if producer is None or producer.op != "Identity":
            break
        tensor = producer.inputs[0]
    return tensor


def fold_weight_quantizers(model: onnx.ModelProto) -> int:
    """Replace every float-initializer -> QuantizeLinear pair by an INT8 initializer; return how many.

    A weight quantized identically for several uses (a shared layer) is stored once."""
    folded = 0
    with graph.edit(model) as editor:
        created: list[gs.Constant] = []
        for node in list(editor.graph.nodes):
            source = _initializer_source(node.inputs[0]) if node.op == "QuantizeLinear" else None
            if not isinstance(source, gs.Constant):
                continue
            scale = graph.constant_value(node.inputs[1])
            zero_point = (
                graph.constant_value(node.inputs[2]) if len(node.inputs) > 2 else np.zeros(1, np.int8)
            )
            if scale is None or zero_point is None or zero_point.dtype != np.int8:
                continue
            weight = graph.constant_value(source)
            assert weight is not None
            axis = node.attrs.get("axis", 1) % max(weight.ndim, 1)
            quantized = editor.constant(
                f"{source.name}_int8_{folded}", quantize_array(weight, scale, zero_point, axis)
            )
            created.append(quantized)
            readers = graph.readers(node.outputs[0])
            editor.replace_uses(node.outputs[0], quantized)
            for reader in readers:
                if reader.op == "DequantizeLinear":
                    _fold_transpose(editor, reader, quantized)
            editor.remove(node)
            folded += 1
        _share_identical(editor, created)
    return folded


def _share_identical(editor: graph.Editor, constants: list[gs.Constant]) -> None:
    """Point every reader of one of ``constants`` at the first one with identical contents."""
    first: dict[tuple, gs.Constant] = {}
    for tensor in constants:
        proto = graph.tensor_proto(tensor)
        assert proto is not None
        key = (proto.data_type, tuple(proto.dims), numpy_helper.to_array(proto).tobytes())
        editor.replace_uses(tensor, first.setdefault(key, tensor))


def store_embeddings_int8(model: onnx.ModelProto) -> int:
    """Store every float table read by a Gather as INT8 rows -> DequantizeLinear(axis 0); return how many.

    The lookup result stays float (no activation quantization); only the table's storage shrinks. Apply
    it to a model whose tables were already rounded to INT8 rows (``quantize.round_embeddings``) and
    the stored values are exactly those the PyTorch model computes with.
    """
    stored = 0
    with graph.edit(model) as editor:
        for node in list(editor.graph.nodes):
            tensor = node.inputs[0] if node.op == "Gather" else None
            proto = graph.tensor_proto(tensor) if isinstance(tensor, gs.Constant) else None
            if (
                tensor is None
                or proto is None
                or proto.data_type != onnx.TensorProto.FLOAT
                or len(proto.dims) != 2
            ):
                continue
            table = numpy_helper.to_array(proto)
            scale = np.maximum(np.abs(table).max(axis=1) / 127.0, np.finfo(np.float32).tiny).astype(
                np.float32
            )
            quantized = np.clip(np.rint(table / scale[:, None]), -127, 127).astype(np.int8)
            name = tensor.name
            dequantized = editor.variable(f"{name}_dequantized")
            dequantize = gs.Node(
                "DequantizeLinear",
                name=f"{name}/DequantizeLinear",
                attrs={"axis": 0},
                inputs=[
                    editor.constant(f"{name}_int8", quantized),
                    editor.constant(f"{name}_scale", scale),
                    editor.constant(f"{name}_zero_point", np.zeros(scale.shape, np.int8)),
                ],
                outputs=[dequantized],
            )
            editor.insert_before(node, dequantize)
            editor.replace_uses(tensor, dequantized)
            stored += 1
    return stored


# Constants stay separate (ONNX Runtime's QDQ rewrites assume unshared zero points), and so does each
# Q/DQ pair: ONNX Runtime fuses Q -> DQ -> MatMul into an integer MatMul only when the pair feeds one
# MatMul (a QuantizeLinear shared by query/key/value left all three in float).
UNSHARED_OPS = ("Constant", "QuantizeLinear", "DequantizeLinear")


def merge_duplicate_nodes(model: onnx.ModelProto) -> int:
    """Common-subexpression elimination: nodes with the same op, attributes and inputs (constants compared
    by value) are computed once: siblings that read one tensor through identical SmoothQuant scales
    (query/key/value) share one Mul. Returns how many nodes were removed."""
    removed = 0
    with graph.edit(model) as editor:
        outputs = {tensor.name for tensor in editor.graph.outputs}
        seen: dict[tuple, gs.Node] = {}
        for node in list(editor.graph.nodes):
            if node.op in UNSHARED_OPS or any(isinstance(value, gs.Graph) for value in node.attrs.values()):
                continue
            inputs = []
            for tensor in node.inputs:
                value = graph.constant_value(tensor)
                inputs.append(
                    ("value", value.dtype.str, value.shape, value.tobytes())
                    if value is not None
                    else tensor.name
                )
            key = (node.op, node.domain, tuple(inputs), graph.attribute_key(node))
            first = seen.get(key)
            if first is None or outputs & {tensor.name for tensor in node.outputs}:
                seen.setdefault(key, node)
                continue
            for mine, theirs in zip(list(node.outputs), first.outputs, strict=True):
                editor.replace_uses(mine, theirs)
            editor.remove(node)
            removed += 1
    return removed


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
    with graph.edit(model):
        pass


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
