"""The ``trt-quant`` command: parses arguments, calls the Python API, prints. No logic of its own."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from . import reports
from .bench_suite import VARIANTS
from .config import AUTO, CALIBRATION_METHODS, QuantConfig
from .errors import TrtQuantError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Quantize Hugging Face encoders to INT8 for ONNX Runtime and TensorRT.",
)
console = Console()

Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output directory.")]


@app.command()
def convert(
    model: Annotated[str, typer.Argument(help="Model directory (or hub id).")],
    task: Annotated[
        str,
        typer.Option(
            help="feature-extraction, sentence-embedding, text-classification, "
            "token-classification or question-answering."
        ),
    ],
    calib: Annotated[
        Path, typer.Option(help="Calibration data: .txt, .csv, .tsv, .jsonl, .parquet or a saved dataset.")
    ],
    output: Annotated[Path, typer.Option(help="Artifact directory to write, e.g. engines/NAME.")],
    method: Annotated[
        str, typer.Option(help=f"Calibration method: {', '.join(CALIBRATION_METHODS)}.")
    ] = "max",
    percentile: Annotated[float, typer.Option(help="Percentile for --method percentile.")] = 99.99,
    calib_samples: Annotated[int, typer.Option(help="Number of calibration examples.")] = 256,
    batch_size: Annotated[int, typer.Option(help="Calibration batch size.")] = 16,
    max_length: Annotated[int, typer.Option(help="Maximum tokens per calibration example.")] = 128,
    text_column: Annotated[str | None, typer.Option(help="Column holding the text.")] = None,
    pair_column: Annotated[str | None, typer.Option(help="Column holding the second text of a pair.")] = None,
    eval_data: Annotated[
        Path | None,
        typer.Option(help="Held-out data to measure INT8 against float and the budget on (first 256 rows)."),
    ] = None,
    quantize_attention: Annotated[
        bool, typer.Option(help="INT8/FP8 Q/DQ on query, key, softmax output and value (off by default).")
    ] = False,
    precision: Annotated[
        str, typer.Option(help="int8, or fp8 (E4M3; TensorRT engines need compute capability 8.9+).")
    ] = "int8",
    quantize_residual: Annotated[
        bool, typer.Option(help="Also quantize LayerNorm inputs (costs accuracy).")
    ] = False,
    smoothquant: Annotated[
        float | None,
        typer.Option(help="SmoothQuant alpha in (0, 1); 0 turns it off (default: 0.8 at int8, off at fp8)."),
    ] = None,
    weight_bits: Annotated[int, typer.Option(help="8, or 7 for ONNX Runtime on x86 CPUs without VNNI.")] = 8,
    peg_groups: Annotated[
        int, typer.Option(help="Per-embedding-group quantization of FFN inputs: K groups (0 off).")
    ] = 0,
    keep_float: Annotated[
        list[str] | None, typer.Option(help="Module-name pattern of Linears to keep float.")
    ] = None,
    trust_remote_code: Annotated[
        bool, typer.Option(help="Allow model code from the model directory.")
    ] = False,
    engine: Annotated[
        bool, typer.Option(help="Also build a TensorRT engine (needs a GPU and trt-quant[gpu]).")
    ] = False,
    name: Annotated[
        str | None, typer.Option(help="Model name in the manifest (default: the output's name).")
    ] = None,
    label_column: Annotated[
        str | None, typer.Option(help='Column with gold labels, for a "drop<=X" budget.')
    ] = None,
    accuracy_budget: Annotated[
        str | None,
        typer.Option(
            help='Keep sensitive layers float until "cosine>=0.995" or "drop<=0.5" (task-metric points).'
        ),
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Load, quantize, calibrate and export MODEL into an artifact directory."""
    from .convert import convert as run_convert

    if engine:
        from .engine import require_tensorrt

        require_tensorrt()  # before any work: no partial artifact when the GPU step cannot run

    config = QuantConfig(
        method=method,
        percentile=percentile,
        calib_samples=calib_samples,
        batch_size=batch_size,
        max_length=max_length,
        quantize_residual=quantize_residual,
        quantize_attention=quantize_attention,
        smoothquant=AUTO if smoothquant is None else smoothquant or None,
        precision=precision,
        weight_bits=weight_bits,
        keep_float=tuple(keep_float or ()),
    )
    with console.status("converting"):
        report = run_convert(
            model,
            task,
            calib,
            output,
            config,
            text_column=text_column,
            pair_column=pair_column,
            eval_data=eval_data,
            overwrite=overwrite,
            trust_remote_code=trust_remote_code,
            name=name,
            accuracy_budget=accuracy_budget,
            label_column=label_column,
        )
    console.print(reports.convert_summary(report))
    if engine:
        from .engine import build_engine

        console.print(reports.engine_summary(build_engine(output)))


