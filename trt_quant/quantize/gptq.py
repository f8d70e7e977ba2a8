"""GPTQ weight rounding: quantize each Linear's weight one input column at a time and spread each column's
rounding error over the columns not yet rounded, weighted by the layer's input statistics (Frantar et al.,
"GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers", 2022, Algorithm 1).

Round-to-nearest makes each weight as close as possible to float; GPTQ makes the layer's *output*
``x @ W.T`` on the calibration inputs as close as possible, with the same scales and the same grid, so the
exported graph, its layout and its scales are unchanged. The rounded weights lie on the weight quantizer's
grid (its ``amax`` stays as calibrated), and each module keeps its float weight so that a layer switched
back to float later (the accuracy budget, ``analyze``) runs the original weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from trt_quant.progress import progress
from trt_quant.quantize.quantizers import INPUT_QUANTIZER, WEIGHT_QUANTIZER, quantized_linears
from trt_quant.tasks.base import TaskModel

DAMPING = 0.01
"""Added to the Hessian's diagonal, as a share of its mean diagonal (GPTQ's default)."""
BLOCK = 128
"""Columns updated together before the error is pushed to the rest of the matrix (GPTQ's default)."""
OTHER_WEIGHT = "gptq_other_weight"
"""The weight a GPTQ-rounded Linear does not hold now: the float one, or the rounded one while float."""
HOLDS_FLOAT = "gptq_holds_float"


@torch.no_grad()
def input_hessians(model: TaskModel, batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Mean of x^T x over the non-padding tokens each weight-quantized Linear reads, with its input
    quantizer applied (what the quantized layer multiplies), with every quantizer of ``model`` active."""
    linears = {
        name: module
        for name, module in quantized_linears(model).items()
        if getattr(module, WEIGHT_QUANTIZER).is_enabled
    }
    sums = {name: torch.zeros(m.in_features, m.in_features) for name, m in linears.items()}
    counts = dict.fromkeys(linears, 0)
    keep: list[torch.Tensor | None] = [None]  # the current batch's non-padding token positions

    def record(name: str, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0]
        quantizer = getattr(module, INPUT_QUANTIZER)
        if quantizer.is_enabled:
            x = quantizer(x)
        rows = x.reshape(-1, x.shape[-1])
        if keep[0] is not None and keep[0].numel() == rows.shape[0]:
            rows = rows[keep[0]]
        sums[name] += rows.t() @ rows
        counts[name] += rows.shape[0]

    hooks = [
        module.register_forward_pre_hook(lambda m, inputs, name=name: record(name, m, inputs))
        for name, module in linears.items()
    ]
    try:
        for batch in progress(batches, "collecting GPTQ statistics", total=len(batches)):
            mask = batch.get("attention_mask")
            keep[0] = mask.reshape(-1).bool() if mask is not None else None
            model.run(batch)
    finally:
        for hook in hooks:
            hook.remove()
    return {name: sums[name] / counts[name] for name in linears if counts[name]}


@torch.no_grad()
def round_weight(weight: torch.Tensor, hessian: torch.Tensor, quantize_column: nn.Module) -> torch.Tensor:
    """GPTQ: ``weight`` [out, in] rounded column by column with ``quantize_column`` (a per-output-channel
    weight quantizer, applied to [out, 1] columns), each column's error spread over the later columns
    through the Cholesky factor of the damped inverse ``hessian`` [in, in]. Returns the rounded weight."""
    hessian = hessian.double()  # a copy
    dead = torch.diag(hessian) == 0  # inputs that were always zero: round them plainly
    hessian[dead, dead] = 1.0
    hessian.diagonal().add_(DAMPING * torch.diag(hessian).mean())
    inverse = torch.linalg.cholesky(
        torch.cholesky_inverse(torch.linalg.cholesky(hessian)), upper=True
    ).float()
    work = weight.detach().float().clone()
    rounded = torch.zeros_like(work)
    columns = work.shape[1]
    for start in range(0, columns, BLOCK):
        end = min(start + BLOCK, columns)
        block, factor = work[:, start:end], inverse[start:end, start:end]
        errors = torch.zeros_like(block)
        for i in range(end - start):
            column = block[:, i]
            quantized = quantize_column(column.unsqueeze(1)).squeeze(1)
            rounded[:, start + i] = quantized
            errors[:, i] = (column - quantized) / factor[i, i]
            block[:, i:] -= errors[:, i : i + 1] * factor[i : i + 1, i:]
        work[:, end:] -= errors @ inverse[start:end, end:]
    return rounded.to(weight.dtype)


@torch.no_grad()
def gptq_round_weights(model: TaskModel, batches: Sequence[dict[str, torch.Tensor]]) -> int:
    """Replace the weight of every weight-quantized Linear of the calibrated ``model`` by its GPTQ rounding
    (statistics from one pass over ``batches`` with all quantizers on); return how many were rounded.

    Each module keeps its float weight: :func:`use_float_weight` switches between the two."""
    linears = quantized_linears(model)
    hessians = input_hessians(model, batches)
    for name, hessian in progress(list(hessians.items()), "GPTQ rounding", total=len(hessians)):
        module = linears[name]
        quantizer = getattr(module, WEIGHT_QUANTIZER)
        rounded = quantizer(round_weight(module.weight, hessian, quantizer))  # exactly on the grid
        setattr(module, OTHER_WEIGHT, module.weight.detach().clone())
        setattr(module, HOLDS_FLOAT, False)
        module.weight.data.copy_(rounded)
    return len(hessians)


@torch.no_grad()
def use_float_weight(module: nn.Module, use_float: bool) -> None:
    """Give a GPTQ-rounded Linear its float weight back (``use_float``) or its rounded one; no-op for others."""
    other = getattr(module, OTHER_WEIGHT, None)
    if other is None or getattr(module, HOLDS_FLOAT) == use_float:
        return
    weight = cast(torch.Tensor, module.weight)
    held = weight.detach().clone()
    weight.data.copy_(other)
    other.copy_(held)
    setattr(module, HOLDS_FLOAT, use_float)
