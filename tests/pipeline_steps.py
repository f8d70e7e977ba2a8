"""The convert pipeline run step by step through the public functions, keeping the PyTorch models."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from trt_quant.config import QuantConfig
from trt_quant.data import TextData, tokenize_batches
from trt_quant.models import LoadedModel, load_model
from trt_quant.onnx.export import (
    export_onnx,
    export_quantized,
    finalize_fp8_graph,
    finalize_int8_graph,
    save_onnx,
)
from trt_quant.quantize.model import quantize
from trt_quant.tasks.base import TaskModel


@dataclass
class SteppedConversion:
    """Float and fake-quantized PyTorch models with their exported ONNX files."""

    loaded: LoadedModel
    float_model: TaskModel
    quantized_model: TaskModel
    float_onnx: Path
    int8_onnx: Path
    int8_graph: onnx.ModelProto
    batches: list[dict[str, torch.Tensor]]


def convert_step_by_step(
    model_dir: Path, task: str, texts: list[str], directory: Path, config: QuantConfig
) -> SteppedConversion:
    """load -> export float -> quantize + calibrate -> export INT8 (or FP8 at opset 19) -> store weights,
    one public call each."""
    loaded = load_model(model_dir, task)
    batches = tokenize_batches(
        loaded.tokenizer, TextData(texts), loaded.input_names, config.batch_size, config.max_length
    )
    float_model = copy.deepcopy(loaded.model)
    loaded.recipe.export_fix(loaded.model)  # as convert does (DeBERTa: no data-dependent If)
    export_onnx(loaded.model, batches[0], directory / "float.onnx", 17)
    quantized = quantize(
        loaded.model, batches, config, extra_float=loaded.recipe.keep_float, family=loaded.recipe.family
    )
    opset = config.min_opset
    graph, scales = export_quantized(quantized, batches[0], directory / "int8.onnx", opset, config.precision)
    if config.precision == "fp8":
        finalize_fp8_graph(graph, scales, config.int8_embeddings)
    else:
        finalize_int8_graph(graph, config.int8_embeddings)
    save_onnx(graph, directory / "int8.onnx")
    return SteppedConversion(
        loaded, float_model, quantized, directory / "float.onnx", directory / "int8.onnx", graph, batches
    )
