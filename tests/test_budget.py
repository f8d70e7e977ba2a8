"""Drop budgets ("drop<=X" task-metric points) for sentence similarity, token classification and question
answering: the float score convert records equals one computed here straight from transformers, and a poor
calibration is repaired by keeping layers float until the drop is within the budget."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from scipy import stats
from tiny_models import TASK_CLASSES, sentences, tiny_config

from trt_quant.config import QuantConfig
from trt_quant.convert import convert
from trt_quant.errors import TrtQuantError
from trt_quant.tasks.metrics import normalize_answer

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
POOR = {"method": "percentile", "percentile": 50.0, "smoothquant": None, "int8_embeddings": False}
"""A calibration that clips half of every activation range: quantizing everything costs accuracy."""


def within_budget(mixed: dict, drop: float) -> bool:
    return mixed.float_score - mixed.score <= drop


# ---------------------------------------------------------------- sentence similarity (STS-B layout)


def embeddings(model_dir: Path, texts: list[str]) -> torch.Tensor:
    """Mean of the last hidden states of each text on its own (no padding), straight from transformers."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModel.from_pretrained(model_dir).eval()
    with torch.no_grad():
        rows = [
            model(**tokenizer(text, truncation=True, max_length=32, return_tensors="pt")).last_hidden_state[0]
            for text in texts
        ]
    return torch.stack([row.mean(0) for row in rows])


def with_larger_weights(model_dir: Path, task: str, directory: Path) -> Path:
    """A copy of a tiny BERT re-initialized with 5x larger weights, so that its Linear layers, not its
    embeddings, decide the outputs and quantizing them can cost accuracy."""
    model_dir = Path(shutil.copytree(model_dir, directory / "model"))
    config = tiny_config("bert", task)
    config.initializer_range = 0.1
    torch.manual_seed(0)
    getattr(transformers, TASK_CLASSES[task]).from_config(config).save_pretrained(model_dir)
    return model_dir


@pytest.fixture(scope="module")
def similarity(tiny_model: Callable[[str, str], Path], tmp_path_factory: pytest.TempPathFactory):
    """(model, STS-B-like dev.tsv of 40 pairs, Spearman x100 of the float model on it computed here)."""
    directory = tmp_path_factory.mktemp("sts")
    model_dir = with_larger_weights(tiny_model("bert", "sentence-embedding"), "sentence-embedding", directory)
    first, second = sentences(40, seed=21), sentences(40, seed=22)
    cosines = torch.nn.functional.cosine_similarity(
        embeddings(model_dir, first), embeddings(model_dir, second)
    )
    noise = np.random.default_rng(3).normal(0.0, float(cosines.std()), size=40)
    gold = (cosines.numpy() + noise).round(4)
    data = directory / "dev.tsv"
    data.write_text(
        "sentence1\tsentence2\tscore\n"
        + "".join(f"{a}\t{b}\t{s}\n" for a, b, s in zip(first, second, gold, strict=True)),
        encoding="utf-8",
    )
    return model_dir, data, 100 * stats.spearmanr(cosines.numpy(), gold)[0]


def test_drop_budget_on_sentence_similarity_records_the_float_spearman(
    similarity, calib_file, tmp_path
) -> None:
    model_dir, data, expected = similarity
    report = convert(
        model_dir,
        "sentence-embedding",
        calib_file,
        tmp_path / "a",
        QuantConfig(calib_samples=64, max_length=32),
        eval_data=data,  # the pair column (sentence2) is guessed, as trt-quant evaluate does
        label_column="score",
        accuracy_budget="drop<=0.5",
    )
    mixed = report.manifest.quantization.mixed_precision
    assert mixed.metric == "Spearman x100" and mixed.budget == "drop<=0.5"
    assert 20 < expected < 100 and mixed.float_score == pytest.approx(expected, abs=1e-6)
    assert within_budget(mixed, 0.5)
    assert report.manifest.accuracy.examples == 80  # agreement measured on each text on its own


