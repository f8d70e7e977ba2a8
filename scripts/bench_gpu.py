"""GPU benchmark: TensorRT INT8 vs TensorRT FP16 (the same model without Q/DQ) vs PyTorch FP16.

    python scripts/bench_gpu.py ARTIFACT_DIR [--batch 1,8,32] [--seq 32,128,512] [--output DIR]
                                [--fp8 FP8_ARTIFACT_DIR]

Builds two engines with identical optimization profiles (one per sequence length, batch 1 to the largest
batch): INT8 from the artifact's model_int8.onnx and FP16 from its model_fp32.onnx, both with the float
part converted to FP16. PyTorch FP16 runs the source model (``--model`` overrides the path the manifest
records) with SDPA attention. Every (batch, sequence) pair is timed end to end as an application sees it
(host inputs in, host outputs out) and the results are written to OUTPUT/bench_gpu.md, bench_gpu.json and
bench_gpu.png (latency vs batch, one panel per sequence length). Needs an NVIDIA GPU, TensorRT and a CUDA
build of torch; exits with status 2 and a message otherwise.

``--fp8 DIR`` adds "TensorRT FP8", built from the model_fp8.onnx of an artifact converted with
``--precision fp8`` (same model), with the same profiles: it needs compute capability 8.9 or newer (exit 2
with one sentence below), and the run fails (exit 1, nothing written) when TensorRT's layer report shows no
layer with an FP8 tensor, which means the FP8 Q/DQ did not fuse into FP8 kernels.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from trt_quant.artifacts import FLOAT_ONNX, FP8_ONNX, INT8_ONNX, Manifest, load_manifest, quantized_precision
from trt_quant.bench.latency import Latency, summarize_latency, synthetic_feeds, time_calls
from trt_quant.engine.build import (
    BuildConfig,
    Profile,
    build_plan,
    check_fp8_capability,
    check_profiles,
    gpu_info,
)
from trt_quant.errors import TrtQuantError
from trt_quant.runtime.trt import TensorRTRuntime, tensorrt_usable

Run = Callable[[dict[str, np.ndarray]], object]
ENGINES = {"TensorRT INT8": INT8_ONNX, "TensorRT FP16": FLOAT_ONNX}


def fp8_layers(report: str) -> list[str]:
    """Names of the layers in a TensorRT engine-inspector JSON report that read or write an FP8 tensor."""
    try:
        layers = json.loads(report).get("Layers", [])
    except (json.JSONDecodeError, AttributeError):
        return []
    found = []
    for layer in layers:
        if not isinstance(layer, dict):  # a names-only report says nothing about types
            continue
        tensors = [*layer.get("Inputs", []), *layer.get("Outputs", [])]
        if any("fp8" in str(tensor.get("Format/Datatype", "")).lower() for tensor in tensors):
            found.append(str(layer.get("Name", "")))
    return found


class MissingFp8Layers(Exception):
    """The FP8 engine has no FP8 layer."""


def fp8_runner(artifact: Path, config: BuildConfig, args: argparse.Namespace) -> Run:
    """Build the FP8 artifact's engine (compute capability 8.9+) and check that layers really run in FP8."""
    import torch

    manifest = load_manifest(artifact)
    if quantized_precision(manifest) != "fp8":
        raise TrtQuantError(
            f"{artifact} holds no FP8 graph: pass an artifact converted with --precision fp8."
        )
    check_fp8_capability(torch.cuda.get_device_capability())
    path = args.output / "fp8.plan"
    print(f"building TensorRT FP8 from {FP8_ONNX} ...", file=sys.stderr)
    built = build_plan(onnx.load(str(artifact / FP8_ONNX)), config, list(config.profiles))
    (args.output / "fp8_layers.json").write_text(built.layers, encoding="utf-8")
    layers = fp8_layers(built.layers)
    if not layers:
        raise MissingFp8Layers(
            f"TensorRT built the FP8 engine without a single FP8 layer (see {args.output / 'fp8_layers.json'}): "
            "the FP8 Q/DQ did not fuse, so no FP8 timing is reported."
        )
    print(f"TensorRT FP8: {len(layers)} layers with FP8 tensors", file=sys.stderr)
    path.write_bytes(built.plan)
    return TensorRTRuntime(artifact, manifest, engine_path=path, cuda_graphs=args.cuda_graphs).run


