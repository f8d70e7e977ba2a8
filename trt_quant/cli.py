"""The ``trt-quant`` command: parses arguments, calls the Python API, prints. No logic of its own."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from . import reports
from .config import CALIBRATION_METHODS, QuantConfig
from .errors import TrtQuantError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Quantize Hugging Face encoders to INT8 for ONNX Runtime and TensorRT.")
console = Console()

Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output directory.")]


@app.command()
def convert(
    model: Annotated[str, typer.Argument(help="Model directory (or hub id).")],
    task: Annotated[str, typer.Option(help="feature-extraction, sentence-embedding, text-classification, "
                                           "token-classification or question-answering.")],
    calib: Annotated[Path, typer.Option(help="Calibration data: .txt, .csv, .tsv, .jsonl, .parquet or a saved dataset.")],
    output: Annotated[Path, typer.Option(help="Artifact directory to write, e.g. engines/NAME.")],
    method: Annotated[str, typer.Option(help=f"Calibration method: {', '.join(CALIBRATION_METHODS)}.")] = "percentile",
    percentile: Annotated[float, typer.Option(help="Percentile for --method percentile.")] = 99.99,
    calib_samples: Annotated[int, typer.Option(help="Number of calibration examples.")] = 256,
    batch_size: Annotated[int, typer.Option(help="Calibration batch size.")] = 16,
    max_length: Annotated[int, typer.Option(help="Maximum tokens per calibration example.")] = 128,
    text_column: Annotated[str | None, typer.Option(help="Column holding the text.")] = None,
    pair_column: Annotated[str | None, typer.Option(help="Column holding the second text of a pair.")] = None,
    eval_data: Annotated[Path | None, typer.Option(help="Held-out data to measure INT8 against float.")] = None,
    quantize_residual: Annotated[bool, typer.Option(help="Also quantize LayerNorm inputs (costs accuracy).")] = False,
    trust_remote_code: Annotated[bool, typer.Option(help="Allow model code from the model directory.")] = False,
    overwrite: Overwrite = False,
) -> None:
    """Load, quantize, calibrate and export MODEL into an artifact directory."""
    from .convert import convert as run_convert

    config = QuantConfig(method=method, percentile=percentile, calib_samples=calib_samples, batch_size=batch_size,
                         max_length=max_length, quantize_residual=quantize_residual)
    with console.status("converting"):
        report = run_convert(model, task, calib, output, config, text_column=text_column, pair_column=pair_column,
                             eval_data=eval_data, overwrite=overwrite, trust_remote_code=trust_remote_code)
    console.print(reports.convert_summary(report))


@app.command()
def demo(
    output: Annotated[Path, typer.Option(help="Artifact directory to write.")] = Path("engines/minilm"),
    overwrite: Annotated[bool, typer.Option("--overwrite/--no-overwrite", help="Replace an existing output.")] = True,
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
