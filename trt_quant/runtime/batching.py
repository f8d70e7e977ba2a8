"""Sequence-length bucketing: which texts share a batch, so each batch is padded only to its own longest.

An encoder's cost grows with the padded length of a batch, so a batch of uneven texts pays for its
longest one on every row. Sorting texts by token count before batching (sequence-length bucketing)
makes every batch nearly free of padding; outputs are put back in the caller's order.
"""

from __future__ import annotations

from collections.abc import Sequence

from trt_quant.errors import TrtQuantError

PADDING_STRATEGIES = ("bucketed", "longest", "max-length")
"""bucketed: length-sorted batches padded to their longest; longest: batches in the given order padded
to their longest; max-length: batches in the given order padded to the model's maximum length."""


def check_strategy(padding: str, batch_size: int) -> None:
    """Refuse an unknown padding strategy or a batch size below 1."""
    if padding not in PADDING_STRATEGIES:
        raise TrtQuantError(f"Unknown padding '{padding}': use one of {', '.join(PADDING_STRATEGIES)}.")
    if batch_size < 1:
        raise TrtQuantError(f"Batch size {batch_size} is not positive: pass a batch size of 1 or more.")


def batch_indices(token_counts: Sequence[int], batch_size: int, sort_by_length: bool) -> list[list[int]]:
    """Indices of examples grouped into batches; with ``sort_by_length`` the longest examples first, so
    each batch holds examples of similar length (ties keep their given order)."""
    order = list(range(len(token_counts)))
    if sort_by_length:
        order.sort(key=lambda index: -token_counts[index])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def computed_tokens(counts: Sequence[int], batch_size: int, padding: str, max_length: int) -> int:
    """Token positions the model computes over all batches under ``padding`` (real plus padding)."""
    total = 0
    for indices in batch_indices(counts, batch_size, sort_by_length=padding == "bucketed"):
        longest = max_length if padding == "max-length" else max(counts[i] for i in indices)
        total += longest * len(indices)
    return total
