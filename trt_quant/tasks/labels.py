"""What the task modules share about labels and words: where labels come from, numbers, class ids, words
and BIO tags."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trt_quant.errors import TrtQuantError
from trt_quant.tasks import metrics

WORD_COLUMN_GUESSES = ("tokens", "words")


@dataclass(frozen=True)
class LabelSource:
    """Where labels were read from, for error messages: the file, its label column, the first example's row."""

    path: Path
    column: str | None
    first_row: int = 1

    def row(self, index: int) -> int:
        """Row number of the ``index``-th example (counting from 0)."""
        return self.first_row + index

    def error(self, label: Any, index: int, expected: str) -> TrtQuantError:
        """The error for the label of the ``index``-th example, which is not ``expected``."""
        return TrtQuantError(
            f"Label {label!r} in row {self.row(index)} of column '{self.column}' of {self.path} is not "
            f"{expected}: fix that row or pass the --label-column that holds such labels."
        )


def model_label_names(config: Path) -> dict[int, str] | None:
    """The model's ``id2label`` from its ``config`` (config.json), if it has one."""
    try:
        id2label = json.loads(config.read_text(encoding="utf-8")).get("id2label")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    return {int(index): str(name) for index, name in id2label.items()} if isinstance(id2label, dict) else None


def config_label_names(config: Any) -> dict[int, str]:
    """The ``id2label`` of a loaded transformers config, with integer keys."""
    return {int(index): str(name) for index, name in (config.id2label or {}).items()}


def number(label: Any) -> float | None:
    """A label as a finite number, or None (booleans are not numbers)."""
    if isinstance(label, bool):
        return None
    try:
        value = float(label)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def numeric_labels(labels: Sequence[Any], source: LabelSource, needed_by: str) -> np.ndarray:
    """Labels as float64 numbers; one that is not a finite number is an error saying it is ``needed_by``."""
    values = [number(label) for label in labels]
    for index, (label, value) in enumerate(zip(labels, values, strict=True)):
        if value is None:
            raise source.error(label, index, f"a number, which {needed_by} needs")
    return np.asarray(values, dtype=np.float64)


def class_id(label: Any, index: int, classes: int, names: dict[int, str] | None, source: LabelSource) -> int:
    """The class index of the ``index``-th example's label: an integer, a digit string or one of ``names``."""
    by_name = {name: position for position, name in (names or {}).items()}
    name = label.strip() if isinstance(label, str) else None
    value = by_name[name] if name in by_name else number(label)
    if value is None or not float(value).is_integer() or not 0 <= value < classes:
        choices = f" or one of {', '.join(by_name)}" if by_name else ""
        raise source.error(label, index, f"a class of this model (0 to {classes - 1}{choices})")
    return int(value)


def class_ids(
    labels: Sequence[Any], classes: int, names: dict[int, str] | None, source: LabelSource
) -> np.ndarray:
    """Class indices from integer labels, digit strings or the model's label ``names``."""
    return np.asarray([class_id(label, index, classes, names, source) for index, label in enumerate(labels)])


def classification_targets(
    labels: Sequence[Any], classes: int, names: dict[int, str] | None, source: LabelSource
) -> np.ndarray:
    """Gold values of a text classifier with ``classes`` logits: numbers for a single-logit regression
    head, else class indices."""
    if classes == 1:
        return numeric_labels(labels, source, "a single-logit regression model")
    return class_ids(labels, classes, names, source)


def read_words(rows: list[dict[str, Any]], column: str, path: Path) -> list[list[str]]:
    """Each row's words in ``column``: a list of strings, or a string split on whitespace; never empty."""
    words = []
    for number_, row in enumerate(rows, start=1):
        value = row.get(column)
        if isinstance(value, str):
            value = value.split()
        if not isinstance(value, list) or not value or not all(isinstance(word, str) for word in value):
            raise TrtQuantError(
                f"Row {number_} of {path} has no list of words in column '{column}': write a list."
            )
        words.append(value)
    return words


def tag_list(value: Any, words: int, index: int, source: LabelSource) -> list[Any]:
    """The tags of the ``index``-th example, which must be a list of one tag per word."""
    if not isinstance(value, list) or len(value) != words:
        raise TrtQuantError(
            f"Row {source.row(index)} of {source.path} has {words} words but its '{source.column}' is not a "
            f"list of {words} tags: give one tag per word."
        )
    return value


def bio_label_names(names: dict[int, str] | None, classes: int, config: Path | str) -> dict[int, str]:
    """The model's tag ``names`` (the ``id2label`` of ``config``), which must be BIO tags for entity scores."""
    if names is None or set(names) != set(range(classes)):
        raise TrtQuantError(
            f"The model's tag names are unknown because {config} has no id2label for every class: set "
            "id2label in the model's config.json to its BIO tags and convert it again."
        )
    if not all(metrics.is_bio_tag(name) for name in names.values()):
        shown = ", ".join(list(names.values())[:4])
        raise TrtQuantError(
            f"The model's labels ({shown}, ...) are not BIO tags: set id2label in {config} to the tags it "
            "was trained with (O, B-TYPE, I-TYPE)."
        )
    return names


def gold_tags(value: Any, words: int, index: int, names: dict[int, str], source: LabelSource) -> list[str]:
    """The gold tags of the ``index``-th example: a list of one BIO tag or class index per word."""
    tags = []
    for tag in tag_list(value, words, index, source):
        name = names.get(tag) if isinstance(tag, int) and not isinstance(tag, bool) else tag
        if not isinstance(name, str) or not metrics.is_bio_tag(name):
            raise source.error(tag, index, "a BIO tag (O, B-TYPE or I-TYPE) or a class index")
        tags.append(name)
    return tags


def word_tokenizer(path: str | Path) -> Any:
    """The tokenizer at ``path``, for words tokenized one by one: byte-level BPE tokenizers (RoBERTa) must
    prefix each with a space."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), add_prefix_space=True)


def tokenize_words(tokenizer: Any, words: list[list[str]], max_length: int, tensors: str = "np") -> Any:
    """Tokenize lists of words (padded to the longest, cut at ``max_length``) into ``tensors`` ("np" or
    "pt"); the result's ``word_ids(row)`` maps each token to its word."""
    return tokenizer(
        words,
        is_split_into_words=True,
        truncation=True,
        max_length=max_length,
        padding=True,
        return_tensors=tensors,
    )


def word_tags(
    token_classes: np.ndarray, word_ids: list[int | None], words: int, names: dict[int, str]
) -> list[str]:
    """Each word's tag from its first sub-token; words cut off by truncation are "O"."""
    tags = ["O"] * words
    for position in reversed(range(len(word_ids))):
        word = word_ids[position]
        if word is not None:
            tags[word] = names[int(token_classes[position])]
    return tags
