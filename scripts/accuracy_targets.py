"""The README's accuracy tables: a sentence embedder (all-MiniLM-L6-v2 unless --model) on GLUE STS-B dev,
float vs every recipe and baseline.

For each variant: Spearman x100 of the embeddings' cosine against the gold scores (STS-B dev, 1,500
pairs, read from ../shared/data/glue), its loss against float, and the mean/min cosine of its sentence
embeddings against float over the 3,000 STS-B dev sentences (none used for calibration; calibration
uses trt_quant/resources/calibration.txt). trt-quant variants run their INT8 ONNX on ONNX Runtime.
The automatic recipes measure their budget apart from STS-B dev: the cosine budget on
trt_quant/resources/heldout.txt, the drop budget on 256 random STS-B train pairs (labelled).
With --fp8 the FP8 (E4M3) recipes run instead of the INT8 ones (float row included, baselines left out) and
the table adds the held-out cosine convert measured on trt_quant/resources/heldout.txt (240 sentences).
Usage: python scripts/accuracy_targets.py [--model DIR] [--only 0,8] [--limit PAIRS] [--fp8]
    [--glue ../shared/data/glue] [--output engines/accuracy]
(--only: indices into the recipes, 0 = default recipe, 8 = drop budget; --limit: the first PAIRS dev pairs,
for quick iterations; the README's tables use all 1,500.)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from trt_quant.artifacts import load_manifest
from trt_quant.bench.baselines import ort_dynamic_int8_model, ort_runner, pytorch_runner
from trt_quant.config import QuantConfig
from trt_quant.convert import convert
from trt_quant.data import batched, read_texts
from trt_quant.demo import builtin_text, minilm_path
from trt_quant.runtime import load_runtime
from trt_quant.tasks.metrics import spearman

Embed = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]

RECIPES: dict[str, tuple[QuantConfig, str | None]] = {
    "trt-quant default (max, SmoothQuant 0.8)": (QuantConfig(), None),
    "max, no SmoothQuant (naive W8A8)": (QuantConfig(smoothquant=None), None),
    "percentile 99.99 + SmoothQuant": (QuantConfig(method="percentile"), None),
    "entropy + SmoothQuant": (QuantConfig(method="entropy"), None),
    "mse + SmoothQuant": (QuantConfig(method="mse"), None),
    "default, 7-bit weight range (CPU)": (QuantConfig(weight_bits=7), None),
    "PEG, 4 groups permuted, no SmoothQuant": (QuantConfig(smoothquant=None, peg_groups=4), None),
    "automatic: budget cosine>=0.998": (QuantConfig(), "cosine>=0.998"),
    "automatic: budget drop<=0.1 (STS-B Spearman)": (QuantConfig(), "drop<=0.1"),
}
FP8_RECIPES: dict[str, tuple[QuantConfig, str | None]] = {
    "FP8 default (max, GPTQ weights, no SmoothQuant)": (QuantConfig(precision="fp8"), None),
    "FP8 + SmoothQuant 0.8": (QuantConfig(precision="fp8", smoothquant=0.8), None),
    "FP8 + attention (Q/DQ on Q, K, softmax, V)": (
        QuantConfig(precision="fp8", quantize_attention=True),
        None,
    ),
    "FP8, weights rounded to nearest (--no-gptq)": (QuantConfig(precision="fp8", gptq=False), None),
}
BUDGET_PAIRS = 256  # convert measures a budget on at most 256 held-out examples


def budget_split(budget: str | None, glue: Path, output: Path) -> dict[str, Any]:
    """Where an automatic recipe measures its budget: held-out sentences for a cosine budget, a random
    sample of labelled STS-B train pairs (written under ``output``) for a drop budget."""
    if budget is None or budget.startswith("cosine"):
        return {"eval_data": builtin_text("heldout.txt")}
    lines = (glue / "STS-B" / "train.tsv").read_text(encoding="utf-8").splitlines()
    rows = np.random.default_rng(0).choice(len(lines) - 1, BUDGET_PAIRS, replace=False) + 1
    sample = output / "stsb-train-sample.tsv"
    sample.parent.mkdir(parents=True, exist_ok=True)
    sample.write_text("\n".join([lines[0], *(lines[row] for row in sorted(rows))]) + "\n", encoding="utf-8")
    return {"eval_data": sample, "label_column": "score"}


def embed_all(run: Embed, tokenize: Callable, texts: list[str]) -> np.ndarray:
    """Sentence embeddings of ``texts`` in batches of 64."""
    from trt_quant.data import TextData

    rows = [run(tokenize(batch.texts))["sentence_embedding"] for batch in batched(TextData(texts), 64)]
    return np.concatenate(rows)


def cosine_rows(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    return (left * right).sum(1) / (np.linalg.norm(left, axis=1) * np.linalg.norm(right, axis=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--glue", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/glue")
    parser.add_argument("--output", type=Path, default=Path("engines/accuracy"))
    parser.add_argument("--fp8", action="store_true", help="run the FP8 recipes instead of the INT8 ones")
    parser.add_argument("--model", type=Path, default=None, help="sentence-transformers model directory")
    parser.add_argument("--only", default=None, help="comma-separated indices into the recipes")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N STS-B dev pairs")
    arguments = parser.parse_args()
    recipes = FP8_RECIPES if arguments.fp8 else RECIPES
    model = arguments.model or minilm_path()
    chosen = {int(i) for i in arguments.only.split(",")} if arguments.only else set(range(len(recipes)))
    stsb = read_texts(arguments.glue / "STS-B" / "dev.tsv", "sentence1", "sentence2", "score")
    if arguments.limit:
        stsb = stsb.head(arguments.limit)
    gold = np.array([float(score) for score in stsb.labels or []])
    first, second = stsb.texts, stsb.pairs or []
    rows: list[tuple[str, float, float, float, str, str]] = []

    def record(name: str, run: Embed, tokenize: Callable, flops: str, held_out: str = "1.0000") -> np.ndarray:
        a, b = embed_all(run, tokenize, first), embed_all(run, tokenize, second)
        rows.append((name, 100 * spearman(cosine_rows(a, b), gold), *cosine_stats(a, b), flops, held_out))
        print("measured:", *rows[-1], file=sys.stderr, flush=True)  # survives an interrupted run
        return np.concatenate([a, b])

    reference: dict[str, np.ndarray] = {}

    def cosine_stats(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
        if "float" not in reference:
            return 1.0, 1.0
        got = cosine_rows(np.concatenate([a, b]), reference["float"])
        return float(got.mean()), float(got.min())

    first_index = min(chosen)
    for index, (name, (config, budget)) in enumerate(recipes.items()):
        if index not in chosen:
            continue
        artifact = arguments.output / f"{'fp8-' if arguments.fp8 else ''}recipe-{index}"
        report = convert(
            model,
            "sentence-embedding",
            builtin_text("calibration.txt"),
            artifact,
            config,
            overwrite=True,
            accuracy_budget=budget,
            **budget_split(budget, arguments.glue, arguments.output),
        )
        runtime = load_runtime(artifact, backend="onnxruntime")
        if index == first_index:
            float_runtime = load_runtime(artifact, precision="float")
            reference["float"] = record(
                "float32 (ONNX Runtime)", float_runtime.run, float_runtime.tokenize, "0%"
            )
        if index == first_index and not arguments.fp8:
            manifest = load_manifest(artifact)
            dynamic = ort_runner(
                ort_dynamic_int8_model(artifact, arguments.output / "ort-dynamic.onnx"), manifest.output_names
            )
            record("baseline: ONNX Runtime quantize_dynamic", dynamic, runtime.tokenize, "100%")
            record(
                "baseline: PyTorch quantize_dynamic",
                pytorch_runner(manifest, dynamic_int8=True),
                runtime.tokenize,
                "100%",
            )
        mixed = report.manifest.quantization.mixed_precision
        share = f"{mixed.int8_flop_share:.0%}" if mixed else "100%"
        held_out = report.manifest.accuracy.mean_cosine
        record(
            name, runtime.run, runtime.tokenize, share, f"{held_out:.4f}" if held_out is not None else "n/a"
        )

    float_spearman = rows[0][1]
    precision = "FP8" if arguments.fp8 else "INT8"
    extra = " held-out cosine mean |" if arguments.fp8 else ""
    print(
        f"| variant | STS-B Spearman x100 | loss vs float | cosine mean | cosine min | Linear FLOPs {precision} |{extra}"
    )
    print("|---|---:|---:|---:|---:|---:|" + ("---:|" if arguments.fp8 else ""))
    for name, value, mean, low, share, held in rows:
        last = f" {held} |" if arguments.fp8 else ""
        print(
            f"| {name} | {value:.2f} | {float_spearman - value:+.2f} | {mean:.4f} | {low:.4f} | {share} |{last}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
