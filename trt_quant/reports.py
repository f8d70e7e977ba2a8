"""Rich tables that the command line prints: conversion summary, demo comparison."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    from .convert import ConvertReport
    from .demo import DemoResult


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
    percentile = f" {quant['percentile']}" if quant.get("percentile") else ""
    table.add_row("calibration", f"{quant['method']}{percentile} on {quant['calib_samples']} samples")
    table.add_row("INT8 linears", f"{quant['quantized_linears']} (float: {len(quant['float_linears'])})")
    sizes = manifest.sizes
    table.add_row("ONNX size", f"float {_mb(sizes['float_onnx_bytes'])} -> INT8 {_mb(sizes['int8_onnx_bytes'])} "
                               f"({sizes['int8_to_float_ratio']:.0%})")
    accuracy = manifest.accuracy
    if "mean_cosine" in accuracy:
        agreement = accuracy.get("top1_agreement")
        extra = f", top-1 agreement {agreement:.2%}" if agreement is not None else ""
        table.add_row("INT8 vs float", f"cosine mean {accuracy['mean_cosine']:.4f} min {accuracy['min_cosine']:.4f}"
                                       f"{extra} on {accuracy['examples']} held-out examples")
    else:
        table.add_row("INT8 vs float", f"not measured: held-out data {accuracy.get('data')}")
    errors = [f for f in report.check_findings if f.severity == "error"]
    table.add_row("TensorRT rules", f"{len(errors)} errors, {len(report.check_findings) - len(errors)} warnings")
    table.add_row("time", ", ".join(f"{step} {seconds:.1f}s" for step, seconds in report.timings.items()))
    return table


def demo_table(result: DemoResult) -> Table:
    """Float vs INT8: file size, cosine on held-out sentences, ONNX Runtime latency."""
    manifest = result.report.manifest
    sizes, accuracy = manifest.sizes, manifest.accuracy
    table = Table(title=f"float vs INT8, ONNX Runtime CPU, batch {result.float_latency.batch}, "
                        f"sequence {result.float_latency.sequence}", title_justify="left")
    for column in ("", "float32", "INT8 (trt-quant)", "INT8 / float"):
        table.add_column(column)
    table.add_row("ONNX file", _mb(sizes["float_onnx_bytes"]), _mb(sizes["int8_onnx_bytes"]),
                  f"{sizes['int8_to_float_ratio']:.2f}x")
    table.add_row("cosine vs float (held-out)", "1.0000",
                  f"mean {accuracy.get('mean_cosine', float('nan')):.4f} / min {accuracy.get('min_cosine', float('nan')):.4f}",
                  f"{accuracy.get('examples', 0)} sentences")
    fl, q = result.float_latency, result.int8_latency
    table.add_row("latency p50", f"{fl.p50_ms:.1f} ms", f"{q.p50_ms:.1f} ms", f"{fl.p50_ms / q.p50_ms:.2f}x faster")
    table.add_row("latency p90", f"{fl.p90_ms:.1f} ms", f"{q.p90_ms:.1f} ms", f"{fl.p90_ms / q.p90_ms:.2f}x faster")
    table.add_row("throughput", f"{fl.throughput:.1f} seq/s", f"{q.throughput:.1f} seq/s",
                  f"{q.throughput / fl.throughput:.2f}x")
    return table
