"""``model_trt.onnx``: an artifact's TensorRT-ready graph, written without a GPU (``build --onnx-only``).

The engine build (:func:`trt_quant.engine.build.build_engine`) parses exactly the bytes
:func:`prepare_tensorrt_onnx` returns and stores them with :func:`store_tensorrt_onnx`, so the file in
the artifact is the graph its engine was built from; ``trtexec --onnx=model_trt.onnx --stronglyTyped``
builds the same network.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import onnx

from trt_quant.artifacts import (
    TRT_ONNX,
    Manifest,
    TensorrtOnnxRecord,
    load_manifest,
    quantized_onnx,
    write_atomically,
    write_manifest,
)
from trt_quant.onnx.tensorrt_graph import tensorrt_graph

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorRTOnnx:
    """The serialized TensorRT-ready graph and its manifest record."""

    data: bytes
    record: TensorrtOnnxRecord


def prepare_tensorrt_onnx(
    artifact_dir: str | Path, manifest: Manifest, precision: str = "fp16", fp32_islands: bool = False
) -> TensorRTOnnx:
    """The artifact's quantized graph (INT8 or FP8) made TensorRT-ready
    (:func:`~trt_quant.onnx.tensorrt_graph.tensorrt_graph`), serialized."""
    source = quantized_onnx(manifest)
    graph = tensorrt_graph(onnx.load(str(Path(artifact_dir) / source)), precision, fp32_islands)
    data = graph.model.SerializeToString()
    record = TensorrtOnnxRecord(
        file=TRT_ONNX,
        source=source,
        precision=precision,
        fp32_islands=fp32_islands,
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        edits=dict(graph.edits),
    )
    return TensorRTOnnx(data, record)


def store_tensorrt_onnx(artifact_dir: str | Path, manifest: Manifest, prepared: TensorRTOnnx) -> None:
    """Write ``model_trt.onnx`` atomically and record it in ``manifest`` (the caller writes the manifest)."""
    write_atomically(Path(artifact_dir) / TRT_ONNX, prepared.data)
    manifest.tensorrt_onnx = prepared.record


def write_tensorrt_onnx(
    artifact_dir: str | Path, precision: str = "fp16", fp32_islands: bool = False, verify: bool = True
) -> TensorrtOnnxRecord:
    """Write the artifact's ``model_trt.onnx`` and record it (with its sha256) in the manifest.

    ``precision`` is the float part's type (fp16, bf16 or fp32); ``fp32_islands`` keeps LayerNorm and
    Softmax in FP32. Needs no GPU and no TensorRT. Returns the manifest record.
    """
    directory = Path(artifact_dir)
    manifest = load_manifest(directory, verify=verify)
    prepared = prepare_tensorrt_onnx(directory, manifest, precision, fp32_islands)
    store_tensorrt_onnx(directory, manifest, prepared)
    write_manifest(directory, manifest)
    if manifest.engine is not None and manifest.engine.source_sha256 != prepared.record.sha256:
        log.warning(
            "The artifact's model.plan was not built from this model_trt.onnx: run 'trt-quant build' "
            "without --onnx-only to rebuild it."
        )
    return prepared.record


__all__ = ["TensorRTOnnx", "prepare_tensorrt_onnx", "store_tensorrt_onnx", "write_tensorrt_onnx"]
