"""Sentence embedding (mean-pooled hidden states): Spearman x100 of cosine(text, pair) against similarity
scores (STS-B); each text of a pair is embedded on its own."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trt_quant.compare import pair_cosines
from trt_quant.data import TextData, read_texts, split_pairs, tokenize_batches
from trt_quant.errors import TrtQuantError
from trt_quant.tasks.base import (
    LabelledBatch,
    Loaded,
    Task,
    TaskMetric,
    correlations,
    mean_pool,
    read_text_inputs,
    sequence_batches,
)
from trt_quant.tasks.evaluation import PRECISIONS, EvaluationJob, Metrics, no_metrics
from trt_quant.tasks.labels import LabelSource, numeric_labels


def check_similarity_pairs(data: TextData) -> None:
    """Similarity scores belong to sentence pairs: refuse labelled data without second texts."""
    if data.pairs is None:
        raise TrtQuantError(
            "Similarity labels need sentence pairs and no second-text column was found: pass --pair-column."
        )


def metric(
    loaded: Loaded, data: TextData, source: LabelSource, batch_size: int, max_length: int
) -> TaskMetric:
    """Spearman x100 of the embeddings' pair cosines against the similarity scores."""
    check_similarity_pairs(data)
    targets = numeric_labels(data.labels or [], source, "a similarity score")
    count = len(data)

    def spearman(outputs: tuple[np.ndarray, ...]) -> float:
        cosines = pair_cosines(outputs[0][:count], outputs[0][count:])
        return correlations(cosines, targets)["spearman"]

    # each text of a pair is embedded on its own: all first texts, then all second texts
    batches = tokenize_batches(
        loaded.tokenizer, split_pairs(data), loaded.input_names, batch_size, max_length
    )
    return TaskMetric("spearman", batches, spearman)


def evaluate(job: EvaluationJob) -> tuple[int, Metrics]:
    """Pearson/Spearman x100 of cosine(text, pair) against similarity scores."""
    data = job.texts(guess_pairs=True)
    targets = None
    if data.labels is not None:
        check_similarity_pairs(data)
        targets = numeric_labels(data.labels, job.labels, "a similarity score")
    name = job.manifest.output_names[0]
    similarities: dict[str, list[np.ndarray]] = {precision: [] for precision in PRECISIONS}
    for part in job.chunks(len(data)):
        batch = data.slice(part.start, part.stop)
        first = job.comparison.run(job.runtime.tokenize(batch.texts, None, job.max_length))
        if batch.pairs is not None:
            second = job.comparison.run(job.runtime.tokenize(batch.pairs, None, job.max_length))
            for precision, left, right in zip(PRECISIONS, first, second, strict=True):
                similarities[precision].append(pair_cosines(left[name], right[name]))
    if targets is None:
        return len(data), no_metrics()
    return len(data), {
        precision: correlations(np.concatenate(parts), targets) for precision, parts in similarities.items()
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
    """QAT learns the float embeddings of every text, each text of a pair on its own."""
    data = split_pairs(read_texts(train_data, text_column, pair_column, guess_pairs=True))
    return sequence_batches(loaded, data, None, batch_size, max_length, seed), data


TASK = Task(
    name="sentence-embedding",
    auto_class="AutoModel",
    outputs=("sentence_embedding",),
    head_prefixes=(),
    select=lambda out, mask: (mean_pool(out.last_hidden_state, mask),),
    per_token=(False,),
    classifying=False,
    paired=True,
    metric=metric,
    evaluate=evaluate,
    training_batches=training_batches,
    read_inputs=read_text_inputs,
)
