"""An evaluation job as the task modules run it: both runtimes (through their comparison), the data file
and its columns, batching, truncation and the model's label names; ``evaluate/report.py`` builds it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trt_quant.artifacts import TOKENIZER_DIR, Manifest
from trt_quant.compare import Comparison
from trt_quant.data import TextData, read_texts
from trt_quant.progress import progress
from trt_quant.runtime.base import Runtime
from trt_quant.tasks.labels import LabelSource

PRECISIONS = ("float", "int8")
Metrics = dict[str, dict[str, float]]
"""Task metrics in percent per precision: {"float": {"accuracy": 91.2, ...}, "int8": {...}}."""


@dataclass
class EvaluationJob:
    """One ``trt-quant evaluate`` run as the task modules see it: the float and quantized runtimes (through
    their comparison), the data file and its columns, batching, truncation and the model's label names."""

    comparison: Comparison
    data: Path
    text_column: str | None
    pair_column: str | None
    label_column: str | None
    batch_size: int
    max_length: int
    limit: int | None
    config: Path
    """The model's config.json, named in errors about its label names."""
    label_names: Callable[[], dict[int, str] | None]

    @property
    def runtime(self) -> Runtime:
        """The float runtime, whose tokenizer and input names both runtimes share."""
        return self.comparison.reference

    @property
    def manifest(self) -> Manifest:
        return self.comparison.reference.manifest

    @property
    def classes(self) -> int:
        """Size of the last axis of the first output: classes (tags) of a classification head."""
        return int(self.manifest.outputs[0].shape[-1])

    @property
    def tokenizer_dir(self) -> Path:
        return self.runtime.directory / TOKENIZER_DIR

    @property
    def labels(self) -> LabelSource:
        return LabelSource(self.data, self.label_column)

    def head(self, items: list[Any]) -> list[Any]:
        return items[: self.limit] if self.limit else items

    def texts(self, guess_pairs: bool) -> TextData:
        data = read_texts(self.data, self.text_column, self.pair_column, self.label_column, guess_pairs)
        return data.head(self.limit) if self.limit else data

    def chunks(self, count: int) -> Iterator[slice]:
        """Slices of ``batch_size`` over ``count`` examples, with a progress bar."""
        starts = range(0, count, self.batch_size)
        for start in progress(starts, "evaluating float vs INT8", total=len(starts)):
            yield slice(start, start + self.batch_size)


def no_metrics() -> Metrics:
    return {precision: {} for precision in PRECISIONS}
