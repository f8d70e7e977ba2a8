"""Per-embedding-group (PEG) activation quantization (Bondarenko et al., 2021).

A Linear whose input carries outlier channels is split by input channel into K groups, each group with
its own Linear and therefore its own per-tensor INT8 input scale: y = sum_k x[..., g_k] W[:, g_k]^T + b.
With ``permute`` the channels are sorted by their calibration range first, so the few outlier channels
share one group and the others keep a fine scale. TensorRT only takes per-tensor activation scales;
this form exports as K Gather -> Q/DQ -> MatMul branches summed, which needs nothing else.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import torch
from torch import nn

from trt_quant.tasks.base import TaskModel

DEFAULT_PEG_LAYERS = (
    "*intermediate.dense",
    "*[0-9].output.dense",
    "*ffn.lin1",
    "*ffn.lin2",
)  # the feed-forward Linears


class GroupedLinear(nn.Module):
    """A Linear computed as a sum over input-channel groups, one plain ``nn.Linear`` (no bias) per group."""

    def __init__(self, linear: nn.Linear, groups: Sequence[torch.Tensor]) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.parts = nn.ModuleList()
        for index, channels in enumerate(groups):
            part = nn.Linear(len(channels), linear.out_features, bias=False)
            part.weight.data.copy_(linear.weight.data[:, channels])
            self.parts.append(part)
            self.register_buffer(f"channels_{index}", channels.clone())
        self.bias = nn.Parameter(linear.bias.data.clone()) if linear.bias is not None else None

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        total = None
        for index, part in enumerate(self.parts):
            term = part(inputs.index_select(-1, getattr(self, f"channels_{index}")))
            total = term if total is None else total + term
        assert total is not None
        return total + self.bias if self.bias is not None else total


def channel_groups(channel_range: torch.Tensor, groups: int, permute: bool) -> list[torch.Tensor]:
    """Split channel indices into ``groups`` equal parts, in order of increasing range when ``permute``."""
    order = torch.argsort(channel_range) if permute else torch.arange(channel_range.numel())
    return [chunk.sort().values for chunk in torch.tensor_split(order, groups)]


@torch.no_grad()
def linear_input_ranges(
    model: nn.Module, names: Sequence[str], batches: Sequence[dict[str, torch.Tensor]], run: TaskModel
) -> dict[str, torch.Tensor]:
    """Per-input-channel |x| maxima of the named Linears over ``batches`` (float forward)."""
    modules = dict(model.named_modules())
    ranges: dict[str, torch.Tensor] = {}

    def record(name: str, inputs: tuple[torch.Tensor, ...]) -> None:
        value = inputs[0].abs().reshape(-1, inputs[0].shape[-1]).amax(dim=0)
        ranges[name] = torch.maximum(ranges[name], value) if name in ranges else value

    hooks = [modules[name].register_forward_pre_hook(lambda _, i, n=name: record(n, i)) for name in names]
    try:
        for batch in batches:
            run.run(batch)
    finally:
        for hook in hooks:
            hook.remove()
    return ranges


def apply_peg(
    model: TaskModel,
    batches: Sequence[dict[str, torch.Tensor]],
    groups: int,
    permute: bool = True,
    patterns: Sequence[str] = DEFAULT_PEG_LAYERS,
) -> list[str]:
    """Replace the matching Linears of a float model by ``GroupedLinear``s of ``groups`` groups; return names."""
    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and any(fnmatch.fnmatchcase(name, p) for p in patterns)
        and module.in_features >= groups
    ]
    ranges = linear_input_ranges(model, names, batches, model)
    for name in names:
        parent_name, _, attribute = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        linear = getattr(parent, attribute)
        setattr(parent, attribute, GroupedLinear(linear, channel_groups(ranges[name], groups, permute)))
    return names
