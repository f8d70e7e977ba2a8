"""Reading text data (txt, csv/tsv, jsonl, parquet, a saved Hugging Face dataset) and tokenizing it."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trt_quant.errors import TrtQuantError

if TYPE_CHECKING:  # torch only for annotations: the runtime imports this module without torch (Triton)
    import torch

TEXT_COLUMN_GUESSES = ("text", "sentence", "sentence1", "question", "premise", "#1 String", "tokens", "words")
PAIR_COLUMN_GUESSES = ("text_pair", "sentence2", "context", "hypothesis", "#2 String")
FORMATS = ".txt, .csv, .tsv, .jsonl, .parquet or a saved Hugging Face dataset directory"


@dataclass
class TextData:
    """Texts, optional second texts (sentence pairs) and optional labels, all of one length."""

    texts: list[str]
    pairs: list[str] | None = None
    labels: list[Any] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def head(self, count: int) -> TextData:
        """The first ``count`` examples."""
        return self.slice(0, count)

    def slice(self, start: int, stop: int) -> TextData:
        """Examples ``start`` to ``stop`` (exclusive)."""
        return TextData(
            self.texts[start:stop],
            self.pairs[start:stop] if self.pairs is not None else None,
            self.labels[start:stop] if self.labels is not None else None,
        )


def _read_lines(path: Path) -> list[dict[str, Any]]:
    return [{"text": line.strip()} for line in _read_text(path).splitlines() if line.strip()]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TrtQuantError(f"{path} is not UTF-8 text (byte {exc.start}): save it as UTF-8.") from exc


def _read_delimited(path: Path, delimiter: str) -> list[dict[str, Any]]:
    csv.field_size_limit(sys.maxsize)
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    try:
        reader = csv.DictReader(_read_text(path).splitlines(), delimiter=delimiter, quoting=quoting)  # type: ignore[call-overload]
        rows = [
            row
            for row in reader
            if any((value or "").strip() for value in row.values() if isinstance(value, str))
        ]
    except csv.Error as exc:
        raise TrtQuantError(
            f"{path} is not valid {'TSV' if delimiter == chr(9) else 'CSV'} ({exc}): fix the file."
        ) from exc
    if reader.fieldnames is None:
        raise TrtQuantError(f"{path} has no header row: add a header that names the columns.")
    return rows


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TrtQuantError(
                f"{path} line {number} is not valid JSON ({exc.msg}): fix that line."
            ) from exc
        if not isinstance(row, dict):
            raise TrtQuantError(f"{path} line {number} is not a JSON object: write one object per line.")
        rows.append(row)
    return rows


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise TrtQuantError(
            f"{path} is not a readable Parquet file ({exc.__class__.__name__}): fix the file."
        ) from exc


def _read_dataset_dir(path: Path) -> list[dict[str, Any]]:
    try:
        import datasets
    except ImportError as exc:
        raise TrtQuantError(
            f"{path} is a dataset directory, which needs the datasets package: pip install 'trt-quant[datasets]'."
        ) from exc
    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise TrtQuantError(
            f"{path} is not a saved Hugging Face dataset: pass a directory written by save_to_disk, or a data file."
        ) from exc
    if isinstance(loaded, datasets.DatasetDict):
        split = "train" if "train" in loaded else next(iter(loaded))
        loaded = loaded[split]
    return list(loaded)


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Read a data file (or saved dataset directory) into a list of row dicts; txt rows have a 'text' key."""
    source = Path(path)
    if not source.exists():
        raise TrtQuantError(f"Data file {source} does not exist: pass an existing {FORMATS}.")
    if source.is_dir():
        rows = _read_dataset_dir(source)
    else:
        suffix = source.suffix.lower()
        readers = {
            ".txt": _read_lines,
            ".csv": lambda p: _read_delimited(p, ","),
            ".tsv": lambda p: _read_delimited(p, "\t"),
            ".jsonl": _read_jsonl,
            ".json": _read_jsonl,
            ".parquet": _read_parquet,
        }
        if suffix not in readers:
            raise TrtQuantError(f"Data file {source} has an unknown format '{suffix}': use {FORMATS}.")
        rows = readers[suffix](source)
    if not rows:
        raise TrtQuantError(f"Data file {source} is empty: add at least one example.")
    return rows


