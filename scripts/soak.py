"""Memory over many calls: resident set size of a runtime serving mixed shapes, sampled every N calls.

Usage: python scripts/soak.py ARTIFACT_DIR [--calls 5000] [--every 500] [--backend onnxruntime]
Prints a table of RSS against calls and the growth after warm-up; exits 1 if it grew by more than
--max-growth-mib (default 32 MiB) after the first sample.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import psutil

from trt_quant.bench.latency import synthetic_feeds
from trt_quant.runtime import load_runtime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--max-growth-mib", type=float, default=32.0)
    arguments = parser.parse_args()
    runtime = load_runtime(arguments.artifact, backend=arguments.backend)
    process = psutil.Process()
    rng = np.random.default_rng(0)
    shapes = [(int(rng.integers(1, 9)), int(rng.integers(8, 65))) for _ in range(64)]
    feeds = [
        synthetic_feeds(runtime.manifest, batch, sequence, seed=i)
        for i, (batch, sequence) in enumerate(shapes)
    ]
    samples = []
    print("| calls | RSS MiB |\n|---:|---:|")
    for call in range(1, arguments.calls + 1):
        runtime.run(feeds[call % len(feeds)])
        if call % arguments.every == 0:
            samples.append(process.memory_info().rss / 2**20)
            print(f"| {call} | {samples[-1]:.1f} |", flush=True)
    growth = samples[-1] - samples[0]
    print(
        f"\ngrowth after the first {arguments.every} calls: {growth:+.1f} MiB over {arguments.calls} calls "
        f"of {len(shapes)} mixed shapes (batch 1-8, sequence 8-64)"
    )
    return 0 if growth <= arguments.max_growth_mib else 1


if __name__ == "__main__":
    sys.exit(main())
