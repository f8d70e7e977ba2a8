"""The ``trt-quant`` command: parses arguments, calls the Python API, prints. No logic of its own."""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from trt_quant.bench.variants import VARIANTS
from trt_quant.cli import reports
from trt_quant.cli.options import COLUMNS, HELD_OUT, QUANTIZATION, REPOSITORY, TRAINING, integers
from trt_quant.config import QatConfig, QuantConfig
from trt_quant.errors import TrtQuantError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Quantize Hugging Face encoders to INT8 for ONNX Runtime and TensorRT.",
)
console = Console()

Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output directory.")]


@app.command()
@QUANTIZATION
@COLUMNS
@HELD_OUT
def convert(
    model: Annotated[str, typer.Argument(help="Model directory (or hub id).")],
    quant_config: QuantConfig,
    columns: dict[str, Any],
    eval_data: Path | None,
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
    from trt_quant.convert import convert as run_convert

    if engine:
        from trt_quant.engine.build import require_tensorrt

        require_tensorrt()  # before any work: no partial artifact when the GPU step cannot run

    with console.status("converting"):
        report = run_convert(
            model,
            task,
            calib,
            output,
            quant_config,
            **columns,
            eval_data=eval_data,
            overwrite=overwrite,
            trust_remote_code=trust_remote_code,
            name=name,
            accuracy_budget=accuracy_budget,
            label_column=label_column,
        )
    console.print(reports.convert_summary(report))
    if engine:
        from trt_quant.engine.build import build_engine

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
    onnx_only: Annotated[
        bool,
        typer.Option(help="Only write model_trt.onnx, the graph the engine build parses (no GPU needed)."),
    ] = False,
    fp32_islands: Annotated[
        bool, typer.Option(help="Keep LayerNorm and Softmax in FP32 (FP16/BF16 by default).")
    ] = False,
) -> None:
    """Build a strongly typed TensorRT engine from the artifact's TensorRT-ready graph (needs an NVIDIA GPU)."""
    from trt_quant.artifacts import load_manifest
    from trt_quant.engine.build import BuildConfig, build_engine, default_profiles, parse_profiles

    if onnx_only:
        from trt_quant.onnx.tensorrt_onnx import write_tensorrt_onnx

        record = write_tensorrt_onnx(artifact, precision, fp32_islands, verify=verify)
        console.print(f"wrote {artifact / record.file} ({record.precision}, sha256 {record.sha256[:12]})")
        return
    manifest = load_manifest(artifact, verify=verify)
    longest = manifest.max_length
    profiles = parse_profiles(batch, seq, longest) if seq else default_profiles(longest, batch)
    config = BuildConfig(
        precision=precision,
        profiles=tuple(profiles),
        workspace_mib=workspace,
        optimization_level=optimization_level,
        timing_cache=timing_cache,
        fp32_islands=fp32_islands,
    )
    console.print(reports.engine_summary(build_engine(artifact, config, verify=False)))


@app.command()
@REPOSITORY
def triton(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory written by convert.")],
    repository_options: dict[str, Any],
    repo: Annotated[Path, typer.Option(help="Model repository directory to write.")],
    name: Annotated[str | None, typer.Option(help="Model name (default: the artifact's name).")] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            help="tensorrt, onnxruntime or python (trt-quant's runtime; default: tensorrt if built)."
        ),
    ] = None,
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
    from trt_quant.triton import write_triton_repository

    written = write_triton_repository(
        artifact,
        repo,
        name=name,
        backend=backend,
        overwrite=overwrite,
        **repository_options,
        cc_engines=_cc_engines(cc_engine or []),
        verify=verify,
    )
    console.print(f"wrote Triton model repository {written} (see {written / 'README.md'})")


@app.command()
@REPOSITORY
def serve(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory written by convert.")],
    repository_options: dict[str, Any],
    repo: Annotated[
        Path | None, typer.Option(help="Model repository directory to write (default: a temporary one).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Model name (default: the artifact's name).")] = None,
    port: Annotated[int, typer.Option(help="HTTP port on 127.0.0.1 (gRPC: PORT+1, metrics: PORT+2).")] = 8000,
    backend: Annotated[
        str | None, typer.Option(help="Model backend (default: python; others need --tritonserver).")
    ] = None,
    tritonserver: Annotated[
        Path | None,
        typer.Option(
            help="A tritonserver binary to run (default: the one of nvidia-pytriton, own environment)."
        ),
    ] = None,
    server_env: Annotated[
        Path | None, typer.Option(help="Where the built-in server's environment is built and cached.")
    ] = None,
    verify: Annotated[
        bool, typer.Option(help="Verify artifact checksums first (--no-verify for edited files).")
    ] = True,
    overwrite: Overwrite = False,
) -> None:
    """Serve the artifact with a local Triton server on 127.0.0.1 until Ctrl-C (needs the serve extra)."""
    from trt_quant.triton.serve import serve as serve_artifact

    serve_artifact(
        artifact,
        repo,
        name=name,
        backend=backend,
        tritonserver=tritonserver,
        http_port=port,
        grpc_port=port + 1,
        metrics_port=port + 2,
        server_env=server_env,
        echo=lambda text: console.print(text, markup=False, highlight=False, soft_wrap=True),
        overwrite=overwrite,
        **repository_options,
        verify=verify,
    )


