"""ONNX Runtime backend (CPU) behind the ``Runtime`` interface."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ..artifacts import FLOAT_ONNX, INT8_ONNX, Manifest
from ..errors import ArtifactError
from .base import Runtime

PRECISION_FILES = {"int8": INT8_ONNX, "float": FLOAT_ONNX}


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


def unshare_dequantized_initializers(model: onnx.ModelProto) -> int:
    """Give each DequantizeLinear its own copy of an initializer that several of them read; return how many
    copies were made.

    A weight shared by several layers (ALBERT) is stored once in the INT8 ONNX. ONNX Runtime 1.31 cannot
    load such a graph with its exact U8U8 kernels (``session.x64quantprecision``): converting the shared
    INT8 tensor to UINT8 once per reader fails with "Attempt to replace the existing tensor". The copies
    exist only in the session's memory; the file keeps one.
    """
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    seen: set[str] = set()
    copies = 0
    for node in graph.node:
        name = node.input[0] if node.op_type == "DequantizeLinear" else ""
        if name not in initializers:
            continue
        if name in seen:
            copy = f"{name}_use{copies}"
            graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(initializers[name]), copy))
            node.input[0] = copy
            copies += 1
        seen.add(name)
    return copies


def create_session(path: Path, threads: int | None = None, exact_int8: bool | None = None) -> object:
    """Open an ONNX file in an ONNX Runtime CPU session; a corrupt file is an ``ArtifactError``."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"ONNX file {path} does not exist: convert the model again.")
    try:
        model = onnx.load(str(path))
        fold_lookup_dequantization(model)
        unshare_dequantized_initializers(model)
        return ort.InferenceSession(
            model.SerializeToString(),
            session_options(threads, exact_int8),
            providers=["CPUExecutionProvider"],
        )
    except Exception as exc:  # onnx and onnxruntime raise several unrelated types for unreadable graphs
        raise ArtifactError(
            f"ONNX Runtime cannot load {path} ({str(exc).splitlines()[0][:160]}): the file is corrupt or truncated, "
            "convert the model again."
        ) from exc


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