@app.command()
def build(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory written by convert.")],
    batch: Annotated[str, typer.Option(help="Batch range min,opt,max.")] = "1,8,32",
    seq: Annotated[
        list[str] | None, typer.Option(help="Sequence range min,opt,max; repeat for several profiles.")
    ] = None,
    precision: Annotated[str, typer.Option(help="Float part of the graph: fp16, bf16 or fp32.")] = "fp16",
    workspace: Annotated[int | None, typer.Option(help="Workspace limit in MiB.")] = None,
    optimization_level: Annotated[int, typer.Option(help="Builder optimization level 0-5.")] = 3,
    timing_cache: Annotated[
        Path | None, typer.Option(help="Timing cache file, reused across builds.")
    ] = None,
    verify: Annotated[bool, typer.Option(help="Verify artifact checksums first.")] = True,
) -> None:
    """Build a strongly typed TensorRT engine from the artifact's INT8 ONNX (needs an NVIDIA GPU)."""
    from .artifacts import load_manifest
    from .engine import BuildConfig, build_engine, parse_profiles

    manifest = load_manifest(artifact, verify=verify)
    longest = manifest.max_length
    profiles = parse_profiles(batch, seq or [f"{min(16, longest)},{min(128, longest)},{longest}"], longest)
    config = BuildConfig(
        precision=precision,
        profiles=tuple(profiles),
        workspace_mib=workspace,
        optimization_level=optimization_level,
        timing_cache=timing_cache,
    )
    console.print(reports.engine_summary(build_engine(artifact, config, verify=False)))


@app.command()
def triton(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory written by convert.")],
    repo: Annotated[Path, typer.Option(help="Model repository directory to write.")],
    name: Annotated[str | None, typer.Option(help="Model name (default: the artifact's name).")] = None,
    backend: Annotated[
        str | None, typer.Option(help="tensorrt or onnxruntime (default: tensorrt if built).")
    ] = None,
    max_batch: Annotated[int, typer.Option(help="max_batch_size of the model.")] = 8,
    instances: Annotated[int, typer.Option(help="Model instances per device.")] = 1,
    kind: Annotated[str | None, typer.Option(help="Instance kind: gpu or cpu.")] = None,
    preferred_batch: Annotated[
        str | None, typer.Option(help="Preferred dynamic batch sizes, e.g. 4,8.")
    ] = None,
    max_queue_delay: Annotated[
        int, typer.Option(help="Dynamic batching max queue delay (microseconds).")
    ] = 100,
    max_length: Annotated[int | None, typer.Option(help="Tokenizer truncation length.")] = None,
    cc_engine: Annotated[
        list[str] | None,
        typer.Option(
            help="CC=ARTIFACT_DIR: also serve that artifact's engine on GPUs of compute capability CC."
        ),
    ] = None,
    verify: Annotated[
        bool, typer.Option(help="Verify artifact checksums first (--no-verify for edited files).")
    ] = True,
    overwrite: Overwrite = False,
) -> None:
    """Write a Triton Inference Server model repository: model, tokenizer (Python backend), ensemble."""
    from .triton import write_triton_repository

    written = write_triton_repository(
        artifact,
        repo,
        name=name,
        backend=backend,
        max_batch=max_batch,
        instances=instances,
        kind=kind,
        preferred_batch_sizes=_integers(preferred_batch, "--preferred-batch") if preferred_batch else (),
        max_queue_delay_us=max_queue_delay,
        overwrite=overwrite,
        max_length=max_length,
        cc_engines=_cc_engines(cc_engine or []),
        verify=verify,
    )
    console.print(f"wrote Triton model repository {written} (see {written / 'README.md'})")


@app.command()
def demo(
    output: Annotated[Path, typer.Option(help="Artifact directory to write.")] = Path("engines/minilm"),
    overwrite: Annotated[
        bool, typer.Option("--overwrite/--no-overwrite", help="Replace an existing output.")
    ] = True,
) -> None:
    """Convert the packaged all-MiniLM-L6-v2 with the built-in calibration text and compare float vs INT8."""
    from .demo import run_demo

    result = run_demo(output, overwrite=overwrite)
    console.print(reports.convert_summary(result.report))
    console.print(reports.demo_table(result))


@app.command()
def check(onnx_file: Annotated[Path, typer.Argument(help="ONNX file to check.")]) -> None:
    """Check an ONNX graph against TensorRT's explicit-quantization rules (exit 1 when errors are found)."""
    from .check import check_onnx, format_findings

    findings = check_onnx(onnx_file)
    console.print(format_findings(findings), markup=False, highlight=False)
    if any(finding.severity == "error" for finding in findings):
        raise typer.Exit(1)


