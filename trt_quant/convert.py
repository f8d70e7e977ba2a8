"""``trt-quant convert``: the pipeline's steps (:mod:`trt_quant.pipeline`) composed into load -> export
float -> quantize + calibrate -> [accuracy budget] -> export INT8 -> check -> measure -> artifact."""

from __future__ import annotations

from pathlib import Path

from trt_quant.artifacts import (
    MixedPrecisionRecord,
    check_name,
    check_output_dir,
    staged_directory,
    write_manifest,
)
from trt_quant.config import ExportConfig, QuantConfig
from trt_quant.errors import TrtQuantError
from trt_quant.models import LoadedModel
from trt_quant.pipeline import (
    ArtifactSource,
    ConvertReport,
    Examples,
    HeldOutScore,
    StepTimer,
    calibration_batches,
    export_float,
    held_out_score,
    load,
    model_texts,
    quantize_with_recipe,
    read_examples,
    write_artifact,
)
from trt_quant.quantize.sensitivity import Budget, layer_sensitivity, meet_budget, parse_budget
from trt_quant.tasks.registry import LABELLED_TASKS, PAIRED_TASKS, get_task


def check_budget(budget: Budget | None, task: str, label_column: str | None) -> None:
    """A drop budget needs labels and a task with a labelled metric (every task but feature-extraction)."""
    if budget is None or budget.kind == "cosine":
        return
    if label_column is None:
        raise TrtQuantError(f"The budget {budget} is measured in task-metric points: pass --label-column.")
    if get_task(task).name not in LABELLED_TASKS:
        raise TrtQuantError(
            f'A {task} model has no task metric for a drop budget: use a cosine budget such as "cosine>=0.995".'
        )


def budget_score(
    loaded: LoadedModel, budget: Budget, examples: Examples, config: QuantConfig
) -> HeldOutScore:
    """How ``budget`` is measured on the held-out examples: output cosine against float, or the task metric
    on the held-out labels."""
    if not examples.evaluation:
        raise TrtQuantError(
            "An accuracy budget needs held-out examples: pass --eval-data, or a calibration file with more rows "
            "than --calib-samples."
        )
    labels = examples.labels if budget.kind == "drop" else None
    return held_out_score(loaded, examples.evaluation, config, labels)


def convert(
    model: str | Path,
    task: str,
    calib: str | Path,
    output: str | Path,
    config: QuantConfig | None = None,
    export_config: ExportConfig | None = None,
    text_column: str | None = None,
    pair_column: str | None = None,
    eval_data: str | Path | None = None,
    overwrite: bool = False,
    trust_remote_code: bool = False,
    name: str | None = None,
    accuracy_budget: str | None = None,
    label_column: str | None = None,
) -> ConvertReport:
    """Quantize ``model`` for ``task`` with calibration texts from ``calib`` and write an artifact to ``output``.

    The artifact holds the float ONNX, the INT8 ONNX (explicit Q/DQ, INT8 weights), the tokenizer and a
    manifest with versions, shapes, calibration settings, checksums, sizes and measured agreement of the
    INT8 graph with the float graph on examples kept apart from calibration. With ``accuracy_budget``
    (``"cosine>=0.995"``, or ``"drop<=0.5"`` points of the task metric on ``label_column``) the most
    sensitive Linear layers stay float until the budget holds on those held-out examples. The task metric
    is the accuracy of a text classifier (Spearman x100 for a single-logit regression head), Spearman x100
    of cosine(text, pair) against similarity scores for sentence embeddings (each text embedded on its
    own; the pair column is guessed as ``trt-quant evaluate`` does), entity-level F1 of word tags for token
    classification (one tag per whitespace-separated word, or a list of words) and SQuAD F1 for question
    answering (questions, ``pair_column`` contexts, lists of answer texts); feature extraction has none.
    A sentence-embedding model is calibrated on each text of a pair on its own.
    """
    config = config or QuantConfig()
    export_config = export_config or ExportConfig()
    output = Path(output)
    check_output_dir(output, overwrite)
    name = check_name(name or output.name)
    budget = parse_budget(accuracy_budget) if accuracy_budget else None
    check_budget(budget, task, label_column)
    labelled = label_column if budget is not None and budget.kind == "drop" else None
    guess_pairs = labelled is not None and task in PAIRED_TASKS  # the metric needs second texts
    timer = StepTimer()
    with timer.step("load"):
        loaded = load(model, task, config.max_length, trust_remote_code)
        examples = read_examples(calib, config, eval_data, text_column, pair_column, labelled, guess_pairs)
        batches = calibration_batches(loaded, examples.calibration, config)

    with staged_directory(output, overwrite) as stage:
        with timer.step("export float"):
            export_float(stage, loaded, batches[0], export_config)
        with timer.step("quantize + calibrate"):
            measure = budget_score(loaded, budget, examples, config) if budget is not None else None
            float_score = measure.of_float(loaded.model) if measure is not None else None  # while still float
            quantized = quantize_with_recipe(loaded, batches, config)
        mixed = None
        if budget is not None and measure is not None and float_score is not None:
            with timer.step("mixed precision"):
                mixed = meet_budget(
                    quantized,
                    budget,
                    measure.score,
                    float_score,
                    lambda: layer_sensitivity(quantized, measure.score),
                )
        evaluation = examples.evaluation
        manifest, findings = write_artifact(
            stage,
            loaded,
            quantized,
            batches[0],
            config,
            export_config,
            timer,
            ArtifactSource(
                str(model),
                name,
                str(calib),
                len(model_texts(examples.calibration, task)),
                model_texts(evaluation, task) if evaluation is not None else None,
                examples.evaluation_source,
            ),
        )
        if measure is not None and mixed is not None:
            manifest.quantization.mixed_precision = MixedPrecisionRecord(
                mixed.budget,
                measure.metric,
                list(mixed.float_layers),
                mixed.score,
                mixed.float_score,
                mixed.int8_flop_share,
            )
            write_manifest(stage, manifest)
    return ConvertReport(output, manifest, timer.finish(), findings)


__all__ = ["convert"]
