"""The task registry: every task's module (head, outputs, metric, evaluation, QAT batches) by task name."""

from __future__ import annotations

from trt_quant.data import TextData
from trt_quant.errors import TrtQuantError
from trt_quant.tasks import (
    feature_extraction,
    question_answering,
    sentence_embedding,
    text_classification,
    token_classification,
)
from trt_quant.tasks.base import Loaded, Task, TaskMetric
from trt_quant.tasks.labels import LabelSource

TASKS: dict[str, Task] = {
    module.TASK.name: module.TASK
    for module in (
        feature_extraction,
        sentence_embedding,
        text_classification,
        token_classification,
        question_answering,
    )
}

CLASSIFYING_TASKS = tuple(name for name, task in TASKS.items() if task.classifying)
"""Tasks whose outputs are logits, so top-1 agreement measures them."""
LABELLED_TASKS = tuple(name for name, task in TASKS.items() if task.metric is not None)
"""Tasks with a labelled metric, so a drop budget."""
PAIRED_TASKS = tuple(name for name, task in TASKS.items() if task.paired)
"""Tasks whose metric needs a second text per example: the sentence pair, the question's context."""


def get_task(name: str) -> Task:
    """Look up a task by name; an unknown name is an error listing the supported tasks."""
    if name not in TASKS:
        raise TrtQuantError(f"Unknown task '{name}': use one of {', '.join(TASKS)}.")
    return TASKS[name]


def task_metric(
    loaded: Loaded, data: TextData, source: LabelSource, batch_size: int, max_length: int
) -> TaskMetric:
    """The headline metric of ``loaded``'s task on labelled held-out ``data`` (texts, second texts and
    labels read from ``source``); the labels of a token-classification example are one tag per
    whitespace-separated word."""
    if loaded.task.metric is None:
        raise TrtQuantError(
            f"A {loaded.task.name} model has no task metric for a drop budget: use a cosine budget such as "
            '"cosine>=0.995".'
        )
    return loaded.task.metric(loaded, data, source, batch_size, max_length)
