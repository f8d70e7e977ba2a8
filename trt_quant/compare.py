"""Output comparison: per-example cosine, max difference and top-1 agreement of two models' outputs."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from trt_quant.data import TextData, batched
from trt_quant.progress import progress

if TYPE_CHECKING:
    from trt_quant.runtime.base import Runtime


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


def cosine(left: np.ndarray, right: np.ndarray) -> float:
    """Cosine of two flat vectors; two zero vectors agree (1.0) only when equal."""
    denominator = float(np.linalg.norm(left) * np.linalg.norm(right))
    return float(np.dot(left, right) / denominator) if denominator > 0 else float(np.array_equal(left, right))


def pair_cosines(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Cosine of each row of ``left`` with the same row of ``right``, in float64."""
    pairs = zip(left.astype(np.float64), right.astype(np.float64), strict=True)
    return np.asarray([cosine(a, b) for a, b in pairs])


def per_example_vectors(output: np.ndarray, mask: np.ndarray, per_token: bool) -> list[np.ndarray]:
    """One flat vector per example: its unpadded tokens for per-token outputs, else its row."""
    vectors = []
    for row, row_mask in zip(output, mask, strict=True):
        vectors.append(np.asarray(row[row_mask.astype(bool)] if per_token else row, dtype=np.float64).ravel())
    return vectors


def output_cosines(
    reference: np.ndarray, candidate: np.ndarray, mask: np.ndarray, per_token: bool
) -> list[float]:
    """Cosine of each example's output with the reference's (unpadded tokens only for per-token outputs)."""
    left, right = (per_example_vectors(output, mask, per_token) for output in (reference, candidate))
    return [cosine(a, b) for a, b in zip(left, right, strict=True)]


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
        cosines.extend(output_cosines(ref, got, mask, per_token[name]))
        if classify:
            matches = ref.argmax(-1) == got.argmax(-1)
            if per_token[name] and ref.ndim == 3:
                matches = matches[mask.astype(bool)]
            agree.extend(matches.ravel().tolist())
    return cosines, max_diff, agree


class Comparison:
    """Runs a reference and a candidate runtime on the same feeds and accumulates how close they agree."""

    def __init__(self, reference: Runtime, candidate: Runtime, classify: bool) -> None:
        self.reference = reference
        self.candidate = candidate
        self.classify = classify
        self.per_token = reference.manifest.per_token
        self.cosines: list[float] = []
        self.agree: list[bool] = []
        self.max_diff = 0.0

    def run(self, feeds: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Both runtimes' outputs on ``feeds``; their differences are added to the running summary."""
        reference, candidate = self.reference.run(feeds), self.candidate.run(feeds)
        mask = np.asarray(feeds.get("attention_mask", np.ones_like(feeds["input_ids"])))
        cosines, max_diff, agree = compare_outputs(reference, candidate, mask, self.per_token, self.classify)
        self.cosines.extend(cosines)
        self.agree.extend(agree)
        self.max_diff = max(self.max_diff, max_diff)
        return reference, candidate

    def agreement(self, examples: int) -> OutputAgreement:
        """The summary so far, reported for ``examples`` examples."""
        return OutputAgreement(
            examples=examples,
            mean_cosine=float(np.mean(self.cosines)),
            min_cosine=float(np.min(self.cosines)),
            max_abs_diff=self.max_diff,
            top1_agreement=float(np.mean(self.agree)) if self.agree else None,
        )


def output_agreement(
    reference: Runtime,
    candidate: Runtime,
    data: TextData,
    batch_size: int = 16,
    max_length: int | None = None,
    classify: bool = False,
) -> OutputAgreement:
    """Run both runtimes on ``data`` and summarize how close the candidate's outputs are to the reference."""
    comparison = Comparison(reference, candidate, classify)
    total = (len(data) + batch_size - 1) // batch_size
    for batch in progress(batched(data, batch_size), "comparing outputs", total=total):
        comparison.run(reference.tokenize(batch.texts, batch.pairs, max_length))
    return comparison.agreement(len(data))
