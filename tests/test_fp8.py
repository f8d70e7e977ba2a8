"""FP8 (E4M3): every family with one task and one family with every task, ONNX Runtime's FP8 graph
against the PyTorch fake-quantized model; the FP8 graph's layout; settings, artifact and runtime rules."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, numpy_helper
from pipeline_steps import SteppedConversion, convert_step_by_step
from tiny_models import FAMILIES, TASKS, sentences

from trt_quant.config import QuantConfig
from trt_quant.errors import GpuUnavailableError, TrtQuantError
from trt_quant.quantize.quantizers import mse_amax, summarize

CONFIG = QuantConfig(calib_samples=48, batch_size=16, max_length=32, precision="fp8")
PAIRS = sorted({(family, "text-classification") for family in FAMILIES} | {("bert", task) for task in TASKS})


def run_plain(path: Path, feeds: dict[str, torch.Tensor]) -> list[np.ndarray]:
    """The graph's own semantics: every ONNX Runtime optimization off."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {name: value.numpy() for name, value in feeds.items()})  # type: ignore[attr-defined]


def constant(graph: onnx.GraphProto, name: str) -> onnx.TensorProto | None:
    return next((tensor for tensor in graph.initializer if tensor.name == name), None)


@pytest.fixture(scope="module", params=PAIRS, ids=lambda pair: f"{pair[0]}-{pair[1]}")
def stepped(
    request: pytest.FixtureRequest,
    tiny_model: Callable[[str, str], Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> SteppedConversion:
    family, task = request.param
    return convert_step_by_step(
        tiny_model(family, task),
        task,
        sentences(64, seed=1),
        tmp_path_factory.mktemp(f"fp8-{family}-{task}"),
        CONFIG,
    )


def test_fp8_onnx_matches_pytorch_fake_quantized(stepped: SteppedConversion) -> None:
    feeds = stepped.batches[-1]
    with torch.no_grad():
        expected = [t.numpy() for t in stepped.quantized_model.run(feeds)]
        floats = [t.numpy() for t in stepped.float_model.run(feeds)]
    for want, got, float_out in zip(expected, run_plain(stepped.int8_onnx, feeds), floats, strict=True):
        output_range = float(want.max() - want.min())
        assert np.abs(got - want).max() <= 1e-3 * output_range
        assert np.abs(float_out - want).max() > 1e-3 * output_range  # FP8 rounding really happened


def test_fp8_graph_has_standard_fp8_qdq_on_every_quantized_matmul(stepped: SteppedConversion) -> None:
    model = stepped.int8_graph
    graph = model.graph
    assert max(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")) >= 19
    assert all(node.domain in ("", "ai.onnx") for node in graph.node)  # no trt::TRT_FP8* left
    producer = {output: node for node in graph.node for output in node.output}
    quantized = 0
    stored_weights = set()
    for node in graph.node:
        sources = [producer.get(name) for name in node.input[:2]]
        if node.op_type not in ("MatMul", "Gemm") or not any(
            s is not None and s.op_type == "DequantizeLinear" for s in sources
        ):
            continue
        quantized += 1
        activation, weight = sources
        assert activation is not None and activation.op_type == "DequantizeLinear", node.name
        assert weight is not None and weight.op_type == "DequantizeLinear", node.name
        stored = constant(graph, weight.input[0])
        assert stored is not None and stored.data_type == TensorProto.FLOAT8E4M3FN, node.name
        stored_weights.add(weight.input[0])
        scale = numpy_helper.to_array(constant(graph, weight.input[1]))
        axis = next(a.i for a in weight.attribute if a.name == "axis")
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        assert axis == (0 if trans_b else 1), node.name  # the output-channel axis
        assert scale.shape == (stored.dims[axis],), node.name
    # each quantized Linear's weight stored once in FP8, read by each of its uses (ALBERT: every layer)
    assert len(stored_weights) == summarize(stepped.quantized_model).quantized_linears <= quantized
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        zero_point = constant(graph, node.input[2])
        assert zero_point is not None, node.name
        if zero_point.data_type == TensorProto.INT8:  # the INT8 storage of embedding tables
            assert node.input[0].endswith("_int8"), node.name
            continue
        assert zero_point.data_type == TensorProto.FLOAT8E4M3FN, node.name
        assert not numpy_helper.to_array(zero_point).astype(np.float32).any(), node.name


def test_fp8_attention_puts_qdq_before_both_attention_products_and_after_softmax(
    tiny_model: Callable[[str, str], Path], tmp_path: Path
) -> None:
    config = QuantConfig(
        calib_samples=48, batch_size=16, max_length=32, precision="fp8", quantize_attention=True
    )
    stepped = convert_step_by_step(
        tiny_model("bert", "feature-extraction"),
        "feature-extraction",
        sentences(64, seed=1),
        tmp_path,
        config,
    )
    graph = stepped.int8_graph.graph
    producer = {output: node for node in graph.node for output in node.output}

    def dequantized(name: str) -> bool:  # DQ directly, or through the key's Transpose
        node = producer.get(name)
        while node is not None and node.op_type == "Transpose":
            node = producer.get(node.input[0])
        return node is not None and node.op_type == "DequantizeLinear"

    def weight(name: str) -> bool:
        node = producer.get(name)
        return (
            node is not None
            and node.op_type == "DequantizeLinear"
            and constant(graph, node.input[0]) is not None
        )

    attention = [n for n in graph.node if n.op_type == "MatMul" and not any(weight(i) for i in n.input)]
    assert len(attention) == 4  # Q.K^T and P.V in each of the 2 layers
    assert all(dequantized(name) for node in attention for name in node.input)
    softmaxes = [n for n in graph.node if n.op_type == "Softmax"]
    consumers = {
        name: [n for n in graph.node if name in n.input] for name in (s.output[0] for s in softmaxes)
    }
    assert len(softmaxes) == 2
    assert all([c.op_type for c in nodes] == ["QuantizeLinear"] for nodes in consumers.values())
    feeds = stepped.batches[-1]
    with torch.no_grad():
        want = stepped.quantized_model.run(feeds)[0].numpy()
    got = run_plain(stepped.int8_onnx, feeds)[0]
    assert np.abs(got - want).max() <= 1e-3 * float(want.max() - want.min())


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"method": "entropy"},
            "Calibration method 'entropy' fits only INT8's uniform grid: at FP8 use one of",
        ),
        ({"weight_bits": 7}, "--weight-bits 7 is an INT8 setting"),
        ({"peg_groups": 4}, "PEG groups are an INT8 setting"),
        ({"precision": "fp4"}, "Unknown precision 'fp4': use one of int8, fp8."),
    ],
)
def test_fp8_settings_that_do_not_fit_are_refused(settings: dict, message: str) -> None:
    with pytest.raises(TrtQuantError, match=message.replace("(", r"\(").replace(".", r"\.")):
        QuantConfig(**{"precision": "fp8", **settings})


