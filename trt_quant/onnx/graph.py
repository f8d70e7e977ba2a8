"""The one ONNX graph layer: every rewrite of an ONNX graph in trt-quant goes through :func:`edit`.

Rewrites use onnx-graphsurgeon, the TensorRT team's graph-editing library: :func:`edit` imports a model's
main graph (``gs.import_onnx``), the caller edits nodes and tensors through an :class:`Editor` (a tensor
knows its producer and readers, so no index has to be built and kept current), and on leaving the block
the graph is cleaned up (``Graph.cleanup``: nodes that no output needs) and written back into the same
``ModelProto``. Initializers that no node reads any more are always dropped.

The write-back is ours, not ``gs.export_onnx``, which builds a new model and copies every weight on the
way (three copies of a 110M-parameter graph per edit). It keeps what a rewrite does not mean to change:

* the model's own fields (IR version, opset imports, producer, metadata, local functions): only the
  graph's nodes, inputs, outputs, value infos and initializers are rewritten;
* node order: nodes stay where the rewrite put them (no re-sorting; :meth:`Editor.insert_before`);
* initializers: unchanged ones stay the very messages they were, in their old order; new ones
  (:meth:`Editor.constant`) follow in creation order; value infos keep their old order.

Constants are held as ``TensorProto`` (graph surgeon's ``LazyValues``), never as decoded NumPy arrays:
untouched weights are not decoded and re-encoded, and new ones are encoded by ``onnx.numpy_helper`` (or
given as a ready ``TensorProto``), so the graphs, and the artifacts' checksums, are byte for byte what
the hand-written rewrites produced. (Tested with 0.6.1: graph surgeon does load float8e4m3fn and bfloat16
initializers as ml_dtypes arrays and exports them with their type and values, while logging that they
"will be casted"; an FP8 zero point written as ``int32_data`` would come back as ``raw_data``.)
Values are read with :func:`constant_value` / :func:`tensor_proto` (initializer, Constant node, through
Identity). Graph surgeon infers no types: the half-precision conversion still takes element types from
ONNX shape inference.

One read-only map stays outside graph surgeon on purpose: :class:`ValueIndex` (producer, readers and
constants by name), for passes that edit nothing: ``onnx.check``'s rules (they report ``TensorProto``
types, FP8 included, and node names, on every file ``trt-quant check`` is given) and the engine's layer
report; importing the graph would only add time. It is the only such map in trt-quant.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter
from onnx_graphsurgeon.ir.tensor import LazyValues
from onnx_graphsurgeon.logger import G_LOGGER

__all__ = [
    "Editor",
    "ValueIndex",
    "attribute_key",
    "constant_node_proto",
    "constant_node_value",
    "constant_value",
    "edit",
    "producer",
    "readers",
    "set_values",
    "tensor_proto",
]


class Editor:
    """A model's main graph open for editing (see :func:`edit`): ``graph`` is the onnx-graphsurgeon graph."""

    def __init__(self, graph: gs.Graph, initializer_names: list[str]) -> None:
        self.graph = graph
        self.created: list[str] = []  # names of the constants made by :meth:`constant`, in order
        self._initializer_names = initializer_names
        self._names: set[str] | None = None

    def initializers(self) -> list[gs.Constant]:
        """The graph's initializers still in use: the model's in their stored order, then new ones."""
        tensors = self.graph.tensors()
        names = [*self._initializer_names, *self.created]
        return [tensors[name] for name in dict.fromkeys(names) if isinstance(tensors.get(name), gs.Constant)]

    def unique_name(self, name: str) -> str:
        """``name``, or ``name_N`` when the graph already has a value of that name; reserved for the caller."""
        if self._names is None:
            self._names = set(self.graph.tensors())
        unique, count = name, 0
        while unique in self._names:
            count += 1
            unique = f"{name}_{count}"
        self._names.add(unique)
        return unique

    def constant(self, name: str, values: np.ndarray | onnx.TensorProto) -> gs.Constant:
        """A new constant (an initializer once exported) named ``name``, made unique in the graph.

        ``values`` is a NumPy array (stored with ``onnx.numpy_helper``) or a ready ``TensorProto`` (any
        ONNX type, FP8 included); its bytes are exported unchanged."""
        tensor = onnx.TensorProto()
        tensor.CopyFrom(values if isinstance(values, onnx.TensorProto) else numpy_helper.from_array(values))
        tensor.name = self.unique_name(name)
        self.created.append(tensor.name)
        return gs.Constant(tensor.name, LazyValues(tensor))

    def variable(self, name: str) -> gs.Variable:
        """A new computed value named ``name`` (made unique), without type information."""
        return gs.Variable(self.unique_name(name))

    def position(self, node: gs.Node) -> int:
        """Where ``node`` is in the graph's node list (by identity: graph surgeon compares nodes by value)."""
        return next(position for position, other in enumerate(self.graph.nodes) if other is node)

    def insert_before(self, anchor: gs.Node, *nodes: gs.Node) -> None:
        """Put ``nodes`` into the graph right before ``anchor``."""
        position = self.position(anchor)
        self.graph.nodes[position:position] = list(nodes)

    def remove(self, node: gs.Node) -> None:
        """Take ``node`` out of the graph, disconnected from its inputs and outputs."""
        del self.graph.nodes[self.position(node)]
        node.inputs.clear()
        node.outputs.clear()

    def replace_uses(self, old: gs.Tensor, new: gs.Tensor) -> None:
        """Make every node that reads ``old`` read ``new`` instead."""
        for reader in list(old.outputs):
            for slot, tensor in enumerate(reader.inputs):
                if tensor is old:
                    reader.inputs[slot] = new

    def replace_outputs(self, old: gs.Tensor, new: gs.Tensor) -> None:
        """Make the graph output ``old`` (if it is one) ``new``, under ``new``'s name and ``old``'s type."""
        for position, tensor in enumerate(self.graph.outputs):
            if tensor is old:
                if isinstance(new, gs.Variable):
                    new.dtype, new.shape = old.dtype, old.shape
                self.graph.outputs[position] = new

    def replace_with_constant(self, node: gs.Node, values: np.ndarray) -> gs.Constant:
        """Remove ``node``; its (first) output becomes a constant of the same name holding ``values``."""
        output = node.outputs[0]
        constant = gs.Constant(output.name, LazyValues(numpy_helper.from_array(values, output.name)))
        self.created.append(output.name)
        self.bypass(node, constant)
        self.replace_outputs(output, constant)
        return constant

    def constant_node_to_initializer(self, node: gs.Node) -> gs.Constant:
        """Replace a Constant node by an initializer of the same name and value; return the initializer."""
        values = constant_value(node.outputs[0])
        assert values is not None, f"Constant node {node.name} has no tensor value"
        return self.replace_with_constant(node, values)

    def replace_node(self, node: gs.Node, *nodes: gs.Node) -> None:
        """Put ``nodes`` where ``node`` is and remove ``node`` (``nodes`` may take over its outputs)."""
        position = self.position(node)
        self.remove(node)
        self.graph.nodes[position:position] = list(nodes)

    def bypass(self, node: gs.Node, replacement: gs.Tensor) -> None:
        """Remove ``node``; its readers read ``replacement`` instead of its (first) output."""
        self.replace_uses(node.outputs[0], replacement)
        self.remove(node)

    def inline_initializer_identities(self) -> int:
        """Let the readers of an Identity of an initializer read the initializer itself; return how many
        Identities went. The exporter reads a parameter used by several modules (ALBERT's shared layer)
        through one Identity per extra use, which would hide those uses from constant rewrites."""
        outputs = {tensor.name for tensor in self.graph.outputs}
        inlined = 0
        for node in list(self.graph.nodes):
            source = node.inputs[0] if node.op == "Identity" and node.inputs else None
            if isinstance(source, gs.Constant) and node.outputs[0].name not in outputs:
                self.bypass(node, source)
                inlined += 1
        return inlined


