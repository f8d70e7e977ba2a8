"""Cost of serving: the Triton ensemble (over loopback HTTP) next to trt-quant's runtime called directly.

    python scripts/serve_benchmark.py engines/minilm                      # starts the built-in server
    python scripts/serve_benchmark.py engines/minilm --url 127.0.0.1:8000 --name minilm   # a running one

For each concurrency (default 1, 8, 32) that many threads send one text per request until ``--requests``
requests are done or ``--seconds`` have passed; prints throughput and p50/p99 latency as a Markdown table,
and the model's batch statistics (Triton's /v2/models/NAME_model/stats) after the ensemble runs.
Needs ``tritonclient[http]`` (``pip install 'trt-quant[serve]'``). Loopback only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path

import numpy as np

from trt_quant.runtime import load_runtime
from trt_quant.triton.environment import server_environment
from trt_quant.triton.serve import ensemble_name
from trt_quant.triton.server import TritonServer


def texts() -> list[str]:
    """The held-out sentences packaged with trt-quant (varied lengths)."""
    lines = resources.files("trt_quant").joinpath("resources/heldout.txt").read_text(encoding="utf-8")
    return [line for line in lines.splitlines() if line.strip()]


def measure(
    send: Callable[[str], object], corpus: list[str], concurrency: int, requests: int, seconds: float
) -> dict[str, float]:
    """Run ``send`` from ``concurrency`` threads until ``requests`` are done or ``seconds`` pass."""
    counter = itertools.count()
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker() -> None:
        while time.monotonic() < deadline:
            index = next(counter)
            if index >= requests:
                return
            start = time.perf_counter()
            send(corpus[index % len(corpus)])
            with lock:
                latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    wall = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "throughput": len(ordered) / wall,
        "p50": 1000 * statistics.median(ordered),
        "p99": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
    }


@contextlib.contextmanager
def server_for(args: argparse.Namespace, workdir: Path) -> Iterator[tuple[str, str, TritonServer | None]]:
    """(url, ensemble name, server or None): the given server, or the built-in one on a fresh repository."""
    if args.url:
        yield args.url, args.name, None
        return
    from trt_quant.triton import write_triton_repository

    repo = write_triton_repository(args.artifact, workdir / "repo", name=args.name, backend="python")
    server = TritonServer([repo], server_environment(), None, args.port, args.port + 1, args.port + 2)
    with server:
        yield server.http_url, args.name or ensemble_name(repo), server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path, help="artifact directory (the runtime measured directly)")
    parser.add_argument("--url", help="HOST:PORT of a running server (default: start the built-in one)")
    parser.add_argument("--name", help="ensemble name (default: the artifact's)")
    parser.add_argument("--port", type=int, default=8500, help="HTTP port of the started server (127.0.0.1)")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated thread counts")
    parser.add_argument("--requests", type=int, default=500, help="requests per concurrency (at most)")
    parser.add_argument("--seconds", type=float, default=60.0, help="time per concurrency (at most)")
    args = parser.parse_args(argv)
    import tempfile

    import tritonclient.http as http

    corpus = texts()
    levels = [int(level) for level in args.concurrency.split(",")]
    runtime = load_runtime(args.artifact, backend="onnxruntime")
    rows = []
    with tempfile.TemporaryDirectory() as workdir, server_for(args, Path(workdir)) as (url, name, server):
        local = threading.local()

        def ensemble(text: str) -> object:
            if not hasattr(local, "client"):
                local.client = http.InferenceServerClient(url, network_timeout=60)
            tensor = http.InferInput("TEXT", [1, 1], "BYTES")
            tensor.set_data_from_numpy(np.array([[text.encode("utf-8")]], dtype=np.object_))
            return local.client.infer(name, [tensor])

        def direct(text: str) -> object:
            return runtime.run_text([text])

        for path, send in (("Triton ensemble (HTTP)", ensemble), ("runtime.run_text", direct)):
            send(corpus[0])  # warm-up
            for level in levels:
                rows.append((path, level, measure(send, corpus, level, args.requests, args.seconds)))
        if server is not None:
            stats = server.get(f"models/{name}_model/stats")["model_stats"][0]
            batches = {entry["batch_size"]: entry["compute_infer"]["count"] for entry in stats["batch_stats"]}
            print(
                f"{name}_model: {stats['inference_count']} inferences in {stats['execution_count']} executions; "
                f"executions by batch size: {dict(sorted(batches.items()))}"
            )
    print(f"\n{runtime.manifest.name}, one text per request, backend {runtime.backend}\n")
    print("| path | concurrency | requests | requests/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for path, level, row in rows:
        print(
            f"| {path} | {level} | {row['requests']:.0f} | {row['throughput']:.1f} | {row['p50']:.2f} | {row['p99']:.2f} |"
        )


if __name__ == "__main__":
    main()