def pick_column(rows: list[dict[str, Any]], requested: str | None, guesses: Sequence[str], path: Path) -> str:
    columns = list(rows[0].keys())
    if requested is not None:
        if requested not in columns:
            raise TrtQuantError(
                f"Column '{requested}' is not in {path}: use one of {', '.join(map(str, columns))}."
            )
        return requested
    for guess in guesses:
        if guess in columns:
            return guess
    if len(columns) == 1:
        return columns[0]
    raise TrtQuantError(
        f"Cannot tell which column of {path} holds the text: pass --text-column with one of "
        f"{', '.join(map(str, columns))}."
    )


def _column(rows: list[dict[str, Any]], name: str, path: Path, as_text: bool) -> list[Any]:
    values = []
    for number, row in enumerate(rows, start=1):
        value = row.get(name)
        if as_text and isinstance(value, list) and all(isinstance(word, str) for word in value):
            value = " ".join(value)  # the words of a token-classification example
        if value is None or (as_text and not isinstance(value, str | int | float)):
            raise TrtQuantError(
                f"Row {number} of {path} has no value in column '{name}': fill or remove that row."
            )
        values.append(str(value) if as_text else value)
    return values


def read_texts(
    path: str | Path,
    text_column: str | None = None,
    pair_column: str | None = None,
    label_column: str | None = None,
    guess_pairs: bool = False,
) -> TextData:
    """Read texts (and optional second texts and labels) from a data file or saved dataset directory.

    Without ``text_column`` a usual name (text, sentence, sentence1, ..., tokens) or the only column is used;
    a list of words is joined with spaces. With ``guess_pairs`` a usual second-text column (sentence2, ...)
    is used when present.
    """
    source = Path(path)
    rows = read_rows(source)
    text_name = pick_column(rows, text_column, TEXT_COLUMN_GUESSES, source)
    pair_name = pair_column
    if pair_name is None and guess_pairs:
        pair_name = next((guess for guess in PAIR_COLUMN_GUESSES if guess in rows[0]), None)
    pairs = _column(rows, pick_column(rows, pair_name, (), source), source, True) if pair_name else None
    labels = (
        _column(rows, pick_column(rows, label_column, (), source), source, False) if label_column else None
    )
    texts = _column(rows, text_name, source, True)
    return TextData(texts, pairs, labels)


def split_pairs(data: TextData) -> TextData:
    """Every text and then every second text, each an example of its own (labels dropped)."""
    return TextData(data.texts + (data.pairs or []))


def batched(data: TextData, batch_size: int) -> Iterable[TextData]:
    """Consecutive slices of ``batch_size`` examples."""
    for start in range(0, len(data), batch_size):
        yield data.slice(start, start + batch_size)


def tokenize(
    tokenizer: Any, data: TextData, input_names: Sequence[str], max_length: int
) -> dict[str, torch.Tensor]:
    """Tokenize one batch as the model's tokenizer does: padded to the longest, truncated at ``max_length``."""
    encoded = tokenizer(
        data.texts,
        data.pairs,
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    return select_inputs(encoded, input_names)


def select_inputs(encoded: Any, input_names: Sequence[str]) -> dict[str, Any]:
    """Pick the model's inputs from a tokenizer's output; token type ids default to zeros."""
    selected = {}
    for name in input_names:
        if name in encoded:
            selected[name] = encoded[name]
        elif name == "token_type_ids":
            selected[name] = encoded["input_ids"] * 0
        else:
            raise TrtQuantError(
                f"The tokenizer does not produce '{name}': save the model's own tokenizer with it."
            )
    return selected


def tokenize_batches(
    tokenizer: Any, data: TextData, input_names: Sequence[str], batch_size: int, max_length: int
) -> list[dict[str, torch.Tensor]]:
    """Tokenize ``data`` into batches of at most ``batch_size`` examples."""
    return [tokenize(tokenizer, batch, input_names, max_length) for batch in batched(data, batch_size)]
