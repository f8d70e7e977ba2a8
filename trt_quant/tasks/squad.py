"""Extractive question answering data: SQuAD-style JSON in, answer texts decoded from start/end logits out.

Questions are the first text and contexts the second; a context longer than ``max_length`` is split
into overlapping windows and an example's answer is the best span over all of its windows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trt_quant.data import select_inputs
from trt_quant.errors import TrtQuantError

MAX_ANSWER_TOKENS = 30
SQUAD_LAYOUT = '{"data": [{"paragraphs": [{"context", "qas": [{"id", "question", "answers": [{"text"}]}]}]}]}'


@dataclass
class QAExample:
    """One question about one context, with its ground-truth answer texts (empty when unknown)."""

    id: str
    question: str
    context: str
    answers: list[str]


@dataclass
class QAFeatures:
    """Tokenized windows of a batch of examples: model feeds plus what decoding needs."""

    feeds: dict[str, np.ndarray]
    example_index: np.ndarray
    """(windows,) index into the batch of the example each window belongs to."""
    offsets: np.ndarray
    """(windows, sequence, 2) character span of each token in its context."""
    context_mask: np.ndarray
    """(windows, sequence) True where the token belongs to the context."""


def is_squad_json(path: Path) -> bool:
    """True for a ``.json`` file whose top level is an object with a ``data`` key."""
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    try:
        content = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(content, dict) and "data" in content


def read_squad(path: str | Path) -> list[QAExample]:
    """Read the examples of a SQuAD-style JSON file (v1.1 layout; unanswerable questions have no answers)."""
    source = Path(path)
    examples: list[QAExample] = []
    try:
        content = json.loads(source.read_text(encoding="utf-8-sig"))
        for article in content["data"]:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    examples.append(
                        QAExample(
                            id=str(qa.get("id", len(examples) + 1)),
                            question=str(qa["question"]),
                            context=str(paragraph["context"]),
                            answers=[str(answer["text"]) for answer in qa.get("answers", [])],
                        )
                    )
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise TrtQuantError(
            f"{source} is not SQuAD-style JSON ({exc.__class__.__name__}: {exc}): write it as {SQUAD_LAYOUT}."
        ) from exc
    if not examples:
        raise TrtQuantError(f"{source} holds no questions: add at least one entry to a 'qas' list.")
    return examples


def answer_texts(answers: Any) -> list[str] | None:
    """Texts of a list of texts, a list of {"text"} objects or {"text": [...]}; None for anything else."""
    if isinstance(answers, dict):
        answers = answers.get("text")
    if not isinstance(answers, list):
        return None
    texts = [answer.get("text") if isinstance(answer, dict) else answer for answer in answers]
    return [str(text) for text in texts] if all(isinstance(text, str) for text in texts) else None


def examples_from_rows(
    rows: list[dict[str, Any]], question: str, context: str, answers: str | None, path: Path
) -> list[QAExample]:
    """Examples from the rows of a data file, given its question, context and answers column names;
    answers as in the Hugging Face squad dataset ({"text": [...], "answer_start": [...]}) or as texts."""
    examples = []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row.get(question), str) or not isinstance(row.get(context), str):
            raise TrtQuantError(
                f"Row {number} of {path} has no text in '{question}' or '{context}': fill or remove that row."
            )
        texts = answer_texts(row.get(answers)) if answers else []
        if texts is None:
            raise TrtQuantError(
                f"Row {number} of {path} has no list of answer texts in '{answers}': give a list of texts."
            )
        examples.append(QAExample(str(row.get("id", number)), row[question], row[context], texts))
    return examples


def tokenize_questions(
    tokenizer: Any, examples: Sequence[QAExample], input_names: Sequence[str], max_length: int
) -> QAFeatures:
    """Tokenize (question, context) pairs into windows of ``max_length`` tokens that overlap by a quarter."""
    try:
        encoded = tokenizer(
            [example.question.lstrip() for example in examples],
            [example.context for example in examples],
            truncation="only_second",
            max_length=max_length,
            stride=max_length // 4,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding=True,
            return_tensors="np",
        )
    except Exception as exc:  # the tokenizers library raises a bare Exception for truncation errors
        raise TrtQuantError(
            f"A question leaves no room for its context in {max_length} tokens ({str(exc).splitlines()[0]}): "
            "pass a larger --max-length or shorten the questions."
        ) from exc
    parts = [encoded.sequence_ids(window) for window in range(len(encoded["input_ids"]))]
    context_mask = np.array([[part == 1 for part in window] for window in parts], dtype=bool)
    return QAFeatures(
        feeds=select_inputs(encoded, input_names),
        example_index=np.asarray(encoded["overflow_to_sample_mapping"]),
        offsets=np.asarray(encoded["offset_mapping"]),
        context_mask=context_mask,
    )


def best_span(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    context_mask: np.ndarray,
    max_tokens: int = MAX_ANSWER_TOKENS,
) -> tuple[int, int, float] | None:
    """The (start, end, score) token span with the highest start + end logit such that start <= end,
    end - start < ``max_tokens`` and both ends lie in the context; None when the window has no context."""
    scores = start_logits[:, None].astype(np.float64) + end_logits[None, :]
    positions = np.arange(len(start_logits))
    length = positions[None, :] - positions[:, None]
    valid = (length >= 0) & (length < max_tokens) & context_mask[:, None] & context_mask[None, :]
    if not valid.any():
        return None
    start, end = np.unravel_index(np.argmax(np.where(valid, scores, -np.inf)), scores.shape)
    return int(start), int(end), float(scores[start, end])


def decode_answers(
    examples: Sequence[QAExample], features: QAFeatures, start_logits: np.ndarray, end_logits: np.ndarray
) -> list[str]:
    """The answer text of each example: the best span over its windows, cut from the context by offsets."""
    best: list[tuple[float, str]] = [(-np.inf, "")] * len(examples)
    for window, example_index in enumerate(features.example_index):
        span = best_span(start_logits[window], end_logits[window], features.context_mask[window])
        if span is None or span[2] <= best[example_index][0]:
            continue
        start, end, score = span
        offsets = features.offsets[window]
        best[example_index] = (score, examples[example_index].context[offsets[start][0] : offsets[end][1]])
    return [text for _, text in best]