@contextlib.contextmanager
def edit(model: onnx.ModelProto, cleanup: bool = True) -> Iterator[Editor]:
    """Edit ``model``'s main graph in place through an :class:`Editor`; see the module docstring.

    With ``cleanup`` (the default) nodes whose outputs nobody reads are dropped on export; unused
    initializers are always dropped."""
    with G_LOGGER.suppress(G_LOGGER.ERROR):
        editor = Editor(gs.import_onnx(model), [tensor.name for tensor in model.graph.initializer])
        yield editor
        if cleanup:
            editor.graph.cleanup()
        _export_into(model.graph, editor.graph, editor.created)


def _export_into(target: onnx.GraphProto, graph: gs.Graph, created: list[str]) -> None:
    """Write ``graph`` back into ``target``, the graph it was imported from.

    Graph surgeon's exporter builds a new ``GraphProto``, copying every weight twice; here unchanged
    initializers stay the very messages they were (a 110M-parameter graph is not copied), changed ones
    are overwritten in place, new ones appended in creation order. Value infos keep their old order.
    """
    tensors = graph.tensors()
    constants = {name: tensor for name, tensor in tensors.items() if isinstance(tensor, gs.Constant)}
    for position in reversed(range(len(target.initializer))):
        stored = target.initializer[position]
        constant = constants.pop(stored.name, None)
        if constant is None:
            del target.initializer[position]
        elif not (isinstance(constant._values, LazyValues) and constant._values.tensor is stored):
            stored.CopyFrom(OnnxExporter.export_tensor_proto(constant))
    rank = {name: position for position, name in enumerate(created)}
    for name in sorted(constants, key=lambda name: rank.get(name, len(rank))):
        target.initializer.append(OnnxExporter.export_tensor_proto(constants[name]))
    io_names = {tensor.name for tensor in [*graph.inputs, *graph.outputs]}
    value_order = {value.name: position for position, value in enumerate(target.value_info)}
    typed = [
        tensor
        for name, tensor in tensors.items()
        if name not in io_names
        and isinstance(tensor, gs.Variable)
        and (tensor.dtype is not None or tensor.shape is not None)
    ]
    typed.sort(key=lambda tensor: value_order.get(tensor.name, len(value_order)))
    nodes = [OnnxExporter.export_node(node) for node in graph.nodes]
    for field_name, items in (
        ("node", nodes),
        ("input", [OnnxExporter.export_value_info_proto(tensor, False) for tensor in graph.inputs]),
        ("output", [OnnxExporter.export_value_info_proto(tensor, False) for tensor in graph.outputs]),
        ("value_info", [OnnxExporter.export_value_info_proto(tensor, False) for tensor in typed]),
    ):
        repeated = getattr(target, field_name)
        del repeated[:]
        repeated.extend(items)
    _unname_attribute_tensors(target)


