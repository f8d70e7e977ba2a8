"""Many texts through a runtime: batches of similar length, each padded only to its own longest text.

An encoder's cost grows with the padded length of a batch, so a batch of uneven texts pays for its
longest one on every row. Sorting texts by token count before batching (sequence-length bucketing)
makes every batch nearly free of padding; outputs are put back in the caller's order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from .cpuinfo import CpuInfo, cpu_info
from .errors import TrtQuantError

if TYPE_CHECKING:
    from .runtime.base import Runtime

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


def run_texts(
    runtime: Runtime,
    texts: Sequence[str],
    text_pairs: Sequence[str] | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    padding: str = "bucketed",
) -> list[dict[str, np.ndarray]]:
    """Run ``texts`` through ``runtime`` in batches (see ``PADDING_STRATEGIES``); one output dict per
    text in the given order, per-token outputs cut to that text's own tokens."""
    check_strategy(padding, batch_size)
    encoded = runtime.encode_unpadded(texts, text_pairs, max_length)
    counts = [len(ids) for ids in encoded["input_ids"]]
    per_token = runtime.manifest.per_token
    results: list[dict[str, np.ndarray]] = [{} for _ in counts]
    for indices in batch_indices(counts, batch_size, sort_by_length=padding == "bucketed"):
        rows = {field: [values[i] for i in indices] for field, values in encoded.items()}
        feeds = runtime.pad(rows, max_length, pad_to_max_length=padding == "max-length")
        mask = feeds["attention_mask"].astype(bool) if "attention_mask" in feeds else None
        for name, output in runtime.run(feeds).items():
            for row, index in enumerate(indices):
                value = output[row]
                if per_token[name] and mask is not None:
                    value = value[mask[row]]
                results[index][name] = value
    return results


@dataclass
class PaddingRow:
    """Time to run a set of texts with one padding strategy, and how many positions it computed."""

    precision: str
    padding: str
    texts: int
    batch_size: int
    seconds: float
    texts_per_second: float
    computed_tokens: int
    real_tokens: int

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def computed_tokens(counts: Sequence[int], batch_size: int, padding: str, max_length: int) -> int:
    """Token positions the model computes over all batches under ``padding`` (real plus padding)."""
    total = 0
    for indices in batch_indices(counts, batch_size, sort_by_length=padding == "bucketed"):
        longest = max_length if padding == "max-length" else max(counts[i] for i in indices)
        total += longest * len(indices)
    return total


def padding_benchmark(
    runtimes: dict[str, Runtime],
    texts: Sequence[str],
    batch_size: int = 8,
    max_length: int | None = None,
) -> list[PaddingRow]:
    """Wall time (tokenization included) of running all ``texts`` once with each padding strategy, for
    each runtime keyed by precision; one warm-up batch per runtime is not timed."""
    rows = []
    for precision, runtime in runtimes.items():
        limit = min(max_length or runtime.manifest.max_length, runtime.manifest.max_length)
        counts = runtime.token_counts(texts, None, limit)
        runtime.run_texts(list(texts[:batch_size]), batch_size=batch_size, max_length=limit)
        for padding in PADDING_STRATEGIES:
            start = time.perf_counter()
            runtime.run_texts(texts, batch_size=batch_size, max_length=limit, padding=padding)
            seconds = time.perf_counter() - start
            rows.append(
                PaddingRow(
                    precision,
                    padding,
                    len(texts),
                    batch_size,
                    seconds,
                    len(texts) / seconds,
                    computed_tokens(counts, batch_size, padding, limit),
                    sum(counts),
                )
            )
    return rows


def padding_table(rows: list[PaddingRow], threads: int, cpu: CpuInfo | None = None) -> str:
    """The padding benchmark as a Markdown table, under the thread count and the CPU (default: this one)."""
    lines = [
        f"threads: {threads}",
        f"cpu: {(cpu or cpu_info()).summary()}",
        "",
        "| precision | padding | texts | batch | seconds | texts/s | computed tokens | padding share |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        share = 1 - row.real_tokens / row.computed_tokens
        lines.append(
            f"| {row.precision} | {row.padding} | {row.texts} | {row.batch_size} | {row.seconds:.2f} | "
            f"{row.texts_per_second:.1f} | {row.computed_tokens} | {share:.0%} |"
        )
    return "\n".join(lines) + "\n"
