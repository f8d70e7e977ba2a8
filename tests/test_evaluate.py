"""Evaluation: metric functions against hand-computed values, and float vs INT8 reports on tiny artifacts."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from conftest import SHARED_GLUE
from rich.console import Console
from scipy import stats
from sklearn.metrics import f1_score
from tiny_models import sentences, tiny_config

from trt_quant.cli.reports import evaluation_table
from trt_quant.config import QuantConfig
from trt_quant.convert import convert
from trt_quant.errors import TrtQuantError
from trt_quant.evaluate.report import REPORT_JSON, REPORT_MD, EvaluationReport, evaluate_artifact
from trt_quant.runtime import load_runtime
from trt_quant.tasks import metrics
from trt_quant.tasks.squad import (
    QAExample,
    QAFeatures,
    best_span,
    decode_answers,
    read_squad,
    tokenize_questions,
)

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
GOLD = ["B-PER", "I-PER", "O", "B-LOC"]


def sklearn_macro_f1(labels: list[int], predictions: list[int]) -> float:
    return float(f1_score(labels, predictions, average="macro"))


# ---------------------------------------------------------------- metric functions


def test_accuracy_and_macro_f1_by_hand() -> None:
    predictions, labels = [0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0]
    assert metrics.accuracy(predictions, labels) == pytest.approx(4 / 6)
    # class 0: tp 1, 2 predicted, 2 true -> 1/2; class 1: tp 1, 1 predicted, 2 true -> 2/3; class 2: 4/5
    assert metrics.macro_f1(predictions, labels) == pytest.approx((1 / 2 + 2 / 3 + 4 / 5) / 3)
    assert metrics.macro_f1(predictions, labels) == pytest.approx(sklearn_macro_f1(labels, predictions))


def test_macro_f1_counts_a_class_that_is_only_predicted() -> None:
    predictions, labels = [0, 1, 3], [0, 1, 1]
    # class 0: 1; class 1: tp 1, 1 predicted, 2 true -> 2/3; class 3 (never true): 0
    assert metrics.macro_f1(predictions, labels) == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert metrics.macro_f1(predictions, labels) == pytest.approx(sklearn_macro_f1(labels, predictions))


def test_pearson_and_spearman_match_scipy() -> None:
    rng = np.random.default_rng(0)
    predictions, labels = rng.normal(size=50), rng.uniform(0, 5, size=50)
    assert metrics.pearson(predictions, labels) == pytest.approx(stats.pearsonr(predictions, labels)[0])
    assert metrics.spearman(predictions, labels) == pytest.approx(stats.spearmanr(predictions, labels)[0])
    assert metrics.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert metrics.spearman([1, 2, 3], [1, 4, 9]) == pytest.approx(1.0)
    assert np.isnan(metrics.pearson([1, 1, 1], [1, 2, 3]))


@pytest.mark.parametrize(
    ("tags", "entities"),
    [
        (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 2), ("LOC", 3, 4)]),
        (["O", "I-PER", "I-PER", "O"], [("PER", 1, 3)]),  # I- without B- starts an entity
        (["B-PER", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 2)]),  # a change of type starts a new one
        (["B-PER", "B-PER", "I-PER"], [("PER", 0, 1), ("PER", 1, 3)]),
        (["I-LOC", "B-LOC", "I-PER", "I-PER"], [("LOC", 0, 1), ("LOC", 1, 2), ("PER", 2, 4)]),
        (["O", "O"], []),
    ],
)
def test_entity_spans(tags: list[str], entities: list[tuple[str, int, int]]) -> None:
    assert metrics.entity_spans(tags) == entities


def test_entity_spans_refuse_non_bio_tags() -> None:
    with pytest.raises(ValueError, match="LABEL_1"):
        metrics.entity_spans(["O", "LABEL_1"])


@pytest.mark.parametrize(
    ("predicted", "gold", "expected"),
    [
        ([GOLD], [GOLD], (1.0, 1.0, 1.0)),
        ([["B-PER", "O", "O", "B-LOC"]], [GOLD], (0.5, 0.5, 0.5)),  # partial overlap counts as wrong
        ([["B-ORG", "I-ORG", "O", "B-LOC"]], [GOLD], (0.5, 0.5, 0.5)),  # right span, wrong type
        ([["I-PER", "I-PER", "O", "O"]], [GOLD], (1.0, 0.5, 2 / 3)),  # I- without B- still finds PER
        ([["O", "O"]], [["B-PER", "O"]], (0.0, 0.0, 0.0)),
        # seqeval's README example: micro-averaged over sentences, f1 0.50
        (
            [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]],
            [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]],
            (0.5, 0.5, 0.5),
        ),
    ],
)
def test_entity_scores(
    predicted: list[list[str]], gold: list[list[str]], expected: tuple[float, float, float]
) -> None:
    assert metrics.entity_scores(predicted, gold) == pytest.approx(expected)


def test_entity_scores_micro_average_over_sentences() -> None:
    predicted = [["B-PER", "O", "B-LOC"], ["B-PER", "O"]]
    gold = [["B-PER", "B-LOC", "I-LOC"], ["B-PER", "B-LOC"]]
    # predicted: PER(0,1), LOC(2,3), PER(0,1) -> right: PER, PER; gold: PER, LOC(1,3), PER, LOC(1,2)
    precision, recall, f1 = metrics.entity_scores(predicted, gold)
    assert (precision, recall) == pytest.approx((2 / 3, 2 / 4))
    assert f1 == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))


def test_squad_normalization_and_scores() -> None:
    assert metrics.normalize_answer("The  Cat's hat!") == "cats hat"
    assert metrics.normalize_answer("An apple, a banana") == "apple banana"  # 'an' inside banana stays
    assert metrics.exact_match("the Eiffel Tower", "Eiffel tower.") == 1.0
    assert metrics.exact_match("Eiffel", "Eiffel Tower") == 0.0
    assert metrics.answer_f1("a red car", "the red truck") == pytest.approx(0.5)
    assert metrics.answer_f1("red red car", "red car") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert metrics.answer_f1("", "anything") == 0.0
    exact, f1 = metrics.squad_scores(["Paris", "big red car"], [["paris!", "London"], ["a red car", "truck"]])
    assert exact == pytest.approx(0.5)  # example 1 exact; example 2 best F1 = 2*(2/3)*1/(2/3+1) = 0.8
    assert f1 == pytest.approx((1.0 + 0.8) / 2)


# ---------------------------------------------------------------- span decoding


def test_best_span_stays_in_the_context_and_in_order() -> None:
    start = np.array([0.0, 5.0, 1.0, 0.0, 9.0])
    end = np.array([0.0, 0.0, 6.0, 2.0, 8.0])
    context = np.array([False, True, True, True, False])  # position 4 scores highest but is not context
    assert best_span(start, end, context)[:2] == (1, 2)
    assert best_span(start, end, context, max_tokens=1)[:2] == (2, 2)  # 1 + 6 beats 5 + 0
    backwards = best_span(np.array([0.0, 0.0, 9.0]), np.array([9.0, 0.0, 1.0]), np.ones(3, dtype=bool))
    assert backwards is not None and backwards[:2] == (2, 2)  # (2, 0) would score 18 but ends too early
    assert best_span(start, end, np.zeros(5, dtype=bool)) is None


def test_decode_answers_picks_the_best_window_and_cuts_by_offsets() -> None:
    examples = [QAExample("1", "who?", "alice met bob in paris", ["bob"]), QAExample("2", "?", "x y", [])]
    offsets = np.array(
        [
            [[0, 0], [0, 5], [6, 9], [10, 13], [0, 0]],
            [[0, 0], [10, 13], [14, 16], [17, 22], [0, 0]],
            [[0, 0], [0, 1], [2, 3], [0, 0], [0, 0]],
        ]
    )
    context = np.array(
        [
            [False, True, True, True, False],
            [False, True, True, True, False],
            [False, True, True, False, False],
        ]
    )
    start = np.array([[0, 1, 0, 3, 0], [0, 0, 0, 6, 0], [0, 0, 2, 0, 0]], dtype=np.float32)
    end = np.array([[0, 0, 0, 3, 0], [0, 0, 0, 5, 0], [0, 0, 2, 0, 0]], dtype=np.float32)
    features = QAFeatures({}, np.array([0, 0, 1]), offsets, context)
    assert decode_answers(examples, features, start, end) == ["paris", "y"]  # window 2 (11) beats 1 (6)


def test_read_squad_and_its_errors(tmp_path: Path) -> None:
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(squad_document([("ctx one", [("q1", "one")]), ("ctx two", [("q2", "two")])])))
    examples = read_squad(path)
    assert [(e.question, e.context, e.answers) for e in examples] == [
        ("q1", "ctx one", ["one"]),
        ("q2", "ctx two", ["two"]),
    ]
    path.write_text(json.dumps({"data": [{"paragraphs": [{"qas": [{"question": "no context?"}]}]}]}))
    with pytest.raises(TrtQuantError, match="not SQuAD-style JSON"):
        read_squad(path)
    path.write_text(json.dumps({"data": []}))
    with pytest.raises(TrtQuantError, match="no questions"):
        read_squad(path)


# ---------------------------------------------------------------- tiny artifacts


def squad_document(paragraphs: list[tuple[str, list[tuple[str, str]]]]) -> dict:
    """A SQuAD v1.1 document: (context, [(question, answer)]) per paragraph."""
    return {
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [
                            {
                                "id": f"{p}-{q}",
                                "question": question,
                                "answers": [{"text": answer, "answer_start": context.find(answer)}],
                            }
                            for q, (question, answer) in enumerate(qas)
                        ],
                    }
                    for p, (context, qas) in enumerate(paragraphs)
                ],
            }
        ]
    }


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory, calib_file: Path) -> Callable[[Path, str], Path]:
    def run(model: Path, task: str) -> Path:
        output = tmp_path_factory.mktemp("evaluate") / task
        convert(model, task, calib_file, output, QuantConfig(calib_samples=64, batch_size=16, max_length=32))
        return output

    return run


@pytest.fixture
def classifier(tiny_artifact: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny classification artifact, so that reports land outside the shared one."""
    return Path(shutil.copytree(tiny_artifact, tmp_path / "classifier"))


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_classification_with_labels(classifier: Path, tmp_path: Path) -> None:
    texts = sentences(40, seed=5)
    labels = [i % 3 for i in range(40)]
    rows = [{"text": text, "label": label} for text, label in zip(texts, labels, strict=True)]
    data = write_csv(tmp_path / "dev.csv", rows)
    report = evaluate_artifact(classifier, data, label_column="label", batch_size=64, backend="onnxruntime")

    expected = {}
    for precision in ("float", "int8"):
        runtime = load_runtime(classifier, backend="onnxruntime", precision=precision)
        predicted = runtime.run_text(texts)["logits"].argmax(-1)
        expected[precision] = {
            "accuracy": 100 * float(np.mean(predicted == labels)),
            "macro_f1": 100 * sklearn_macro_f1(labels, predicted),
        }
        assert report.metrics[precision] == pytest.approx(expected[precision])
    assert report.task == "text-classification" and report.examples == 40 and report.labels == "label"
    assert report.backend == "onnxruntime"
    delta = expected["int8"]["accuracy"] - expected["float"]["accuracy"]
    assert report.deltas()["accuracy"] == pytest.approx(delta)
    assert 0 <= report.agreement.top1_agreement <= 1 and report.agreement.examples == 40

    saved = json.loads((classifier / REPORT_JSON).read_text(encoding="utf-8"))
    assert saved == report.as_dict()
    assert saved["metrics"]["float"]["accuracy"] == report.metrics["float"]["accuracy"]
    markdown = (classifier / REPORT_MD).read_text(encoding="utf-8")
    assert "| metric | float | INT8 | delta |" in markdown and "| accuracy |" in markdown
    assert "top-1 agreement" in markdown
    assert not [p for p in classifier.iterdir() if p.name.startswith(".")]  # no temporary files left
    load_runtime(classifier)  # the reports do not break checksum verification

    console = Console(record=True, width=200)
    console.print(evaluation_table(report))
    printed = console.export_text()
    assert "macro-F1" in printed and "INT8 vs float: mean cosine" in printed


