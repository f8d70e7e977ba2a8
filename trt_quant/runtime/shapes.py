"""Fitting (batch, sequence) inputs to an engine's optimization profiles: pure functions, no GPU.

An engine only runs shapes inside one of its profiles. A sequence shorter than every fitting profile's
minimum is padded up to that minimum (attention mask 0, token ids the tokenizer's pad id) and per-token
outputs are cut back afterwards; masked positions change no other position of an encoder, so the
results are those of the unpadded input. With several fitting profiles the one in use is kept (a profile
switch costs a synchronizing call), else the tightest one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from trt_quant.engine.build import Profile
from trt_quant.errors import InputError

MASK_INPUT = "attention_mask"


@dataclass(frozen=True)
class ShapePlan:
    """Where an input of ``length`` tokens runs: profile index and the sequence length the engine sees."""

    profile: int
    sequence: int
    length: int

    @property
    def padded(self) -> bool:
        return self.sequence != self.length


def plan_shape(profiles: Sequence[Profile], shape: Sequence[int], current: int | None = None) -> ShapePlan:
    """The profile to run ``shape`` (batch, sequence) in and the sequence length to pad to.

    A profile holding ``shape`` is used as it is: ``current`` when it holds it, else the tightest
    (smallest max shape). Otherwise the sequence is padded up to the smallest minimum above it among
    profiles whose batch range fits; InputError names every profile when none can take the input.
    """
    batch, length = int(shape[0]), int(shape[-1])
    fitting = [index for index, profile in enumerate(profiles) if profile.contains((batch, length))]
    if fitting:
        if current in fitting:
            return ShapePlan(current, length, length)
        tightest = min(fitting, key=lambda index: (math.prod(profiles[index].shape(2)), index))
        return ShapePlan(tightest, length, length)
    above = [
        index
        for index, profile in enumerate(profiles)
        if profile.batch[0] <= batch <= profile.batch[2] and profile.sequence[0] > length
    ]
    if not above:
        ranges = "; ".join(f"profile {index}: {profile.describe()}" for index, profile in enumerate(profiles))
        raise InputError(
            f"Input shape (batch {batch}, sequence {length}) is outside every optimization profile of the "
            f"engine ({ranges}): pass inputs inside one, or rebuild with wider --batch/--seq ranges."
        )
    chosen = min(above, key=lambda index: (profiles[index].sequence[0], index))
    return ShapePlan(chosen, profiles[chosen].sequence[0], length)


def pad_feeds(feeds: Mapping[str, np.ndarray], sequence: int, pad_token_id: int) -> dict[str, np.ndarray]:
    """``feeds`` padded on the right to ``sequence`` tokens: attention mask 0, ``input_ids`` the pad id,
    other inputs (token types) 0. InputError when the model has no attention mask to hide the padding."""
    length = next(iter(feeds.values())).shape[-1]
    if sequence == length:
        return dict(feeds)
    if MASK_INPUT not in feeds:
        raise InputError(
            f"The input has {length} tokens, fewer than the engine's shortest profile ({sequence}), and the "
            "model has no attention mask to pad with: rebuild the engine with --seq starting at 1."
        )
    padded = {}
    for name, array in feeds.items():
        value = pad_token_id if name == "input_ids" else 0
        widths = [(0, 0)] * (array.ndim - 1) + [(0, sequence - length)]
        padded[name] = np.pad(array, widths, constant_values=value)
    return padded


def trim_outputs(
    outputs: Mapping[str, np.ndarray], per_token: Mapping[str, bool], length: int
) -> dict[str, np.ndarray]:
    """Per-token outputs (batch, sequence, ...) cut back to ``length`` positions; others unchanged."""
    return {name: value[:, :length] if per_token.get(name) else value for name, value in outputs.items()}


def run_fitted(
    execute: Callable[[dict[str, np.ndarray], int], Mapping[str, np.ndarray]],
    feeds: Mapping[str, np.ndarray],
    profiles: Sequence[Profile],
    per_token: Mapping[str, bool],
    pad_token_id: Callable[[], int],
    current: int | None = None,
) -> tuple[dict[str, np.ndarray], ShapePlan]:
    """Run ``feeds`` with ``execute(feeds, profile)`` in the profile :func:`plan_shape` picks, padded up
    to its minimum length when needed (``pad_token_id`` is asked only then), per-token outputs cut back."""
    plan = plan_shape(profiles, next(iter(feeds.values())).shape, current)
    fitted = pad_feeds(feeds, plan.sequence, pad_token_id()) if plan.padded else dict(feeds)
    return trim_outputs(execute(fitted, plan.profile), per_token, plan.length), plan


__all__ = ["ShapePlan", "pad_feeds", "plan_shape", "run_fitted", "trim_outputs"]