def _show_warnings() -> None:
    """Print the package's warnings as 'warning: ...' lines on the current stderr."""
    logger = logging.getLogger("trt_quant")
    for handler in [h for h in logger.handlers if getattr(h, "trt_quant_cli", False)]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    handler.trt_quant_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)


@app.command()
def qat(
    model: Annotated[str, typer.Argument(help="Model directory (or hub id).")],
    task: Annotated[str, typer.Option(help="The model's task.")],
    train: Annotated[Path, typer.Option(help="Training data with labels.")],
    output: Annotated[Path, typer.Option(help="Artifact directory to write.")],
    calib: Annotated[
        Path | None, typer.Option(help="Calibration data (default: the training texts).")
    ] = None,
    label_column: Annotated[str, typer.Option(help="Column holding the labels.")] = "label",
    text_column: Annotated[str | None, typer.Option(help="Column holding the text.")] = None,
    pair_column: Annotated[str | None, typer.Option(help="Column holding the second text.")] = None,
    eval_data: Annotated[
        Path | None, typer.Option(help="Held-out data to measure INT8 against float.")
    ] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 3,
    learning_rate: Annotated[
        float, typer.Option(help="Peak learning rate (AdamW, linear warm-up/decay).")
    ] = 2e-5,
    batch_size: Annotated[int, typer.Option(help="Training batch size.")] = 16,
    max_length: Annotated[int, typer.Option(help="Maximum tokens per example.")] = 128,
    distill: Annotated[
        bool, typer.Option(help="Distil from the float model (KL on logits, MSE on hidden states).")
    ] = False,
    checkpoint_dir: Annotated[Path | None, typer.Option(help="Write a checkpoint per epoch here.")] = None,
    method: Annotated[
        str, typer.Option(help=f"Calibration method: {', '.join(CALIBRATION_METHODS)}.")
    ] = "max",
    precision: Annotated[str, typer.Option(help="int8, or fp8 (E4M3).")] = "int8",
    overwrite: Overwrite = False,
) -> None:
    """Fine-tune a calibrated model with its quantizers active, then export exactly like convert."""
    from .qat import QatConfig
    from .qat import qat as run_qat

    report = run_qat(
        model,
        task,
        train,
        output,
        calib=calib,
        label_column=label_column,
        text_column=text_column,
        pair_column=pair_column,
        quant_config=QuantConfig(method=method, max_length=max_length, precision=precision),
        qat_config=QatConfig(
            epochs=epochs,
            learning_rate=learning_rate,
            batch_size=batch_size,
            max_length=max_length,
            distill=distill,
            checkpoint_dir=checkpoint_dir,
        ),
        eval_data=eval_data,
        overwrite=overwrite,
    )
    console.print(reports.convert_summary(report))


@app.command()
def evaluate(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory written by convert.")],
    data: Annotated[Path, typer.Option(help="Data file (SQuAD JSON for question answering).")],
    text_column: Annotated[str | None, typer.Option(help="Column holding the text.")] = None,
    pair_column: Annotated[str | None, typer.Option(help="Column holding the second text.")] = None,
    label_column: Annotated[str | None, typer.Option(help="Column holding gold labels or scores.")] = None,
    backend: Annotated[str, typer.Option(help="INT8 backend: auto, onnxruntime or tensorrt.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Examples per batch.")] = 32,
    max_length: Annotated[
        int | None, typer.Option(help="Truncation length (default: the model's maximum).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N examples.")] = None,
    write: Annotated[bool, typer.Option(help="Write report.md and report.json into the artifact.")] = True,
    verify: Annotated[
        bool, typer.Option(help="Verify artifact checksums first (--no-verify for edited files).")
    ] = True,
) -> None:
    """Compare float and INT8 on a data file: task metrics with labels, agreement and cosine without."""
    from .evaluate import REPORT_JSON, REPORT_MD, evaluate_artifact

    report = evaluate_artifact(
        artifact,
        data,
        text_column=text_column,
        pair_column=pair_column,
        label_column=label_column,
        backend=backend,
        batch_size=batch_size,
        max_length=max_length,
        limit=limit,
        write=write,
        verify=verify,
    )
    console.print(reports.evaluation_table(report))
    if write:
        console.print(f"wrote {artifact / REPORT_MD} and {artifact / REPORT_JSON}")


