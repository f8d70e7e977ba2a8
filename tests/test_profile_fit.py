"""Fitting inputs to an engine's optimization profiles without a GPU: profile choice, padding up to a
profile's minimum length and trimming, checked against ONNX Runtime runs of the unpadded input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from trt_quant.artifacts import load_manifest
from trt_quant.cli.main import app
from trt_quant.config import QuantConfig
from trt_quant.convert import convert
from trt_quant.engine import build as engine
from trt_quant.engine.build import Profile, default_profiles, parse_profiles
from trt_quant.errors import InputError
from trt_quant.runtime import OrtRuntime, load_runtime
from trt_quant.runtime.shapes import ShapePlan, pad_feeds, plan_shape, run_fitted, trim_outputs

SHORT = ["a model."]  # 5 tokens with [CLS] and [SEP]
OLD_CLI_DEFAULT = parse_profiles("1,8,32", "16,128,512")


def test_fitting_shapes_use_the_tightest_profile() -> None:
    buckets = [Profile((1, 8, 32), (1, 64, 128)), Profile((1, 8, 32), (129, 256, 512))]
    assert plan_shape(buckets, (4, 100)) == ShapePlan(0, 100, 100)
    assert plan_shape(buckets, (32, 129)) == ShapePlan(1, 129, 129)
    overlapping = [Profile((1, 8, 32), (1, 128, 512)), Profile((1, 8, 32), (1, 64, 128))]
    assert plan_shape(overlapping, (2, 64)) == ShapePlan(1, 64, 64)
    assert plan_shape(overlapping, (2, 300)) == ShapePlan(0, 300, 300)


def test_the_current_profile_is_kept_when_it_fits() -> None:
    overlapping = [Profile((1, 8, 32), (1, 128, 512)), Profile((1, 8, 32), (1, 64, 128))]
    assert plan_shape(overlapping, (2, 64), current=0) == ShapePlan(0, 64, 64)
    assert plan_shape(overlapping, (2, 300), current=1) == ShapePlan(0, 300, 300)


def test_short_inputs_are_padded_up_to_a_profile_minimum() -> None:
    assert plan_shape(OLD_CLI_DEFAULT, (1, 5)) == ShapePlan(0, 16, 5)
    gap = parse_profiles("1,8,32", ["8,16,32", "64,96,128"])
    assert plan_shape(gap, (3, 2)) == ShapePlan(0, 8, 2)
    assert plan_shape(gap, (3, 40)) == ShapePlan(1, 64, 40)  # between the profiles: up to the next one
    assert plan_shape(gap, (3, 40)).padded and not plan_shape(gap, (3, 8)).padded


def test_shapes_no_profile_can_take_name_every_range() -> None:
    profiles = [Profile((1, 8, 32), (1, 64, 128)), Profile((1, 4, 8), (129, 256, 512))]
    with pytest.raises(InputError) as caught:
        plan_shape(profiles, (16, 300))
    message = str(caught.value)
    assert "batch 16, sequence 300" in message and "--batch/--seq" in message
    assert "profile 0: batch 1-32, sequence 1-128; profile 1: batch 1-8, sequence 129-512" in message
    with pytest.raises(InputError, match="batch 2, sequence 600"):
        plan_shape(profiles, (2, 600))
    with pytest.raises(InputError, match="batch 9, sequence 5"):  # padding never helps a batch outside
        plan_shape([Profile((1, 4, 8), (16, 32, 64))], (9, 5))


def test_pad_feeds_masks_the_padding() -> None:
    feeds = {
        "input_ids": np.array([[101, 7, 102], [101, 8, 9]]),
        "attention_mask": np.ones((2, 3), np.int64),
        "token_type_ids": np.zeros((2, 3), np.int64),
    }
    padded = pad_feeds(feeds, 5, pad_token_id=3)
    np.testing.assert_array_equal(padded["input_ids"], [[101, 7, 102, 3, 3], [101, 8, 9, 3, 3]])
    np.testing.assert_array_equal(padded["attention_mask"], [[1, 1, 1, 0, 0]] * 2)
    np.testing.assert_array_equal(padded["token_type_ids"], np.zeros((2, 5)))
    assert {array.dtype for array in padded.values()} == {np.dtype(np.int64)}
    with pytest.raises(InputError, match="no attention mask to pad with: rebuild the engine with --seq"):
        pad_feeds({"input_ids": feeds["input_ids"]}, 5, pad_token_id=0)


def test_trim_outputs_cuts_only_per_token_outputs() -> None:
    outputs = {"start_logits": np.arange(10.0).reshape(2, 5), "logits": np.ones((2, 3))}
    trimmed = trim_outputs(outputs, {"start_logits": True, "logits": False}, 3)
    np.testing.assert_array_equal(trimmed["start_logits"], [[0, 1, 2], [5, 6, 7]])
    assert trimmed["logits"].shape == (2, 3)


@pytest.fixture(scope="module")
def qa_artifact(
    tiny_model: Callable[[str, str], Path], calib_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A converted tiny BERT question-answering artifact (per-token start and end logits)."""
    output = tmp_path_factory.mktemp("qa") / "tiny-qa"
    config = QuantConfig(calib_samples=32, batch_size=16, max_length=32)
    convert(tiny_model("bert", "question-answering"), "question-answering", calib_file, output, config)
    return output