def sizes(spec: str, option: str) -> list[int]:
    """Comma-separated positive integers, sorted."""
    try:
        values = sorted({int(part) for part in spec.split(",")})
    except ValueError:
        values = []
    if not values or values[0] < 1:
        raise TrtQuantError(f"{option} '{spec}' is not a list of positive integers: pass e.g. {option} 1,8.")
    return values


def build_config(batches: list[int], sequences: list[int], args: argparse.Namespace) -> BuildConfig:
    """The same profiles for both engines: one per sequence length, batch 1 to the largest (opt)."""
    largest = batches[-1]
    profiles = tuple(Profile((1, largest, largest), (length, length, length)) for length in sequences)
    return BuildConfig(
        profiles=profiles,
        workspace_mib=args.workspace_mib,
        optimization_level=args.optimization_level,
        timing_cache=args.output / "timing.cache",
    )


def tensorrt_runners(
    artifact: Path, manifest: Manifest, config: BuildConfig, args: argparse.Namespace
) -> dict[str, Run]:
    """Build (or reuse, with --reuse-engines) the INT8 and FP16 engines and open a runtime on each."""
    runners: dict[str, Run] = {}
    for name, onnx_file in ENGINES.items():
        path = args.output / f"{name.split()[-1].lower()}.plan"
        if not (args.reuse_engines and path.is_file()):
            print(f"building {name} from {onnx_file} ...", file=sys.stderr)
            built = build_plan(onnx.load(str(artifact / onnx_file)), config, list(config.profiles))
            path.write_bytes(built.plan)
        runtime = TensorRTRuntime(artifact, manifest, engine_path=path, cuda_graphs=args.cuda_graphs)
        runners[name] = runtime.run
    return runners


def pytorch_runner(manifest: Manifest, model: str | None) -> Run:
    """The source model in FP16 on the GPU (SDPA attention); inputs copied in and outputs copied out."""
    import torch

    from trt_quant.models import load_model

    loaded = load_model(model or manifest.source_model, manifest.task)
    loaded.model.model.set_attn_implementation("sdpa")
    network = loaded.model.half().cuda().eval()

    @torch.inference_mode()
    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        tensors = {name: torch.from_numpy(array).cuda() for name, array in feeds.items()}
        return [output.float().cpu().numpy() for output in network.run(tensors)]

    return run


def measure(
    runners: dict[str, Run], manifest: Manifest, shapes: list[tuple[int, int]], args: argparse.Namespace
) -> list[tuple[str, Latency]]:
    """Latency of every runner at every (batch, sequence) shape, on synthetic token ids."""
    rows = []
    for name, run in runners.items():
        for batch, sequence in shapes:
            feeds = synthetic_feeds(manifest, batch, sequence)
            seconds = time_calls(lambda run=run, feeds=feeds: run(feeds), args.warmup, args.iterations)
            latency = summarize_latency(seconds, batch, sequence)
            rows.append((name, latency))
            print(f"{name:14s} batch {batch:4d} seq {sequence:4d}: {latency.p50_ms:8.2f} ms", file=sys.stderr)
    return rows


def markdown(rows: list[tuple[str, Latency]], environment: dict[str, str]) -> str:
    """The environment as a list, then one table row per backend and shape."""
    lines = [f"- {key}: {value}" for key, value in environment.items()]
    header = "| backend | batch | seq | p50 ms | p90 ms | p99 ms | seq/s |"
    lines += ["", header, "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [
        f"| {name} | {lat.batch} | {lat.sequence} | {lat.p50_ms:.2f} | {lat.p90_ms:.2f} | {lat.p99_ms:.2f} | "
        f"{lat.throughput:.1f} |"
        for name, lat in rows
    ]
    return "\n".join(lines) + "\n"


