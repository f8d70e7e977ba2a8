"""Float vs quantized on a data file: task metrics with labels, agreement and cosine of outputs always.

Task metrics are in percent (GLUE/SQuAD convention): accuracy and macro-F1 for classification,
Pearson/Spearman x100 for regression and sentence similarity, entity-level precision/recall/F1 for
token classification, exact match and F1 for extractive question answering.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trt_quant.artifacts import MODEL_CONFIG, TOKENIZER_DIR, Manifest, quantized_precision, write_atomically
from trt_quant.data import TextData, batched, pick_column, read_rows, read_texts, select_inputs
from trt_quant.errors import TrtQuantError
from trt_quant.progress import progress
from trt_quant.runtime.base import Runtime
from trt_quant.tasks import metrics
from trt_quant.tasks.squad import (
    QAExample,
    decode_answers,
    examples_from_rows,
    is_squad_json,
    read_squad,
    tokenize_questions,
)

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
METRIC_NAMES = {
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "pearson": "Pearson x100",
    "spearman": "Spearman x100",
    "entity_precision": "entity precision",
    "entity_recall": "entity recall",
    "entity_f1": "entity F1",
    "exact_match": "exact match",
    "f1": "F1",
}
"""Display names of the task metrics (all in percent)."""


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
    vectors = []
    for row, row_mask in zip(output, mask, strict=True):
        vectors.append(np.asarray(row[row_mask.astype(bool)] if per_token else row, dtype=np.float64).ravel())
    return vectors


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
        left, right = (per_example_vectors(output, mask, per_token[name]) for output in (ref, got))
        cosines.extend(_cosine(a, b) for a, b in zip(left, right, strict=True))
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


CLASSIFYING_TASKS: Sequence[str] = ("text-classification", "token-classification", "question-answering")
PRECISIONS = ("float", "int8")
Metrics = dict[str, dict[str, float]]
"""Task metrics in percent per precision: {"float": {"accuracy": 91.2, ...}, "int8": {...}}."""


@dataclass
class EvaluationReport:
    """Float vs INT8 on one data file.

    ``metrics`` maps "float" and "int8" to the task metrics in percent (both empty without labels);
    ``agreement`` compares the INT8 outputs with the float outputs and is always measured. ``precision``
    is the quantized graph's ("int8" or "fp8"; for FP8 the "int8" entries hold the FP8 graph's metrics).
    """

    artifact: str
    data: str
    task: str
    backend: str
    examples: int
    labels: str | None
    metrics: Metrics
    agreement: OutputAgreement
    precision: str = "int8"

    def deltas(self) -> dict[str, float]:
        """INT8 minus float, per metric."""
        return {name: self.metrics["int8"][name] - value for name, value in self.metrics["float"].items()}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with a "delta" entry in ``metrics``; NaN (an undefined correlation) becomes None."""
        content = asdict(self)
        content["metrics"] = {**self.metrics, "delta": self.deltas()}
        return _finite(content)


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _no_metrics() -> Metrics:
    return {precision: {} for precision in PRECISIONS}


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


@dataclass
class _Job:
    """One evaluation: the two runtimes, the data file and its columns, batching and truncation."""

    comparison: Comparison
    data: Path
    text_column: str | None
    pair_column: str | None
    label_column: str | None
    batch_size: int
    max_length: int
    limit: int | None

    @property
    def runtime(self) -> Runtime:
        """The float runtime, whose tokenizer and input names both runtimes share."""
        return self.comparison.reference

    @property
    def manifest(self) -> Manifest:
        return self.comparison.reference.manifest

    def head(self, items: list[Any]) -> list[Any]:
        return items[: self.limit] if self.limit else items

    def texts(self, guess_pairs: bool) -> TextData:
        data = read_texts(self.data, self.text_column, self.pair_column, self.label_column, guess_pairs)
        return data.head(self.limit) if self.limit else data

    def chunks(self, count: int) -> Iterator[slice]:
        """Slices of ``batch_size`` over ``count`` examples, with a progress bar."""
        starts = range(0, count, self.batch_size)
        for start in progress(starts, "evaluating float vs INT8", total=len(starts)):
            yield slice(start, start + self.batch_size)

    @property
    def labels(self) -> LabelSource:
        return LabelSource(self.data, self.label_column)


