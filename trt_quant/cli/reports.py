"""Rich tables that the command line prints: conversion summary, demo comparison."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from rich.table import Table

from trt_quant.artifacts import EngineRecord

if TYPE_CHECKING:
    from trt_quant.analyze import Analysis
    from trt_quant.demo import DemoResult
    from trt_quant.evaluate.report import EvaluationReport
    from trt_quant.pipeline import ConvertReport


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def convert_summary(report: ConvertReport) -> Table:
    """One screen: where the artifact went, what was quantized, sizes, accuracy, check, step timings."""
    manifest = report.manifest
    quant = manifest.quantization
    table = Table(title=f"trt-quant convert: {manifest.name}", show_header=False, title_justify="left")
    table.add_column("item", style="bold")
    table.add_column("value")
    table.add_row("artifact", str(report.output))
    table.add_row("model", f"{manifest.source_model} ({manifest.family}, {manifest.task})")
    table.add_row("inputs", ", ".join(f"{s.name}:{s.dtype}" for s in manifest.inputs))
    table.add_row("outputs", ", ".join(f"{s.name}{s.shape}" for s in manifest.outputs))
    percentile = f" {quant.percentile}" if quant.percentile else ""
    table.add_row("calibration", f"{quant.method}{percentile} on {quant.calib_samples} samples")
    label = quant.precision.upper()
    table.add_row(f"{label} linears", f"{quant.quantized_linears} (float: {len(quant.float_linears)})")
    mixed = quant.mixed_precision
    if mixed:
        digits = 4 if mixed.budget.startswith("cosine") else 2
        table.add_row(
            "mixed precision",
            f"{mixed.budget}: {mixed.metric} {mixed.float_score:.{digits}f} float -> "
            f"{mixed.score:.{digits}f}; {len(mixed.float_layers)} layers kept float, "
            f"{mixed.int8_flop_share:.0%} of Linear FLOPs in INT8",
        )
    selection = (quant.qat or {}).get("selection")
    if selection and "metric" in selection:
        scores = ", ".join(f"{value:.4f}" for value in selection["epochs"])
        table.add_row(
            "QAT kept",
            f"{selection['selected']} ({selection['metric']}: calibrated {selection['calibrated']:.4f}, "
            f"epochs {scores})",
        )
    elif selection:
        table.add_row("QAT kept", f"{selection['selected']} ({selection['reason']})")
    sizes = manifest.sizes
    table.add_row(
        "ONNX size",
        f"float {_mb(sizes.float_onnx_bytes)} -> {label} {_mb(sizes.quantized_onnx_bytes)} ({sizes.ratio:.0%})",
    )
    accuracy = manifest.accuracy
    if accuracy.mean_cosine is not None and accuracy.min_cosine is not None:
        agreement = accuracy.top1_agreement
        extra = f", top-1 agreement {agreement:.2%}" if agreement is not None else ""
        table.add_row(
            f"{label} vs float",
            f"cosine mean {accuracy.mean_cosine:.4f} min {accuracy.min_cosine:.4f}"
            f"{extra} on {accuracy.examples} held-out examples",
        )
    else:
        table.add_row(f"{label} vs float", f"not measured: held-out data {accuracy.data}")
    errors = [f for f in report.check_findings if f.severity == "error"]
    table.add_row(
        "TensorRT rules", f"{len(errors)} errors, {len(report.check_findings) - len(errors)} warnings"
    )
    table.add_row("time", ", ".join(f"{step} {seconds:.1f}s" for step, seconds in report.timings.items()))
    return table


def demo_table(result: DemoResult) -> Table:
    """Float vs INT8: file size, cosine on held-out sentences, latency of float32 on ONNX Runtime and of INT8
    on the fastest CPU backend (each INT8 backend's p50 in its own row), on the CPU named in the caption."""
    manifest = result.report.manifest
    sizes, accuracy = manifest.sizes, manifest.accuracy
    table = Table(
        title=f"float32 (ONNX Runtime) vs INT8 (fastest CPU backend: {result.fastest_backend}), "
        f"batch {result.float_latency.batch}, sequence {result.float_latency.sequence}",
        caption=f"cpu: {result.cpu.summary()}",
        title_justify="left",
        caption_justify="left",
    )
    for column in ("", "float32", "INT8 (trt-quant)", "INT8 / float"):
        table.add_column(column)
    table.add_row(
        "ONNX file",
        _mb(sizes.float_onnx_bytes),
        _mb(sizes.quantized_onnx_bytes),
        f"{sizes.ratio:.2f}x",
    )
    mean, least = accuracy.mean_cosine, accuracy.min_cosine
    table.add_row(
        "cosine vs float (held-out)",
        "1.0000",
        f"mean {mean if mean is not None else float('nan'):.4f} / min {least if least is not None else float('nan'):.4f}",
        f"{accuracy.examples or 0} sentences",
    )
    fl, q = result.float_latency, result.int8_latency
    table.add_row("latency p50", f"{fl.p50_ms:.1f} ms", f"{q.p50_ms:.1f} ms", _speedup(fl.p50_ms, q.p50_ms))
    table.add_row("latency p90", f"{fl.p90_ms:.1f} ms", f"{q.p90_ms:.1f} ms", _speedup(fl.p90_ms, q.p90_ms))
    table.add_row(
        "throughput",
        f"{fl.throughput:.1f} seq/s",
        f"{q.throughput:.1f} seq/s",
        f"{q.throughput / fl.throughput:.2f}x",
    )
    for backend, latency in result.int8_latencies.items():
        table.add_row(
            f"INT8 p50 on {backend}",
            "",
            f"{latency.p50_ms:.1f} ms",
            _speedup(fl.p50_ms, latency.p50_ms),
        )
    return table


def engine_summary(record: EngineRecord) -> Table:
    """What the engine build recorded: TensorRT version, GPU, precision, profiles, size."""
    table = Table(title="TensorRT engine", show_header=False, title_justify="left")
    table.add_column("item", style="bold")
    table.add_column("value")
    for key, value in asdict(record).items():
        table.add_row(str(key), str(value))
    return table


def sensitivity_table(analysis: Analysis, rows: int = 15) -> Table:
    """The most sensitive layers first: score with only that layer INT8 and the drop it causes."""
    table = Table(
        title=f"Per-layer sensitivity ({analysis.metric}); all layers INT8: {analysis.all_int8_score:.4f}",
        title_justify="left",
        caption=f"charts and full list: {', '.join(map(str, analysis.files))}",
    )
    for column in ("rank", "layer", "score (only this layer INT8)", "drop"):
        table.add_column(column)
    for rank, item in enumerate(analysis.ranking[:rows], start=1):
        table.add_row(str(rank), item.layer, f"{item.score:.5f}", f"{item.drop:.5f}")
    return table


def evaluation_table(report: EvaluationReport) -> Table:
    """Float vs INT8 on a data file: task metrics with their delta, then how close the INT8 outputs are."""
    from trt_quant.evaluate.report import METRIC_NAMES, agreement_rows, format_number

    labels = f"labels '{report.labels}'" if report.labels else "no labels"
    label = report.precision.upper()
    table = Table(
        title=f"float vs {label} ({report.backend}): {report.examples} examples, {labels}",
        caption=f"data: {report.data}; artifact: {report.artifact}",
        title_justify="left",
        caption_justify="left",
    )
    for column in ("metric", "float", label, "delta"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    deltas = report.deltas()
    for key, value in report.metrics["float"].items():
        table.add_row(
            METRIC_NAMES[key],
            format_number(value),
            format_number(report.metrics["int8"][key]),
            format_number(deltas[key], signed=True),
        )
    table.add_section()
    for measure, shown in agreement_rows(report.agreement):
        table.add_row(f"{label} vs float: {measure}", "", shown, "")
    return table


def _speedup(reference_ms: float, candidate_ms: float) -> str:
    """'1.65x faster' or '0.96x (slower)': the reference's time over the candidate's."""
    ratio = reference_ms / candidate_ms
    return f"{ratio:.2f}x faster" if ratio >= 1 else f"{ratio:.2f}x (slower)"
