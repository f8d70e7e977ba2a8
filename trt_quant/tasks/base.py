"""What every task module fills in and what they share: the Task record, the model wrapper with the exported
graph's signature, the task metric and batches of feeds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import nn

from trt_quant.data import TextData, read_texts, tokenize
from trt_quant.tasks import metrics
from trt_quant.tasks.labels import LabelSource

if TYPE_CHECKING:
    from trt_quant.tasks.evaluation import EvaluationJob, Metrics

METRIC_NAMES = {
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "pearson": "Pearson x100",
    "spearman": "Spearman x100",
    "entity_precision": "entity precision",
    "entity_recall": "entity recall",
    "entity_f1": "entity F1",
    "exact_match": "exact match",
    "f1": "F1",
}
"""Display names of the task metrics (all in percent)."""

LabelledBatch = tuple[dict[str, torch.Tensor], torch.Tensor | None]
"""Model inputs by name, and the labels of the batch (None: learn the float model's outputs)."""


def correlations(predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman x100."""
    return {
        "pearson": 100 * metrics.pearson(predictions, targets),
        "spearman": 100 * metrics.spearman(predictions, targets),
    }


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors where ``attention_mask`` is 1, as sentence-transformers pools."""
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


class Loaded(Protocol):
    """What the task modules need of a loaded model (``trt_quant.models.LoadedModel``)."""

    source: str
    tokenizer: Any
    config: Any
    task: Task

    @property
    def input_names(self) -> list[str]: ...


@dataclass
class TaskMetric:
    """Held-out model feeds and the headline metric (a key of ``METRIC_NAMES``) of their outputs."""

    key: str
    batches: list[dict[str, torch.Tensor]]
    of_outputs: Callable[[tuple[np.ndarray, ...]], float]
    """The metric of a model's outputs over all held-out examples, one array per output."""

    @property
    def name(self) -> str:
        return METRIC_NAMES[self.key]

    @torch.no_grad()
    def score(self, model: TaskModel) -> float:
        """The metric of ``model`` on the held-out examples (higher is better)."""
        outputs = [model.run(batch) for batch in self.batches]
        return self.of_outputs(tuple(torch.cat(parts).numpy() for parts in zip(*outputs, strict=True)))


@dataclass(frozen=True)
class Task:
    """A task: its Hugging Face head and exported outputs, and its data side (held-out metric, evaluation
    on a data file, QAT batches, model inputs of a data file), each owned by the task's module."""

    name: str
    auto_class: str
    outputs: tuple[str, ...]
    head_prefixes: tuple[str, ...]
    select: Callable[[Any, torch.Tensor], tuple[torch.Tensor, ...]]
    per_token: tuple[bool, ...]
    classifying: bool
    """Outputs are logits, so top-1 agreement is a measure of them."""
    paired: bool
    """The metric needs a second text per example (the sentence pair, the question's context)."""
    metric: Callable[[Loaded, TextData, LabelSource, int, int], TaskMetric] | None
    """The headline metric on labelled held-out examples (the ``drop<=X`` budget); None: no task metric."""
    evaluate: Callable[[EvaluationJob], tuple[int, Metrics]]
    """Run ``trt-quant evaluate``'s comparison over a data file: examples and task metrics per precision."""
    training_batches: Callable[..., tuple[list[LabelledBatch], TextData]]
    """QAT batches (with labels where the task learns them) and the training texts; see ``qat``."""
    read_inputs: Callable[[Loaded, str | Path, str | None, str | None], TextData]
    """The texts (and second texts) a data file holds for this task."""


class TaskModel(nn.Module):
    """Wraps a transformers model so that forward takes the input tensors positionally, in ``input_names``
    order, and returns the task's outputs as a tuple: the exact signature of the exported ONNX graph."""

    def __init__(self, model: nn.Module, task: Task, input_names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.input_names = list(input_names)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        kwargs = dict(zip(self.input_names, inputs, strict=True))
        output = self.model(**kwargs, return_dict=True)
        mask = kwargs.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(kwargs["input_ids"])
        return self.task.select(output, mask)

    def run(self, feeds: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Forward with a dict of named inputs."""
        return self(*(feeds[name] for name in self.input_names))


def in_batches(feeds: dict[str, np.ndarray], batch_size: int) -> list[dict[str, torch.Tensor]]:
    """Feeds of all examples cut into torch batches of ``batch_size``."""
    count = len(next(iter(feeds.values())))
    return [
        {name: torch.as_tensor(value[start : start + batch_size]) for name, value in feeds.items()}
        for start in range(0, count, batch_size)
    ]


def shuffled(count: int, seed: int) -> list[int]:
    """A seeded permutation of ``range(count)``."""
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()


def sequence_batches(
    loaded: Loaded, data: TextData, targets: list[Any] | None, batch_size: int, max_length: int, seed: int
) -> list[LabelledBatch]:
    """Shuffled training batches of texts (and second texts), with one target per text or none."""
    order = shuffled(len(data), seed)
    batches: list[LabelledBatch] = []
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        part = TextData([data.texts[i] for i in rows], [data.pairs[i] for i in rows] if data.pairs else None)
        feeds = tokenize(loaded.tokenizer, part, loaded.input_names, max_length)
        batches.append((feeds, torch.tensor([targets[i] for i in rows]) if targets is not None else None))
    return batches


def unlabelled_training_batches(
    loaded: Loaded,
    train_data: str | Path,
    label_column: str | None,
    text_column: str | None,
    pair_column: str | None,
    batch_size: int,
    max_length: int,
    seed: int,
) -> tuple[list[LabelledBatch], TextData]:
    """QAT batches of a task that learns the float model's outputs: texts and second texts, no labels."""
    data = read_texts(train_data, text_column, pair_column, guess_pairs=True)
    return sequence_batches(loaded, data, None, batch_size, max_length, seed), data


def read_text_inputs(
    loaded: Loaded, path: str | Path, text_column: str | None, pair_column: str | None
) -> TextData:
    """Texts and second texts (a usual second-text column is guessed) of a data file."""
    return read_texts(path, text_column, pair_column, guess_pairs=True)