def test_drop_budget_on_sentence_similarity_repairs_a_poor_calibration(
    similarity, calib_file, tmp_path
) -> None:
    model_dir, data, expected = similarity
    report = convert(
        model_dir,
        "sentence-embedding",
        calib_file,
        tmp_path / "a",
        QuantConfig(calib_samples=64, max_length=32, **POOR),
        eval_data=data,
        label_column="score",
        accuracy_budget="drop<=1",
    )
    mixed = report.manifest.quantization.mixed_precision
    assert mixed.float_score == pytest.approx(expected, abs=1e-6)
    assert mixed.float_layers and within_budget(mixed, 1.0)
    assert report.manifest.quantization.quantized_linears == 12 - len(mixed.float_layers)


def write_sts(path: Path, rows: list[str], header: str = "sentence1\tsentence2\tscore") -> Path:
    path.write_text(header + "\n" + "".join(row + "\n" for row in rows), encoding="utf-8")
    return path


def test_sentence_similarity_drop_budget_needs_pairs(tiny_model, calib_file, tmp_path) -> None:
    data = write_sts(
        tmp_path / "dev.tsv", [f"{text}\t{i}" for i, text in enumerate(sentences(8))], "text\tscore"
    )
    with pytest.raises(TrtQuantError) as raised:
        convert(
            tiny_model("bert", "sentence-embedding"),
            "sentence-embedding",
            calib_file,
            tmp_path / "a",
            QuantConfig(calib_samples=16, max_length=32),
            eval_data=data,
            label_column="score",
            accuracy_budget="drop<=0.5",
        )
    assert str(raised.value) == (
        "Similarity labels need sentence pairs and no second-text column was found: pass --pair-column."
    )
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("held_out_in_calib", [False, True])
def test_sentence_similarity_drop_budget_needs_numeric_scores(
    tiny_model, calib_file, tmp_path, held_out_in_calib: bool
) -> None:
    texts = sentences(40, seed=4)
    rows = [f"{a}\t{b}\t{i / 8}" for i, (a, b) in enumerate(zip(texts[:20], texts[20:], strict=True))]
    rows[18] = rows[18].rsplit("\t", 1)[0] + "\thigh"
    data = write_sts(tmp_path / "sts.tsv", rows)
    with pytest.raises(TrtQuantError) as raised:
        convert(
            tiny_model("bert", "sentence-embedding"),
            "sentence-embedding",
            data if held_out_in_calib else calib_file,
            tmp_path / "a",
            QuantConfig(calib_samples=16 if held_out_in_calib else 32, max_length=32),
            eval_data=None if held_out_in_calib else data,
            label_column="score",
            accuracy_budget="drop<=0.5",
        )
    assert str(raised.value) == (
        f"Label 'high' in row 19 of column 'score' of {data} is not a number, which a similarity score "
        "needs: fix that row or pass the --label-column that holds such labels."
    )
    assert not (tmp_path / "a").exists()


# ---------------------------------------------------------------- token classification (BIO tags)


@pytest.fixture(scope="module")
def tagging(tiny_model: Callable[[str, str], Path], tmp_path_factory: pytest.TempPathFactory):
    """(BIO-tagging model, jsonl of 96 rows whose tags are the float model's own, computed here)."""
    directory = tmp_path_factory.mktemp("bio")
    model_dir = Path(shutil.copytree(tiny_model("bert", "token-classification"), directory / "model"))
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    config["id2label"] = dict(enumerate(TAGS))
    config["label2id"] = {tag: index for index, tag in enumerate(TAGS)}
    (model_dir / "config.json").write_text(json.dumps(config), encoding="utf-8")
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForTokenClassification.from_pretrained(model_dir).eval()
    rows = []
    for sentence in sentences(96, seed=13):
        words = sentence.rstrip(".").split()  # every word of the tiny vocabulary is one token
        with torch.no_grad():
            logits = model(**tokenizer(" ".join(words), return_tensors="pt")).logits[0]
        rows.append({"tokens": words, "tags": [TAGS[int(c)] for c in logits[1 : len(words) + 1].argmax(-1)]})
    assert any(tag != "O" for row in rows[64:] for tag in row["tags"])
    data = directory / "ner.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return model_dir, data


