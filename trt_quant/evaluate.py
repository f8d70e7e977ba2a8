"""Float vs quantized: agreement and cosine of outputs without labels (task metrics with labels later)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .data import TextData, batched
from .progress import progress
from .runtime.base import Runtime


@dataclass
class OutputAgreement:
    """How close quantized outputs are to float ones over a set of examples."""

    examples: int
    mean_cosine: float
    min_cosine: float
    max_abs_diff: float
    top1_agreement: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def _cosine(left: np.ndarray, right: np.ndarray) -> float:
    denominator = float(np.linalg.norm(left) * np.linalg.norm(right))
    return float(np.dot(left, right) / denominator) if denominator > 0 else float(np.array_equal(left, right))


def per_example_vectors(output: np.ndarray, mask: np.ndarray, per_token: bool) -> list[np.ndarray]:
    """One flat vector per example: its unpadded tokens for per-token outputs, else its row."""
    rows = [row[row_mask.astype(bool)] if per_token else row for row, row_mask in zip(output, mask, strict=True)]
    return [np.asarray(row, dtype=np.float64).ravel() for row in rows]


def per_token_outputs(runtime: Runtime) -> dict[str, bool]:
    """Which outputs have a sequence axis (per-token outputs), from the artifact's manifest."""
    return {spec.name: len(spec.shape) > 1 and spec.shape[1] == "sequence" for spec in runtime.manifest.outputs}


def compare_outputs(
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    mask: np.ndarray,
    per_token: dict[str, bool],
    classify: bool,
) -> tuple[list[float], float, list[bool]]:
    """Per-example cosines, max absolute difference and (if ``classify``) per-prediction top-1 agreement."""
    cosines: list[float] = []
    agree: list[bool] = []
    max_diff = 0.0
    for name, ref in reference.items():
        got = candidate[name]
        max_diff = max(max_diff, float(np.abs(ref.astype(np.float64) - got).max()))
        pairs = zip(per_example_vectors(ref, mask, per_token[name]), per_example_vectors(got, mask, per_token[name]))
        cosines.extend(_cosine(left, right) for left, right in pairs)
        if classify:
            matches = ref.argmax(-1) == got.argmax(-1)
            agree.extend((matches[mask.astype(bool)] if per_token[name] and ref.ndim == 3 else matches).ravel().tolist())
    return cosines, max_diff, agree


def output_agreement(
    reference: Runtime, candidate: Runtime, data: TextData, batch_size: int = 16, max_length: int | None = None,
    classify: bool = False,
) -> OutputAgreement:
    """Run both runtimes on ``data`` and summarize how close the candidate's outputs are to the reference's."""
    cosines: list[float] = []
    agree: list[bool] = []
    max_diff = 0.0
    per_token = per_token_outputs(reference)
    total = (len(data) + batch_size - 1) // batch_size
    for batch in progress(batched(data, batch_size), "comparing outputs", total=total):
        feeds = reference.tokenize(batch.texts, batch.pairs, max_length)
        mask = feeds.get("attention_mask", np.ones_like(feeds["input_ids"]))
        batch_cosines, batch_diff, batch_agree = compare_outputs(
            reference.run(feeds), candidate.run(feeds), mask, per_token, classify
        )
        cosines.extend(batch_cosines)
        agree.extend(batch_agree)
        max_diff = max(max_diff, batch_diff)
    return OutputAgreement(
        examples=len(data),
        mean_cosine=float(np.mean(cosines)),
        min_cosine=float(np.min(cosines)),
        max_abs_diff=max_diff,
        top1_agreement=float(np.mean(agree)) if agree else None,
    )


CLASSIFYING_TASKS: Sequence[str] = ("text-classification", "token-classification", "question-answering")
