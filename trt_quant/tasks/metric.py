"""The task metric of a ``drop<=X`` accuracy budget: a PyTorch model's headline metric (percent) on
labelled held-out examples, computed by the same functions ``trt-quant evaluate`` applies to ONNX outputs.

| task | metric |
|---|---|
| text-classification | accuracy of the argmax (Spearman x100 of the logit for a single-logit regression head) |
| sentence-embedding | Spearman x100 of cosine(embedding(text), embedding(pair)) against gold scores (STS-B) |
| token-classification | entity-level F1 of word tags, each word tagged by its first sub-token |
| question-answering | SQuAD v1.1 F1 of the best answer span |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trt_quant.data import TextData, select_inputs, split_pairs, tokenize_batches
from trt_quant.errors import TrtQuantError
from trt_quant.evaluate import report as evaluate
from trt_quant.evaluate.report import LabelSource
from trt_quant.models import LoadedModel
from trt_quant.quantize.sensitivity import outputs_of
from trt_quant.tasks.registry import TaskModel
from trt_quant.tasks.squad import QAExample, answer_texts, decode_answers, tokenize_questions

Metric = Callable[[tuple[np.ndarray, ...]], float]
"""The metric of a model's outputs over all held-out examples, one array per output."""

PAIRED_TASKS = ("sentence-embedding", "question-answering")
"""Tasks whose metric needs a second text per example: the sentence pair, the question's context."""


@dataclass
class TaskMetric:
    """Held-out model feeds and the headline metric (a key of ``evaluate.METRIC_NAMES``) of their outputs."""

    key: str
    batches: list[dict[str, torch.Tensor]]
    of_outputs: Metric

    @property
    def name(self) -> str:
        return evaluate.METRIC_NAMES[self.key]

    def score(self, model: TaskModel) -> float:
        """The metric of ``model`` on the held-out examples (higher is better)."""
        outputs = outputs_of(model, self.batches)
        return self.of_outputs(tuple(torch.cat(parts).numpy() for parts in zip(*outputs, strict=True)))


def _in_batches(feeds: dict[str, np.ndarray], batch_size: int) -> list[dict[str, torch.Tensor]]:
    count = len(next(iter(feeds.values())))
    return [
        {name: torch.as_tensor(value[start : start + batch_size]) for name, value in feeds.items()}
        for start in range(0, count, batch_size)
    ]


def _label_names(loaded: LoadedModel) -> dict[int, str]:
    return {int(index): str(name) for index, name in (loaded.config.id2label or {}).items()}


def _classification(
    loaded: LoadedModel,
    data: TextData,
    labels: list[Any],
    source: LabelSource,
    batch_size: int,
    max_length: int,
) -> TaskMetric:
    classes = int(loaded.config.num_labels)
    targets = evaluate.classification_targets(labels, classes, _label_names(loaded), source)
    key = "spearman" if classes == 1 else "accuracy"
    batches = tokenize_batches(loaded.tokenizer, data, loaded.input_names, batch_size, max_length)
    return TaskMetric(key, batches, lambda outputs: evaluate.classification_metrics(outputs[0], targets)[key])


def _similarity(
    loaded: LoadedModel,
    data: TextData,
    labels: list[Any],
    source: LabelSource,
    batch_size: int,
    max_length: int,
) -> TaskMetric:
    evaluate.check_similarity_pairs(data)
    targets = evaluate.numeric_labels(labels, source, "a similarity score")
    count = len(data)

    def spearman(outputs: tuple[np.ndarray, ...]) -> float:
        cosines = evaluate.pair_cosines(outputs[0][:count], outputs[0][count:])
        return evaluate.correlations(cosines, targets)["spearman"]

    # each text of a pair is embedded on its own: all first texts, then all second texts
    batches = tokenize_batches(
        loaded.tokenizer, split_pairs(data), loaded.input_names, batch_size, max_length
    )
    return TaskMetric("spearman", batches, spearman)


def _token_classification(
    loaded: LoadedModel,
    data: TextData,
    labels: list[Any],
    source: LabelSource,
    batch_size: int,
    max_length: int,
) -> TaskMetric:
    config = Path(loaded.source) / "config.json"
    names = evaluate.bio_label_names(_label_names(loaded), int(loaded.config.num_labels), config)
    words = [text.split() for text in data.texts]
    gold = [
        evaluate.gold_tags(label, len(row), index, names, source)
        for index, (label, row) in enumerate(zip(labels, words, strict=True))
    ]
    encoded = evaluate.tokenize_words(evaluate.word_tokenizer(loaded.source), words, max_length)

    def entity_f1(outputs: tuple[np.ndarray, ...]) -> float:
        classes = outputs[0].argmax(-1)
        predicted = [
            evaluate.word_tags(classes[row], encoded.word_ids(row), len(row_words), names)
            for row, row_words in enumerate(words)
        ]
        return evaluate.entity_metrics(predicted, gold)["entity_f1"]

    return TaskMetric(
        "entity_f1", _in_batches(select_inputs(encoded, loaded.input_names), batch_size), entity_f1
    )


def _answers(label: Any, index: int, source: LabelSource) -> list[str]:
    texts = answer_texts(label)
    if texts is None:
        raise source.error(label, index, 'a list of answer texts (or {"text": [...]})')
    return texts


def _question_answering(
    loaded: LoadedModel,
    data: TextData,
    labels: list[Any],
    source: LabelSource,
    batch_size: int,
    max_length: int,
) -> TaskMetric:
    if data.pairs is None:
        raise TrtQuantError(
            "Question-answering labels need each question's context and no context column was found: "
            "pass --pair-column."
        )
    examples = [
        QAExample(str(source.row(index)), question, context, _answers(label, index, source))
        for index, (question, context, label) in enumerate(zip(data.texts, data.pairs, labels, strict=True))
    ]
    if not any(example.answers for example in examples):
        raise TrtQuantError(
            f"No held-out question has an answer in column '{source.column}' of {source.path}: pass the "
            "--label-column that holds the answers."
        )
    features = tokenize_questions(loaded.tokenizer, examples, loaded.input_names, max_length)

    def f1(outputs: tuple[np.ndarray, ...]) -> float:
        answers = decode_answers(examples, features, outputs[0], outputs[1])
        return evaluate.squad_metrics(answers, examples)["f1"]

    return TaskMetric("f1", _in_batches(features.feeds, batch_size), f1)


BUILDERS = {
    "text-classification": _classification,
    "sentence-embedding": _similarity,
    "token-classification": _token_classification,
    "question-answering": _question_answering,
}
LABELLED_TASKS = tuple(BUILDERS)
"""Tasks with a labelled metric, so a drop budget."""


def task_metric(
    loaded: LoadedModel, data: TextData, source: LabelSource, batch_size: int, max_length: int
) -> TaskMetric:
    """The headline metric of ``loaded``'s task on ``data``: texts, second texts and labels read from
    ``source``; the labels of a token-classification example are one tag per whitespace-separated word."""
    return BUILDERS[loaded.task.name](loaded, data, data.labels or [], source, batch_size, max_length)


__all__ = ["LABELLED_TASKS", "PAIRED_TASKS", "TaskMetric", "task_metric"]
