"""Feature extraction: the last hidden states; no task metric, so evaluation and QAT compare with float."""

from __future__ import annotations

from trt_quant.errors import TrtQuantError
from trt_quant.tasks.base import (
    Task,
    read_text_inputs,
    unlabelled_training_batches,
)
from trt_quant.tasks.evaluation import EvaluationJob, Metrics, no_metrics


def evaluate(job: EvaluationJob) -> tuple[int, Metrics]:
    """No task metric, only the agreement of the outputs."""
    if job.label_column is not None:
        raise TrtQuantError("A feature-extraction model has no task metric for labels: drop --label-column.")
    data = job.texts(guess_pairs=False)
    for part in job.chunks(len(data)):
        batch = data.slice(part.start, part.stop)
        job.comparison.run(job.runtime.tokenize(batch.texts, batch.pairs, job.max_length))
    return len(data), no_metrics()


TASK = Task(
    name="feature-extraction",
    auto_class="AutoModel",
    outputs=("last_hidden_state",),
    head_prefixes=(),
    select=lambda out, mask: (out.last_hidden_state,),
    per_token=(True,),
    classifying=False,
    paired=False,
    metric=None,
    evaluate=evaluate,
    training_batches=unlabelled_training_batches,
    read_inputs=read_text_inputs,
)
