"""How fast INT8 can possibly be on this CPU: each Linear of a model timed alone, float32 vs INT8.

Builds one-node ONNX graphs for every distinct Linear shape of an artifact's float graph (the INT8 one is
the QuantizeLinear -> DequantizeLinear -> MatMul pattern trt-quant exports, which ONNX Runtime runs as
MatMulIntegerToFloat), times them at batch x sequence rows, and derives the ceiling of the whole-model
speed-up: every Linear at its measured INT8 speed, everything else as costly as in the float graph.
Usage:

    python scripts/int8_ceiling.py engines/minilm [--batch 8] [--seq 128] [--iterations 50]
"""

from __future__ import annotations

import argparse
import collections
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from trt_quant.artifacts import FLOAT_ONNX
from trt_quant.bench.latency import measure_latency, time_calls
from trt_quant.runtime import load_runtime
from trt_quant.runtime.ort import session_options

IR_VERSION = 9  # what this ONNX Runtime reads; the one-node graphs need nothing newer


def linear_shapes(path: Path) -> collections.Counter[tuple[int, int]]:
    """(in, out) features of every MatMul with a 2-D constant weight in an ONNX graph, with counts."""
    model = onnx.load(str(path), load_external_data=False)
    weights = {tensor.name: tuple(tensor.dims) for tensor in model.graph.initializer if len(tensor.dims) == 2}
    return collections.Counter(
        weights[node.input[1]]
        for node in model.graph.node
        if node.op_type == "MatMul" and node.input[1] in weights
    )


def one_linear(rows: int, features: tuple[int, int], int8: bool) -> onnx.ModelProto:
    """A graph of one Linear (no bias): float MatMul, or the QDQ pattern with 7-bit per-column weights."""
    k, n = features
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, k])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, n])
    if not int8:
        weight = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "w")
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])], "linear", [x], [y], [weight]
        )
    else:
        constants = [
            numpy_helper.from_array(rng.integers(-64, 64, (k, n)).astype(np.int8), "w"),
            numpy_helper.from_array(np.full(n, 0.01, np.float32), "w_scale"),
            numpy_helper.from_array(np.zeros(n, np.int8), "w_zero"),
            numpy_helper.from_array(np.float32(0.02), "x_scale"),
            numpy_helper.from_array(np.int8(0), "x_zero"),
        ]
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"]),
            helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["wd"], axis=1),
            helper.make_node("MatMul", ["xd", "wd"], ["y"]),
        ]
        graph = helper.make_graph(nodes, "linear", [x], [y], constants)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)


def time_linear(rows: int, features: tuple[int, int], int8: bool, threads: int, iterations: int) -> float:
    """Mean milliseconds of one Linear in ONNX Runtime with trt-quant's session options."""
    import onnxruntime as ort

    session = ort.InferenceSession(
        one_linear(rows, features, int8).SerializeToString(),
        session_options(threads, exact_int8=False),
        providers=["CPUExecutionProvider"],
    )
    feeds = {"x": np.random.default_rng(1).standard_normal((rows, features[0])).astype(np.float32)}
    return float(time_calls(lambda: session.run(None, feeds), 5, iterations).mean() * 1000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=50)
    arguments = parser.parse_args()
    threads = os.cpu_count() or 1
    rows = arguments.batch * arguments.seq
    print(
        f"threads: {threads}, rows per Linear: {rows} (batch {arguments.batch} x sequence {arguments.seq})\n"
    )
    print("| Linear (in x out) | count | float32 ms | INT8 ms | speed-up |")
    print("|---|---:|---:|---:|---:|")
    total_float = total_int8 = 0.0
    for features, count in sorted(linear_shapes(arguments.artifact / FLOAT_ONNX).items()):
        fp32 = time_linear(rows, features, False, threads, arguments.iterations)
        int8 = time_linear(rows, features, True, threads, arguments.iterations)
        total_float, total_int8 = total_float + count * fp32, total_int8 + count * int8
        print(f"| {features[0]} x {features[1]} | {count} | {fp32:.2f} | {int8:.2f} | {fp32 / int8:.2f}x |")
    print(f"| all Linears | | {total_float:.1f} | {total_int8:.1f} | {total_float / total_int8:.2f}x |\n")
    whole = {
        precision: measure_latency(
            load_runtime(arguments.artifact, backend="onnxruntime", precision=precision, threads=threads),
            arguments.batch,
            arguments.seq,
            iterations=arguments.iterations,
        ).mean_ms
        for precision in ("float", "int8")
    }
    rest = whole["float"] - total_float
    ceiling = whole["float"] / (rest + total_int8)
    print(
        f"whole model float32: {whole['float']:.1f} ms, of which Linears {total_float:.1f} ms, rest {rest:.1f} ms"
    )
    print(f"ceiling (every Linear at its INT8 speed, the rest unchanged): {ceiling:.2f}x")
    print(f"for 2.0x the INT8 graph's rest would have to cost {whole['float'] / 2 - total_int8:.1f} ms")
    print(f"measured trt-quant INT8: {whole['int8']:.1f} ms, {whole['float'] / whole['int8']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