@app.command()
def demo(
    output: Annotated[Path, typer.Option(help="Artifact directory to write.")] = Path("engines/minilm"),
    overwrite: Annotated[
        bool, typer.Option("--overwrite/--no-overwrite", help="Replace an existing output.")
    ] = True,
) -> None:
    """Convert the packaged all-MiniLM-L6-v2 with the built-in calibration text and compare float vs INT8."""
    from trt_quant.demo import run_demo

    result = run_demo(output, overwrite=overwrite)
    console.print(reports.convert_summary(result.report))
    console.print(reports.demo_table(result))


@app.command()
def check(onnx_file: Annotated[Path, typer.Argument(help="ONNX file to check.")]) -> None:
    """Check an ONNX graph against TensorRT's explicit-quantization rules (exit 1 when errors are found)."""
    from trt_quant.onnx.check import check_onnx, format_findings

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
@QUANTIZATION
@TRAINING
@COLUMNS
@HELD_OUT
def qat(
    model: Annotated[str, typer.Argument(help="Model directory (or hub id).")],
    quant_config: QuantConfig,
    qat_config: QatConfig,
    columns: dict[str, Any],
    eval_data: Path | None,
    task: Annotated[str, typer.Option(help="The model's task.")],
    train: Annotated[Path, typer.Option(help="Training data with labels.")],
    output: Annotated[Path, typer.Option(help="Artifact directory to write.")],
    calib: Annotated[
        Path | None, typer.Option(help="Calibration data (default: the training texts).")
    ] = None,
    label_column: Annotated[str, typer.Option(help="Column holding the labels.")] = "label",
    overwrite: Overwrite = False,
) -> None:
    """Fine-tune a calibrated model with its quantizers active, then export exactly like convert."""
    from trt_quant.qat import qat as run_qat

    report = run_qat(
        model,
        task,
        train,
        output,
        calib=calib,
        label_column=label_column,
        **columns,
        quant_config=quant_config,
        qat_config=replace(qat_config, max_length=quant_config.max_length),
        eval_data=eval_data,
        overwrite=overwrite,
    )
    if report is not None:  # None: a process other than the first of a torchrun run
        console.print(reports.convert_summary(report))


@app.command()
@COLUMNS
def evaluate(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory written by convert.")],
    columns: dict[str, Any],
    data: Annotated[Path, typer.Option(help="Data file (SQuAD JSON for question answering).")],
    label_column: Annotated[str | None, typer.Option(help="Column holding gold labels or scores.")] = None,
    backend: Annotated[
        str, typer.Option(help="INT8 backend: auto, onnxruntime, openvino or tensorrt.")
    ] = "auto",
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
    from trt_quant.evaluate.report import REPORT_JSON, REPORT_MD, evaluate_artifact

    report = evaluate_artifact(
        artifact,
        data,
        **columns,
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
@QUANTIZATION
@COLUMNS
@HELD_OUT
def analyze(
    model: Annotated[str, typer.Argument(help="Model directory (or hub id).")],
    quant_config: QuantConfig,
    columns: dict[str, Any],
    eval_data: Path | None,
    task: Annotated[str, typer.Option(help="The model's task.")],
    calib: Annotated[Path, typer.Option(help="Calibration data file.")],
    output: Annotated[Path, typer.Option(help="Directory for sensitivity.json and sensitivity.png.")],
) -> None:
    """Rank Linear layers by how much quantizing each one alone degrades the output (table + bar chart)."""
    from trt_quant.analyze import analyze as run_analyze

    result = run_analyze(
        model,
        task,
        calib,
        output,
        quant_config,
        eval_data=eval_data,
        **columns,
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
    from trt_quant.bench.latency import markdown_table
    from trt_quant.bench.padding import padding_table
    from trt_quant.bench.suite import run_benchmark, run_padding_benchmark

    if padding_batch < 0:
        raise TrtQuantError(
            f"--padding-batch {padding_batch} is negative: pass 0 (no table) or a batch size."
        )
    sequences = integers(seq, "--seq")
    result = run_benchmark(
        artifact,
        integers(batch, "--batch"),
        sequences,
        tuple(v.strip() for v in variants.split(",")),
        threads,
        output,
        texts,
        iterations=iterations,
        verify=verify,
        text_column=text_column,
    )
    console.print(
        markdown_table(result.rows, result.threads, result.cpu), markup=False, highlight=False, soft_wrap=True
    )
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