@pytest.mark.parametrize(("recipe", "drop"), [({}, 2.0), (POOR, 5.0)])
def test_drop_budget_on_entity_f1(tagging, tmp_path, recipe: dict, drop: float) -> None:
    model_dir, data = tagging
    report = convert(  # 64 rows calibrate (their words joined), the 32 after them are held out
        model_dir,
        "token-classification",
        data,
        tmp_path / "a",
        QuantConfig(calib_samples=64, max_length=32, **recipe),
        label_column="tags",
        accuracy_budget=f"drop<={drop}",
    )
    mixed = report.manifest.quantization.mixed_precision
    assert mixed.metric == "entity F1" and mixed.float_score == 100.0  # gold = float tags
    assert within_budget(mixed, drop)
    if recipe:
        assert mixed.float_layers


# ---------------------------------------------------------------- question answering (SQuAD F1)


def float_answer(tokenizer, model, question: str, context: str) -> str:
    """The best span (start <= end, under 30 tokens, inside the context) of the float model, by brute force."""
    encoded = tokenizer(question, context, return_offsets_mapping=True, return_tensors="pt")
    offsets = encoded.pop("offset_mapping")[0].tolist()
    with torch.no_grad():
        output = model(**encoded)
    start, end = output.start_logits[0].tolist(), output.end_logits[0].tolist()
    inside = [i for i, part in enumerate(encoded.sequence_ids(0)) if part == 1]
    spans = [(s, e) for s in inside for e in inside if 0 <= e - s < 30]
    first, last = max(spans, key=lambda span: start[span[0]] + end[span[1]])
    return context[offsets[first][0] : offsets[last][1]]


@pytest.fixture(scope="module")
def reading(tiny_model: Callable[[str, str], Path], tmp_path_factory: pytest.TempPathFactory):
    """(QA model, jsonl of questions whose gold answer is the float model's own, computed here)."""
    model_dir = tiny_model("bert", "question-answering")
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(model_dir).eval()
    questions = ["what is the model ?", "who ran the engine ?", "where is the city ?", "when was the day ?"]
    rows = []
    for index, context in enumerate(sentences(48, seed=17)):
        question = questions[index % len(questions)]
        answer = float_answer(tokenizer, model, question, context)
        if normalize_answer(answer):  # an answer of only "the" or "." scores 0 even against itself
            rows.append({"question": question, "context": context, "answers": {"text": [answer]}})
    assert len(rows) >= 24
    data = tmp_path_factory.mktemp("squad") / "dev.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return model_dir, data


@pytest.mark.parametrize(("recipe", "drop"), [({}, 2.0), (POOR, 5.0)])
def test_drop_budget_on_squad_f1(reading, calib_file, tmp_path, recipe: dict, drop: float) -> None:
    model_dir, data = reading
    report = convert(
        model_dir,
        "question-answering",
        calib_file,
        tmp_path / "a",
        QuantConfig(calib_samples=64, max_length=64, **recipe),
        eval_data=data,  # question, context (guessed) and answers columns
        label_column="answers",
        accuracy_budget=f"drop<={drop}",
    )
    mixed = report.manifest.quantization.mixed_precision
    assert mixed.metric == "F1" and mixed.float_score == pytest.approx(100.0)  # gold = float answers
    assert within_budget(mixed, drop)
    if recipe:
        assert mixed.float_layers


def test_question_answering_drop_budget_needs_answer_lists(reading, calib_file, tmp_path) -> None:
    model_dir, data = reading
    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()]
    rows[2]["answers"] = 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    with pytest.raises(
        TrtQuantError, match=re.escape(f"Label 3 in row 3 of column 'answers' of {bad} is not")
    ):
        convert(
            model_dir,
            "question-answering",
            calib_file,
            tmp_path / "a",
            QuantConfig(calib_samples=16, max_length=64),
            eval_data=bad,
            label_column="answers",
            accuracy_budget="drop<=1",
        )
