"""``trt-quant analyze``: rank a model's Linear layers by how much quantizing each one alone costs."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from trt_quant.config import QuantConfig
from trt_quant.errors import TrtQuantError
from trt_quant.pipeline import calibration_batches, held_out_score, load, quantize_with_recipe, read_examples
from trt_quant.quantize.sensitivity import (
    LayerSensitivity,
    int8_flop_share,
    layer_sensitivity,
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

    Calibration and evaluation examples are split as every command splits them
    (:func:`~trt_quant.pipeline.read_examples`), and the family's recipe keeps the same layers float.
    Writes ``sensitivity.json`` and ``sensitivity.png`` to ``output``.
    """
    config = config or QuantConfig()
    loaded = load(model, task, config.max_length)
    examples = read_examples(calib, config, eval_data, text_column, pair_column)
    if not examples.evaluation:
        raise TrtQuantError(
            f"No evaluation examples are left after {config.calib_samples} calibration samples: pass --eval-data "
            "or a smaller --calib-samples."
        )
    scoring = held_out_score(loaded, examples.evaluation, config)
    quantized = quantize_with_recipe(
        loaded, calibration_batches(loaded, examples.calibration, config), config
    )
    score = scoring.score
    all_int8 = score(quantized)
    ranking = layer_sensitivity(quantized, score)
    directory = Path(output)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "metric": scoring.metric,
        "precision": config.precision,
        "all_int8_score": all_int8,
        "examples": len(examples.evaluation),
        "layers": [asdict(item) for item in ranking],
    }
    (directory / "sensitivity.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    png = plot_sensitivity(ranking, directory / "sensitivity.png", "mean cosine")
    return Analysis(
        ranking,
        all_int8,
        int8_flop_share(quantized),
        scoring.metric,
        len(examples.evaluation),
        [directory / "sensitivity.json", png],
    )
