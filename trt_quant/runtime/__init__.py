"""Runtimes that execute a converted model: ONNX Runtime on CPU, TensorRT on NVIDIA GPUs."""

from __future__ import annotations

from pathlib import Path

from ..artifacts import ENGINE, load_manifest, quantized_precision
from ..errors import TrtQuantError
from .base import Runtime
from .ort import PRECISION_FILES, OrtRuntime

BACKENDS = ("auto", "onnxruntime", "tensorrt")


def load_runtime(
    directory: str | Path,
    backend: str = "auto",
    precision: str | None = None,
    verify: bool = True,
    threads: int | None = None,
) -> Runtime:
    """Open an artifact directory for inference.

    ``backend="auto"`` uses TensorRT when the artifact has an engine and a GPU with TensorRT is present,
    else ONNX Runtime on CPU. ``precision`` picks the float ONNX graph ("float", ONNX Runtime only) or the
    artifact's quantized one (None, or its precision "int8"/"fp8"; another one is an error).
    ``verify`` checks every file against the manifest's checksums first.
    """
    if backend not in BACKENDS:
        raise TrtQuantError(f"Unknown backend '{backend}': use one of {', '.join(BACKENDS)}.")
    if precision is not None and precision not in PRECISION_FILES:
        raise TrtQuantError(f"Unknown precision '{precision}': use one of {', '.join(PRECISION_FILES)}.")
    path = Path(directory)
    manifest = load_manifest(path, verify=verify)
    if backend == "auto":
        from .trt import tensorrt_usable

        has_engine = (path / ENGINE).is_file()
        quantized = precision in (None, quantized_precision(manifest))
        backend = "tensorrt" if has_engine and quantized and tensorrt_usable() else "onnxruntime"
    if backend == "tensorrt":
        from .trt import TensorRTRuntime

        return TensorRTRuntime(path, manifest)
    return OrtRuntime(path, manifest, precision=precision, threads=threads)


__all__ = ["BACKENDS", "OrtRuntime", "Runtime", "load_runtime"]