def fitted_run(runtime: OrtRuntime, feeds: dict[str, np.ndarray], profiles: list[Profile]) -> Any:
    """``run_fitted`` with ONNX Runtime as the engine; records the shapes and profiles it was run with."""
    seen: list[tuple[tuple[int, ...], int]] = []

    def execute(padded: dict[str, np.ndarray], profile: int) -> dict[str, np.ndarray]:
        seen.append((padded["input_ids"].shape, profile))
        return runtime.run(padded)

    pad_id = int(runtime.tokenizer.pad_token_id)
    outputs, plan = run_fitted(execute, feeds, profiles, runtime.manifest.per_token, lambda: pad_id)
    return outputs, plan, seen


@pytest.mark.parametrize("task", ["text-classification", "question-answering"])
def test_padded_run_gives_the_unpadded_outputs(task: str, tiny_artifact: Path, qa_artifact: Path) -> None:
    directory = tiny_artifact if task == "text-classification" else qa_artifact
    runtime = load_runtime(directory, backend="onnxruntime")
    assert isinstance(runtime, OrtRuntime)
    profiles = parse_profiles("1,4,8", ["16,24,32"])
    for texts in (SHORT, [SHORT[0], "the new model is fast and the old one is slow."]):
        feeds = runtime.tokenize(texts)
        length = feeds["input_ids"].shape[1]
        assert length < 16
        outputs, plan, seen = fitted_run(runtime, feeds, profiles)
        assert plan == ShapePlan(0, 16, length) and seen == [((len(texts), 16), 0)]
        expected = runtime.run(feeds)
        assert sorted(outputs) == sorted(expected)
        for name, value in expected.items():
            assert outputs[name].shape == value.shape, name
            np.testing.assert_allclose(outputs[name], value, rtol=0, atol=1e-5, err_msg=name)


def test_unpadded_shapes_run_as_they_are(tiny_artifact: Path) -> None:
    runtime = load_runtime(tiny_artifact, backend="onnxruntime")
    assert isinstance(runtime, OrtRuntime)
    feeds = runtime.tokenize(SHORT)

    def no_tokenizer() -> int:
        raise AssertionError("the pad id is needed only for padding")

    profiles = default_profiles(32)
    outputs, plan = run_fitted(
        lambda fitted, profile: runtime.run(fitted), feeds, profiles, runtime.manifest.per_token, no_tokenizer
    )
    assert plan == ShapePlan(0, 5, 5)
    np.testing.assert_array_equal(outputs["logits"], runtime.run(feeds)["logits"])


def test_cli_and_api_build_the_same_default_profiles(
    tiny_artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``trt-quant build`` without --seq asks build_engine for ``default_profiles``, starting at 1 token."""
    configs: list[Any] = []

    def record(artifact: Path, config: Any, verify: bool) -> dict[str, Any]:
        configs.append(config)
        return {"profiles": [profile.to_dict() for profile in config.profiles]}

    monkeypatch.setattr(engine, "build_engine", record)
    CliRunner().invoke(app, ["build", str(tiny_artifact)])
    CliRunner().invoke(app, ["build", str(tiny_artifact), "--batch", "1,2,4"])
    longest = load_manifest(tiny_artifact).max_length
    assert [config.profiles for config in configs] == [
        tuple(default_profiles(longest)),
        tuple(default_profiles(longest, batch="1,2,4")),
    ]
    assert default_profiles(64) == [Profile((1, 8, 32), (1, 64, 64))]
    assert engine.BuildConfig().resolved_profiles(64) == default_profiles(64)
