"""Data readers: every format, column selection, sentence pairs, and their errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trt_quant.data import TextData, read_texts, tokenize_batches
from trt_quant.errors import TrtQuantError

ROWS = [
    {"sentence1": "A man is playing a guitar.", "sentence2": "Someone plays music.", "label": 1},
    {"sentence1": 'The cat sleeps, "quietly".', "sentence2": "A dog barks.", "label": 0},
    {"sentence1": "Zürich café, naïve résumé", "sentence2": "Prices rose 5% in São Paulo.", "label": 1},
]


def write_all_formats(directory: Path) -> dict[str, Path]:
    paths = {}
    paths["csv"] = directory / "d.csv"
    with paths["csv"].open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(ROWS[0]))
        writer.writeheader()
        writer.writerows(ROWS)
    paths["tsv"] = directory / "d.tsv"
    paths["tsv"].write_text(
        "sentence1\tsentence2\tlabel\n"
        + "".join(f"{r['sentence1']}\t{r['sentence2']}\t{r['label']}\n" for r in ROWS),
        encoding="utf-8",
    )
    paths["jsonl"] = directory / "d.jsonl"
    paths["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in ROWS) + "\n", encoding="utf-8")
    paths["parquet"] = directory / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), paths["parquet"])
    import datasets

    paths["dataset"] = directory / "dataset"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(paths["dataset"]))
    return paths


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet", "dataset"])
def test_every_format_reads_texts_pairs_and_labels(tmp_path: Path, fmt: str) -> None:
    path = write_all_formats(tmp_path)[fmt]
    data = read_texts(path, text_column="sentence1", pair_column="sentence2", label_column="label")
    assert data.texts == [r["sentence1"] for r in ROWS]
    assert data.pairs == [r["sentence2"] for r in ROWS]
    assert [int(v) for v in data.labels or []] == [1, 0, 1]


def test_text_file_one_example_per_line_skipping_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("\ufefffirst line\n\n  second line  \n\n", encoding="utf-8")
    assert read_texts(path).texts == ["first line", "second line"]


def test_text_column_is_guessed_from_usual_names(tmp_path: Path) -> None:
    path = write_all_formats(tmp_path)["jsonl"]
    assert read_texts(path).texts[0] == ROWS[0]["sentence1"]
    assert read_texts(path, guess_pairs=True).pairs == [r["sentence2"] for r in ROWS]


def test_glue_tsv_with_quotes_reads_every_row() -> None:
    mrpc = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue" / "MRPC" / "dev.tsv"
    if not mrpc.is_file():
        pytest.skip("GLUE data is not next to the project (../shared/data/glue)")
    data = read_texts(mrpc, text_column="#1 String", pair_column="#2 String", label_column="Quality")
    assert len(data) == 408
    assert data.pairs is not None and data.pairs[0].startswith('"The foodservice pie business')


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(TrtQuantError, match=r"does not exist: pass an existing"):
        read_texts(tmp_path / "nope.txt")


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("\n \n", encoding="utf-8")
    with pytest.raises(TrtQuantError, match=r"is empty: add at least one example"):
        read_texts(path)


def test_unknown_column_lists_the_columns(tmp_path: Path) -> None:
    path = write_all_formats(tmp_path)["csv"]
    with pytest.raises(
        TrtQuantError, match=r"Column 'text' is not in .*use one of sentence1, sentence2, label"
    ):
        read_texts(path, text_column="text")


def test_ambiguous_columns_ask_for_text_column(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": "x", "b": "y"}\n', encoding="utf-8")
    with pytest.raises(TrtQuantError, match=r"pass --text-column"):
        read_texts(path)


def test_non_utf8_file_says_to_save_as_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(TrtQuantError, match=r"is not UTF-8 text .*save it as UTF-8"):
        read_texts(path)


def test_bad_json_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(TrtQuantError, match=r"line 2 is not valid JSON"):
        read_texts(path)


def test_row_without_value_is_named(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\n{"text": null}\n', encoding="utf-8")
    with pytest.raises(TrtQuantError, match=r"Row 2 of .* has no value in column 'text'"):
        read_texts(path)


def test_unknown_extension_lists_formats(tmp_path: Path) -> None:
    path = tmp_path / "d.xlsx"
    path.write_bytes(b"x")
    with pytest.raises(TrtQuantError, match=r"unknown format '.xlsx'"):
        read_texts(path)


def test_tokenize_batches_pads_to_longest_and_truncates(tiny_model) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model("bert", "feature-extraction")))
    data = TextData(["the model", "the model is fast and the graph is small " * 10, "a"], None)
    batches = tokenize_batches(tokenizer, data, ["input_ids", "attention_mask"], batch_size=2, max_length=16)
    assert [b["input_ids"].shape for b in batches] == [(2, 16), (1, 3)]
    assert batches[0]["attention_mask"][0].sum() == 4  # [CLS] the model [SEP], padded to 16
