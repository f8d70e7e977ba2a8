"""The structural facts ONNX Runtime's INT8 speed depends on (never wall-clock time)."""

from __future__ import annotations

import collections
from pathlib import Path

import onnx
import pytest

from trt_quant.artifacts import INT8_ONNX, load_manifest
from trt_quant.runtime.ort import (
    X64_QUANT_PRECISION,
    OrtRuntime,
    create_session,
    exact_int8_needed,
    session_options,
)


def optimized_graph(path: Path, tmp_path: Path) -> onnx.ModelProto:
    """The graph ONNX Runtime actually runs: the runtime's own session options, saved after optimization."""
    import onnxruntime as ort

    from trt_quant.runtime.ort import fold_lookup_dequantization

    model = onnx.load(str(path))
    fold_lookup_dequantization(model)
    options = session_options()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")  # type: ignore[attr-defined]
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return onnx.load(str(tmp_path / "optimized.onnx"))


def test_every_per_token_linear_runs_as_an_integer_matmul(tiny_artifact: Path, tmp_path: Path) -> None:
    """Every quantized Linear over tokens becomes MatMulIntegerToFloat; only the two per-sequence Gemms
    (pooler, classifier: one row per example, negligible work) keep a dequantized weight."""
    optimized = optimized_graph(tiny_artifact / INT8_ONNX, tmp_path).graph
    ops = collections.Counter(n.op_type for n in optimized.node)
    exported = onnx.load(str(tiny_artifact / INT8_ONNX)).graph
    gemms = sum(n.op_type == "Gemm" for n in exported.node)
    quantized = load_manifest(tiny_artifact).quantization.quantized_linears
    assert gemms == 2
    assert ops["MatMulIntegerToFloat"] == quantized - gemms, ops
    readers = {name: node.op_type for node in optimized.node for name in node.input}
    leftover = [n for n in optimized.node if n.op_type == "DequantizeLinear"]
    assert all(readers.get(n.output[0]) in ("Gemm", "FusedGemm") for n in leftover), leftover


def test_siblings_share_one_smoothquant_mul(tiny_artifact: Path) -> None:
    graph = onnx.load(str(tiny_artifact / INT8_ONNX)).graph
    consumers = collections.Counter(name for node in graph.node for name in node.input)
    shared_muls = [
        n
        for n in graph.node
        if n.op_type == "Mul"
        and consumers[n.output[0]] == 3
        and all(c.op_type == "QuantizeLinear" for c in graph.node if n.output[0] in c.input)
    ]
    assert len(shared_muls) == 2  # query/key/value of each of the 2 layers read one smoothed tensor


def test_runtime_session_loads_with_the_same_options(tiny_artifact: Path) -> None:
    assert create_session(tiny_artifact / INT8_ONNX) is not None


def test_seven_bit_weights_keep_the_fast_integer_kernels_on_cpus_without_vnni(
    tiny_artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("trt_quant.runtime.ort.cpu_lacks_vnni", lambda: True)
    eight_bit = load_manifest(tiny_artifact)
    seven_bit = load_manifest(tiny_artifact)
    seven_bit.quantization.weight_bits = 7
    assert exact_int8_needed(eight_bit) and not exact_int8_needed(seven_bit)
    exact = OrtRuntime(tiny_artifact, eight_bit).session.get_session_options()  # type: ignore[attr-defined]
    assert exact.get_session_config_entry(X64_QUANT_PRECISION) == "1"
    fast = OrtRuntime(tiny_artifact, seven_bit).session.get_session_options()  # type: ignore[attr-defined]
    with pytest.raises(Exception, match="does not have configuration with key"):
        fast.get_session_config_entry(X64_QUANT_PRECISION)
