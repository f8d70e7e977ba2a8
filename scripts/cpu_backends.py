"""What each CPU backend setting buys: ONNX Runtime and OpenVINO on an artifact's float and INT8 graphs.

One table per setting (thread count, OpenVINO performance hint, streams, inference precision, static input
shapes; ONNX Runtime exact vs fast integer kernels, and a plain session on the shipped INT8 file as Triton
or a user would open it). Each variant is timed in its own block (warm-up, then all its iterations), never interleaved. Ends
with the issue's target ratios: the fastest INT8 against ONNX Runtime float32 and against OpenVINO's float
at its default precision. Give several artifacts to compare conversions (e.g. one converted with
--quantize-attention). Usage:

    python scripts/cpu_backends.py engines/minilm [engines/minilm-attention] [--batch 8] [--seq 128]
        [--threads 2] [--iterations 50]
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from trt_quant.artifacts import INT8_ONNX, load_manifest
from trt_quant.bench.latency import Latency, summarize_latency, synthetic_feeds, time_calls
from trt_quant.cpuinfo import cpu_info
from trt_quant.runtime.openvino import OpenVinoRuntime, compile_config, openvino_available
from trt_quant.runtime.ort import PRECISION_FILES, OrtRuntime

Runner = Callable[[dict[str, np.ndarray]], object]


def plain_session(artifact: Path, threads: int) -> Runner:
    """model_int8.onnx in an ONNX Runtime session with nothing of trt-quant's (no embedding fold)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(artifact / INT8_ONNX), options, providers=["CPUExecutionProvider"])
    return lambda feeds: session.run(None, feeds)


def static_openvino(artifact: Path, precision: str, threads: int, shape: tuple[int, int]) -> Runner:
    """OpenVINO with the graph's inputs fixed to one (batch, sequence) shape before compiling."""
    import openvino

    core = openvino.Core()
    model = core.read_model(str(artifact / PRECISION_FILES[precision]))
    model.reshape({port.get_any_name(): list(shape) for port in model.inputs})
    compiled = core.compile_model(model, "CPU", compile_config(threads))
    request = compiled.create_infer_request()
    return lambda feeds: request.infer(feeds)


def settings(
    artifact: Path, threads: int, bf16: bool, shape: tuple[int, int]
) -> dict[str, dict[str, Callable[[], Runner]]]:
    """Setting name -> variant name -> a builder of the variant's runner (built only when timed)."""
    manifest = load_manifest(artifact, verify=False)

    def ort(precision: str, exact: bool | None = None, count: int = threads) -> Callable[[], Runner]:
        return lambda: OrtRuntime(artifact, manifest, precision, count, exact).run

    def openvino(precision: str, count: int = threads, **options: object) -> Callable[[], Runner]:
        return lambda: OpenVinoRuntime(artifact, manifest, precision, count, **options).run  # type: ignore[arg-type]

    table: dict[str, dict[str, Callable[[], Runner]]] = {
        f"ONNX Runtime, trt-quant session options, {threads} threads": {
            "ort float32": ort("float"),
            "ort int8 (trt-quant runtime)": ort("int8"),
            "ort int8, plain session on model_int8.onnx": lambda: plain_session(artifact, threads),
        },
        "ONNX Runtime integer kernels": {
            "ort int8, exact U8U8": ort("int8", exact=True),
            "ort int8, fast U8S8 (saturates 8-bit weights without VNNI)": ort("int8", exact=False),
        },
        "ONNX Runtime, 1 thread": {"ort float32": ort("float", count=1), "ort int8": ort("int8", count=1)},
    }
    if not openvino_available():
        return table
    table[f"OpenVINO, LATENCY hint, {threads} threads"] = {
        "openvino float, default precision": openvino("float"),
        "openvino float32": openvino("float", inference_precision="f32"),
        "openvino int8": openvino("int8"),
    }
    table["OpenVINO, THROUGHPUT hint"] = {
        "openvino float, default precision": openvino("float", performance_hint="THROUGHPUT"),
        "openvino int8": openvino("int8", performance_hint="THROUGHPUT"),
    }
    table[f"OpenVINO, {threads} streams"] = {
        "openvino int8": openvino("int8", streams=threads),
    }
    table["OpenVINO, 1 thread"] = {
        "openvino float, default precision": openvino("float", count=1),
        "openvino int8": openvino("int8", count=1),
    }
    table[f"OpenVINO, inputs fixed to {shape[0]} x {shape[1]} (static shapes)"] = {
        "openvino float, default precision": lambda: static_openvino(artifact, "float", threads, shape),
        "openvino int8": lambda: static_openvino(artifact, "int8", threads, shape),
    }
    table["OpenVINO, int8 with f32 non-Linear part"] = {
        "openvino int8": openvino("int8", inference_precision="f32")
    }
    if bf16:
        table["OpenVINO, bf16 non-Linear part"] = {
            "openvino float, bf16": openvino("float", inference_precision="bf16"),
            "openvino int8, bf16": openvino("int8", inference_precision="bf16"),
        }
    return table


