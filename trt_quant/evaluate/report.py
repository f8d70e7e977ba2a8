"""Float vs quantized on a data file: the report (report.md, report.json) of the task's evaluation.

Each task's module (``trt_quant.tasks``) reads the data file and scores it; task metrics are in percent
(GLUE/SQuAD convention): accuracy and macro-F1 for classification, Pearson/Spearman x100 for regression
and sentence similarity, entity-level precision/recall/F1 for token classification, exact match and F1 for
extractive question answering. The agreement and cosine of the outputs are always measured.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trt_quant.artifacts import MODEL_CONFIG, Manifest, quantized_precision, write_atomically
from trt_quant.compare import Comparison, OutputAgreement
from trt_quant.errors import TrtQuantError
from trt_quant.tasks.base import METRIC_NAMES
from trt_quant.tasks.evaluation import EvaluationJob, Metrics
from trt_quant.tasks.labels import model_label_names
from trt_quant.tasks.registry import CLASSIFYING_TASKS, get_task

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


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


def model_config_path(artifact: Path, manifest: Manifest) -> Path:
    """The model's config.json: the artifact's own copy (artifacts before it: the source model's)."""
    own = artifact / MODEL_CONFIG
    return own if own.is_file() else Path(manifest.source_model) / "config.json"


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
    config = model_config_path(directory, manifest)
    job = EvaluationJob(
        comparison,
        Path(data),
        text_column,
        pair_column,
        label_column,
        batch_size,
        max_length or manifest.max_length,
        limit,
        config,
        lambda: model_label_names(config),
    )
    examples, scores = get_task(manifest.task).evaluate(job)
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
