"""Reference variants a benchmark compares trt-quant against: PyTorch float and dynamic INT8, ONNX Runtime
float and dynamic INT8. Each is a callable from named numpy inputs to named numpy outputs."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from trt_quant.artifacts import FLOAT_ONNX, Manifest
from trt_quant.models import load_model

Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def pytorch_runner(manifest: Manifest, dynamic_int8: bool = False) -> Runner:
    """The source model in PyTorch eager float32, or with ``quantize_dynamic`` INT8 Linear layers."""
    model = load_model(manifest.source_model, manifest.task).model
    if dynamic_int8:
        model = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8
        )
    names = manifest.output_names

    @torch.inference_mode()
    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = model.run({name: torch.from_numpy(value) for name, value in feeds.items()})
        return {name: tensor.numpy() for name, tensor in zip(names, outputs, strict=True)}

    return run


def ort_dynamic_int8_model(artifact: Path, target: Path) -> Path:
    """ONNX Runtime's own dynamic quantization (``quantize_dynamic``) of the artifact's float ONNX."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(Path(artifact) / FLOAT_ONNX), str(target), weight_type=QuantType.QInt8)
    return target


def ort_runner(path: Path, output_names: list[str], threads: int | None = None) -> Runner:
    """An ONNX Runtime CPU session over any ONNX file, with the project's session options."""
    from trt_quant.runtime.ort import create_session

    session = create_session(path, threads)

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(output_names, session.run(output_names, feeds), strict=True))  # type: ignore[attr-defined]

    return run
