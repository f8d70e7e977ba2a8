"""Token classification: entity-level precision, recall and F1 of word tags (each word tagged by its first
sub-token); QAT learns one class id per word on the word's first sub-token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from trt_quant.data import TextData, pick_column, read_rows, select_inputs
from trt_quant.tasks import metrics
from trt_quant.tasks.base import (
    LabelledBatch,
    Loaded,
    Task,
    TaskMetric,
    in_batches,
    shuffled,
)
from trt_quant.tasks.evaluation import PRECISIONS, EvaluationJob, Metrics, no_metrics
from trt_quant.tasks.labels import (
    WORD_COLUMN_GUESSES,
    LabelSource,
    bio_label_names,
    class_id,
    config_label_names,
    gold_tags,
    read_words,
    tag_list,
    tokenize_words,
    word_tags,
    word_tokenizer,
)

IGNORE_INDEX = -100
"""The training label of sub-tokens after a word's first, and of special tokens."""


def entity_metrics(predicted: list[list[str]], gold: list[list[str]]) -> dict[str, float]:
    """Entity-level precision, recall and F1 (percent) of predicted word tags against the gold ones."""
    precision, recall, f1 = metrics.entity_scores(predicted, gold)
    return {"entity_precision": 100 * precision, "entity_recall": 100 * recall, "entity_f1": 100 * f1}


def metric(
    loaded: Loaded, data: TextData, source: LabelSource, batch_size: int, max_length: int
) -> TaskMetric:
    """Entity-level F1; the words of an example are its text split on whitespace, its labels one tag each."""
    config = Path(loaded.source) / "config.json"
    names = bio_label_names(config_label_names(loaded.config), int(loaded.config.num_labels), config)
    words = [text.split() for text in data.texts]
    gold = [
        gold_tags(label, len(row), index, names, source)
        for index, (label, row) in enumerate(zip(data.labels or [], words, strict=True))
    ]
    encoded = tokenize_words(word_tokenizer(loaded.source), words, max_length)

    def entity_f1(outputs: tuple[np.ndarray, ...]) -> float:
        classes = outputs[0].argmax(-1)
        predicted = [
            word_tags(classes[row], encoded.word_ids(row), len(row_words), names)
            for row, row_words in enumerate(words)
        ]
        return entity_metrics(predicted, gold)["entity_f1"]

    return TaskMetric(
        "entity_f1", in_batches(select_inputs(encoded, loaded.input_names), batch_size), entity_f1
    )


def evaluate(job: EvaluationJob) -> tuple[int, Metrics]:
    """Entity-level precision, recall and F1 of word tags (first sub-token per word).

    Each row holds a list of words (a string is split on whitespace) and, with labels, one tag per word:
    a BIO tag string or a class index of the model.
    """
    rows = job.head(read_rows(job.data))
    column = pick_column(rows, job.text_column, WORD_COLUMN_GUESSES, job.data)
    words = read_words(rows, column, job.data)
    gold = names = None
    if job.label_column is not None:
        tag_column = pick_column(rows, job.label_column, (), job.data)
        names = bio_label_names(job.label_names(), job.classes, job.config)
        gold = [
            gold_tags(row[tag_column], len(row_words), index, names, job.labels)
            for index, (row, row_words) in enumerate(zip(rows, words, strict=True))
        ]
    tokenizer = word_tokenizer(job.tokenizer_dir)
    name = job.manifest.output_names[0]
    predicted: dict[str, list[list[str]]] = {precision: [] for precision in PRECISIONS}
    for part in job.chunks(len(words)):
        batch = words[part]
        encoded = tokenize_words(tokenizer, batch, job.max_length)
        results = job.comparison.run(select_inputs(encoded, job.runtime.input_names))
        if names is None:  # no labels: the agreement of the outputs is all there is to measure
            continue
        for precision, result in zip(PRECISIONS, results, strict=True):
            classes = result[name].argmax(-1)
            predicted[precision] += [
                word_tags(classes[row], encoded.word_ids(row), len(row_words), names)
                for row, row_words in enumerate(batch)
            ]
    if gold is None:
        return len(words), no_metrics()
    return len(words), {precision: entity_metrics(tags, gold) for precision, tags in predicted.items()}


def _read_words(path: str | Path, text_column: str | None) -> tuple[list[dict[str, Any]], list[list[str]]]:
    rows = read_rows(path)
    return rows, read_words(rows, pick_column(rows, text_column, WORD_COLUMN_GUESSES, Path(path)), Path(path))


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
    """QAT batches of word lists and, with ``label_column``, one tag per word (a class index or name of
    the model, a string is split on whitespace): the first sub-token of each word carries its tag. Returns
    the batches and the rows as texts (for calibration)."""
    path = Path(train_data)
    rows, words = _read_words(path, text_column)
    tags: list[list[int]] | None = None
    if label_column is not None:
        column = pick_column(rows, label_column, (), path)
        source = LabelSource(path, column)
        classes, names = int(loaded.config.num_labels), config_label_names(loaded.config)
        tags = []
        for index, (record, row_words) in enumerate(zip(rows, words, strict=True)):
            value = record[column].split() if isinstance(record[column], str) else record[column]
            tags.append(
                [
                    class_id(tag, index, classes, names, source)
                    for tag in tag_list(value, len(row_words), index, source)
                ]
            )
    tokenizer = word_tokenizer(loaded.source)
    order = shuffled(len(words), seed)
    batches: list[LabelledBatch] = []
    for start in range(0, len(order), batch_size):
        rows_here = order[start : start + batch_size]
        encoded = tokenize_words(tokenizer, [words[i] for i in rows_here], max_length, tensors="pt")
        labels = None
        if tags is not None:
            labels = torch.full(encoded["input_ids"].shape, IGNORE_INDEX, dtype=torch.long)
            for row, index in enumerate(rows_here):
                previous = None
                for position, word in enumerate(encoded.word_ids(row)):
                    if word is not None and word != previous:
                        labels[row, position] = tags[index][word]
                    previous = word
        batches.append((select_inputs(encoded, loaded.input_names), labels))
    return batches, TextData([" ".join(row_words) for row_words in words])


def read_inputs(
    loaded: Loaded, path: str | Path, text_column: str | None, pair_column: str | None
) -> TextData:
    """Each row's words, joined with spaces."""
    _, words = _read_words(path, text_column)
    return TextData([" ".join(row_words) for row_words in words])


TASK = Task(
    name="token-classification",
    auto_class="AutoModelForTokenClassification",
    outputs=("logits",),
    head_prefixes=("classifier",),
    select=lambda out, mask: (out.logits,),
    per_token=(True,),
    classifying=True,
    paired=False,
    metric=metric,
    evaluate=evaluate,
    training_batches=training_batches,
    read_inputs=read_inputs,
)
