"""Pure task metrics: classification, correlation, entity-level (BIO/IOB2) and SQuAD v1.1 answer scores.

Every function returns a fraction (accuracy 0.85, not 85); reports scale them to percent. Entity-level
scores are seqeval's (the field's standard, default mode = conlleval), not a re-implementation.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

Entity = tuple[str, int, int]
"""An entity span: (type, first word, last word + 1)."""


def accuracy(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of predictions equal to their label."""
    predicted, gold = _arrays(predictions, labels)
    return float(np.mean(predicted == gold))


def macro_f1(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Unweighted mean of per-class F1 over the classes in labels or predictions (as scikit-learn's)."""
    predicted, gold = _arrays(predictions, labels)
    scores = []
    for label in np.union1d(predicted, gold):
        true_positives = int(np.sum((predicted == label) & (gold == label)))
        denominator = int(np.sum(predicted == label)) + int(np.sum(gold == label))
        scores.append(2 * true_positives / denominator)
    return float(np.mean(scores))


def pearson(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Pearson correlation coefficient (NaN when either side is constant)."""
    return _correlation(stats.pearsonr, predictions, labels)


def spearman(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Spearman rank correlation coefficient (NaN when either side is constant)."""
    return _correlation(stats.spearmanr, predictions, labels)


def _correlation(function: Callable[..., Any], predictions: ArrayLike, labels: ArrayLike) -> float:
    left, right = (values.astype(np.float64) for values in _arrays(predictions, labels))
    if len(left) < 2 or np.ptp(left) == 0 or np.ptp(right) == 0:
        return float("nan")
    return float(function(left, right)[0])


def is_bio_tag(tag: str) -> bool:
    """True for ``O`` and for ``B-TYPE`` / ``I-TYPE`` tags."""
    return tag == "O" or (tag[:2] in ("B-", "I-") and len(tag) > 2)


def _check_bio(tags: Sequence[str]) -> None:
    for tag in tags:
        if not is_bio_tag(tag):
            raise ValueError(f"'{tag}' is not a BIO tag (O, B-TYPE or I-TYPE)")


def entity_spans(tags: Sequence[str]) -> list[Entity]:
    """Entities of one tag sequence (BIO/IOB2), as seqeval's default (conlleval) mode reads them.

    An entity starts at ``B-X``, at ``I-X`` after ``O`` (an I- without a B-) and at any change of type;
    ``I-X`` continues an entity of type X. Tags other than O, B-X and I-X raise ValueError.
    """
    from seqeval.metrics.sequence_labeling import get_entities

    _check_bio(tags)
    return [(kind, start, end + 1) for kind, start, end in get_entities(list(tags))]


def entity_scores(
    predictions: Sequence[Sequence[str]], labels: Sequence[Sequence[str]]
) -> tuple[float, float, float]:
    """Micro-averaged entity-level precision, recall and F1 over sentences: an entity counts only with
    exactly the same type and span as a gold entity (seqeval's default mode, as conlleval scores)."""
    from seqeval.metrics.sequence_labeling import precision_recall_fscore_support

    _check_lengths(predictions, labels)
    for predicted_tags, gold_tags in zip(predictions, labels, strict=True):
        _check_lengths(predicted_tags, gold_tags)
        _check_bio(predicted_tags)
        _check_bio(gold_tags)
    gold, predicted = [list(tags) for tags in labels], [list(tags) for tags in predictions]
    precision, recall, f1, _ = precision_recall_fscore_support(
        gold, predicted, average="micro", zero_division=0
    )
    return float(precision), float(recall), float(f1)


ARTICLES = re.compile(r"\b(a|an|the)\b")
PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalization: lower case, drop punctuation, drop articles, collapse whitespace."""
    text = "".join(character for character in text.lower() if character not in PUNCTUATION)
    return " ".join(ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, ground_truth: str) -> float:
    """1.0 when the normalized answers are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def answer_f1(prediction: str, ground_truth: str) -> float:
    """SQuAD v1.1 token-overlap F1 between normalized answers."""
    predicted, gold = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
    same = sum((Counter(predicted) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> tuple[float, float]:
    """Mean exact match and mean F1, each the best over an example's ground-truth answers (SQuAD v1.1)."""
    _check_lengths(predictions, answers)
    if not predictions:
        raise ValueError("no examples")
    pairs = list(zip(predictions, answers, strict=True))
    matches = [max(exact_match(prediction, truth) for truth in truths) for prediction, truths in pairs]
    f1s = [max(answer_f1(prediction, truth) for truth in truths) for prediction, truths in pairs]
    return float(np.mean(matches)), float(np.mean(f1s))


def _check_lengths(predictions: Sequence[object], labels: Sequence[object]) -> None:
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")


def _arrays(predictions: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    predicted, gold = np.asarray(predictions).ravel(), np.asarray(labels).ravel()
    if predicted.size != gold.size:
        raise ValueError(f"{predicted.size} predictions for {gold.size} labels")
    return predicted, gold