def test_smoothquant_is_on_at_int8_and_off_at_fp8_unless_asked() -> None:
    assert QuantConfig().smoothquant == 0.8
    assert QuantConfig(precision="fp8").smoothquant is None
    assert QuantConfig(precision="fp8", smoothquant=0.5).smoothquant == 0.5
    assert QuantConfig(precision="fp8").min_opset == 19 and QuantConfig().min_opset == 17


def test_fp8_mse_range_minimizes_the_e4m3_error_of_the_histogram() -> None:
    values = np.abs(np.random.default_rng(3).standard_t(3, 20000)).astype(np.float32)
    counts, edges = np.histogram(values, bins=2048, range=(0, float(values.max())))
    amax = float(mse_amax(counts, edges, precision="fp8"))

    def fp8_error(limit: float) -> float:
        scale = limit / 448.0
        grid = torch.tensor(np.minimum(values / scale, 448.0)).to(torch.float8_e4m3fn).float().numpy()
        return float(((grid * scale - values) ** 2).sum())

    assert 0 < amax <= float(values.max())
    assert fp8_error(amax) <= 1.02 * min(fp8_error(float(values.max()) * f) for f in np.linspace(0.07, 1, 60))
    assert amax != pytest.approx(float(mse_amax(counts, edges)), rel=1e-3)  # not INT8's answer


def test_fp8_engines_need_compute_capability_8_9() -> None:
    from trt_quant.engine.build import check_fp8_capability

    for capability in ((8, 9), (9, 0), (10, 0), (12, 0)):
        check_fp8_capability(capability)
    with pytest.raises(
        GpuUnavailableError, match=r"compute capability 8\.9 or newer .* this one is 8\.6: convert"
    ):
        check_fp8_capability((8, 6))


@pytest.fixture(scope="module")
def fp8_artifact(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Callable[[str, str], Path], calib_file: Path
) -> Path:
    from trt_quant.convert import convert

    output = tmp_path_factory.mktemp("fp8-artifact") / "tiny-bert-fp8"
    convert(tiny_model("bert", "text-classification"), "text-classification", calib_file, output, CONFIG)
    return output


