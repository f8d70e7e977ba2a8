"""Tasks: which Hugging Face head to load and which named outputs the exported graph returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trt_quant.errors import TrtQuantError


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors where ``attention_mask`` is 1, as sentence-transformers pools."""
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


@dataclass(frozen=True)
class Task:
    """A task: the transformers auto class, the output names and how to pick them from the model output."""

    name: str
    auto_class: str
    outputs: tuple[str, ...]
    head_prefixes: tuple[str, ...]
    select: Callable[[Any, torch.Tensor], tuple[torch.Tensor, ...]]
    per_token: tuple[bool, ...]


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task(
            "feature-extraction",
            "AutoModel",
            ("last_hidden_state",),
            (),
            lambda out, mask: (out.last_hidden_state,),
            (True,),
        ),
        Task(
            "sentence-embedding",
            "AutoModel",
            ("sentence_embedding",),
            (),
            lambda out, mask: (mean_pool(out.last_hidden_state, mask),),
            (False,),
        ),
        Task(
            "text-classification",
            "AutoModelForSequenceClassification",
            ("logits",),
            ("classifier", "pre_classifier", "pooler", "score"),
            lambda out, mask: (out.logits,),
            (False,),
        ),
        Task(
            "token-classification",
            "AutoModelForTokenClassification",
            ("logits",),
            ("classifier",),
            lambda out, mask: (out.logits,),
            (True,),
        ),
        Task(
            "question-answering",
            "AutoModelForQuestionAnswering",
            ("start_logits", "end_logits"),
            ("qa_outputs",),
            lambda out, mask: (out.start_logits, out.end_logits),
            (True, True),
        ),
    )
}


def get_task(name: str) -> Task:
    """Look up a task by name; an unknown name is an error listing the supported tasks."""
    if name not in TASKS:
        raise TrtQuantError(f"Unknown task '{name}': use one of {', '.join(TASKS)}.")
    return TASKS[name]


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