def time_variant(build: Callable[[], Runner], feeds: dict[str, np.ndarray], iterations: int) -> Latency:
    """Build one variant and time it alone: 5 warm-up calls, then ``iterations`` timed ones."""
    run = build()
    batch, sequence = feeds["input_ids"].shape
    return summarize_latency(time_calls(lambda: run(feeds), 5, iterations), batch, sequence)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", type=Path, nargs="+")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--iterations", type=int, default=50)
    arguments = parser.parse_args()
    cpu = cpu_info()
    bf16 = cpu.flags["AVX512-BF16"] or cpu.flags["AMX"]
    print(f"cpu: {cpu.summary()}")
    print(
        f"batch {arguments.batch}, sequence {arguments.seq}, {arguments.iterations} timed calls per variant\n"
    )
    for artifact in arguments.artifacts:
        manifest = load_manifest(artifact, verify=False)
        feeds = synthetic_feeds(manifest, arguments.batch, arguments.seq)
        quantization = manifest.quantization
        print(
            f"## {artifact} (weight bits {quantization.weight_bits}, "
            f"INT8 attention {quantization.quantize_attention})\n"
        )
        p50: dict[tuple[str, str], float] = {}
        shape = (arguments.batch, arguments.seq)
        for setting, variants in settings(artifact, arguments.threads, bf16, shape).items():
            print(
                f"### {setting}\n\n| variant | p50 ms | p90 ms | mean ms | seq/s |\n|---|---:|---:|---:|---:|"
            )
            for name, build in variants.items():
                latency = time_variant(build, feeds, arguments.iterations)
                p50[setting, name] = latency.p50_ms
                print(
                    f"| {name} | {latency.p50_ms:.1f} | {latency.p90_ms:.1f} | {latency.mean_ms:.1f} | "
                    f"{latency.throughput:.1f} |"
                )
            print()
        print_targets(p50, arguments.threads, cpu.vnni)
    return 0


def print_targets(p50: dict[tuple[str, str], float], threads: int, vnni: bool) -> None:
    """The fastest INT8 variant (at the full thread count, exact) against ONNX Runtime float32 and OpenVINO
    float at its default precision."""
    int8 = {
        key: value
        for key, value in p50.items()
        if "int8" in key[1] and "saturates" not in key[1] and (threads == 1 or "1 thread" not in key[0])
    }
    fastest_key = min(int8, key=int8.__getitem__)
    fastest = int8[fastest_key]
    ort_float = p50[f"ONNX Runtime, trt-quant session options, {threads} threads", "ort float32"]
    print(f"fastest INT8: {fastest_key[1]} ({fastest_key[0]}), {fastest:.1f} ms")
    print(f"vs ONNX Runtime float32: {ort_float / fastest:.2f}x (target >= 3.0x on a VNNI CPU)")
    openvino_float = p50.get(
        (f"OpenVINO, LATENCY hint, {threads} threads", "openvino float, default precision")
    )
    if openvino_float:
        print(f"vs OpenVINO float at its default precision: {openvino_float / fastest:.2f}x (target >= 1.5x)")
    if not vnni:
        print("no VNNI on this CPU: the target is the ceiling printed by scripts/int8_ceiling.py")
    print()


if __name__ == "__main__":
    raise SystemExit(main())
