"""The README's CPU benchmark: trt-quant static INT8 against float and dynamic-INT8 baselines.

Converts the packaged all-MiniLM-L6-v2 (and, with --bert-base, a BERT-base-shaped model with random
weights; with --mpnet DIR, all-mpnet-base-v2 as scripts/fetch_mpnet.py assembles it) and prints
latency/throughput tables with each variant's cosine against float, plus the
conversion's wall time and peak memory. Usage:

    python scripts/benchmark.py [--output engines/bench] [--bert-base] [--mpnet DIR] [--skip-minilm]
        [--batch 1,8,32] [--seq 32,128] [--iterations 30]
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from trt_quant.bench.latency import markdown_table
from trt_quant.bench.suite import run_benchmark
from trt_quant.config import QuantConfig
from trt_quant.convert import convert
from trt_quant.demo import builtin_text, minilm_path


def bert_base_dir(directory: Path) -> Path:
    """A BERT-base-shaped model (12 layers, hidden 768) with random weights and MiniLM's tokenizer."""
    import torch
    import transformers

    if (directory / "config.json").is_file():
        return directory
    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig()).save_pretrained(directory)
    transformers.AutoTokenizer.from_pretrained(str(minilm_path())).save_pretrained(directory)
    return directory


def timed_convert(model: Path, output: Path, samples: int) -> tuple[float, float]:
    """Convert in a fresh process; return its seconds and peak resident memory (GiB)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_convert_in_this_process, model, output, samples).result()


def _convert_in_this_process(model: Path, output: Path, samples: int) -> tuple[float, float]:
    start = time.perf_counter()
    convert(
        model,
        "sentence-embedding",
        builtin_text("calibration.txt"),
        output,
        QuantConfig(calib_samples=samples, weight_bits=7),
        overwrite=True,
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return time.perf_counter() - start, peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("engines/bench"))
    parser.add_argument("--bert-base", action="store_true", help="also benchmark a BERT-base-shaped model")
    parser.add_argument("--mpnet", type=Path, default=None, help="all-mpnet-base-v2 model directory")
    parser.add_argument("--skip-minilm", action="store_true", help="leave out all-MiniLM-L6-v2")
    parser.add_argument("--batch", default="1,8,32")
    parser.add_argument("--seq", default="32,128")
    parser.add_argument("--iterations", type=int, default=30)
    arguments = parser.parse_args()
    batches = tuple(int(b) for b in arguments.batch.split(","))
    sequences = tuple(int(s) for s in arguments.seq.split(","))
    if arguments.skip_minilm and not (arguments.bert_base or arguments.mpnet):
        parser.error("--skip-minilm leaves nothing to benchmark: add --mpnet DIR or --bert-base")
    models = [] if arguments.skip_minilm else [("minilm", minilm_path())]
    if arguments.bert_base:
        models.append(("bert-base", bert_base_dir(arguments.output / "bert-base-model")))
    if arguments.mpnet:
        models.append(("mpnet", arguments.mpnet))
    for name, model in models:
        artifact = arguments.output / name
        seconds, peak = timed_convert(model, artifact, 256)
        print(
            f"## {name}\n\nconversion (load, quantize, calibrate 256 samples, export, check): "
            f"{seconds:.1f} s, peak resident memory {peak:.2f} GiB\n"
        )
        result = run_benchmark(
            artifact, batches, sequences, iterations=arguments.iterations, output=artifact / "bench"
        )
        print(markdown_table(result.rows, result.threads, result.cpu))
        print("wrote " + ", ".join(str(path) for path in result.files) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
