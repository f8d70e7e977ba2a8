"""Wall time and peak memory of the graph edits (trt_quant/onnx/graph.py) on a BERT-base-sized graph.

Builds a synthetic INT8 export of about 110M parameters (a 30522 x 768 embedding table read by a Gather,
then ``--layers`` float weights of 768 x 768, each QuantizeLinear -> DequantizeLinear -> Transpose ->
MatMul, as the TorchScript exporter writes them) and times, each once: the export's finalization (INT8
weights, INT8 table, shared duplicates), the TensorRT-ready FP16 graph, and ONNX Runtime's load-time
preparation. Run it on two checkouts to compare them; the numbers depend on the machine's load.

Usage:

    PYTHONPATH=. python scripts/graph_edit_timing.py [--layers 144]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from trt_quant.onnx.export import finalize_int8_graph
from trt_quant.onnx.tensorrt_graph import tensorrt_graph
from trt_quant.runtime.ort import _prepared_graph

HIDDEN, VOCABULARY = 768, 30522


def synthetic_export(layers: int) -> onnx.ModelProto:
    """An exported-looking INT8 graph: embedding Gather, then ``layers`` weight Q/DQ -> Transpose -> MatMul."""
    rng = np.random.default_rng(0)
    table = rng.standard_normal((VOCABULARY, HIDDEN), dtype=np.float32)
    initializers = [numpy_helper.from_array(table, "embeddings")]
    nodes = [helper.make_node("Gather", ["embeddings", "input_ids"], ["h0"], name="embeddings/Gather")]
    for i in range(layers):
        weight = rng.standard_normal((HIDDEN, HIDDEN), dtype=np.float32)
        initializers += [
            numpy_helper.from_array(weight, f"w{i}"),
            numpy_helper.from_array(np.abs(weight).max(axis=1) / 127, f"w{i}_scale"),
            numpy_helper.from_array(np.zeros(HIDDEN, np.int8), f"w{i}_zero_point"),
        ]
        pair = [f"w{i}_scale", f"w{i}_zero_point"]
        nodes += [
            helper.make_node("QuantizeLinear", [f"w{i}", *pair], [f"q{i}"], name=f"layer{i}/Q", axis=0),
            helper.make_node("DequantizeLinear", [f"q{i}", *pair], [f"dq{i}"], name=f"layer{i}/DQ", axis=0),
            helper.make_node("Transpose", [f"dq{i}"], [f"t{i}"], name=f"layer{i}/Transpose", perm=[1, 0]),
            helper.make_node("MatMul", [f"h{i}", f"t{i}"], [f"h{i + 1}"], name=f"layer{i}/MatMul"),
        ]
    graph = helper.make_graph(
        nodes,
        "synthetic",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info(f"h{layers}", TensorProto.FLOAT, ["batch", "sequence", HIDDEN])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=144, help="weights (BERT-base has 72 Linears x 2)")
    args = parser.parse_args()
    model = synthetic_export(args.layers)
    parameters = sum(int(np.prod(tensor.dims)) for tensor in model.graph.initializer) / 1e6
    print(f"{parameters:.1f}M parameters, {len(model.graph.node)} nodes")
    start = time.perf_counter()
    counts = finalize_int8_graph(model, int8_embeddings=True)
    print(f"finalize_int8_graph  {time.perf_counter() - start:6.1f} s  {counts}")
    start = time.perf_counter()
    tensorrt_graph(model, "fp16")
    print(f"tensorrt_graph fp16  {time.perf_counter() - start:6.1f} s")
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "model_int8.onnx"
        onnx.save(model, str(path))
        start = time.perf_counter()
        _prepared_graph(path)
        print(f"ORT load preparation {time.perf_counter() - start:6.1f} s")
    print(f"peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


if __name__ == "__main__":
    main()