def test_fp8_artifact_holds_an_int8_size_fp8_graph_that_passes_the_check(
    fp8_artifact: Path, tiny_artifact: Path
) -> None:
    from trt_quant.onnx.check import check_onnx

    manifest = json.loads((fp8_artifact / "manifest.json").read_text())
    quantization, sizes = manifest["quantization"], manifest["sizes"]
    assert quantization["precision"] == "fp8" and quantization["opset"] == 19
    assert quantization["smoothquant_alpha"] is None
    assert quantization["gptq"] is True  # FP8's default weight rounding, recorded
    assert json.loads((tiny_artifact / "manifest.json").read_text())["quantization"]["gptq"] is False
    assert quantization["quantized_weight_initializers"] == quantization["quantized_linears"] == 14
    assert not (fp8_artifact / "model_int8.onnx").exists()
    assert sizes["quantized_onnx_bytes"] == (fp8_artifact / "model_fp8.onnx").stat().st_size
    int8_sizes = json.loads((tiny_artifact / "manifest.json").read_text())["sizes"]  # same model, INT8
    assert sizes["quantized_onnx_bytes"] <= 1.02 * int8_sizes["quantized_onnx_bytes"]
    assert [f for f in check_onnx(fp8_artifact / "model_fp8.onnx") if f.severity == "error"] == []
    assert manifest["accuracy"]["mean_cosine"] > 0.99


def test_fp8_artifact_runs_as_fp8_and_refuses_other_precisions(fp8_artifact: Path) -> None:
    from trt_quant.bench.suite import run_benchmark
    from trt_quant.evaluate.report import evaluation_markdown
    from trt_quant.runtime import load_runtime

    runtime = load_runtime(fp8_artifact, backend="onnxruntime")
    assert runtime.precision == "fp8"  # type: ignore[attr-defined]
    assert load_runtime(fp8_artifact, precision="fp8").precision == "fp8"  # type: ignore[attr-defined]
    with pytest.raises(TrtQuantError, match="This artifact holds a FP8 graph, not INT8: ask for fp8"):
        load_runtime(fp8_artifact, precision="int8")
    with pytest.raises(TrtQuantError, match="FP8 speed is not a result on CPU"):
        run_benchmark(fp8_artifact, batches=(1,), sequences=(8,), iterations=1, warmup=0)
    assert not (fp8_artifact / "bench").exists()
    from trt_quant.evaluate.report import evaluate_artifact

    data = fp8_artifact.parent / "eval.txt"
    data.write_text("\n".join(sentences(20, seed=5)) + "\n")
    report = evaluate_artifact(fp8_artifact, data, write=False)
    assert report.precision == "fp8"
    text = evaluation_markdown(report)
    assert "FP8 on onnxruntime" in text and "## FP8 vs float outputs" in text and "INT8" not in text


def test_gpu_bench_finds_fp8_layers_in_the_tensorrt_layer_report() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_gpu", Path(__file__).parents[1] / "scripts" / "bench_gpu.py"
    )
    assert spec is not None and spec.loader is not None
    bench_gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_gpu)

    def layer(name: str, datatype: str) -> dict:
        return {
            "Name": name,
            "Inputs": [{"Format/Datatype": datatype}],
            "Outputs": [{"Format/Datatype": "Half"}],
        }

    fused = {"Layers": [layer("qkv gemm", "Row major linear FP8 format"), layer("layernorm", "Half")]}
    assert bench_gpu.fp8_layers(json.dumps(fused)) == ["qkv gemm"]
    unfused = {"Layers": [layer("gemm", "Row major linear FP16 format"), layer("q", "Float")]}
    assert bench_gpu.fp8_layers(json.dumps(unfused)) == []
    assert bench_gpu.fp8_layers(json.dumps({"Layers": ["gemm (names only)"]})) == []
    assert bench_gpu.fp8_layers("not json") == []