def model_config_path(artifact: Path, manifest: Manifest) -> Path:
    """The model's config.json: the artifact's own copy (artifacts before it: the source model's)."""
    own = artifact / MODEL_CONFIG
    return own if own.is_file() else Path(manifest.source_model) / "config.json"


def model_label_names(config: Path) -> dict[int, str] | None:
    """The model's ``id2label`` from its ``config`` (config.json), if it has one."""
    try:
        id2label = json.loads(config.read_text(encoding="utf-8")).get("id2label")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    return {int(index): str(name) for index, name in id2label.items()} if isinstance(id2label, dict) else None


def _class_count(manifest: Manifest) -> int:
    """Size of the last axis of the first output: classes (tags) of a classification head."""
    return int(manifest.outputs[0].shape[-1])


def _number(label: Any) -> float | None:
    if isinstance(label, bool):
        return None
    try:
        value = float(label)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def numeric_labels(labels: list[Any], source: LabelSource, needed_by: str) -> np.ndarray:
    """Labels as float64 numbers; one that is not a finite number is an error saying it is ``needed_by``."""
    values = [_number(label) for label in labels]
    for index, (label, value) in enumerate(zip(labels, values, strict=True)):
        if value is None:
            raise source.error(label, index, f"a number, which {needed_by} needs")
    return np.asarray(values, dtype=np.float64)


def class_ids(
    labels: list[Any], classes: int, names: dict[int, str] | None, source: LabelSource
) -> np.ndarray:
    """Class indices from integer labels, digit strings or the model's label ``names``."""
    by_name = {name: index for index, name in (names or {}).items()}
    ids = []
    for index, label in enumerate(labels):
        name = label.strip() if isinstance(label, str) else None
        value = by_name[name] if name in by_name else _number(label)
        if value is None or not float(value).is_integer() or not 0 <= value < classes:
            choices = f" or one of {', '.join(by_name)}" if by_name else ""
            raise source.error(label, index, f"a class of this model (0 to {classes - 1}{choices})")
        ids.append(int(value))
    return np.asarray(ids)


def classification_targets(
    labels: list[Any], classes: int, names: dict[int, str] | None, source: LabelSource
) -> np.ndarray:
    """Gold values of a text classifier with ``classes`` logits: numbers for a single-logit regression
    head, else class indices."""
    if classes == 1:
        return numeric_labels(labels, source, "a single-logit regression model")
    return class_ids(labels, classes, names, source)


