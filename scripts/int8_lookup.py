"""What a plain ONNX Runtime session pays for INT8 embedding tables: three forms of model_int8.onnx.

A consumer that opens the INT8 file itself (Triton's ONNX Runtime backend, a user's own code) gets no help
from trt-quant's runtime, and ONNX Runtime never constant-folds DequantizeLinear: with the table stored as
INT8 -> DequantizeLinear -> Gather it dequantizes the whole table on every call. Forms compared, each in a
plain session (only the thread count set), each timed alone, with its file size:

- shipped: INT8 table -> DequantizeLinear -> Gather (model_int8.onnx as written by convert);
- folded: float table -> Gather (what trt-quant's runtime and the Triton repository's copy do at load);
- lookup first: INT8 table -> Gather -> Cast -> Mul by the rows' scales (``dequantize_after_lookup``).

Usage:

    python scripts/int8_lookup.py engines/minilm [--batch 8] [--seq 128] [--threads 2] [--iterations 50]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx

from trt_quant.artifacts import INT8_ONNX, load_manifest
from trt_quant.bench.latency import summarize_latency, synthetic_feeds, time_calls
from trt_quant.cpuinfo import cpu_info
from trt_quant.runtime.ort import dequantize_after_lookup, fold_lookup_dequantization

FORMS = {"shipped": None, "folded": fold_lookup_dequantization, "lookup first": dequantize_after_lookup}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--iterations", type=int, default=50)
    arguments = parser.parse_args()
    import onnxruntime as ort

    feeds = synthetic_feeds(load_manifest(arguments.artifact, verify=False), arguments.batch, arguments.seq)
    print(f"cpu: {cpu_info().summary()}")
    print(
        f"plain ONNX Runtime session, {arguments.threads} threads, batch {arguments.batch}, seq {arguments.seq}\n"
    )
    print("| model_int8.onnx form | file MB | p50 ms | mean ms | max abs diff vs shipped |")
    print("|---|---:|---:|---:|---:|")
    shipped: list[np.ndarray] = []
    with tempfile.TemporaryDirectory() as workdir:
        for name, rewrite in FORMS.items():
            model = onnx.load(str(arguments.artifact / INT8_ONNX))
            if rewrite is not None:
                rewrite(model)
            path = Path(workdir) / f"{name.replace(' ', '-')}.onnx"
            onnx.save(model, str(path))
            options = ort.SessionOptions()
            options.intra_op_num_threads = arguments.threads
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            outputs = session.run(None, feeds)
            shipped = shipped or outputs
            difference = max(float(np.abs(a - b).max()) for a, b in zip(outputs, shipped, strict=True))
            latency = summarize_latency(
                time_calls(lambda s=session: s.run(None, feeds), 5, arguments.iterations),
                arguments.batch,
                arguments.seq,
            )
            print(
                f"| {name} | {path.stat().st_size / 2**20:.1f} | {latency.p50_ms:.1f} | {latency.mean_ms:.1f} | "
                f"{difference:.2g} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
