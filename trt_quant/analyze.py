"""``trt-quant analyze``: rank a model's Linear layers by how much quantizing each one alone costs."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from trt_quant.config import QuantConfig
from trt_quant.convert import check_max_length, model_texts, split_calibration
from trt_quant.data import read_texts, tokenize_batches
from trt_quant.errors import TrtQuantError
from trt_quant.models import load_model
from trt_quant.quantize.model import quantize
from trt_quant.quantize.sensitivity import (
    LayerSensitivity,
    cosine_score,
    int8_flop_share,
    layer_sensitivity,
    outputs_of,
    plot_sensitivity,
)


@dataclass
class Analysis:
    """Sensitivity ranking with the all-INT8 score, and the files written."""

    ranking: list[LayerSensitivity]
    all_int8_score: float
    int8_flop_share: float
    metric: str
    examples: int
    """Held-out examples the score was measured on."""
    files: list[Path]


def analyze(
    model: str | Path,
    task: str,
    calib: str | Path,
    output: str | Path,
    config: QuantConfig | None = None,
    eval_data: str | Path | None = None,
    text_column: str | None = None,
    pair_column: str | None = None,
) -> Analysis:
    """Calibrate ``model``, then measure the output cosine against float with one Linear quantized at a time.

    Calibration and evaluation examples are split as :func:`~trt_quant.convert.convert` splits them (the
    first ``config.calib_samples`` rows; ``eval_data`` or the rows after them, at most 256), and the
    family's recipe keeps the same layers float. Writes ``sensitivity.json`` and ``sensitivity.png`` to ``output``.
    """
    config = config or QuantConfig()
    loaded = load_model(model, task)
    check_max_length(loaded, config.max_length)
    data = read_texts(calib, text_column, pair_column)
    held_out = read_texts(eval_data, text_column, pair_column) if eval_data is not None else None
    calibration, evaluation, _ = split_calibration(data, config.calib_samples, held_out)
    if not evaluation:
        raise TrtQuantError(
            f"No evaluation examples are left after {config.calib_samples} calibration samples: pass --eval-data "
            "or a smaller --calib-samples."
        )
    tokenize = lambda texts: tokenize_batches(  # noqa: E731
        loaded.tokenizer, model_texts(texts, task), loaded.input_names, config.batch_size, config.max_length
    )
    eval_batches = tokenize(evaluation)
    reference = outputs_of(loaded.model, eval_batches)
    quantized = quantize(
        loaded.model,
        tokenize(calibration),
        config,
        extra_float=loaded.recipe.keep_float,
        family=loaded.recipe.family,
    )
    score = cosine_score(reference, eval_batches)
    all_int8 = score(quantized)
    ranking = layer_sensitivity(quantized, score)
    directory = Path(output)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "metric": "mean cosine vs float",
        "precision": config.precision,
        "all_int8_score": all_int8,
        "examples": len(evaluation),
        "layers": [asdict(item) for item in ranking],
    }
    (directory / "sensitivity.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    png = plot_sensitivity(ranking, directory / "sensitivity.png", "mean cosine")
    return Analysis(
        ranking,
        all_int8,
        int8_flop_share(quantized),
        "mean cosine vs float",
        len(evaluation),
        [directory / "sensitivity.json", png],
    )