def correlations(predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman x100."""
    return {
        "pearson": 100 * metrics.pearson(predictions, targets),
        "spearman": 100 * metrics.spearman(predictions, targets),
    }


def classification_metrics(logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 (percent) of the argmax; Pearson/Spearman x100 of a single logit (regression)."""
    if logits.shape[-1] == 1:
        return correlations(logits[:, 0], targets)
    predictions = logits.argmax(-1)
    return {
        "accuracy": 100 * metrics.accuracy(predictions, targets),
        "macro_f1": 100 * metrics.macro_f1(predictions, targets),
    }


def _classification(job: _Job) -> tuple[int, Metrics]:
    """Text classification: accuracy and macro-F1 of the argmax; a single-logit model is a regression
    scored by Pearson/Spearman of its logit."""
    data = job.texts(guess_pairs=True)
    classes = _class_count(job.manifest)
    targets = None
    if data.labels is not None:
        names = model_label_names(model_config_path(job.runtime.directory, job.manifest))
        targets = classification_targets(data.labels, classes, names, job.labels)
    name = job.manifest.output_names[0]
    logits: dict[str, list[np.ndarray]] = {precision: [] for precision in PRECISIONS}
    for part in job.chunks(len(data)):
        batch = data.slice(part.start, part.stop)
        results = job.comparison.run(job.runtime.tokenize(batch.texts, batch.pairs, job.max_length))
        for precision, result in zip(PRECISIONS, results, strict=True):
            logits[precision].append(result[name])
    if targets is None:
        return len(data), _no_metrics()
    return len(data), {
        precision: classification_metrics(np.concatenate(parts), targets)
        for precision, parts in logits.items()
    }


def check_similarity_pairs(data: TextData) -> None:
    """Similarity scores belong to sentence pairs: refuse labelled data without second texts."""
    if data.pairs is None:
        raise TrtQuantError(
            "Similarity labels need sentence pairs and no second-text column was found: pass --pair-column."
        )


def pair_cosines(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Cosine of each row of ``left`` with the same row of ``right``, in float64."""
    pairs = zip(left.astype(np.float64), right.astype(np.float64), strict=True)
    return np.asarray([_cosine(a, b) for a, b in pairs])


def _similarity(job: _Job) -> tuple[int, Metrics]:
    """Sentence embeddings: Pearson/Spearman x100 of cosine(text, pair) against similarity scores (STS-B)."""
    data = job.texts(guess_pairs=True)
    targets = None
    if data.labels is not None:
        check_similarity_pairs(data)
        targets = numeric_labels(data.labels, job.labels, "a similarity score")
    name = job.manifest.output_names[0]
    similarities: dict[str, list[np.ndarray]] = {precision: [] for precision in PRECISIONS}
    for part in job.chunks(len(data)):
        batch = data.slice(part.start, part.stop)
        first = job.comparison.run(job.runtime.tokenize(batch.texts, None, job.max_length))
        if batch.pairs is not None:
            second = job.comparison.run(job.runtime.tokenize(batch.pairs, None, job.max_length))
            for precision, left, right in zip(PRECISIONS, first, second, strict=True):
                similarities[precision].append(pair_cosines(left[name], right[name]))
    if targets is None:
        return len(data), _no_metrics()
    return len(data), {
        precision: correlations(np.concatenate(parts), targets) for precision, parts in similarities.items()
    }


def _outputs_only(job: _Job) -> tuple[int, Metrics]:
    """Feature extraction: no task metric, only the agreement of the outputs."""
    if job.label_column is not None:
        raise TrtQuantError("A feature-extraction model has no task metric for labels: drop --label-column.")
    data = job.texts(guess_pairs=False)
    for part in job.chunks(len(data)):
        batch = data.slice(part.start, part.stop)
        job.comparison.run(job.runtime.tokenize(batch.texts, batch.pairs, job.max_length))
    return len(data), _no_metrics()


def _words(value: Any, number: int, column: str, path: Path) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list) and all(isinstance(word, str) for word in value):
        return value
    raise TrtQuantError(f"Row {number} of {path} has no list of words in column '{column}': write a list.")


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
    if not isinstance(value, list) or len(value) != words:
        raise TrtQuantError(
            f"Row {source.row(index)} of {source.path} has {words} words but its '{source.column}' is not a "
            f"list of {words} tags: give one tag per word."
        )
    tags = []
    for tag in value:
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


def tokenize_words(tokenizer: Any, words: list[list[str]], max_length: int) -> Any:
    """Tokenize lists of words into numpy arrays (padded to the longest, cut at ``max_length``); the
    result's ``word_ids(row)`` maps each token to its word."""
    return tokenizer(
        words,
        is_split_into_words=True,
        truncation=True,
        max_length=max_length,
        padding=True,
        return_tensors="np",
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


def entity_metrics(predicted: list[list[str]], gold: list[list[str]]) -> dict[str, float]:
    """Entity-level precision, recall and F1 (percent) of predicted word tags against the gold ones."""
    precision, recall, f1 = metrics.entity_scores(predicted, gold)
    return {"entity_precision": 100 * precision, "entity_recall": 100 * recall, "entity_f1": 100 * f1}


def _token_classification(job: _Job) -> tuple[int, Metrics]:
    """Token classification: entity-level precision, recall and F1 of word tags (first sub-token per word).

    Each row holds a list of words (a string is split on whitespace) and, with labels, one tag per word:
    a BIO tag string or a class index of the model.
    """
    rows = job.head(read_rows(job.data))
    column = pick_column(rows, job.text_column, ("tokens", "words"), job.data)
    words = [_words(row[column], number, column, job.data) for number, row in enumerate(rows, start=1)]
    gold = names = None
    if job.label_column is not None:
        tag_column = pick_column(rows, job.label_column, (), job.data)
        config = model_config_path(job.runtime.directory, job.manifest)
        names = bio_label_names(model_label_names(config), _class_count(job.manifest), config)
        gold = [
            gold_tags(row[tag_column], len(row_words), index, names, job.labels)
            for index, (row, row_words) in enumerate(zip(rows, words, strict=True))
        ]
    tokenizer = word_tokenizer(job.runtime.directory / TOKENIZER_DIR)
    name = job.manifest.output_names[0]
    predicted: dict[str, list[list[str]]] = {precision: [] for precision in PRECISIONS}
    for part in job.chunks(len(words)):
        batch = words[part]
        encoded = tokenize_words(tokenizer, batch, job.max_length)
        results = job.comparison.run(select_inputs(encoded, job.runtime.input_names))
        if names is None:  # no labels: the agreement of the outputs is all there is to measure
            continue
        for precision, result in zip(PRECISIONS, results, strict=True):
            classes = result[name].argmax(-1)
            predicted[precision] += [
                word_tags(classes[row], encoded.word_ids(row), len(row_words), names)
                for row, row_words in enumerate(batch)
            ]
    if gold is None:
        return len(words), _no_metrics()
    return len(words), {precision: entity_metrics(tags, gold) for precision, tags in predicted.items()}


def _qa_examples(job: _Job) -> list[QAExample]:
    if is_squad_json(job.data):
        if any(column is not None for column in (job.text_column, job.pair_column, job.label_column)):
            raise TrtQuantError(
                f"{job.data} is SQuAD JSON, whose fields are fixed: "
                "drop --text-column, --pair-column and --label-column."
            )
        return read_squad(job.data)
    rows = read_rows(job.data)
    question = pick_column(rows, job.text_column, ("question",), job.data)
    context = pick_column(rows, job.pair_column, ("context",), job.data)
    answers = job.label_column or ("answers" if "answers" in rows[0] else None)
    answers_column = answers and pick_column(rows, answers, (), job.data)
    return examples_from_rows(rows, question, context, answers_column, job.data)


def squad_metrics(predictions: list[str], examples: Sequence[QAExample]) -> dict[str, float]:
    """SQuAD v1.1 exact match and F1 (percent) over the examples that have answers; empty when none has."""
    answered = [index for index, example in enumerate(examples) if example.answers]
    if not answered:
        return {}
    truths = [examples[index].answers for index in answered]
    exact, f1 = metrics.squad_scores([predictions[index] for index in answered], truths)
    return {"exact_match": 100 * exact, "f1": 100 * f1}


def _question_answering(job: _Job) -> tuple[int, Metrics]:
    """Extractive QA: SQuAD v1.1 exact match and F1 over the questions that have answers."""
    examples = job.head(_qa_examples(job))
    start_name, end_name = job.manifest.output_names
    answers: dict[str, list[str]] = {precision: [] for precision in PRECISIONS}
    for part in job.chunks(len(examples)):
        batch = examples[part]
        features = tokenize_questions(job.runtime.tokenizer, batch, job.runtime.input_names, job.max_length)
        logits: dict[str, list[dict[str, np.ndarray]]] = {precision: [] for precision in PRECISIONS}
        windows = len(features.example_index)
        for start in range(0, windows, job.batch_size):  # long contexts give several windows per question
            feeds = {key: value[start : start + job.batch_size] for key, value in features.feeds.items()}
            for precision, result in zip(PRECISIONS, job.comparison.run(feeds), strict=True):
                logits[precision].append(result)
        for precision, parts in logits.items():
            start_logits = np.concatenate([result[start_name] for result in parts])
            end_logits = np.concatenate([result[end_name] for result in parts])
            answers[precision] += decode_answers(batch, features, start_logits, end_logits)
    return len(examples), {
        precision: squad_metrics(predictions, examples) for precision, predictions in answers.items()
    }


TASK_EVALUATORS = {
    "text-classification": _classification,
    "sentence-embedding": _similarity,
    "token-classification": _token_classification,
    "question-answering": _question_answering,
    "feature-extraction": _outputs_only,
}


def evaluate_artifact(
    artifact_dir: str | Path,
    data: str | Path,
    text_column: str | None = None,
    pair_column: str | None = None,
    label_column: str | None = None,
    backend: str = "auto",
    batch_size: int = 32,
    max_length: int | None = None,
    limit: int | None = None,
    write: bool = True,
    verify: bool = True,
) -> EvaluationReport:
    """Compare the float graph (ONNX Runtime) with the INT8 model (on ``backend``) on a data file.

    With labels (``label_column``; the answers of SQuAD JSON) the report holds the task metrics of both;
    the agreement of the INT8 outputs with the float outputs is always measured. ``limit`` keeps the first
    examples only; ``write`` saves report.md and report.json into the artifact directory.
    """
    from trt_quant.runtime import load_runtime

    if batch_size < 1 or (limit is not None and limit < 1):
        raise TrtQuantError("--batch-size and --limit must be at least 1: pass positive numbers.")
    directory = Path(artifact_dir)
    reference = load_runtime(directory, backend="onnxruntime", precision="float", verify=verify)
    candidate = load_runtime(directory, backend=backend, verify=False)
    manifest = reference.manifest
    if max_length is not None and not 0 < max_length <= manifest.max_length:
        raise TrtQuantError(
            f"--max-length {max_length} is outside this model's range of 1 to {manifest.max_length} tokens: "
            f"pass a length in that range."
        )
    comparison = Comparison(reference, candidate, manifest.task in CLASSIFYING_TASKS)
    job = _Job(
        comparison,
        Path(data),
        text_column,
        pair_column,
        label_column,
        batch_size,
        max_length or manifest.max_length,
        limit,
    )
    examples, scores = TASK_EVALUATORS[manifest.task](job)
    labels = "answers" if manifest.task == "question-answering" and scores["float"] else label_column
    report = EvaluationReport(
        artifact=str(directory),
        data=str(data),
        task=manifest.task,
        backend=candidate.backend,
        examples=examples,
        labels=labels,
        metrics=scores,
        agreement=comparison.agreement(examples),
        precision=quantized_precision(manifest),
    )
    if write:
        write_atomically(directory / REPORT_JSON, (json.dumps(report.as_dict(), indent=2) + "\n").encode())
        write_atomically(directory / REPORT_MD, evaluation_markdown(report).encode())
    return report


def format_number(value: float | None, digits: int = 2, signed: bool = False) -> str:
    """A number for display with fixed decimals; "n/a" when undefined."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def agreement_rows(agreement: OutputAgreement) -> list[tuple[str, str]]:
    """(measure, value) pairs describing INT8 outputs against float outputs, for tables."""
    rows = []
    if agreement.top1_agreement is not None:
        rows.append(("top-1 agreement", f"{100 * agreement.top1_agreement:.2f}%"))
    rows += [
        ("mean cosine", format_number(agreement.mean_cosine, 6)),
        ("min cosine", format_number(agreement.min_cosine, 6)),
        ("max abs difference", format_number(agreement.max_abs_diff, 4)),
    ]
    return rows


def evaluation_markdown(report: EvaluationReport) -> str:
    """report.md: the task metrics (float, INT8, delta) and the agreement of INT8 outputs with float."""
    labels = f"labels `{report.labels}`" if report.labels else "no labels"
    label = report.precision.upper()
    lines = [
        f"# trt-quant evaluation: {Path(report.artifact).name}",
        "",
        f"- data: `{report.data}` ({report.examples} examples, {labels})",
        f"- task: {report.task}; {label} on {report.backend}, float reference on onnxruntime",
        "",
    ]
    if report.metrics["float"]:
        lines += [f"| metric | float | {label} | delta |", "| --- | ---: | ---: | ---: |"]
        deltas = report.deltas()
        for key, value in report.metrics["float"].items():
            int8 = report.metrics["int8"][key]
            lines.append(
                f"| {METRIC_NAMES[key]} | {format_number(value)} | {format_number(int8)} "
                f"| {format_number(deltas[key], signed=True)} |"
            )
    else:
        lines.append(f"No labels, so no task metrics: {label} is compared with float only.")
    lines += ["", f"## {label} vs float outputs", "", "| measure | value |", "| --- | ---: |"]
    lines += [f"| {measure} | {value} |" for measure, value in agreement_rows(report.agreement)]
    return "\n".join(lines) + "\n"
