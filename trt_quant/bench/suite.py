"""The benchmark suite: trt-quant static INT8 against float and dynamic-quantization baselines."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trt_quant.artifacts import Manifest, load_manifest, quantized_precision
from trt_quant.bench.baselines import ort_dynamic_int8_model, ort_runner, pytorch_runner
from trt_quant.bench.latency import BenchRow, Variant, benchmark, synthetic_feeds, write_report
from trt_quant.bench.padding import PaddingRow, padding_benchmark, padding_table
from trt_quant.bench.variants import OPENVINO_VARIANTS, VARIANTS
from trt_quant.cpuinfo import CpuInfo, cpu_info
from trt_quant.data import TextData, batched, read_texts
from trt_quant.errors import TrtQuantError
from trt_quant.runtime import OpenVinoRuntime, load_runtime
from trt_quant.runtime.openvino import openvino_available

ACCURACY_TEXTS = 96
FP8_ON_CPU = (
    "FP8 speed is not a result on CPU, where ONNX Runtime runs the FP8 graph by dequantizing it to float: "
    "time it on a Hopper or Blackwell GPU (scripts/bench_gpu.py --precision fp8) and measure its accuracy "
    "with trt-quant evaluate."
)


def refuse_fp8_timing(manifest: Manifest) -> None:
    """Timing an FP8 artifact on CPU measures float arithmetic; say so instead."""
    if quantized_precision(manifest) == "fp8":
        raise TrtQuantError(FP8_ON_CPU)


@dataclass
class BenchResult:
    """Rows of the benchmark, the thread count used, the files written and the CPU it ran on."""

    rows: list[BenchRow]
    threads: int
    files: list[Path]
    cpu: CpuInfo


def _variant(name: str, artifact: Path, manifest: Manifest, threads: int, workdir: Path) -> Variant:
    outputs = manifest.output_names
    if name == "pytorch-fp32":
        return Variant(name, pytorch_runner(manifest))
    if name == "pytorch-dynamic-int8":
        return Variant(name, pytorch_runner(manifest, dynamic_int8=True))
    if name == "ort-fp32":
        return Variant(name, load_runtime(artifact, precision="float", threads=threads).run)
    if name == "ort-dynamic-int8":
        return Variant(
            name, ort_runner(ort_dynamic_int8_model(artifact, workdir / "dynamic.onnx"), outputs, threads)
        )
    if name == "trt-quant-int8":  # the runtime users get: also decides exact vs fast integer kernels
        return Variant(name, load_runtime(artifact, backend="onnxruntime", threads=threads).run)
    if name in OPENVINO_VARIANTS:
        precision = "int8" if name == "trt-quant-int8-openvino" else "float"
        inference = "f32" if name == "openvino-fp32" else None
        runtime = OpenVinoRuntime(artifact, manifest, precision, threads, inference_precision=inference)
        return Variant(name, runtime.run)
    raise TrtQuantError(f"Unknown benchmark variant '{name}': use any of {', '.join(VARIANTS)}.")


def accuracy_batches(artifact: Path, texts: TextData, max_length: int = 128) -> list[dict[str, np.ndarray]]:
    """Tokenized batches of real texts for the accuracy column."""
    runtime = load_runtime(artifact, verify=False)
    return [runtime.tokenize(batch.texts, batch.pairs, max_length) for batch in batched(texts, 16)]


def run_benchmark(
    artifact: str | Path,
    batches: tuple[int, ...] = (1, 8, 32),
    sequences: tuple[int, ...] = (32, 128),
    variants: tuple[str, ...] = VARIANTS,
    threads: int | None = None,
    output: str | Path | None = None,
    texts: str | Path | None = None,
    warmup: int = 5,
    iterations: int = 30,
    verify: bool = True,
    text_column: str | None = None,
) -> BenchResult:
    """Benchmark ``variants`` of an artifact's model over batch sizes and sequence lengths.

    Accuracy is each variant's cosine against PyTorch float32 (ONNX Runtime float32 when the source model
    is not at hand) on real sentences (``texts``, default: the built-in held-out sentences). OpenVINO
    variants are left out where the ``openvino`` extra is not installed. Writes bench.md, bench.json (with
    the CPU's name and flags) and two PNG plots into ``output`` (default: ARTIFACT/bench).
    """
    from trt_quant.demo import builtin_text

    directory = Path(artifact)
    manifest = load_manifest(directory, verify=verify)
    refuse_fp8_timing(manifest)
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    if not Path(manifest.source_model).exists():
        variants = tuple(v for v in variants if not v.startswith("pytorch"))
    if not openvino_available():
        variants = tuple(v for v in variants if v not in OPENVINO_VARIANTS)
    if any(sequence > manifest.max_length for sequence in sequences):
        raise TrtQuantError(
            f"A sequence length is above the model's maximum of {manifest.max_length}: use shorter --seq."
        )
    sample = read_texts(texts or builtin_text("heldout.txt"), text_column).head(ACCURACY_TEXTS)
    with tempfile.TemporaryDirectory() as workdir:
        built = [_variant(name, directory, manifest, threads, Path(workdir)) for name in variants]
        reference = (
            built[0]
            if variants[0] in ("pytorch-fp32", "ort-fp32")
            else _variant("ort-fp32", directory, manifest, threads, Path(workdir))
        )
        rows = benchmark(
            built,
            reference,
            lambda b, s: synthetic_feeds(manifest, b, s),
            [(b, s) for s in sequences for b in batches],
            accuracy_batches(directory, sample),
            manifest.per_token,
            warmup,
            iterations,
        )
    cpu = cpu_info()
    files = write_report(rows, Path(output) if output else directory / "bench", threads, cpu)
    return BenchResult(rows, threads, files, cpu)


def run_padding_benchmark(
    artifact: str | Path,
    texts: str | Path | None = None,
    text_column: str | None = None,
    batch_size: int = 8,
    threads: int | None = None,
    output: str | Path | None = None,
    verify: bool = True,
    max_length: int | None = None,
) -> tuple[list[PaddingRow], int, list[Path]]:
    """Time float and INT8 (ONNX Runtime) over real texts with each padding strategy: bucketed, longest
    and max-length, texts truncated at ``max_length`` (default: the model's maximum). Writes padding.md
    and padding.json into ``output`` (default: ARTIFACT/bench)."""
    from trt_quant.demo import builtin_text

    directory = Path(artifact)
    refuse_fp8_timing(load_manifest(directory, verify=verify))
    threads = threads or os.cpu_count() or 1
    data = read_texts(texts or builtin_text("heldout.txt"), text_column)
    runtimes = {
        precision: load_runtime(
            directory, backend="onnxruntime", precision=precision, verify=verify, threads=threads
        )
        for precision in ("float", "int8")
    }
    rows = padding_benchmark(runtimes, data.texts, batch_size, max_length)
    report = Path(output) if output else directory / "bench"
    report.mkdir(parents=True, exist_ok=True)
    cpu = cpu_info()
    (report / "padding.md").write_text(padding_table(rows, threads, cpu), encoding="utf-8")
    payload = {"threads": threads, "cpu": cpu.as_dict(), "rows": [row.as_dict() for row in rows]}
    (report / "padding.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return rows, threads, [report / "padding.md", report / "padding.json"]
