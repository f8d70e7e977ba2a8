"""ONNX Runtime backend (CPU) behind the ``Runtime`` interface."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trt_quant.artifacts import (
    FLOAT_ONNX,
    QUANTIZED_ONNX,
    TRT_ONNX,
    Manifest,
    quantized_onnx,
    quantized_precision,
)
from trt_quant.errors import ArtifactError, TrtQuantError
from trt_quant.runtime.base import Runtime

if TYPE_CHECKING:
    import onnx

    from trt_quant.onnx import graph

PRECISION_FILES = {**QUANTIZED_ONNX, "float": FLOAT_ONNX, "trt": TRT_ONNX}  # trt: the TensorRT-ready graph


# ONNX Runtime's U8S8 integer GEMM on x86 CPUs without VNNI sums pairs of products in 16 bits, which
# saturates; this session setting makes it use the exact (somewhat slower) U8U8 kernels instead.
X64_QUANT_PRECISION = "session.x64quantprecision"
# ONNX Runtime 1.31's QDQ fusions turn DequantizeLinear(float8e4m3fn) -> MatMul into MatMulIntegerToFloat,
# which takes only 8-bit integers, and the session fails to load; FP8 graphs run with them off.
DISABLE_QDQ_FUSION = "session.disable_quant_qdq"
_FP8_TYPES = (17, 18, 19, 20)  # onnx.TensorProto FLOAT8E4M3FN, FLOAT8E4M3FNUZ, FLOAT8E5M2, FLOAT8E5M2FNUZ


def holds_fp8(model: onnx.ModelProto) -> bool:
    """Whether any initializer of the graph is an FP8 tensor (FP8 weights or Q/DQ zero points)."""
    return any(tensor.data_type in _FP8_TYPES for tensor in model.graph.initializer)


def cpu_lacks_vnni() -> bool:
    """True on x86-64 CPUs without AVX-VNNI/AVX512-VNNI, where U8S8 integer GEMMs can saturate."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True
    return "vnni" not in flags


def graph_file(manifest: Manifest, precision: str | None) -> str:
    """The ONNX file that runs ``precision``: "float", the artifact's quantized graph for None, or "int8"
    / "fp8" when the artifact holds that one."""
    if precision is None:
        return quantized_onnx(manifest)
    if precision not in PRECISION_FILES:
        raise TrtQuantError(f"Unknown precision '{precision}': use one of {', '.join(PRECISION_FILES)}.")
    held = quantized_precision(manifest)
    if precision in QUANTIZED_ONNX and precision != held:
        raise TrtQuantError(
            f"This artifact holds a {held.upper()} graph, not {precision.upper()}: ask for {held} or leave the "
            "precision out."
        )
    return PRECISION_FILES[precision]


def exact_int8_needed(manifest: Manifest) -> bool:
    """Whether an artifact needs the exact (U8U8) integer GEMMs: on CPUs without VNNI, unless its weights
    are 7-bit (within +-64, which cannot saturate the fast U8S8 kernels)."""
    return (
        cpu_lacks_vnni()
        and manifest.quantization.weight_bits != 7
        and quantized_precision(manifest) == "int8"
    )


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
    from trt_quant.onnx import graph

    with graph.edit(model, cleanup=False) as editor:
        return _fold_lookup_dequantization(editor)


def _fold_lookup_dequantization(editor: graph.Editor) -> int:
    import onnx_graphsurgeon as gs

    from trt_quant.onnx import graph

    folded = 0
    for node in list(editor.graph.nodes):
        if node.op != "DequantizeLinear" or not all(
            isinstance(tensor, gs.Constant) for tensor in node.inputs
        ):
            continue
        if not all(reader.op == "Gather" for reader in graph.readers(node.outputs[0])):
            continue
        values, scale = (graph.constant_value(tensor) for tensor in node.inputs[:2])
        zero = graph.constant_value(node.inputs[2]) if len(node.inputs) > 2 else np.zeros(1)
        assert values is not None and scale is not None and zero is not None
        axis = node.attrs.get("axis", 1)
        shape = [1] * values.ndim
        if scale.size > 1:
            shape[axis] = scale.size
        dequantized = (values.astype(np.float32) - zero.reshape(shape)) * scale.reshape(shape)
        editor.replace_with_constant(node, dequantized.astype(np.float32))
        folded += 1
    return folded


def dequantize_after_lookup(model: onnx.ModelProto) -> int:
    """Move the DequantizeLinear of each INT8 lookup table behind its Gathers; return how many tables.

    DequantizeLinear(table) -> Gather(ids) becomes Gather(table, ids) -> Cast -> Mul by the looked-up rows'
    scales: the table stays INT8 (the file stays small) and each call dequantizes only the rows it looks
    up, in any ONNX runtime. Values are identical (zero points are 0; tables with others are left alone).
    """
    from trt_quant.onnx import graph

    with graph.edit(model, cleanup=False) as editor:
        return _dequantize_after_lookup(editor)


