"""Text classification: accuracy and macro-F1 of the argmax; a single-logit head is a regression scored by
Pearson/Spearman x100 of its logit; QAT learns class ids (or numbers) per text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from trt_quant.data import TextData, read_texts, tokenize_batches
from trt_quant.tasks import metrics
from trt_quant.tasks.base import (
    LabelledBatch,
    Loaded,
    Task,
    TaskMetric,
    correlations,
    read_text_inputs,
    sequence_batches,
)
from trt_quant.tasks.evaluation import PRECISIONS, EvaluationJob, Metrics, no_metrics
from trt_quant.tasks.labels import LabelSource, classification_targets, config_label_names


def classification_metrics(logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 (percent) of the argmax; Pearson/Spearman x100 of a single logit (regression)."""
    if logits.shape[-1] == 1:
        return correlations(logits[:, 0], targets)
    predictions = logits.argmax(-1)
    return {
        "accuracy": 100 * metrics.accuracy(predictions, targets),
        "macro_f1": 100 * metrics.macro_f1(predictions, targets),
    }


def metric(
    loaded: Loaded, data: TextData, source: LabelSource, batch_size: int, max_length: int
) -> TaskMetric:
    """Accuracy of the argmax (Spearman x100 of the logit for a single-logit regression head)."""
    classes = int(loaded.config.num_labels)
    targets = classification_targets(data.labels or [], classes, config_label_names(loaded.config), source)
    key = "spearman" if classes == 1 else "accuracy"
    batches = tokenize_batches(loaded.tokenizer, data, loaded.input_names, batch_size, max_length)
    return TaskMetric(key, batches, lambda outputs: classification_metrics(outputs[0], targets)[key])


def evaluate(job: EvaluationJob) -> tuple[int, Metrics]:
    """Accuracy and macro-F1 of the argmax, or Pearson/Spearman of a single logit."""
    data = job.texts(guess_pairs=True)
    targets = None
    if data.labels is not None:
        targets = classification_targets(data.labels, job.classes, job.label_names(), job.labels)
    name = job.manifest.output_names[0]
    logits: dict[str, list[np.ndarray]] = {precision: [] for precision in PRECISIONS}
    for part in job.chunks(len(data)):
        batch = data.slice(part.start, part.stop)
        results = job.comparison.run(job.runtime.tokenize(batch.texts, batch.pairs, job.max_length))
        for precision, result in zip(PRECISIONS, results, strict=True):
            logits[precision].append(result[name])
    if targets is None:
        return len(data), no_metrics()
    return len(data), {
        precision: classification_metrics(np.concatenate(parts), targets)
        for precision, parts in logits.items()
    }


def training_batches(
    loaded: Loaded,
    train_data: str | Path,
    label_column: str | None,
    text_column: str | None,
    pair_column: str | None,
    batch_size: int,
    max_length: int,
    seed: int,
) -> tuple[list[LabelledBatch], TextData]:
    """QAT batches with one class id per text (a number for a single-logit regression head) from
    ``label_column``; without it, none (the model learns the float model's outputs)."""
    data = read_texts(train_data, text_column, pair_column, label_column, guess_pairs=True)
    targets: list[Any] | None = None
    if data.labels is not None:
        source = LabelSource(Path(train_data), label_column)
        names = config_label_names(loaded.config)
        targets = classification_targets(data.labels, int(loaded.config.num_labels), names, source).tolist()
    batches = sequence_batches(loaded, data, targets, batch_size, max_length, seed)
    return batches, TextData(data.texts, data.pairs)


TASK = Task(
    name="text-classification",
    auto_class="AutoModelForSequenceClassification",
    outputs=("logits",),
    head_prefixes=("classifier", "pre_classifier", "pooler", "score"),
    select=lambda out, mask: (out.logits,),
    per_token=(False,),
    classifying=True,
    paired=False,
    metric=metric,
    evaluate=evaluate,
    training_batches=training_batches,
    read_inputs=read_text_inputs,
)
