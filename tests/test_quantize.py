"""Quantizer placement and calibration: each method gives its own, sensible range on the same data."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from tiny_models import sentences

from trt_quant.cli.reports import convert_summary
from trt_quant.config import QuantConfig
from trt_quant.data import TextData, tokenize_batches
from trt_quant.errors import TrtQuantError
from trt_quant.models import load_model
from trt_quant.quantize.model import quantize
from trt_quant.quantize.quantizers import (
    calibrate,
    enabled_input_quantizers,
    insert_quantizers,
    mse_amax,
    quantized_linears,
    summarize,
)

PROBE = "model.encoder.layer.1.intermediate.dense.input_quantizer"


@pytest.fixture(scope="module")
def prepared(tiny_model):
    loaded = load_model(tiny_model("bert", "feature-extraction"), "feature-extraction")
    batches = tokenize_batches(loaded.tokenizer, TextData(sentences(64, seed=5)), loaded.input_names, 16, 32)
    return loaded, batches


def observed_abs_max(model, batches, module_name: str) -> float:
    """Largest |input| of one Linear over the batches, measured with a hook on the float model."""
    module = dict(model.named_modules())[module_name]
    seen: list[float] = []
    hook = module.register_forward_pre_hook(lambda _, inputs: seen.append(float(inputs[0].abs().max())))
    with torch.no_grad():
        for batch in batches:
            model.run(batch)
    hook.remove()
    return max(seen)


def calibrated_ranges(prepared, method: str) -> dict[str, float]:
    loaded, batches = prepared
    config = QuantConfig(method=method, smoothquant=None, int8_embeddings=False)
    model = insert_quantizers(copy.deepcopy(loaded.model), config)
    return calibrate(model, batches, config)


def test_each_method_gives_a_different_sensible_range(prepared) -> None:
    loaded, batches = prepared
    true_max = observed_abs_max(loaded.model, batches, PROBE.rsplit(".", 1)[0])
    ranges = {
        method: calibrated_ranges(prepared, method) for method in ("max", "percentile", "entropy", "mse")
    }
    assert ranges["max"][PROBE] == pytest.approx(
        true_max, rel=1e-3
    )  # weights are quantized while calibrating
    for method in ("percentile", "entropy", "mse"):
        assert 0.0 < ranges[method][PROBE] <= true_max * 1.001, method
    probe_values = [ranges[method][PROBE] for method in ranges]
    assert len({round(value, 6) for value in probe_values}) == 4, probe_values
    assert set(ranges["max"]) == set(ranges["mse"])  # every activation quantizer calibrated by every method


def test_mse_range_minimizes_the_quantization_error_of_the_samples() -> None:
    """Model Optimizer 0.47's own mse search always returned 1/16 of the maximum (a wrong argument);
    ours must find the range whose INT8 rounding-plus-clipping error over the actual samples is least."""
    rng = np.random.default_rng(0)
    values = np.abs(np.concatenate([rng.standard_normal(200_000), [40.0, -38.0, 35.0]]))
    histogram, edges = np.histogram(values, bins=2048)
    amax = mse_amax(histogram, edges)
    assert amax is not None

    def error(limit: float) -> float:
        step = limit / 127
        return float(((np.clip(np.round(values / step), 0, 127) * step - values) ** 2).sum())

    centers = (edges[1:] + edges[:-1]) / 2
    best = min(error(limit) for limit in centers[128::8])
    assert error(float(amax)) <= 1.01 * best
    assert float(amax) > 2 * centers[128]  # not the smallest candidate, 1/16 of the maximum
    assert mse_amax(None, None) is None


def test_quantize_is_deterministic_and_gathers_statistics_without_dropout(prepared) -> None:
    """Model Optimizer puts every module in the wrapper's training mode; SmoothQuant statistics were once
    gathered with dropout active, so two conversions of one model gave different ranges."""
    loaded, batches = prepared
    assert loaded.model.model.config.hidden_dropout_prob > 0
    runs = []
    for _ in range(2):
        model = copy.deepcopy(loaded.model).train()
        quantized = quantize(model, batches, QuantConfig())
        assert not any(module.training for module in quantized.modules())
        runs.append({name: q.amax.clone() for name, q in enabled_input_quantizers(quantized).items()})
    assert runs[0].keys() == runs[1].keys()
    for name, amax in runs[0].items():
        assert torch.equal(amax, runs[1][name]), name


def test_percentile_value_moves_the_range(prepared) -> None:
    loaded, batches = prepared
    ranges = []
    for percentile in (99.0, 99.99):
        config = QuantConfig(method="percentile", percentile=percentile, smoothquant=None)
        model = insert_quantizers(copy.deepcopy(loaded.model), config)
        ranges.append(calibrate(model, batches, config)[PROBE])
    assert ranges[0] < ranges[1]


def test_default_placement_linears_only_and_residual_option(prepared) -> None:
    loaded, _ = prepared
    default = insert_quantizers(copy.deepcopy(loaded.model), QuantConfig())
    names = set(enabled_input_quantizers(default))
    assert names == {f"{name}.input_quantizer" for name in quantized_linears(default)}
    assert not any("LayerNorm" in name or "embeddings" in name for name in names)
    residual = insert_quantizers(copy.deepcopy(loaded.model), QuantConfig(quantize_residual=True))
    assert any(name.endswith("LayerNorm.input_quantizer") for name in enabled_input_quantizers(residual))


def test_keep_float_patterns_leave_layers_float(prepared) -> None:
    loaded, _ = prepared
    model = insert_quantizers(copy.deepcopy(loaded.model), QuantConfig(keep_float=("*.output.dense",)))
    summary = summarize(model)
    assert summary.float_linears == 4  # attention.output.dense and output.dense in each of 2 layers
    assert all(name.endswith("output.dense") for name in summary.float_linear_names)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"method": "minmax"}, "Unknown calibration method"),
        ({"percentile": 0}, "Percentile 0 is out of range"),
        ({"smoothquant": 1.5}, "SmoothQuant alpha 1.5"),
        ({"batch_size": 0}, "batch size must be at least 1"),
        ({"max_length": 1}, "maximum length must be at least 2"),
    ],
)
def test_config_validation(settings: dict, message: str) -> None:
    with pytest.raises(TrtQuantError, match=message):
        QuantConfig(**settings)


def test_artifact_directory_is_replaced_only_when_complete(tmp_path: Path) -> None:
    from trt_quant.artifacts import staged_directory

    target = tmp_path / "artifact"
    with staged_directory(target) as stage:
        (stage / "a.txt").write_text("first", encoding="utf-8")
    with pytest.raises(RuntimeError), staged_directory(target, overwrite=True) as stage:
        (stage / "a.txt").write_text("half-written", encoding="utf-8")
        raise RuntimeError("interrupted")
    assert (target / "a.txt").read_text(encoding="utf-8") == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]


def test_weight_bits_7_keeps_int8_weights_within_64(tiny_model, calib_file, tmp_path) -> None:
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from trt_quant.convert import convert

    convert(
        tiny_model("bert", "feature-extraction"),
        "feature-extraction",
        calib_file,
        tmp_path / "a",
        QuantConfig(calib_samples=32, max_length=32, weight_bits=7),
    )
    graph = onnx.load(str(tmp_path / "a" / "model_int8.onnx")).graph
    weights = [
        numpy_helper.to_array(t)
        for t in graph.initializer
        if t.data_type == onnx.TensorProto.INT8 and t.name.endswith(tuple(f"_int8_{i}" for i in range(99)))
    ]
    assert weights and max(int(np.abs(w).max()) for w in weights) <= 64


def test_accuracy_budget_keeps_sensitive_layers_float(tiny_model, calib_file, tmp_path) -> None:
    from trt_quant.convert import convert

    report = convert(
        tiny_model("bert", "feature-extraction"),
        "feature-extraction",
        calib_file,
        tmp_path / "a",
        QuantConfig(
            calib_samples=32,
            max_length=32,
            method="percentile",
            percentile=60.0,
            smoothquant=None,
            int8_embeddings=False,
        ),  # a poor calibration to repair
        accuracy_budget="cosine>=0.99999",
    )
    mixed = report.manifest.quantization.mixed_precision
    assert mixed.score >= 0.99999 and mixed.float_layers
    assert 0.0 <= mixed.int8_flop_share < 1.0
    assert report.manifest.quantization.quantized_linears == 12 - len(mixed.float_layers)
    console = Console(width=300, record=True)
    console.print(convert_summary(report))
    expected = (
        f"cosine>=0.99999: mean cosine vs float 1.0000 float -> {mixed.score:.4f}; "
        f"{len(mixed.float_layers)} layers kept float, {mixed.int8_flop_share:.0%} of Linear FLOPs in INT8"
    )
    assert expected in console.export_text()


def test_budget_the_quantized_model_already_meets_ranks_no_layer(
    tiny_model, calib_file, tmp_path, monkeypatch
) -> None:
    """A budget met with every Linear in INT8 costs one score: the per-layer ranking never runs."""
    import trt_quant.convert as convert_module

    def no_ranking(*args, **kwargs):
        raise AssertionError("layer_sensitivity ran although the budget already held")

    monkeypatch.setattr(convert_module, "layer_sensitivity", no_ranking)
    report = convert_module.convert(
        tiny_model("bert", "feature-extraction"),
        "feature-extraction",
        calib_file,
        tmp_path / "a",
        QuantConfig(calib_samples=32, max_length=32),
        accuracy_budget="cosine>=0.9",
    )
    mixed = report.manifest.quantization.mixed_precision
    assert mixed.float_layers == [] and mixed.int8_flop_share == 1.0
    assert 0.9 <= mixed.score == pytest.approx(report.manifest.accuracy.mean_cosine, abs=0.02)
    assert report.manifest.quantization.quantized_linears == 12


def test_budget_that_cannot_be_met_is_an_error(tiny_model, calib_file, tmp_path) -> None:
    from trt_quant.convert import convert

    with pytest.raises(TrtQuantError, match=r"cannot be met even with every layer in float"):
        convert(
            tiny_model("bert", "feature-extraction"),
            "feature-extraction",
            calib_file,
            tmp_path / "a",
            QuantConfig(calib_samples=32, max_length=32),
            accuracy_budget="cosine>=1.0",
        )
    assert not (tmp_path / "a").exists()
    with pytest.raises(TrtQuantError, match=r"is not understood"):
        convert(
            tiny_model("bert", "feature-extraction"),
            "feature-extraction",
            calib_file,
            tmp_path / "a",
            accuracy_budget="cos>0.9",
        )


def test_drop_budget_on_labels_keeps_the_classifier_within_the_drop(tiny_model, tmp_path) -> None:
    import torch as torch_

    from trt_quant.convert import convert
    from trt_quant.models import load_model

    model_dir = tiny_model("bert", "text-classification")
    texts = sentences(96, seed=9)
    loaded = load_model(model_dir, "text-classification")
    batches = tokenize_batches(loaded.tokenizer, TextData(texts[64:]), loaded.input_names, 16, 32)
    with torch_.no_grad():
        gold = torch_.cat([loaded.model.run(b)[0] for b in batches]).argmax(-1).tolist()  # float is 100 %
    data = tmp_path / "data.jsonl"
    data.write_text(
        "".join(f'{{"text": "{t}", "label": {g}}}\n' for t, g in zip(texts[64:], gold, strict=True))
    )
    calib = tmp_path / "calib.txt"
    calib.write_text("\n".join(texts[:64]) + "\n")
    report = convert(
        model_dir,
        "text-classification",
        calib,
        tmp_path / "a",
        QuantConfig(
            calib_samples=64,
            max_length=32,
            method="percentile",
            percentile=50.0,
            smoothquant=None,
            int8_embeddings=False,
        ),
        eval_data=data,
        label_column="label",
        accuracy_budget="drop<=0",
    )
    mixed = report.manifest.quantization.mixed_precision
    assert mixed.budget == "drop<=0.0" and mixed.float_score == 100.0
    assert mixed.score == 100.0


def test_drop_budget_needs_labels_and_a_task_metric(tiny_model, calib_file, tmp_path) -> None:
    from trt_quant.convert import convert

    with pytest.raises(TrtQuantError, match=r"measured in task-metric points: pass --label-column"):
        convert(
            tiny_model("bert", "text-classification"),
            "text-classification",
            calib_file,
            tmp_path / "a",
            accuracy_budget="drop<=0.5",
        )
    with pytest.raises(
        TrtQuantError, match=r"A feature-extraction model has no task metric for a drop budget"
    ):
        convert(
            tiny_model("bert", "feature-extraction"),
            "feature-extraction",
            calib_file,
            tmp_path / "a",
            accuracy_budget="drop<=0.5",
            label_column="label",
        )
