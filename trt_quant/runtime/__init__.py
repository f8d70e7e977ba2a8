"""Runtimes that execute a converted model: ONNX Runtime or OpenVINO on CPU, TensorRT on NVIDIA GPUs."""

from __future__ import annotations

import warnings
from pathlib import Path

from trt_quant.artifacts import ENGINE, load_manifest, quantized_precision
from trt_quant.errors import EngineMismatchError, TrtQuantError
from trt_quant.runtime.base import Runtime
from trt_quant.runtime.openvino import OpenVinoRuntime, openvino_exact
from trt_quant.runtime.ort import PRECISION_FILES, OrtRuntime

BACKENDS = ("auto", "onnxruntime", "openvino", "tensorrt")


def load_runtime(
    directory: str | Path,
    backend: str = "auto",
    precision: str | None = None,
    verify: bool = True,
    threads: int | None = None,
) -> Runtime:
    """Open an artifact directory for inference.

    ``backend="auto"`` uses TensorRT when the artifact has an engine and a GPU with TensorRT is present,
    else OpenVINO on CPU when it is installed (the ``openvino`` extra), the graph is INT8 and its integer
    GEMMs cannot saturate (a VNNI CPU, or 7-bit weights), else ONNX Runtime. It also falls back to a CPU
    backend, with a warning, when the engine was built for another GPU or TensorRT version
    (``backend="tensorrt"`` raises then). ``precision`` picks the float ONNX graph ("float", CPU backends
    only), the TensorRT-ready graph ("trt", ONNX Runtime only) or the artifact's quantized one (None, or
    its precision "int8"/"fp8"; another one is an error). ``verify`` checks every file against the
    manifest's checksums first.
    """
    if backend not in BACKENDS:
        raise TrtQuantError(f"Unknown backend '{backend}': use one of {', '.join(BACKENDS)}.")
    if precision is not None and precision not in PRECISION_FILES:
        raise TrtQuantError(f"Unknown precision '{precision}': use one of {', '.join(PRECISION_FILES)}.")
    path = Path(directory)
    manifest = load_manifest(path, verify=verify)
    if backend == "auto":
        from trt_quant.runtime.trt import TensorRTRuntime, tensorrt_usable

        quantized = precision in (None, quantized_precision(manifest))
        if (path / ENGINE).is_file() and quantized and tensorrt_usable():
            try:
                return TensorRTRuntime(path, manifest)
            except EngineMismatchError as error:
                warnings.warn(f"{error} Running on the CPU instead.", stacklevel=2)
        int8 = quantized and quantized_precision(manifest) == "int8"
        backend = "openvino" if int8 and openvino_exact(manifest) else "onnxruntime"
    if backend == "tensorrt":
        from trt_quant.runtime.trt import TensorRTRuntime

        return TensorRTRuntime(path, manifest)
    if backend == "openvino":
        return OpenVinoRuntime(path, manifest, precision=precision, threads=threads)
    return OrtRuntime(path, manifest, precision=precision, threads=threads)


__all__ = ["BACKENDS", "OpenVinoRuntime", "OrtRuntime", "Runtime", "load_runtime"]
