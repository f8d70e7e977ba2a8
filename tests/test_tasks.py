"""The task modules: one registry by task name, and QAT batches read with the same label and word rules
(and the same error sentences) as ``trt-quant evaluate``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from trt_quant.errors import TrtQuantError
from trt_quant.models import load_model
from trt_quant.tasks import (
    feature_extraction,
    question_answering,
    sentence_embedding,
    text_classification,
    token_classification,
)
from trt_quant.tasks.registry import CLASSIFYING_TASKS, LABELLED_TASKS, PAIRED_TASKS, TASKS, get_task
from trt_quant.tasks.token_classification import IGNORE_INDEX


def test_registry_finds_each_task_module_by_name() -> None:
    modules = (
        feature_extraction,
        sentence_embedding,
        text_classification,
        token_classification,
        question_answering,
    )
    assert [module.TASK for module in modules] == list(TASKS.values())
    assert set(CLASSIFYING_TASKS) == {"text-classification", "token-classification", "question-answering"}
    assert set(LABELLED_TASKS) == set(TASKS) - {"feature-extraction"}
    assert set(PAIRED_TASKS) == {"sentence-embedding", "question-answering"}
    with pytest.raises(
        TrtQuantError, match=r"^Unknown task 'ner': use one of feature-extraction, sentence-embedding"
    ):
        get_task("ner")


def test_text_classification_batches_read_class_names_and_numbers(tiny_model, tmp_path: Path) -> None:
    loaded = load_model(tiny_model("bert", "text-classification"), "text-classification")
    data = tmp_path / "train.csv"
    data.write_text("text,label\nthe model,LABEL_2\nthe city, 1 \nthe data,0\n", encoding="utf-8")
    batches, texts = text_classification.training_batches(loaded, data, "label", None, None, 2, 16, 0)
    assert texts.texts == ["the model", "the city", "the data"] and texts.labels is None
    labels = torch.cat([labels for _, labels in batches if labels is not None])
    second = torch.cat([feeds["input_ids"][:, 2] for feeds, _ in batches])  # each text's second word
    words = loaded.tokenizer.convert_ids_to_tokens(second.tolist())
    assert dict(zip(words, labels.tolist(), strict=True)) == {"model": 2, "city": 1, "data": 0}

    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nthe model,0\nthe city,7\n", encoding="utf-8")
    message = (
        f"Label '7' in row 2 of column 'label' of {bad} is not a class of this model (0 to 2 or one of LABEL_0, "
        "LABEL_1, LABEL_2): fix that row or pass the --label-column that holds such labels."
    )
    with pytest.raises(TrtQuantError, match=re.escape(message)):
        text_classification.training_batches(loaded, bad, "label", None, None, 2, 16, 0)


def test_token_classification_batches_tag_first_sub_tokens(tiny_model, tmp_path: Path) -> None:
    loaded = load_model(tiny_model("bert", "token-classification"), "token-classification")
    rows = [{"tokens": ["the", "model"], "tags": "1 LABEL_3"}, {"tokens": "the city data", "tags": [0, 2, 4]}]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    batches, texts = token_classification.training_batches(loaded, data, "tags", None, None, 8, 16, 0)
    assert sorted(texts.texts) == ["the city data", "the model"]
    [(feeds, labels)] = batches
    assert labels is not None
    for row in range(2):  # every word is one token after [CLS]; the rest is ignored by the loss
        words = int(feeds["attention_mask"][row].sum()) - 2
        expected = [1, 3] if words == 2 else [0, 2, 4]
        assert labels[row, 1 : words + 1].tolist() == expected
        assert set(labels[row, words + 1 :].tolist()) | {labels[row, 0].item()} == {IGNORE_INDEX}

    short = tmp_path / "short.jsonl"
    short.write_text(json.dumps({"tokens": ["the", "city"], "tags": ["O"]}) + "\n", encoding="utf-8")
    with pytest.raises(
        TrtQuantError, match=re.escape(f"Row 1 of {short} has 2 words but its 'tags' is not a list")
    ):
        token_classification.training_batches(loaded, short, "tags", None, None, 8, 16, 0)
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"tokens": [], "tags": []}) + "\n", encoding="utf-8")
    with pytest.raises(
        TrtQuantError, match=re.escape(f"Row 1 of {empty} has no list of words in column 'tokens'")
    ):
        token_classification.read_inputs(loaded, empty, None, None)
