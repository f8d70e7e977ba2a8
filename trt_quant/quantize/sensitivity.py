"""Per-layer sensitivity of a quantized model and automatic mixed precision under an accuracy budget.

Sensitivity of a Linear layer = how much the model's output degrades when only that layer is quantized
(1 - mean cosine against the float outputs, or the task metric's drop when labels are given). Mixed
precision keeps the most sensitive layers in float, one at a time, until the budget is met.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trt_quant.compare import output_cosines
from trt_quant.errors import TrtQuantError
from trt_quant.progress import progress
from trt_quant.quantize.gptq import use_float_weight
from trt_quant.quantize.quantizers import INPUT_QUANTIZER, WEIGHT_QUANTIZER, quantized_linears
from trt_quant.tasks.base import TaskModel

Batches = Sequence[dict[str, torch.Tensor]]
Score = Callable[[TaskModel], float]  # higher is better: mean cosine, or a task metric


@dataclass(frozen=True)
class Budget:
    """An accuracy budget: ``cosine>=X`` (output cosine against float) or ``drop<=X`` (task-metric points)."""

    kind: str
    value: float

    def met(self, score: float, float_score: float) -> bool:
        return score >= self.value if self.kind == "cosine" else float_score - score <= self.value

    def __str__(self) -> str:
        return f"cosine>={self.value}" if self.kind == "cosine" else f"drop<={self.value}"


def parse_budget(spec: str) -> Budget:
    """Parse ``"cosine>=0.995"`` or ``"drop<=0.5"``."""
    match = re.fullmatch(r"\s*(cosine)\s*>=\s*([0-9.]+)\s*|\s*(drop)\s*<=\s*([0-9.]+)\s*", spec)
    if not match:
        raise TrtQuantError(
            f'Accuracy budget \'{spec}\' is not understood: write "cosine>=0.995" or "drop<=0.5".'
        )
    kind = match.group(1) or match.group(3)
    value = float(match.group(2) or match.group(4))
    if kind == "cosine" and not 0.0 < value <= 1.0:
        raise TrtQuantError(f"A cosine budget of {value} cannot be met: pass a value in (0, 1].")
    return Budget(kind, value)


def linear_flops(model: nn.Module) -> dict[str, int]:
    """Multiply-accumulates per token of every quantizable Linear (in_features x out_features)."""
    return {
        name: module.in_features * module.out_features for name, module in quantized_linears(model).items()
    }


def int8_flop_share(model: nn.Module) -> float:
    """Share of Linear multiply-accumulates that run in INT8."""
    flops = linear_flops(model)
    linears = quantized_linears(model)
    int8 = sum(f for name, f in flops.items() if getattr(linears[name], WEIGHT_QUANTIZER).is_enabled)
    return int8 / max(sum(flops.values()), 1)


def set_layer_quantized(module: nn.Module, quantized: bool) -> None:
    """Switch both quantizers of one Linear on or off (a GPTQ-rounded Linear also gets its float weight back)."""
    use_float_weight(module, not quantized)
    for attribute in (WEIGHT_QUANTIZER, INPUT_QUANTIZER):
        quantizer = getattr(module, attribute)
        quantizer.enable() if quantized else quantizer.disable()


@torch.no_grad()
def outputs_of(model: TaskModel, batches: Batches) -> list[tuple[torch.Tensor, ...]]:
    return [model.run(batch) for batch in batches]


def cosine_score(reference: list[tuple[torch.Tensor, ...]], batches: Batches) -> Score:
    """Mean per-example cosine of a model's outputs against ``reference`` outputs (padding zeroed)."""

    @torch.no_grad()
    def score(model: TaskModel) -> float:
        cosines: list[float] = []
        for batch, expected in zip(batches, reference, strict=True):
            mask = batch.get("attention_mask", torch.ones_like(batch["input_ids"])).numpy()
            for got, want, per_token in zip(model.run(batch), expected, model.task.per_token, strict=True):
                cosines += output_cosines(want.numpy(), got.numpy(), mask, per_token)
        return float(np.mean(cosines))

    return score


@dataclass(frozen=True)
class LayerSensitivity:
    """Score of the model with only ``layer`` quantized, and the drop from float it causes."""

    layer: str
    score: float
    drop: float
    flops: int


def layer_sensitivity(model: TaskModel, score: Score) -> list[LayerSensitivity]:
    """Quantize one Linear at a time (the others float); return layers ranked most sensitive first.

    A layer's drop is measured from the score with every Linear float, so what the rest of the recipe
    changes (INT8 embedding storage) is not charged to any layer.
    """
    linears = quantized_linears(model)
    enabled = {name for name, m in linears.items() if getattr(m, WEIGHT_QUANTIZER).is_enabled}
    flops = linear_flops(model)
    results = []
    try:
        for name in linears:
            set_layer_quantized(linears[name], False)
        baseline = score(model)
        for name in progress(sorted(enabled), "sensitivity", total=len(enabled)):
            set_layer_quantized(linears[name], True)
            value = score(model)
            results.append(LayerSensitivity(name, value, baseline - value, flops[name]))
            set_layer_quantized(linears[name], False)
    finally:
        for name in enabled:
            set_layer_quantized(linears[name], True)
    return sorted(results, key=lambda item: item.drop, reverse=True)


@dataclass(frozen=True)
class MixedPrecision:
    """The outcome of an accuracy budget: layers kept float, the score reached, the INT8 FLOP share."""

    budget: str
    float_layers: tuple[str, ...]
    score: float
    float_score: float
    int8_flop_share: float


def meet_budget(
    model: TaskModel,
    budget: Budget,
    score: Score,
    float_score: float,
    rank: Callable[[], list[LayerSensitivity]],
) -> MixedPrecision:
    """Keep the most sensitive layers float, one at a time, until ``budget`` holds; error if it never does.

    The layers are ranked (``rank``: one score per Linear plus an all-float baseline) only when the
    all-quantized model misses the budget: a model that already meets it costs one score.
    """
    linears = quantized_linears(model)
    kept: list[str] = []
    current = score(model)
    if not budget.met(current, float_score):
        for item in rank():
            set_layer_quantized(linears[item.layer], False)
            kept.append(item.layer)
            current = score(model)
            if budget.met(current, float_score):
                break
    if not budget.met(current, float_score):
        raise TrtQuantError(
            f"The accuracy budget {budget} cannot be met even with every layer in float (score {current:.4f}): "
            "loosen the budget."
        )
    return MixedPrecision(str(budget), tuple(kept), current, float_score, int8_flop_share(model))


def plot_sensitivity(ranking: list[LayerSensitivity], path: Path, metric: str) -> Path:
    """Bar chart of the per-layer drop, most sensitive first (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ranking[:40]
    figure, axes = plt.subplots(figsize=(9, max(3.0, 0.28 * len(shown) + 1.2)))
    axes.barh(
        [item.layer.removeprefix("model.") for item in shown][::-1], [item.drop for item in shown][::-1]
    )
    axes.set_xlabel(f"drop in {metric} when only this layer is INT8")
    axes.set_title("Per-layer quantization sensitivity")
    axes.tick_params(axis="y", labelsize=7)
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
