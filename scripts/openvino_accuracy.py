"""Accuracy of one INT8 graph on OpenVINO against the same graph on ONNX Runtime (sentence embeddings).

For a sentence-embedding artifact (e.g. the demo's all-MiniLM-L6-v2 in engines/minilm): mean cosine of the
INT8 embeddings against ONNX Runtime float32 on trt_quant/resources/heldout.txt, and STS-B dev Spearman of
the embeddings' cosine against the gold scores, with ONNX Runtime and with OpenVINO (at its default
inference precision, and at f32). Targets: OpenVINO within 0.0005 cosine and 0.02 Spearman of ONNX Runtime.
Usage:

    python scripts/openvino_accuracy.py engines/minilm [--glue ../shared/data/glue]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from trt_quant.artifacts import load_manifest
from trt_quant.cpuinfo import cpu_info
from trt_quant.data import TextData, batched, read_texts
from trt_quant.demo import builtin_text
from trt_quant.runtime import Runtime, load_runtime
from trt_quant.runtime.openvino import OpenVinoRuntime
from trt_quant.tasks.metrics import spearman


def embed(runtime: Runtime, texts: list[str]) -> np.ndarray:
    """Sentence embeddings of ``texts``, batches of 64 padded to their longest."""
    batches = batched(TextData(texts), 64)
    return np.concatenate([runtime.run_text(batch.texts)["sentence_embedding"] for batch in batches])


def cosine_rows(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    return (left * right).sum(1) / (np.linalg.norm(left, axis=1) * np.linalg.norm(right, axis=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--glue", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/glue")
    arguments = parser.parse_args()
    manifest = load_manifest(arguments.artifact)
    heldout = read_texts(builtin_text("heldout.txt")).texts
    stsb = read_texts(arguments.glue / "STS-B" / "dev.tsv", "sentence1", "sentence2", "score")
    gold = np.array([float(score) for score in stsb.labels or []])
    reference = embed(load_runtime(arguments.artifact, backend="onnxruntime", precision="float"), heldout)
    runtimes: dict[str, Runtime] = {
        "ONNX Runtime": load_runtime(arguments.artifact, backend="onnxruntime"),
        "OpenVINO, default precision": load_runtime(arguments.artifact, backend="openvino"),
        "OpenVINO, f32": OpenVinoRuntime(arguments.artifact, manifest, inference_precision="f32"),
    }
    print(f"cpu: {cpu_info().summary()}")
    print(f"artifact: {arguments.artifact} (weight bits {manifest.quantization.weight_bits})\n")
    print(
        "| INT8 graph on | held-out cosine vs float32 (mean / min) | STS-B Spearman x100 | Δ cosine | Δ Spearman |"
    )
    print("|---|---:|---:|---:|---:|")
    base: tuple[float, float] | None = None
    for name, runtime in runtimes.items():
        cosines = cosine_rows(embed(runtime, heldout), reference)
        pairs = cosine_rows(embed(runtime, stsb.texts), embed(runtime, stsb.pairs or []))
        mean, rho = float(cosines.mean()), spearman(pairs, gold)
        base = base or (mean, rho)
        print(
            f"| {name} | {mean:.5f} / {float(cosines.min()):.5f} | {100 * rho:.3f} | "
            f"{mean - base[0]:+.5f} | {rho - base[1]:+.5f} |"
        )
    print("\ntargets: |Δ cosine| <= 0.0005, |Δ Spearman| <= 0.02 (Spearman as a fraction, not x100)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
