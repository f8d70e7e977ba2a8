"""trt-quant analyze: the same calibration/held-out split and recipe as convert, a ranking that is written."""

from __future__ import annotations

import json

import pytest
from tiny_models import sentences

from trt_quant.analyze import analyze
from trt_quant.config import QuantConfig
from trt_quant.errors import TrtQuantError

CONFIG = QuantConfig(calib_samples=32, batch_size=16, max_length=32)


def test_held_out_rows_are_the_calibration_files_rows_after_the_samples(
    tiny_model, calib_file, tmp_path
) -> None:
    result = analyze(
        tiny_model("bert", "text-classification"), "text-classification", calib_file, tmp_path, CONFIG
    )
    written = json.loads((tmp_path / "sensitivity.json").read_text(encoding="utf-8"))
    assert result.examples == written["examples"] == 96 - 32
    assert [layer["layer"] for layer in written["layers"]] == [layer.layer for layer in result.ranking]
    assert len(result.ranking) == 2 * 6 + 2  # 2 layers x 6 Linears, the pooler and the classifier
    assert (tmp_path / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_evaluation_file_is_capped_like_converts(tiny_model, calib_file, tmp_path) -> None:
    eval_file = tmp_path / "eval.txt"
    eval_file.write_text("\n".join(sentences(300)) + "\n", encoding="utf-8")
    result = analyze(
        tiny_model("bert", "text-classification"),
        "text-classification",
        calib_file,
        tmp_path / "out",
        CONFIG,
        eval_data=eval_file,
    )
    assert result.examples == 256


def test_no_rows_left_for_evaluation_is_an_error(tiny_model, calib_file, tmp_path) -> None:
    with pytest.raises(TrtQuantError, match=r"No evaluation examples are left after 96 calibration samples"):
        analyze(
            tiny_model("bert", "text-classification"),
            "text-classification",
            calib_file,
            tmp_path / "out",
            QuantConfig(calib_samples=96, max_length=32),
        )
    assert not (tmp_path / "out").exists()