def _unname_attribute_tensors(graph: onnx.GraphProto) -> None:
    """Clear the empty name graph surgeon writes into tensor attributes (a Constant's value), as the
    exporters leave it unset."""
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR and not attribute.t.name:
                attribute.t.ClearField("name")
            for subgraph in (
                [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs
            ):
                _unname_attribute_tensors(subgraph)


def _keep_order(exported: onnx.GraphProto, original: onnx.GraphProto, created: list[str]) -> None:
    """Initializers (old ones first, in their old order, then new ones as created) and value_info in
    ``original``'s order."""
    rank = {tensor.name: position for position, tensor in enumerate(original.initializer)}
    offset = len(rank)
    for position, name in enumerate(created):
        rank.setdefault(name, offset + position)
    last = len(rank)
    initializers = sorted(exported.initializer, key=lambda tensor: rank.get(tensor.name, last))
    value_rank = {value.name: position for position, value in enumerate(original.value_info)}
    values = sorted(exported.value_info, key=lambda value: value_rank.get(value.name, len(value_rank)))
    for repeated, ordered in ((exported.initializer, initializers), (exported.value_info, values)):
        if [item.name for item in repeated] != [item.name for item in ordered]:
            kept = [type(item)() for item in ordered]
            for copy, item in zip(kept, ordered, strict=True):
                copy.CopyFrom(item)
            del repeated[:]
            repeated.extend(kept)


def tensor_proto(tensor: gs.Tensor, through_identity: bool = True) -> onnx.TensorProto | None:
    """The ``TensorProto`` behind a constant tensor: an initializer or a Constant node's value, also
    through Identity nodes unless ``through_identity`` is False; None when the value is computed."""
    seen: set[int] = set()
    while not isinstance(tensor, gs.Constant):
        node = producer(tensor)
        if node is None or id(node) in seen:
            return None
        seen.add(id(node))
        if node.op == "Identity" and through_identity:
            tensor = node.inputs[0]
        elif node.op == "Constant":
            return constant_node_value(node)
        else:
            return None
    return _proto(tensor)


_SCALAR_ATTRIBUTES = {
    "value_float": np.float32,
    "value_floats": np.float32,
    "value_int": np.int64,
    "value_ints": np.int64,
}


def constant_node_value(node: gs.Node) -> onnx.TensorProto | None:
    """The value of a Constant node as a tensor (None for sparse or string constants)."""
    value = node.attrs.get("value")
    if isinstance(value, gs.Constant):
        return _proto(value)
    for name, dtype in _SCALAR_ATTRIBUTES.items():
        if name in node.attrs:
            return numpy_helper.from_array(np.array(node.attrs[name], dtype=dtype))
    return None


def _proto(constant: gs.Constant) -> onnx.TensorProto:
    values = constant._values
    if isinstance(values, LazyValues):
        return values.tensor
    return numpy_helper.from_array(np.asarray(values), constant.name)


def constant_value(tensor: gs.Tensor) -> np.ndarray | None:
    """The value of a constant tensor (initializer, Constant node, through Identity), or None."""
    proto = tensor_proto(tensor)
    return None if proto is None else numpy_helper.to_array(proto)


def set_values(tensor: gs.Constant, values: np.ndarray | onnx.TensorProto) -> None:
    """Give the constant ``tensor`` new values: an array (stored with ``onnx.numpy_helper``) or a tensor."""
    stored = onnx.TensorProto()
    stored.CopyFrom(values if isinstance(values, onnx.TensorProto) else numpy_helper.from_array(values))
    stored.name = tensor.name
    tensor.values = LazyValues(stored)


def attribute_key(node: gs.Node) -> tuple[bytes, ...]:
    """The node's attributes as ONNX would store them: equal keys mean equal attributes."""
    return tuple(attribute.SerializeToString() for attribute in OnnxExporter.export_attributes(node.attrs))


def producer(tensor: gs.Tensor) -> gs.Node | None:
    """The node that computes ``tensor`` (None for graph inputs and constants)."""
    return tensor.inputs[0] if tensor.inputs else None


def readers(tensor: gs.Tensor) -> list[gs.Node]:
    """The nodes that read ``tensor``."""
    return list(tensor.outputs)


_Index = TypeVar("_Index", bound="ValueIndex")


@dataclass
class ValueIndex:
    """Producer, readers and constant tensors of every value of a graph, for read-only passes."""

    graph: onnx.GraphProto
    producer: dict[str, onnx.NodeProto] = field(default_factory=dict)
    consumers: dict[str, list[onnx.NodeProto]] = field(default_factory=dict)
    tensors: dict[str, onnx.TensorProto] = field(default_factory=dict)  # initializers, Constant outputs

    @classmethod
    def of(cls: type[_Index], graph: onnx.GraphProto) -> _Index:
        """Index the main graph (subgraphs are not indexed)."""
        index = cls(graph, tensors={tensor.name: tensor for tensor in graph.initializer})
        for node in graph.node:
            for name in node.output:
                index.producer[name] = node
            for name in node.input:
                index.consumers.setdefault(name, []).append(node)
            value = constant_node_proto(node) if node.op_type == "Constant" and node.output else None
            if value is not None:
                index.tensors[node.output[0]] = value
        return index

    def constant(self, name: str) -> onnx.TensorProto | None:
        """The constant tensor behind ``name`` (following Identity nodes), or None if it is computed."""
        seen: set[str] = set()
        while name not in self.tensors:
            node = self.producer.get(name)
            if node is None or node.op_type != "Identity" or name in seen:
                return None
            seen.add(name)
            name = node.input[0]
        return self.tensors[name]


def constant_node_proto(node: onnx.NodeProto) -> onnx.TensorProto | None:
    """The value of a Constant ``NodeProto`` as a tensor (None for sparse or string constants)."""
    for attribute in node.attribute:
        if attribute.name == "value":
            return attribute.t
        if attribute.name in _SCALAR_ATTRIBUTES:
            values = np.array(helper.get_attribute_value(attribute), dtype=_SCALAR_ATTRIBUTES[attribute.name])
            return numpy_helper.from_array(values)
    return None
