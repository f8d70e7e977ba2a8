"""Latency and throughput of a runtime over batch sizes and sequence lengths."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from trt_quant.artifacts import Manifest
from trt_quant.cpuinfo import CpuInfo, cpu_info
from trt_quant.runtime.base import Runtime


@dataclass
class Latency:
    """Latency percentiles (milliseconds) and throughput (sequences per second) of one shape."""

    batch: int
    sequence: int
    iterations: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def synthetic_feeds(manifest: Manifest, batch: int, sequence: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Token ids of the model's input dtypes: random ordinary-word ids (1000-2000, or the upper half of a
    smaller vocabulary), full attention mask."""
    rng = np.random.default_rng(seed)
    high = min(2000, manifest.vocab_size) if manifest.vocab_size else 2000
    feeds = {}
    for spec in manifest.inputs:
        if spec.name == "input_ids":
            feeds[spec.name] = rng.integers(min(1000, high // 2), high, size=(batch, sequence)).astype(
                spec.dtype
            )
        elif spec.name == "attention_mask":
            feeds[spec.name] = np.ones((batch, sequence), dtype=spec.dtype)
        else:
            feeds[spec.name] = np.zeros((batch, sequence), dtype=spec.dtype)
    return feeds


def time_calls(call: Callable[[], object], warmup: int, iterations: int) -> np.ndarray:
    """Wall-clock seconds of ``iterations`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    seconds = np.empty(iterations)
    for index in range(iterations):
        start = time.perf_counter()
        call()
        seconds[index] = time.perf_counter() - start
    return seconds


def summarize_latency(seconds: np.ndarray, batch: int, sequence: int) -> Latency:
    """Percentiles and throughput of measured call times."""
    ms = seconds * 1000.0
    return Latency(
        batch=batch,
        sequence=sequence,
        iterations=len(seconds),
        p50_ms=float(np.percentile(ms, 50)),
        p90_ms=float(np.percentile(ms, 90)),
        p99_ms=float(np.percentile(ms, 99)),
        mean_ms=float(ms.mean()),
        throughput=float(batch / seconds.mean()),
    )


def measure_latency(
    runtime: Runtime, batch: int, sequence: int, warmup: int = 5, iterations: int = 30
) -> Latency:
    """Latency of ``runtime`` on synthetic inputs of one shape."""
    feeds = runtime.validate(synthetic_feeds(runtime.manifest, batch, sequence))
    seconds = time_calls(lambda: runtime.run(feeds), warmup, iterations)
    return summarize_latency(seconds, batch, sequence)


@dataclass
class Variant:
    """One way of running the model: a name and a callable from named inputs to named outputs."""

    name: str
    run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass
class BenchRow:
    """Latency of one variant at one shape, with that variant's accuracy against float."""

    variant: str
    latency: Latency
    mean_cosine: float
    min_cosine: float

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "variant": self.variant,
            **self.latency.as_dict(),
            "mean_cosine": self.mean_cosine,
            "min_cosine": self.min_cosine,
        }


def accuracy_against(
    reference: Variant, candidate: Variant, batches: list[dict[str, np.ndarray]], per_token: dict[str, bool]
) -> tuple[float, float]:
    """Mean and minimum per-example cosine of ``candidate``'s outputs against ``reference``'s."""
    from trt_quant.compare import compare_outputs

    cosines: list[float] = []
    for feeds in batches:
        mask = feeds.get("attention_mask", np.ones_like(feeds["input_ids"]))
        batch_cosines, _, _ = compare_outputs(
            reference.run(feeds), candidate.run(feeds), mask, per_token, False
        )
        cosines.extend(batch_cosines)
    return float(np.mean(cosines)), float(np.min(cosines))


def benchmark(
    variants: list[Variant],
    reference: Variant,
    make_feeds: Callable[[int, int], dict[str, np.ndarray]],
    shapes: list[tuple[int, int]],
    accuracy_batches: list[dict[str, np.ndarray]],
    per_token: dict[str, bool],
    warmup: int = 5,
    iterations: int = 30,
) -> list[BenchRow]:
    """Time every variant at every (batch, sequence) shape; attach each variant's accuracy vs ``reference``."""
    from trt_quant.progress import progress

    rows = []
    for variant in progress(variants, "benchmarking", total=len(variants)):
        mean_cosine, min_cosine = accuracy_against(reference, variant, accuracy_batches, per_token)
        for batch, sequence in shapes:
            feeds = make_feeds(batch, sequence)
            seconds = time_calls(functools.partial(variant.run, feeds), warmup, iterations)
            rows.append(
                BenchRow(variant.name, summarize_latency(seconds, batch, sequence), mean_cosine, min_cosine)
            )
    return rows


def markdown_table(rows: list[BenchRow], threads: int, cpu: CpuInfo | None = None) -> str:
    """The benchmark as a Markdown table (latency in ms, throughput in sequences/s, cosine vs float), under
    the thread count and the CPU it ran on (default: this one)."""
    lines = [
        f"threads: {threads}",
        f"cpu: {(cpu or cpu_info()).summary()}",
        "",
        "| variant | batch | seq | p50 ms | p90 ms | p99 ms | seq/s | cosine mean | cosine min |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lat = row.latency
        lines.append(
            f"| {row.variant} | {lat.batch} | {lat.sequence} | {lat.p50_ms:.1f} | {lat.p90_ms:.1f} | "
            f"{lat.p99_ms:.1f} | {lat.throughput:.1f} | {row.mean_cosine:.4f} | {row.min_cosine:.4f} |"
        )
    return "\n".join(lines) + "\n"


def plot_rows(rows: list[BenchRow], directory: Path) -> list[Path]:
    """Latency vs batch size and throughput vs sequence length, one line per variant (PNG files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    variants = list(dict.fromkeys(row.variant for row in rows))
    for name, x_key, y_key, fixed_key, label in (
        ("latency_vs_batch.png", "batch", "p50_ms", "sequence", "p50 latency (ms)"),
        ("throughput_vs_sequence.png", "sequence", "throughput", "batch", "throughput (sequences/s)"),
    ):
        figure, axes = plt.subplots(figsize=(7, 4.5))
        fixed = max(getattr(row.latency, fixed_key) for row in rows)
        for variant in variants:
            points = sorted(
                (getattr(r.latency, x_key), getattr(r.latency, y_key))
                for r in rows
                if r.variant == variant and getattr(r.latency, fixed_key) == fixed
            )
            if points:
                axes.plot(*zip(*points, strict=True), marker="o", label=variant)
        axes.set_xlabel(x_key)
        axes.set_ylabel(label)
        axes.set_title(f"{label} at {fixed_key} {fixed}")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(directory / name, dpi=110)
        plt.close(figure)
        written.append(directory / name)
    return written


def write_report(
    rows: list[BenchRow], directory: Path, threads: int, cpu: CpuInfo | None = None
) -> list[Path]:
    """Save the table as Markdown and JSON (with the CPU it ran on) and the plots as PNG into ``directory``;
    return the paths."""
    cpu = cpu or cpu_info()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bench.md").write_text(markdown_table(rows, threads, cpu), encoding="utf-8")
    payload = {"threads": threads, "cpu": cpu.as_dict(), "rows": [row.as_dict() for row in rows]}
    (directory / "bench.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return [directory / "bench.md", directory / "bench.json", *plot_rows(rows, directory)]
