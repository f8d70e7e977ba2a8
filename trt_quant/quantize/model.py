"""Quantize a task model: PEG, Q/DQ quantizers, attention quantizers, SmoothQuant and calibration, in the
order a recipe needs them."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trt_quant.config import QuantConfig
from trt_quant.quantize.attention import quantize_attention
from trt_quant.quantize.gptq import gptq_round_weights
from trt_quant.quantize.peg import apply_peg
from trt_quant.quantize.quantizers import (
    calibrate,
    input_channel_ranges,
    insert_quantizers,
    narrow_weight_ranges,
    recipe_for_family,
    round_embeddings,
    smooth,
)
from trt_quant.tasks.base import TaskModel


def quantize(
    model: TaskModel,
    batches: Sequence[dict[str, torch.Tensor]],
    config: QuantConfig,
    extra_float: Sequence[str] = (),
    family: str | None = None,
) -> TaskModel:
    """Insert INT8 or FP8 quantizers into ``model`` (in place) and calibrate them on ``batches``.

    With ``config.gptq`` (the FP8 default) the weights are then rounded with GPTQ on the same batches.
    ``family`` (the recipe's) matters only for ``config.quantize_attention``. Statistics are gathered in
    inference mode (no dropout), whatever mode ``model`` came in."""
    model.eval()
    if config.peg_groups:
        apply_peg(model, batches, config.peg_groups, config.peg_permute)
    quantized = insert_quantizers(model, config, extra_float).eval()  # Model Optimizer may restore train mode
    if config.quantize_attention:
        quantize_attention(quantized, family or "unknown", config.precision)
    if config.smoothquant is not None:
        folds = recipe_for_family(family).smoothquant_folds if family else ()
        smooth(quantized, input_channel_ranges(quantized, batches), config.smoothquant, folds)
    if config.weight_bits < 8:
        narrow_weight_ranges(quantized, config.weight_bits)
    if config.int8_embeddings:
        round_embeddings(quantized)
    calibrate(quantized, batches, config)
    if config.gptq:
        gptq_round_weights(quantized, batches)
    return quantized
