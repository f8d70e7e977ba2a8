"""Extractive question answering: SQuAD v1.1 exact match and F1 of the best answer span; questions are the
first text, contexts the second (``tasks.squad`` reads and decodes); QAT learns the float model's logits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from trt_quant.data import TextData, pick_column, read_rows
from trt_quant.errors import TrtQuantError
from trt_quant.tasks import metrics
from trt_quant.tasks.base import (
    Loaded,
    Task,
    TaskMetric,
    in_batches,
    read_text_inputs,
    unlabelled_training_batches,
)
from trt_quant.tasks.evaluation import PRECISIONS, EvaluationJob, Metrics
from trt_quant.tasks.labels import LabelSource
from trt_quant.tasks.squad import (
    QAExample,
    answer_texts,
    decode_answers,
    examples_from_rows,
    is_squad_json,
    read_squad,
    tokenize_questions,
)


def squad_metrics(predictions: list[str], examples: Sequence[QAExample]) -> dict[str, float]:
    """SQuAD v1.1 exact match and F1 (percent) over the examples that have answers; empty when none has."""
    answered = [index for index, example in enumerate(examples) if example.answers]
    if not answered:
        return {}
    truths = [examples[index].answers for index in answered]
    exact, f1 = metrics.squad_scores([predictions[index] for index in answered], truths)
    return {"exact_match": 100 * exact, "f1": 100 * f1}


def _answers(label: Any, index: int, source: LabelSource) -> list[str]:
    texts = answer_texts(label)
    if texts is None:
        raise source.error(label, index, 'a list of answer texts (or {"text": [...]})')
    return texts


def metric(
    loaded: Loaded, data: TextData, source: LabelSource, batch_size: int, max_length: int
) -> TaskMetric:
    """SQuAD F1 of the questions (texts) about their contexts (second texts), labels lists of answers."""
    if data.pairs is None:
        raise TrtQuantError(
            "Question-answering labels need each question's context and no context column was found: "
            "pass --pair-column."
        )
    examples = [
        QAExample(str(source.row(index)), question, context, _answers(label, index, source))
        for index, (question, context, label) in enumerate(
            zip(data.texts, data.pairs, data.labels or [], strict=True)
        )
    ]
    if not any(example.answers for example in examples):
        raise TrtQuantError(
            f"No held-out question has an answer in column '{source.column}' of {source.path}: pass the "
            "--label-column that holds the answers."
        )
    features = tokenize_questions(loaded.tokenizer, examples, loaded.input_names, max_length)

    def f1(outputs: tuple[np.ndarray, ...]) -> float:
        answers = decode_answers(examples, features, outputs[0], outputs[1])
        return squad_metrics(answers, examples)["f1"]

    return TaskMetric("f1", in_batches(features.feeds, batch_size), f1)


def _examples(job: EvaluationJob) -> list[QAExample]:
    if is_squad_json(job.data):
        if any(column is not None for column in (job.text_column, job.pair_column, job.label_column)):
            raise TrtQuantError(
                f"{job.data} is SQuAD JSON, whose fields are fixed: "
                "drop --text-column, --pair-column and --label-column."
            )
        return read_squad(job.data)
    rows = read_rows(job.data)
    question = pick_column(rows, job.text_column, ("question",), job.data)
    context = pick_column(rows, job.pair_column, ("context",), job.data)
    answers = job.label_column or ("answers" if "answers" in rows[0] else None)
    answers_column = answers and pick_column(rows, answers, (), job.data)
    return examples_from_rows(rows, question, context, answers_column, job.data)


def evaluate(job: EvaluationJob) -> tuple[int, Metrics]:
    """SQuAD v1.1 exact match and F1 over the questions that have answers."""
    examples = job.head(_examples(job))
    start_name, end_name = job.manifest.output_names
    answers: dict[str, list[str]] = {precision: [] for precision in PRECISIONS}
    for part in job.chunks(len(examples)):
        batch = examples[part]
        features = tokenize_questions(job.runtime.tokenizer, batch, job.runtime.input_names, job.max_length)
        logits: dict[str, list[dict[str, np.ndarray]]] = {precision: [] for precision in PRECISIONS}
        windows = len(features.example_index)
        for start in range(0, windows, job.batch_size):  # long contexts give several windows per question
            feeds = {key: value[start : start + job.batch_size] for key, value in features.feeds.items()}
            for precision, result in zip(PRECISIONS, job.comparison.run(feeds), strict=True):
                logits[precision].append(result)
        for precision, parts in logits.items():
            start_logits = np.concatenate([result[start_name] for result in parts])
            end_logits = np.concatenate([result[end_name] for result in parts])
            answers[precision] += decode_answers(batch, features, start_logits, end_logits)
    return len(examples), {
        precision: squad_metrics(predictions, examples) for precision, predictions in answers.items()
    }


TASK = Task(
    name="question-answering",
    auto_class="AutoModelForQuestionAnswering",
    outputs=("start_logits", "end_logits"),
    head_prefixes=("qa_outputs",),
    select=lambda out, mask: (out.start_logits, out.end_logits),
    per_token=(True, True),
    classifying=True,
    paired=True,
    metric=metric,
    evaluate=evaluate,
    training_batches=unlabelled_training_batches,
    read_inputs=read_text_inputs,
)
