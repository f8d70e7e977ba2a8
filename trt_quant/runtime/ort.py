"""ONNX Runtime backend (CPU) behind the ``Runtime`` interface."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..artifacts import FLOAT_ONNX, INT8_ONNX, TRT_ONNX, Manifest
from ..errors import ArtifactError
from .base import Runtime

if TYPE_CHECKING:
    import onnx

PRECISION_FILES = {"int8": INT8_ONNX, "float": FLOAT_ONNX, "trt": TRT_ONNX}  # trt: the TensorRT-ready graph


# ONNX Runtime's U8S8 integer GEMM on x86 CPUs without VNNI sums pairs of products in 16 bits, which
# saturates; this session setting makes it use the exact (somewhat slower) U8U8 kernels instead.
X64_QUANT_PRECISION = "session.x64quantprecision"


def cpu_lacks_vnni() -> bool:
    """True on x86-64 CPUs without AVX-VNNI/AVX512-VNNI, where U8S8 integer GEMMs can saturate."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True
    return "vnni" not in flags


def exact_int8_needed(manifest: Manifest) -> bool:
    """Whether an artifact needs the exact (U8U8) integer GEMMs: on CPUs without VNNI, unless its weights
    are 7-bit (within +-64, which cannot saturate the fast U8S8 kernels)."""
    return cpu_lacks_vnni() and manifest.quantization.get("weight_bits") != 7


def session_options(threads: int | None = None, exact_int8: bool | None = None) -> object:
    """ONNX Runtime session options: full graph optimization, ``threads`` intra-op threads (None: all
    cores), and exact INT8 GEMMs where the CPU would saturate (``exact_int8`` None: decide by the CPU)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    if cpu_lacks_vnni() if exact_int8 is None else exact_int8:
        options.add_session_config_entry(X64_QUANT_PRECISION, "1")
    return options


def fold_lookup_dequantization(model: onnx.ModelProto) -> int:
    """Replace DequantizeLinear of a constant that only Gathers read by its float values; return how many.

    INT8 embedding tables are stored as INT8 + DequantizeLinear; ONNX Runtime never constant-folds
    DequantizeLinear, so without this it would dequantize the whole table on every call. The values
    are identical; only the work moves from every call to session creation.
    """
    from onnx import numpy_helper

    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    folded = 0
    for node in list(graph.node):
        if node.op_type != "DequantizeLinear" or not all(name in initializers for name in node.input):
            continue
        if not all(reader.op_type == "Gather" for reader in readers.get(node.output[0], [])):
            continue
        values, scale = (numpy_helper.to_array(initializers[name]) for name in node.input[:2])
        zero = numpy_helper.to_array(initializers[node.input[2]]) if len(node.input) > 2 else np.zeros(1)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * values.ndim
        if scale.size > 1:
            shape[axis] = scale.size
        dequantized = (values.astype(np.float32) - zero.reshape(shape)) * scale.reshape(shape)
        graph.initializer.append(numpy_helper.from_array(dequantized.astype(np.float32), node.output[0]))
        graph.node.remove(node)
        for name in node.input:
            if len(readers[name]) == 1:
                graph.initializer.remove(initializers[name])
        folded += 1
    return folded


def dequantize_after_lookup(model: onnx.ModelProto) -> int:
    """Move the DequantizeLinear of each INT8 lookup table behind its Gathers; return how many tables.

    DequantizeLinear(table) -> Gather(ids) becomes Gather(table, ids) -> Cast -> Mul by the looked-up rows'
    scales: the table stays INT8 (the file stays small) and each call dequantizes only the rows it looks
    up, in any ONNX runtime. Values are identical (zero points are 0; tables with others are left alone).
    """
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    moved = 0
    for node in list(graph.node):
        if node.op_type != "DequantizeLinear" or not all(name in initializers for name in node.input):
            continue
        gathers = readers.get(node.output[0], [])
        if not gathers or any(
            reader.op_type != "Gather" or reader.input[0] != node.output[0] or _axis(reader, 0) != 0
            for reader in gathers
        ):
            continue
        table, scale = (initializers[name] for name in node.input[:2])
        zero = numpy_helper.to_array(initializers[node.input[2]]) if len(node.input) > 2 else np.zeros(1)
        scales = numpy_helper.to_array(scale)
        if np.any(zero != 0) or (scales.size > 1 and _axis(node, 1) != 0):
            continue
        rows = f"{node.output[0]}_row_scale"
        graph.initializer.append(
            numpy_helper.from_array(scales.reshape(-1, 1) if scales.size > 1 else scales, rows)
        )
        for gather in gathers:
            ids, output = gather.input[1], gather.output[0]
            position = list(graph.node).index(gather)
            graph.node.remove(gather)
            new = [
                helper.make_node("Gather", [table.name, ids], [f"{output}_int8"], name=f"{gather.name}_int8"),
                helper.make_node("Cast", [f"{output}_int8"], [f"{output}_float"], to=onnx.TensorProto.FLOAT),
            ]
            factor = rows
            if scales.size > 1:
                factor = f"{output}_scale"
                new.append(helper.make_node("Gather", [rows, ids], [factor], name=f"{gather.name}_scale"))
            new.append(
                helper.make_node(
                    "Mul", [f"{output}_float", factor], [output], name=f"{gather.name}_dequantize"
                )
            )
            for offset, item in enumerate(new):
                graph.node.insert(position + offset, item)
        graph.node.remove(node)
        for name in node.input[1:]:
            if len(readers[name]) == 1:
                graph.initializer.remove(initializers[name])
        moved += 1
    return moved


def _axis(node: onnx.NodeProto, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), default)


def create_session(path: Path, threads: int | None = None, exact_int8: bool | None = None) -> object:
    """Open an ONNX file in an ONNX Runtime CPU session, INT8 lookup tables dequantized after the lookup
    (ONNX Runtime would dequantize the whole table every call); a corrupt file is an ``ArtifactError``."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"ONNX file {path} does not exist: convert the model again.")
    try:
        return ort.InferenceSession(
            _graph_bytes(path),
            session_options(threads, exact_int8),
            providers=["CPUExecutionProvider"],
        )
    except Exception as exc:  # onnx and onnxruntime raise several unrelated types for unreadable graphs
        raise ArtifactError(
            f"ONNX Runtime cannot load {path} ({str(exc).splitlines()[0][:160]}): the file is corrupt or truncated, "
            "convert the model again."
        ) from exc


def _graph_bytes(path: Path) -> bytes:
    """The graph with INT8 lookup tables dequantized after the lookup (others folded); as stored where onnx
    is not installed (Triton's Python-backend environment, whose repository stores the graph prepared)."""
    try:
        import onnx
    except ImportError:
        return path.read_bytes()
    model = onnx.load(str(path))
    dequantize_after_lookup(model)
    fold_lookup_dequantization(model)  # tables with zero points or per-column scales, if any
    return model.SerializeToString()


class OrtRuntime(Runtime):
    """Runs the INT8 (or float) ONNX graph of an artifact with ONNX Runtime; thread-safe."""

    backend = "onnxruntime"

    def __init__(
        self,
        directory: Path,
        manifest: Manifest,
        precision: str = "int8",
        threads: int | None = None,
        exact_int8: bool | None = None,
    ) -> None:
        super().__init__(directory, manifest)
        self.precision = precision
        self.exact_int8 = exact_int8_needed(manifest) if exact_int8 is None else exact_int8
        self.session = create_session(Path(directory) / PRECISION_FILES[precision], threads, self.exact_int8)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run(self.output_names, feeds)  # type: ignore[attr-defined]
        return dict(zip(self.output_names, values, strict=True))
