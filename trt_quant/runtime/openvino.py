"""OpenVINO backend (CPU) behind the ``Runtime`` interface: runs the artifact's own Q/DQ ONNX graph.

OpenVINO reads the explicit QuantizeLinear/DequantizeLinear graph as it is and runs its Linears as INT8
GEMMs (VNNI/AMX where the CPU has them); the float parts run at OpenVINO's default inference precision
(bf16 on CPUs with AVX512-BF16 or AMX, else f32) unless ``inference_precision`` says otherwise.

On x86 CPUs without VNNI, OpenVINO's INT8 kernels can saturate with 8-bit weights (ONNX Runtime has exact
kernels for that case): ``auto`` picks OpenVINO there only for artifacts converted with ``--weight-bits 7``.
"""

from __future__ import annotations

import logging
import queue
from pathlib import Path
from typing import Any

import numpy as np

from trt_quant.artifacts import Manifest, quantized_precision
from trt_quant.errors import ArtifactError, TrtQuantError
from trt_quant.runtime.base import Runtime
from trt_quant.runtime.ort import exact_int8_needed, graph_file

log = logging.getLogger(__name__)

PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
INFERENCE_PRECISIONS = ("f32", "bf16", "f16")


def openvino_available() -> bool:
    """Whether the ``openvino`` package (the ``openvino`` extra) can be imported."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def openvino_exact(manifest: Manifest) -> bool:
    """Whether OpenVINO is installed and runs this artifact's INT8 GEMMs exactly: on x86 CPUs without VNNI
    its integer kernels sum pairs of products in 16 bits, which 8-bit weights can saturate (7-bit cannot)."""
    return openvino_available() and not exact_int8_needed(manifest)


def _openvino() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise TrtQuantError(
            "OpenVINO is not installed: pip install 'trt-quant[openvino]', or use --backend onnxruntime."
        ) from exc
    return openvino


def compile_config(
    threads: int | None = None,
    performance_hint: str = "LATENCY",
    streams: int | None = None,
    inference_precision: str | None = None,
) -> dict[str, str]:
    """OpenVINO CPU properties: the performance hint, ``threads`` inference threads (None: OpenVINO's
    choice), ``streams`` parallel streams (None: what the hint implies) and the precision of the float
    parts (None: OpenVINO's default for the CPU)."""
    if performance_hint not in PERFORMANCE_HINTS:
        raise TrtQuantError(
            f"Unknown OpenVINO performance hint '{performance_hint}': use one of {', '.join(PERFORMANCE_HINTS)}."
        )
    if inference_precision is not None and inference_precision not in INFERENCE_PRECISIONS:
        raise TrtQuantError(
            f"Unknown inference precision '{inference_precision}': use one of {', '.join(INFERENCE_PRECISIONS)}."
        )
    config = {"PERFORMANCE_HINT": performance_hint}
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    if streams:
        config["NUM_STREAMS"] = str(streams)
    if inference_precision:
        config["INFERENCE_PRECISION_HINT"] = inference_precision
    return config


def compile_model(path: Path, config: dict[str, str]) -> Any:
    """Read an ONNX file and compile it for OpenVINO's CPU device; a corrupt file is an ``ArtifactError``."""
    openvino = _openvino()
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"ONNX file {path} does not exist: convert the model again.")
    try:
        return openvino.Core().compile_model(str(path), "CPU", config)
    except RuntimeError as exc:  # OpenVINO raises RuntimeError for unreadable or unsupported graphs
        raise ArtifactError(
            f"OpenVINO cannot load {path} ({str(exc).strip().splitlines()[0][:160]}): the file is corrupt or "
            "truncated, convert the model again."
        ) from exc


class OpenVinoRuntime(Runtime):
    """Runs the INT8 (or float) ONNX graph of an artifact with OpenVINO on CPU; thread-safe.

    Each call takes an idle infer request from a pool (creating one when all are busy), so concurrent
    calls never share a request's buffers; outputs are copied out before the request is returned.
    """

    backend = "openvino"

    def __init__(
        self,
        directory: Path,
        manifest: Manifest,
        precision: str | None = None,
        threads: int | None = None,
        performance_hint: str = "LATENCY",
        streams: int | None = None,
        inference_precision: str | None = None,
    ) -> None:
        super().__init__(directory, manifest)
        path = Path(directory) / graph_file(manifest, precision)
        precision = precision or quantized_precision(manifest)
        if precision == "int8" and exact_int8_needed(manifest):
            log.warning(
                "This CPU lacks VNNI, where OpenVINO's INT8 GEMMs can saturate with 8-bit weights: convert with "
                "--weight-bits 7 or use the onnxruntime backend for exact results."
            )
        self.precision = precision
        self.config = compile_config(threads, performance_hint, streams, inference_precision)
        self.compiled = compile_model(path, self.config)
        self._outputs = [self.compiled.output(name) for name in self.output_names]
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()

    @property
    def inference_precision(self) -> str:
        """The precision OpenVINO runs the float parts in (f32, bf16 or f16)."""
        return str(self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string())

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            request = self._idle.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            results = request.infer(feeds, share_inputs=False, share_outputs=False)
            return {
                name: np.asarray(results[port])
                for name, port in zip(self.output_names, self._outputs, strict=True)
            }
        finally:
            self._idle.put(request)