@app.command()
def analyze(
    model: Annotated[str, typer.Argument(help="Model directory (or hub id).")],
    task: Annotated[str, typer.Option(help="The model's task.")],
    calib: Annotated[Path, typer.Option(help="Calibration data file.")],
    output: Annotated[Path, typer.Option(help="Directory for sensitivity.json and sensitivity.png.")],
    eval_data: Annotated[
        Path | None, typer.Option(help="Held-out data (default: calibration rows after the first N).")
    ] = None,
    method: Annotated[
        str, typer.Option(help=f"Calibration method: {', '.join(CALIBRATION_METHODS)}.")
    ] = "max",
    calib_samples: Annotated[int, typer.Option(help="Number of calibration examples.")] = 256,
    max_length: Annotated[int, typer.Option(help="Maximum tokens per example.")] = 128,
    text_column: Annotated[str | None, typer.Option(help="Column holding the text.")] = None,
    precision: Annotated[str, typer.Option(help="int8, or fp8 (E4M3).")] = "int8",
) -> None:
    """Rank Linear layers by how much quantizing each one alone degrades the output (table + bar chart)."""
    from .analyze import analyze as run_analyze

    result = run_analyze(
        model,
        task,
        calib,
        output,
        QuantConfig(method=method, calib_samples=calib_samples, max_length=max_length, precision=precision),
        eval_data=eval_data,
        text_column=text_column,
    )
    console.print(reports.sensitivity_table(result))


def _cc_engines(specs: list[str]) -> dict[str, str]:
    engines = {}
    for spec in specs:
        capability, separator, directory = spec.partition("=")
        if not separator or not capability or not directory:
            raise TrtQuantError(
                f"--cc-engine '{spec}' is not CC=ARTIFACT_DIR: pass e.g. --cc-engine 8.6=engines/a10."
            )
        engines[capability] = directory
    return engines


def _integers(spec: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in spec.split(","))
    except ValueError:
        raise TrtQuantError(
            f"{option} '{spec}' is not a comma-separated list of integers: pass e.g. 1,8,32."
        ) from None
    if not values or min(values) < 1:
        raise TrtQuantError(f"{option} '{spec}' must list positive integers: pass e.g. 1,8,32.")
    return values


@app.command()
def bench(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory written by convert.")],
    batch: Annotated[str, typer.Option(help="Batch sizes, comma-separated.")] = "1,8,32",
    seq: Annotated[str, typer.Option(help="Sequence lengths, comma-separated.")] = "32,128",
    variants: Annotated[str, typer.Option(help="Variants, comma-separated.")] = ",".join(VARIANTS),
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: all cores).")] = None,
    iterations: Annotated[int, typer.Option(help="Timed calls per shape.")] = 30,
    output: Annotated[Path | None, typer.Option(help="Report directory (default ARTIFACT/bench).")] = None,
    texts: Annotated[
        Path | None,
        typer.Option(help="Real texts for the accuracy column and the padding table (default: built-in)."),
    ] = None,
    text_column: Annotated[str | None, typer.Option(help="Column of --texts holding the text.")] = None,
    padding_batch: Annotated[
        int,
        typer.Option(help="Batch size of the padding table, texts cut at the longest --seq (0: no table)."),
    ] = 8,
    verify: Annotated[
        bool, typer.Option(help="Verify artifact checksums first (--no-verify for edited files).")
    ] = True,
) -> None:
    """Latency percentiles and throughput of trt-quant INT8 against float and dynamic-INT8 baselines, and
    the time to run real texts with each padding strategy (bucketed, longest, max-length)."""
    from .batching import padding_table
    from .bench import markdown_table
    from .bench_suite import run_benchmark, run_padding_benchmark

    if padding_batch < 0:
        raise TrtQuantError(
            f"--padding-batch {padding_batch} is negative: pass 0 (no table) or a batch size."
        )
    sequences = _integers(seq, "--seq")
    result = run_benchmark(
        artifact,
        _integers(batch, "--batch"),
        sequences,
        tuple(v.strip() for v in variants.split(",")),
        threads,
        output,
        texts,
        iterations=iterations,
        verify=verify,
        text_column=text_column,
    )
    console.print(markdown_table(result.rows, result.threads), markup=False, highlight=False, soft_wrap=True)
    files = result.files
    if padding_batch:
        rows, used, written = run_padding_benchmark(
            artifact,
            texts,
            text_column,
            padding_batch,
            threads,
            output,
            verify=False,
            max_length=max(sequences),
        )
        console.print(padding_table(rows, used), markup=False, highlight=False, soft_wrap=True)
        files = [*files, *written]
    console.print("wrote " + ", ".join(str(path) for path in files))


def main() -> None:
    """Entry point: run the app; the project's own errors print one line and exit 2."""
    _show_warnings()
    try:
        app()
    except TrtQuantError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