def test_classification_label_names_and_digit_strings(classifier: Path, tmp_path: Path) -> None:
    texts = sentences(12, seed=6)
    by_index = write_csv(tmp_path / "a.csv", [{"text": t, "label": str(i % 3)} for i, t in enumerate(texts)])
    names = [{"text": t, "label": f"LABEL_{i % 3}"} for i, t in enumerate(texts)]
    by_name = write_jsonl(tmp_path / "b.jsonl", names)
    first = evaluate_artifact(classifier, by_index, label_column="label", write=False)
    second = evaluate_artifact(classifier, by_name, label_column="label", write=False)
    assert first.metrics == second.metrics
    assert not (classifier / REPORT_JSON).exists()


def test_without_labels_only_agreement(classifier: Path, tmp_path: Path) -> None:
    data = tmp_path / "texts.txt"
    data.write_text("\n".join(sentences(20, seed=7)) + "\n", encoding="utf-8")
    report = evaluate_artifact(classifier, data, batch_size=8, limit=10)
    assert report.examples == 10 and report.labels is None
    assert report.metrics == {"float": {}, "int8": {}}
    agreement = report.agreement
    assert 0.9 < agreement.mean_cosine <= 1.0 and agreement.min_cosine <= agreement.mean_cosine
    assert agreement.max_abs_diff > 0 and agreement.top1_agreement is not None
    assert "No labels" in (classifier / REPORT_MD).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def regressor(
    tiny_model: Callable[[str, str], Path],
    build: Callable[[Path, str], Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A text-classification artifact with a single logit: a regression head."""
    source = tiny_model("bert", "text-classification")
    model = Path(shutil.copytree(source, tmp_path_factory.mktemp("regression") / "model"))
    config = tiny_config("bert", "text-classification")
    config.num_labels = 1
    torch.manual_seed(0)
    transformers.AutoModelForSequenceClassification.from_config(config).save_pretrained(model)
    return build(model, "text-classification")


def test_single_logit_regression(regressor: Path, tmp_path: Path) -> None:
    texts = sentences(30, seed=12)
    scores = np.random.default_rng(1).uniform(0, 1, size=30).round(4)
    rows = [{"text": text, "y": float(score)} for text, score in zip(texts, scores, strict=True)]
    data = write_jsonl(tmp_path / "regression.jsonl", rows)
    report = evaluate_artifact(regressor, data, label_column="y", batch_size=64, write=False)
    for precision in ("float", "int8"):
        logit = load_runtime(regressor, precision=precision).run_text(texts)["logits"][:, 0]
        expected = {
            "pearson": 100 * stats.pearsonr(logit, scores)[0],
            "spearman": 100 * stats.spearmanr(logit, scores)[0],
        }
        assert report.metrics[precision] == pytest.approx(expected, abs=1e-6)
    strings = write_csv(tmp_path / "reg.csv", [{"text": "the model", "y": "positive"}])
    with pytest.raises(TrtQuantError, match=r"'positive' .* is not a number, which a single-logit"):
        evaluate_artifact(regressor, strings, label_column="y", write=False)


@pytest.fixture(scope="module")
def embedder(tiny_model: Callable[[str, str], Path], build: Callable[[Path, str], Path]) -> Path:
    return build(tiny_model("bert", "sentence-embedding"), "sentence-embedding")


def test_sentence_similarity_against_scores(embedder: Path, tmp_path: Path) -> None:
    first, second = sentences(30, seed=8), sentences(30, seed=9)
    scores = np.random.default_rng(0).uniform(0, 5, size=30).round(3)
    data = tmp_path / "sts.tsv"
    data.write_text(
        "sentence1\tsentence2\tscore\n"
        + "".join(f"{a}\t{b}\t{s:.3f}\n" for a, b, s in zip(first, second, scores, strict=True)),
        encoding="utf-8",
    )
    report = evaluate_artifact(embedder, data, label_column="score", batch_size=64, write=False)

    runtime = load_runtime(embedder, precision="float")
    left, right = (runtime.run_text(t)["sentence_embedding"].astype(np.float64) for t in (first, second))
    cosines = (left * right).sum(-1) / (np.linalg.norm(left, axis=-1) * np.linalg.norm(right, axis=-1))
    expected = {
        "pearson": 100 * stats.pearsonr(cosines, scores)[0],
        "spearman": 100 * stats.spearmanr(cosines, scores)[0],
    }
    assert report.metrics["float"] == pytest.approx(expected, abs=1e-6)
    assert set(report.metrics["int8"]) == {"pearson", "spearman"}
    assert report.agreement.top1_agreement is None and report.agreement.examples == 30


def test_sentence_similarity_errors(embedder: Path, tmp_path: Path) -> None:
    words = write_csv(tmp_path / "words.csv", [{"sentence1": "a", "sentence2": "b", "score": "high"}])
    with pytest.raises(TrtQuantError, match=r"'high' .* is not a number"):
        evaluate_artifact(embedder, words, label_column="score", write=False)
    unpaired = write_csv(tmp_path / "unpaired.csv", [{"text": "a", "score": 1.0}])
    with pytest.raises(TrtQuantError, match="--pair-column"):
        evaluate_artifact(embedder, unpaired, label_column="score", write=False)


@pytest.mark.skipif(not (SHARED_GLUE / "STS-B" / "dev.tsv").is_file(), reason="GLUE STS-B dev not present")
def test_stsb_dev_file_reads_and_scores(embedder: Path) -> None:
    report = evaluate_artifact(
        embedder, SHARED_GLUE / "STS-B" / "dev.tsv", label_column="score", limit=48, write=False
    )
    assert report.examples == 48
    assert all(-100 <= value <= 100 for value in report.metrics["float"].values())


@pytest.fixture(scope="module")
def tagger(
    tiny_model: Callable[[str, str], Path],
    build: Callable[[Path, str], Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A token-classification artifact whose source config names its 5 classes with BIO tags."""
    source = tiny_model("bert", "token-classification")
    model = Path(shutil.copytree(source, tmp_path_factory.mktemp("bio") / "model"))
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    config["id2label"] = dict(enumerate(TAGS))
    config["label2id"] = {tag: index for index, tag in enumerate(TAGS)}
    (model / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return build(model, "token-classification")


def word_tags(artifact: Path, precision: str, words: list[list[str]]) -> list[list[str]]:
    """Tags predicted directly: every word of the tiny vocabulary is one token, right after [CLS]."""
    logits = load_runtime(artifact, precision=precision).run_text([" ".join(w) for w in words])["logits"]
    classes = [row[1 : len(w) + 1].argmax(-1) for row, w in zip(logits, words, strict=True)]
    return [[TAGS[int(c)] for c in row] for row in classes]


def test_token_classification_entity_scores(tagger: Path, tmp_path: Path) -> None:
    words = [sentence.rstrip(".").split() for sentence in sentences(24, seed=10)]
    gold = word_tags(tagger, "float", words)  # the float model is right by construction
    assert any(metrics.entity_spans(tags) for tags in gold)
    rows = [{"tokens": w, "tags": t} for w, t in zip(words, gold, strict=True)]
    data = write_jsonl(tmp_path / "ner.jsonl", rows)
    report = evaluate_artifact(tagger, data, label_column="tags", batch_size=64, write=False)
    assert report.metrics["float"] == {"entity_precision": 100.0, "entity_recall": 100.0, "entity_f1": 100.0}
    int8 = metrics.entity_scores(word_tags(tagger, "int8", words), gold)
    assert report.metrics["int8"]["entity_f1"] == pytest.approx(100 * int8[2])
    assert report.agreement.top1_agreement is not None

    as_ids = write_jsonl(
        tmp_path / "ids.jsonl",
        [{"words": w, "ner_tags": [TAGS.index(tag) for tag in t]} for w, t in zip(words, gold, strict=True)],
    )
    assert evaluate_artifact(tagger, as_ids, label_column="ner_tags", write=False).metrics == report.metrics


def test_token_classification_errors(tagger: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    short = write_jsonl(tmp_path / "short.jsonl", [{"tokens": ["the", "city"], "tags": ["O"]}])
    with pytest.raises(TrtQuantError, match="one tag per word"):
        evaluate_artifact(tagger, short, label_column="tags", write=False)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"tokens": ["the", "city"], "tags": ["O", "CITY"]}])
    with pytest.raises(TrtQuantError, match=r"'CITY' .* is not a BIO tag"):
        evaluate_artifact(tagger, bad, label_column="tags", write=False)
    good = write_jsonl(tmp_path / "good.jsonl", [{"tokens": ["the", "city"], "tags": ["O", "B-LOC"]}])
    generic = {index: f"LABEL_{index}" for index in range(5)}
    monkeypatch.setattr("trt_quant.evaluate.report.model_label_names", lambda config: generic)
    with pytest.raises(TrtQuantError, match="not BIO tags: set id2label"):
        evaluate_artifact(tagger, good, label_column="tags", write=False)
    monkeypatch.setattr("trt_quant.evaluate.report.model_label_names", lambda config: None)
    with pytest.raises(TrtQuantError, match=r"config.json has no id2label for every class: set id2label"):
        evaluate_artifact(tagger, good, label_column="tags", write=False)
    without_labels = evaluate_artifact(tagger, good, write=False)  # tag names are only needed with labels
    assert without_labels.metrics == {"float": {}, "int8": {}}


@pytest.fixture(scope="module")
def reader(tiny_model: Callable[[str, str], Path], build: Callable[[Path, str], Path]) -> Path:
    return build(tiny_model("bert", "question-answering"), "question-answering")


def qa_paragraphs() -> list[tuple[str, list[tuple[str, str]]]]:
    texts = sentences(8, seed=11)
    long_context = " ".join(texts[4:])  # longer than 32 tokens: several windows
    return [
        (texts[0], [("what is the model ?", texts[0].split()[1]), ("who is it ?", texts[0].split()[0])]),
        (texts[1] + " " + texts[2], [("where is the city ?", " ".join(texts[2].split()[:2]))]),
        (long_context, [("when was the day ?", long_context.split()[-3])]),
    ]


def test_question_answering_report(reader: Path, tmp_path: Path) -> None:
    data = tmp_path / "squad.json"
    data.write_text(json.dumps(squad_document(qa_paragraphs())), encoding="utf-8")
    report = evaluate_artifact(reader, data, max_length=32, batch_size=2)
    assert report.task == "question-answering" and report.examples == 4 and report.labels == "answers"
    for precision in ("float", "int8"):
        assert set(report.metrics[precision]) == {"exact_match", "f1"}
        assert all(0 <= value <= 100 for value in report.metrics[precision].values())
    assert report.metrics["float"]["exact_match"] <= report.metrics["float"]["f1"]
    assert report.agreement.top1_agreement is not None
    assert json.loads((reader / REPORT_JSON).read_text(encoding="utf-8")) == report.as_dict()
    again = evaluate_artifact(reader, data, max_length=32, batch_size=2, write=False)
    assert again.metrics == report.metrics

    rows = [
        {"question": q, "context": c, "answers": {"text": [a], "answer_start": [c.find(a)]}}
        for c, qas in qa_paragraphs()
        for q, a in qas
    ]
    jsonl = write_jsonl(tmp_path / "squad.jsonl", rows)
    as_rows = evaluate_artifact(reader, jsonl, max_length=32, batch_size=2, write=False)
    assert as_rows.metrics == report.metrics


def test_question_answering_windows_cover_long_contexts(reader: Path) -> None:
    runtime = load_runtime(reader, precision="float")
    context, qas = qa_paragraphs()[2]
    example = QAExample("x", qas[0][0], context, [qas[0][1]])
    features = tokenize_questions(runtime.tokenizer, [example], runtime.input_names, 32)
    assert len(features.example_index) > 1 and set(features.example_index) == {0}
    covered = {
        start
        for window, mask in zip(features.offsets, features.context_mask, strict=True)
        for start, _ in window[mask]
    }
    assert max(covered) >= context.rfind(" ")  # the last word of the context is in some window


def test_question_answering_without_answers_and_fixed_fields(reader: Path, tmp_path: Path) -> None:
    document = squad_document(qa_paragraphs()[:1])
    for qa in document["data"][0]["paragraphs"][0]["qas"]:
        qa["answers"] = []
    data = tmp_path / "test.json"
    data.write_text(json.dumps(document), encoding="utf-8")
    report = evaluate_artifact(reader, data, write=False)
    assert report.metrics == {"float": {}, "int8": {}} and report.labels is None
    with pytest.raises(TrtQuantError, match="SQuAD JSON, whose fields are fixed"):
        evaluate_artifact(reader, data, label_column="answers", write=False)
    no_context = write_jsonl(tmp_path / "a.jsonl", [{"question": "who?", "context": None, "answers": ["x"]}])
    with pytest.raises(TrtQuantError, match="has no text in 'question' or 'context'"):
        evaluate_artifact(reader, no_context, write=False)
    bad_answers = write_jsonl(tmp_path / "b.jsonl", [{"question": "who?", "context": "x", "answers": 3}])
    with pytest.raises(TrtQuantError, match="no list of answer texts in 'answers'"):
        evaluate_artifact(reader, bad_answers, write=False)


@pytest.mark.parametrize(
    ("content", "options", "message"),
    [
        ("text,label\nthe model,1\n", {"label_column": "gold"}, "Column 'gold' is not in"),
        ("text,label\nthe model,0.5\n", {"label_column": "label"}, r"'0.5' .* is not a class of this model"),
        ("text,label\nthe model,7\n", {"label_column": "label"}, r"'7' .* of this model \(0 to 2 or one of"),
        ("text,label\nthe model,good\n", {"label_column": "label"}, "or one of LABEL_0, LABEL_1, LABEL_2"),
        ("text,label\n", {"label_column": "label"}, "is empty"),
        ("text\nthe model\n", {"max_length": 1000}, "--max-length 1000 is outside"),
        ("text\nthe model\n", {"limit": 0}, "must be at least 1"),
    ],
)
def test_user_mistakes_are_one_sentence(
    classifier: Path, tmp_path: Path, content: str, options: dict, message: str
) -> None:
    data = tmp_path / "data.csv"
    data.write_text(content, encoding="utf-8")
    with pytest.raises(TrtQuantError, match=message) as raised:
        evaluate_artifact(classifier, data, **options)
    assert str(raised.value).count(": ") >= 1 and "\n" not in str(raised.value)
    assert not (classifier / REPORT_JSON).exists()


def test_report_as_dict_turns_nan_into_none() -> None:
    from trt_quant.evaluate.report import OutputAgreement

    report = EvaluationReport(
        "a",
        "d",
        "sentence-embedding",
        "onnxruntime",
        2,
        "score",
        {"float": {"pearson": float("nan")}, "int8": {"pearson": 50.0}},
        OutputAgreement(2, 1.0, 1.0, 0.0, None),
    )
    content = report.as_dict()
    assert content["metrics"]["float"]["pearson"] is None and content["metrics"]["delta"]["pearson"] is None
    json.dumps(content, allow_nan=False)


def test_label_names_travel_with_the_artifact(tagger: Path, tmp_path: Path) -> None:
    """The source model directory is gone: the artifact's own config.json still names the BIO tags."""
    good = write_jsonl(tmp_path / "good.jsonl", [{"tokens": ["the", "city"], "tags": ["O", "B-LOC"]}])
    source = Path(json.loads((tagger / "manifest.json").read_text(encoding="utf-8"))["source_model"])
    assert json.loads((tagger / "config.json").read_text(encoding="utf-8"))["id2label"]["1"] == TAGS[1]
    hidden = source.rename(source.with_name("moved-away"))
    try:
        report = evaluate_artifact(tagger, good, label_column="tags", write=False)
    finally:
        hidden.rename(source)
    assert set(report.metrics["int8"]) >= {"entity_f1"}