def plot(rows: list[tuple[str, Latency]], path: Path, title: str) -> None:
    """p50 latency vs batch size, one line per backend, one panel per sequence length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sequences = sorted({lat.sequence for _, lat in rows})
    figure, axes = plt.subplots(1, len(sequences), figsize=(4.5 * len(sequences), 4), squeeze=False)
    for axis, sequence in zip(axes[0], sequences, strict=True):
        for backend in dict.fromkeys(name for name, _ in rows):
            chosen = [lat for name, lat in rows if name == backend and lat.sequence == sequence]
            axis.plot([lat.batch for lat in chosen], [lat.p50_ms for lat in chosen], "o-", label=backend)
        axis.set(xscale="log", xlabel="batch", ylabel="p50 latency (ms)", title=f"sequence {sequence}")
        batches = sorted({lat.batch for _, lat in rows})
        axis.set_xticks(batches, [str(batch) for batch in batches])
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_results(rows: list[tuple[str, Latency]], environment: dict[str, str], output: Path) -> None:
    """bench_gpu.json, bench_gpu.md and bench_gpu.png in ``output``."""
    payload = {"environment": environment, "rows": [{"backend": name, **lat.as_dict()} for name, lat in rows]}
    (output / "bench_gpu.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    (output / "bench_gpu.md").write_text(markdown(rows, environment), encoding="utf-8")
    plot(rows, output / "bench_gpu.png", f"{environment['model']} on {environment['gpu']}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path, help="artifact directory written by 'trt-quant convert'")
    parser.add_argument("--batch", default="1,8,32", help="batch sizes, comma-separated")
    parser.add_argument("--seq", default="32,128,512", help="sequence lengths, comma-separated")
    parser.add_argument("--output", type=Path, help="output directory (default: ARTIFACT/bench_gpu)")
    parser.add_argument("--model", help="source model for PyTorch FP16 (default: the manifest's)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--optimization-level", type=int, default=3, help="TensorRT builder level 0-5")
    parser.add_argument("--workspace-mib", type=int, default=None, help="TensorRT workspace limit")
    parser.add_argument("--cuda-graphs", action="store_true", help="replay TensorRT launches as CUDA graphs")
    parser.add_argument("--reuse-engines", action="store_true", help="reuse engines built by an earlier run")
    parser.add_argument("--skip-pytorch", action="store_true", help="time only the TensorRT engines")
    parser.add_argument(
        "--fp8", type=Path, help="artifact converted with --precision fp8: also time TensorRT FP8"
    )
    args = parser.parse_args(argv)
    args.output = args.output or args.artifact / "bench_gpu"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not tensorrt_usable():
        message = (
            "bench_gpu needs an NVIDIA GPU, a CUDA build of torch and TensorRT (pip install "
            "'trt-quant[gpu]'), and they are not usable here: nothing was measured."
        )
        print(message, file=sys.stderr)
        return 2
    try:
        manifest = load_manifest(args.artifact)
        batches, sequences = sizes(args.batch, "--batch"), sizes(args.seq, "--seq")
        config = build_config(batches, sequences, args)
        check_profiles(config.profiles, manifest.max_length)
        args.output.mkdir(parents=True, exist_ok=True)
        runners = tensorrt_runners(args.artifact, manifest, config, args)
        if args.fp8 is not None:
            runners["TensorRT FP8"] = fp8_runner(args.fp8, config, args)
        if not args.skip_pytorch:
            runners["PyTorch FP16"] = pytorch_runner(manifest, args.model)
        rows = measure(runners, manifest, [(b, s) for s in sequences for b in batches], args)
    except TrtQuantError as error:
        print(error, file=sys.stderr)
        return 2
    except MissingFp8Layers as error:
        print(error, file=sys.stderr)
        return 1
    import tensorrt
    import torch

    environment = {
        "model": manifest.name,
        **gpu_info(),
        "tensorrt": tensorrt.__version__,
        "torch": torch.__version__,
        "iterations": str(args.iterations),
        "cuda_graphs": str(args.cuda_graphs),
    }
    write_results(rows, environment, args.output)
    print(markdown(rows, environment))
    return 0


if __name__ == "__main__":
    sys.exit(main())
