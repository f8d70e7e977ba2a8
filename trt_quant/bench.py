"""Latency and throughput of a runtime over batch sizes and sequence lengths."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from .runtime.base import Runtime


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


def synthetic_feeds(runtime: Runtime, batch: int, sequence: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Token ids of the right dtypes for ``runtime``: random ids in a safe range, full attention mask."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in runtime.manifest.inputs:
        if spec.name == "input_ids":
            feeds[spec.name] = rng.integers(1000, 2000, size=(batch, sequence)).astype(spec.dtype)
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


def measure_latency(runtime: Runtime, batch: int, sequence: int, warmup: int = 5, iterations: int = 30) -> Latency:
    """Latency of ``runtime`` on synthetic inputs of one shape."""
    feeds = runtime.validate(synthetic_feeds(runtime, batch, sequence))
    seconds = time_calls(lambda: runtime.run(feeds), warmup, iterations)
    return summarize_latency(seconds, batch, sequence)