def test_tensorrt_ready_graph_keeps_fp8_qdq_with_half_scales(fp8_artifact: Path, tmp_path: Path) -> None:
    """model_trt.onnx of an FP8 artifact (what the engine build parses): every FP8 Q/DQ has FP16 scales,
    the embedding tables are FP16 constants, the check passes, and it computes what the FP8 graph does
    within FP16 rounding."""
    from trt_quant.onnx.check import check_onnx
    from trt_quant.onnx.tensorrt_onnx import write_tensorrt_onnx

    artifact = Path(shutil.copytree(fp8_artifact, tmp_path / "fp8"))
    record = write_tensorrt_onnx(artifact)
    assert record.source == "model_fp8.onnx"
    model = onnx.load(str(artifact / "model_fp8.onnx"))
    half = onnx.load(str(artifact / "model_trt.onnx"))
    constants = {tensor.name: tensor for tensor in half.graph.initializer}
    qdq = [node for node in half.graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq and all(constants[node.input[2]].data_type == TensorProto.FLOAT8E4M3FN for node in qdq)
    assert len(qdq) == sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node) - 3
    assert all(constants[node.input[1]].data_type == TensorProto.FLOAT16 for node in qdq)
    assert [f for f in check_onnx(artifact / "model_trt.onnx") if f.severity == "error"] == []
    feeds = {
        "input_ids": torch.randint(5, 150, (4, 16)),
        "attention_mask": torch.ones(4, 16, dtype=torch.int64),
        "token_type_ids": torch.zeros(4, 16, dtype=torch.int64),
    }
    (want,), (got,) = (
        run_plain(artifact / "model_fp8.onnx", feeds),
        run_plain(artifact / "model_trt.onnx", feeds),
    )
    assert got.dtype == np.float32
    assert np.abs(got - want).max() <= 0.05 * float(want.max() - want.min())  # FP16 LayerNorm, tables, GEMMs


def test_triton_refuses_an_fp8_artifact_on_a_cpu_backend(fp8_artifact: Path, tmp_path: Path) -> None:
    from trt_quant.triton import write_triton_repository

    for backend in ("onnxruntime", "python"):
        with pytest.raises(
            TrtQuantError, match=r"holds an FP8 graph, which Triton serves with TensorRT only"
        ):
            write_triton_repository(fp8_artifact, tmp_path / backend, backend=backend)
        assert not (tmp_path / backend).exists()


def test_cli_refuses_an_fp8_setting_that_does_not_fit_without_writing(
    tiny_model: Callable[[str, str], Path],
    calib_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import sys

    from trt_quant.cli.main import main

    output = tmp_path / "out"
    arguments = ["convert", str(tiny_model("bert", "text-classification")), "--task", "text-classification"]
    arguments += [
        "--calib",
        str(calib_file),
        "--output",
        str(output),
        "--precision",
        "fp8",
        "--method",
        "entropy",
    ]
    monkeypatch.setattr(sys, "argv", ["trt-quant", *arguments])
    with pytest.raises(SystemExit) as exited:
        main()
    printed = capsys.readouterr()
    assert exited.value.code == 2
    message = (
        "Calibration method 'entropy' fits only INT8's uniform grid: at FP8 use one of max, percentile, mse."
    )
    assert message in (printed.out + printed.err).replace("\n", " ") and "Traceback" not in printed.err
    assert not output.exists()


def test_qat_at_fp8_trains_and_exports_an_fp8_artifact(
    tiny_model: Callable[[str, str], Path], tmp_path: Path
) -> None:
    from trt_quant.onnx.check import check_onnx
    from trt_quant.qat import QatConfig, qat

    train = tmp_path / "train.csv"
    rows = [f"{text},{index % 3}" for index, text in enumerate(sentences(48, seed=7))]
    train.write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    evaluation = tmp_path / "eval.txt"
    evaluation.write_text("\n".join(sentences(16, seed=8)) + "\n", encoding="utf-8")
    report = qat(
        tiny_model("bert", "text-classification"),
        "text-classification",
        train,
        tmp_path / "qat-fp8",
        text_column="text",
        quant_config=QuantConfig(calib_samples=32, max_length=32, precision="fp8"),
        qat_config=QatConfig(epochs=1, learning_rate=1e-3, max_length=32),
        eval_data=evaluation,
    )
    quantization = report.manifest.quantization
    assert (
        quantization.precision == "fp8" and quantization.qat is not None and quantization.qat["epochs"] == 1
    )
    assert quantization.qat["selection"]["metric"] == "mean cosine vs float"  # eval file without labels
    assert quantization.quantized_weight_initializers == quantization.quantized_linears
    assert "export fp8" in report.timings and (report.output / "model_fp8.onnx").is_file()
    assert [f for f in check_onnx(report.output / "model_fp8.onnx") if f.severity == "error"] == []
    assert report.manifest.accuracy.examples == 16
