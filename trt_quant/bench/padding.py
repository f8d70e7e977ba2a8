"""What padding costs: the same texts run with each padding strategy, timed, with the positions computed."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from trt_quant.cpuinfo import CpuInfo, cpu_info
from trt_quant.runtime.base import Runtime
from trt_quant.runtime.batching import PADDING_STRATEGIES, computed_tokens


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