def _dequantize_after_lookup(editor: graph.Editor) -> int:
    import onnx
    import onnx_graphsurgeon as gs

    from trt_quant.onnx import graph

    moved = 0
    for node in list(editor.graph.nodes):
        if node.op != "DequantizeLinear" or not all(
            isinstance(tensor, gs.Constant) for tensor in node.inputs
        ):
            continue
        gathers = graph.readers(node.outputs[0])
        if not gathers or any(
            reader.op != "Gather"
            or reader.inputs[0] is not node.outputs[0]
            or reader.attrs.get("axis", 0) != 0
            for reader in gathers
        ):
            continue
        table = node.inputs[0]
        scales = graph.constant_value(node.inputs[1])
        zero = graph.constant_value(node.inputs[2]) if len(node.inputs) > 2 else np.zeros(1)
        assert scales is not None and zero is not None
        if np.any(zero != 0) or (scales.size > 1 and node.attrs.get("axis", 1) != 0):
            continue
        rows = editor.constant(
            f"{node.outputs[0].name}_row_scale", scales.reshape(-1, 1) if scales.size > 1 else scales
        )
        for gather in gathers:
            ids, output = gather.inputs[1], gather.outputs[0]
            looked_up = editor.variable(f"{output.name}_int8")
            as_float = editor.variable(f"{output.name}_float")
            new = [
                gs.Node("Gather", name=f"{gather.name}_int8", inputs=[table, ids], outputs=[looked_up]),
                gs.Node("Cast", attrs={"to": onnx.TensorProto.FLOAT}, inputs=[looked_up], outputs=[as_float]),
            ]
            factor = rows
            if scales.size > 1:
                factor = editor.variable(f"{output.name}_scale")
                new.append(
                    gs.Node("Gather", name=f"{gather.name}_scale", inputs=[rows, ids], outputs=[factor])
                )
            new.append(
                gs.Node("Mul", name=f"{gather.name}_dequantize", inputs=[as_float, factor], outputs=[output])
            )
            editor.replace_node(gather, *new)
        editor.remove(node)
        moved += 1
    return moved


def unshare_dequantized_initializers(model: onnx.ModelProto) -> int:
    """Give each DequantizeLinear its own copy of an initializer that several of them read; return how many
    copies were made.

    A weight shared by several layers (ALBERT) is stored once in the INT8 ONNX. ONNX Runtime 1.31 cannot
    load such a graph with its exact U8U8 kernels (``session.x64quantprecision``): converting the shared
    INT8 tensor to UINT8 once per reader fails with "Attempt to replace the existing tensor". The copies
    exist only in the session's memory; the file keeps one.
    """
    from trt_quant.onnx import graph

    with graph.edit(model, cleanup=False) as editor:
        return _unshare_dequantized_initializers(editor)


def _unshare_dequantized_initializers(editor: graph.Editor) -> int:
    import onnx_graphsurgeon as gs

    from trt_quant.onnx import graph

    seen: set[str] = set()
    copies = 0
    for node in editor.graph.nodes:
        tensor = node.inputs[0] if node.op == "DequantizeLinear" else None
        if not isinstance(tensor, gs.Constant):
            continue
        if tensor.name in seen:
            values = graph.constant_value(tensor)
            assert values is not None
            node.inputs[0] = editor.constant(f"{tensor.name}_use{copies}", values)
            copies += 1
        seen.add(tensor.name)
    return copies


def create_session(path: Path, threads: int | None = None, exact_int8: bool | None = None) -> object:
    """Open an ONNX file in an ONNX Runtime CPU session, INT8 lookup tables dequantized after the lookup
    (ONNX Runtime would dequantize the whole table every call); a corrupt file is an ``ArtifactError``."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"ONNX file {path} does not exist: convert the model again.")
    try:
        data, fp8 = _prepared_graph(path)
        options = session_options(threads, exact_int8)
        if fp8:
            options.add_session_config_entry(DISABLE_QDQ_FUSION, "1")  # type: ignore[attr-defined]
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnx and onnxruntime raise several unrelated types for unreadable graphs
        raise ArtifactError(
            f"ONNX Runtime cannot load {path} ({str(exc).splitlines()[0][:160]}): the file is corrupt or truncated, "
            "convert the model again."
        ) from exc


def _prepared_graph(path: Path) -> tuple[bytes, bool]:
    """The graph with INT8 lookup tables dequantized after the lookup (others folded), and whether it holds
    FP8 Q/DQ; as stored where onnx is not installed (Triton's Python-backend environment, whose repository
    stores the INT8 graph prepared)."""
    try:
        import onnx

        from trt_quant.onnx import graph
    except ImportError:
        return path.read_bytes(), False
    model = onnx.load(str(path))
    with graph.edit(model, cleanup=False) as editor:
        _dequantize_after_lookup(editor)
        _fold_lookup_dequantization(editor)  # tables with zero points or per-column scales, if any
        _unshare_dequantized_initializers(editor)
    return model.SerializeToString(), holds_fp8(model)


class OrtRuntime(Runtime):
    """Runs the INT8 (or float) ONNX graph of an artifact with ONNX Runtime; thread-safe."""

    backend = "onnxruntime"

    def __init__(
        self,
        directory: Path,
        manifest: Manifest,
        precision: str | None = None,
        threads: int | None = None,
        exact_int8: bool | None = None,
    ) -> None:
        super().__init__(directory, manifest)
        self.precision = precision or quantized_precision(manifest)
        self.exact_int8 = exact_int8_needed(manifest) if exact_int8 is None else exact_int8
        path = Path(directory) / graph_file(manifest, precision)
        self.session = create_session(path, threads, self.exact_int8)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run(self.output_names, feeds)  # type: ignore[attr-defined]
        return dict(zip(self.output_names, values, strict=True))
