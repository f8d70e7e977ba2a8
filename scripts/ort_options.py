"""What ONNX Runtime's knobs buy: an artifact's float and INT8 graphs timed under each session setting.

Rows: graph optimization level basic / extended / all (all is what trt-quant uses), intra-op spinning
off, I/O binding, and ONNX Runtime's offline transformer optimizer (fused Attention, SkipLayerNorm,
BiasGelu). Usage:

    python scripts/ort_options.py engines/minilm [--batch 8] [--seq 128] [--iterations 30]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from trt_quant.artifacts import FLOAT_ONNX, INT8_ONNX, load_manifest
from trt_quant.bench.latency import synthetic_feeds, time_calls
from trt_quant.runtime.ort import exact_int8_needed, fold_lookup_dequantization, session_options

SETTINGS = ("level basic", "level extended", "level all (trt-quant)", "no spinning", "I/O binding")


def session(model: onnx.ModelProto, setting: str, threads: int, exact: bool) -> object:
    """An ONNX Runtime session of ``model`` with trt-quant's options changed as ``setting`` says."""
    import onnxruntime as ort

    options = session_options(threads, exact)
    levels = {
        "level basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "level extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }
    if setting in levels:
        options.graph_optimization_level = levels[setting]
    if setting == "no spinning":
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def caller(runner: object, feeds: dict[str, np.ndarray], binding: bool) -> Callable[[], object]:
    """A no-argument call of the session, plain or through I/O binding with inputs bound once."""
    names = [item.name for item in runner.get_inputs()]  # type: ignore[attr-defined]
    feeds = {name: feeds[name] for name in names}
    if not binding:
        return lambda: runner.run(None, feeds)  # type: ignore[attr-defined]
    bound = runner.io_binding()  # type: ignore[attr-defined]
    for name, value in feeds.items():
        bound.bind_cpu_input(name, value)
    for output in runner.get_outputs():  # type: ignore[attr-defined]
        bound.bind_output(output.name)
    return lambda: runner.run_with_iobinding(bound)  # type: ignore[attr-defined]


def transformer_optimized(path: Path, heads: int, hidden: int, directory: Path) -> onnx.ModelProto:
    """The graph after ONNX Runtime's offline BERT optimizer (its fusions, no further ORT level)."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(path), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0)
    target = directory / f"optimized-{path.name}"
    optimized.save_model_to_file(str(target))
    model = onnx.load(str(target))
    fold_lookup_dequantization(model)
    return model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument(
        "--heads", type=int, default=12, help="attention heads, for the transformer optimizer"
    )
    parser.add_argument("--hidden", type=int, default=384, help="hidden size, for the transformer optimizer")
    arguments = parser.parse_args()
    threads = os.cpu_count() or 1
    manifest = load_manifest(arguments.artifact, verify=False)
    feeds = synthetic_feeds(manifest, arguments.batch, arguments.seq)
    exact = exact_int8_needed(manifest)
    print(f"threads: {threads}, batch {arguments.batch}, sequence {arguments.seq}, mean ms\n")
    print("| setting | float32 ms | INT8 ms | INT8 / float |")
    print("|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as workdir:
        graphs = {}
        for name in (FLOAT_ONNX, INT8_ONNX):
            graphs[name] = onnx.load(str(arguments.artifact / name))
            fold_lookup_dequantization(graphs[name])
        rows = [(setting, graphs, setting) for setting in SETTINGS]
        optimized = {
            name: transformer_optimized(
                arguments.artifact / name, arguments.heads, arguments.hidden, Path(workdir)
            )
            for name in (FLOAT_ONNX, INT8_ONNX)
        }
        rows.append(("ORT transformer optimizer + level all", optimized, "level all (trt-quant)"))
        for label, models, setting in rows:
            times = []
            for name in (FLOAT_ONNX, INT8_ONNX):
                runner = session(models[name], setting, threads, exact)
                call = caller(runner, feeds, binding=setting == "I/O binding")
                times.append(float(time_calls(call, 5, arguments.iterations).mean() * 1000))
            print(f"| {label} | {times[0]:.1f} | {times[1]:.1f} | {times[0] / times[1]:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
