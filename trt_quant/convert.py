"""The convert pipeline: load -> export float -> quantize -> calibrate -> export INT8 -> check -> artifact.

Each step is a plain function in its own module; :func:`convert` only strings them together and records
what happened in the artifact's manifest.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .artifacts import (
    FLOAT_ONNX,
    MODEL_CONFIG,
    QUANTIZED_ONNX,
    TOKENIZER_DIR,
    Manifest,
    check_name,
    check_output_dir,
    staged_directory,
    write_manifest,
)
from .config import ExportConfig, QuantConfig
from .data import TextData, read_texts, split_pairs, tokenize_batches
from .errors import TrtQuantError
from .evaluate import CLASSIFYING_TASKS, LabelSource, OutputAgreement, output_agreement
from .export import (
    count_ops,
    export_onnx,
    export_quantized,
    finalize_fp8_graph,
    finalize_int8_graph,
    graph_inputs,
    graph_outputs,
    save_onnx,
)
from .models import LoadedModel, load_model
from .quantize import quantize, summarize
from .runtime.base import Runtime
from .runtime.ort import OrtRuntime
from .sensitivity import (
    Budget,
    MixedPrecision,
    Score,
    cosine_score,
    layer_sensitivity,
    meet_budget,
    outputs_of,
    parse_budget,
)
from .task_metric import LABELLED_TASKS, PAIRED_TASKS, task_metric
from .tasks import TaskModel, get_task

log = logging.getLogger(__name__)

EVAL_SAMPLES = 256
QUANTIZED_FORMATS = {"int8": "int8", "fp8": "fp8 e4m3"}
VERSIONED_PACKAGES = (
    "trt-quant",
    "torch",
    "transformers",
    "nvidia-modelopt",
    "onnx",
    "onnxruntime",
    "tokenizers",
)


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape an artifact."""
    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = __version__ if package == "trt-quant" else "not installed"
    return versions


@dataclass
class ConvertReport:
    """What :func:`convert` did: the manifest it wrote and how long each step took (seconds)."""

    output: Path
    manifest: Manifest
    timings: dict[str, float] = field(default_factory=dict)
    check_findings: list[Any] = field(default_factory=list)


def split_calibration(
    data: TextData, samples: int, held_out: TextData | None
) -> tuple[TextData, TextData | None, str]:
    """Calibration examples, evaluation examples kept apart from them, and where the latter came from."""
    if len(data) < samples:
        log.warning(
            "Only %d calibration samples available, fewer than the %d asked for; continuing.",
            len(data),
            samples,
        )
    calibration = data.head(samples)
    if held_out is not None:
        return calibration, held_out.head(EVAL_SAMPLES), "evaluation file"
    if len(data) > samples:
        return (
            calibration,
            data.slice(samples, samples + EVAL_SAMPLES),
            "calibration file rows after the calibration samples",
        )
    return calibration, None, "none (every row was used for calibration)"


def export_float(
    stage: Path,
    loaded: LoadedModel,
    example: dict[str, torch.Tensor],
    export_config: ExportConfig,
    timings: dict[str, float],
) -> None:
    """Apply the family's export fix and export the float reference ONNX into ``stage`` (timed)."""
    step = time.perf_counter()
    loaded.recipe.export_fix(loaded.model)
    export_onnx(loaded.model, example, stage / FLOAT_ONNX, export_config.opset)
    timings["export float"] = time.perf_counter() - step


def check_budget(budget: Budget | None, task: str, label_column: str | None) -> None:
    """A drop budget needs labels and a task with a labelled metric (every task but feature-extraction)."""
    if budget is None or budget.kind == "cosine":
        return
    if label_column is None:
        raise TrtQuantError(f"The budget {budget} is measured in task-metric points: pass --label-column.")
    if get_task(task).name not in LABELLED_TASKS:
        raise TrtQuantError(
            f'A {task} model has no task metric for a drop budget: use a cosine budget such as "cosine>=0.995".'
        )


def model_texts(data: TextData, task: str) -> TextData:
    """The texts the model runs on: a sentence-embedding model embeds each text of a pair on its own."""
    return split_pairs(data) if task == "sentence-embedding" else data


@dataclass
class BudgetMeasure:
    """An accuracy budget, the score it is measured in (a function of a model) and the float model's score."""

    budget: Budget
    metric: str
    score: Score
    float_score: float


def measure_budget(
    loaded: LoadedModel, budget: Budget, evaluation: TextData | None, labels: LabelSource, config: QuantConfig
) -> BudgetMeasure:
    """Score ``budget`` on the held-out ``evaluation`` examples, with ``loaded.model`` still float: output
    cosine against the float outputs, or the task metric on the labels read from ``labels``."""
    if not evaluation:
        raise TrtQuantError(
            "An accuracy budget needs held-out examples: pass --eval-data, or a calibration file with more rows "
            "than --calib-samples."
        )
    if budget.kind == "cosine":
        texts = model_texts(evaluation, loaded.task.name)
        batches = tokenize_batches(
            loaded.tokenizer, texts, loaded.input_names, config.batch_size, config.max_length
        )
        reference = outputs_of(loaded.model, batches)
        return BudgetMeasure(budget, "mean cosine vs float", cosine_score(reference, batches), 1.0)
    metric = task_metric(loaded, evaluation, labels, config.batch_size, config.max_length)
    return BudgetMeasure(budget, metric.name, metric.score, metric.score(loaded.model))


def apply_budget(quantized: TaskModel, measure: BudgetMeasure) -> MixedPrecision:
    """Keep the most sensitive Linear layers float until the budget holds."""
    ranking = layer_sensitivity(quantized, measure.score)
    return meet_budget(quantized, measure.budget, measure.score, measure.float_score, ranking)


def check_max_length(loaded: LoadedModel, max_length: int) -> None:
    """Refuse a ``max_length`` above the model's position embeddings."""
    if max_length > loaded.max_positions:
        raise TrtQuantError(
            f"--max-length {max_length} is above the model's maximum of {loaded.max_positions} positions: "
            f"pass --max-length {loaded.max_positions} or less."
        )


def _run_check(path: Path) -> list[Any]:
    from .check import check_onnx

    return check_onnx(path)


def measure_agreement(stage: Path, manifest: Manifest, data: TextData, max_length: int) -> OutputAgreement:
    """Compare the quantized ONNX against the float ONNX of a staged artifact with ONNX Runtime."""
    reference: Runtime = OrtRuntime(stage, manifest, precision="float")
    candidate: Runtime = OrtRuntime(stage, manifest)
    return output_agreement(
        reference, candidate, data, max_length=max_length, classify=manifest.task in CLASSIFYING_TASKS
    )


@dataclass
class ArtifactSource:
    """Where a quantized model came from, as the manifest records it.

    ``evaluation`` holds examples kept apart from calibration (and training) on which the INT8 graph is
    compared with the float graph, or None; ``extra_quantization`` adds entries to the manifest's
    quantization block (e.g. how quantization-aware training ran).
    """

    model: str
    name: str
    calib_file: str
    calib_samples: int
    evaluation: TextData | None
    evaluation_source: str
    extra_quantization: dict[str, Any] = field(default_factory=dict)


def write_int8_artifact(
    stage: Path,
    loaded: LoadedModel,
    quantized: TaskModel,
    sample: dict[str, torch.Tensor],
    config: QuantConfig,
    export_config: ExportConfig,
    timings: dict[str, float],
    source: ArtifactSource,
) -> tuple[Manifest, list[Any]]:
    """Everything after quantization: export the INT8 (or FP8) ONNX into ``stage`` (which already holds the
    float ONNX), store its weights as INT8 (FP8), save the tokenizer, check the graph, measure its agreement
    with the float graph and write the manifest. Adds each step's seconds to ``timings``."""
    step = time.perf_counter()
    precision = config.precision
    quantized_file = stage / QUANTIZED_ONNX[precision]
    opset = max(export_config.opset, config.min_opset)
    int8_graph, fp8_scales = export_quantized(quantized, sample, quantized_file, opset, precision)
    if precision == "fp8":
        graph_edits = finalize_fp8_graph(int8_graph, fp8_scales, config.int8_embeddings)
    else:
        graph_edits = finalize_int8_graph(int8_graph, config.int8_embeddings)
    save_onnx(int8_graph, quantized_file)
    loaded.tokenizer.save_pretrained(str(stage / TOKENIZER_DIR))
    loaded.config.to_json_file(stage / MODEL_CONFIG)  # label names travel with the artifact
    timings[f"export {precision}"] = time.perf_counter() - step

    step = time.perf_counter()
    findings = _run_check(quantized_file)
    timings["check"] = time.perf_counter() - step

    summary = summarize(quantized)
    float_bytes = (stage / FLOAT_ONNX).stat().st_size
    int8_bytes = quantized_file.stat().st_size
    manifest = Manifest(
        name=source.name,
        source_model=source.model,
        family=loaded.recipe.family,
        model_type=loaded.config.model_type,
        task=loaded.task.name,
        max_length=loaded.max_positions,
        vocab_size=int(getattr(loaded.config, "vocab_size", 0) or 0),
        inputs=graph_inputs(int8_graph),
        outputs=graph_outputs(int8_graph),
        quantization={
            "library": "nvidia-modelopt",
            "precision": precision,
            "method": config.method,
            "percentile": config.percentile if config.method == "percentile" else None,
            "calib_file": source.calib_file,
            "calib_samples": source.calib_samples,
            "calib_samples_requested": config.calib_samples,
            "batch_size": config.batch_size,
            "max_length": config.max_length,
            "quantize_residual": config.quantize_residual,
            "weights": f"{QUANTIZED_FORMATS[precision]} per output channel, symmetric",
            "activations": f"{QUANTIZED_FORMATS[precision]} per tensor, symmetric",
            "quantized_linears": summary.quantized_linears,
            "float_linears": list(summary.float_linear_names),
            **graph_edits,
            "smoothquant_alpha": config.smoothquant,
            "gptq": config.gptq,
            "weight_bits": config.weight_bits,
            "quantize_linear_nodes": count_ops(int8_graph, "QuantizeLinear"),
            "dequantize_linear_nodes": count_ops(int8_graph, "DequantizeLinear"),
            "opset": opset,
        },
        sizes={
            "float_onnx_bytes": float_bytes,
            f"{precision}_onnx_bytes": int8_bytes,
            f"{precision}_to_float_ratio": round(int8_bytes / float_bytes, 4),
        },
        versions=library_versions(),
    )
    manifest.quantization.update(source.extra_quantization)
    manifest.quantization["check"] = [finding.__dict__ for finding in findings]
    if source.evaluation is not None:
        step = time.perf_counter()
        agreement = measure_agreement(stage, manifest, source.evaluation, config.max_length)
        manifest.accuracy = {
            "backend": "onnxruntime",
            "data": source.evaluation_source,
            **agreement.as_dict(),
        }
        timings["measure accuracy"] = time.perf_counter() - step
    else:
        manifest.accuracy = {"data": source.evaluation_source}
    write_manifest(stage, manifest)
    return manifest, findings


def convert(
    model: str | Path,
    task: str,
    calib: str | Path,
    output: str | Path,
    config: QuantConfig | None = None,
    export_config: ExportConfig | None = None,
    text_column: str | None = None,
    pair_column: str | None = None,
    eval_data: str | Path | None = None,
    overwrite: bool = False,
    trust_remote_code: bool = False,
    name: str | None = None,
    accuracy_budget: str | None = None,
    label_column: str | None = None,
) -> ConvertReport:
    """Quantize ``model`` for ``task`` with calibration texts from ``calib`` and write an artifact to ``output``.

    The artifact holds the float ONNX, the INT8 ONNX (explicit Q/DQ, INT8 weights), the tokenizer and a
    manifest with versions, shapes, calibration settings, checksums, sizes and measured agreement of the
    INT8 graph with the float graph on examples kept apart from calibration. With ``accuracy_budget``
    (``"cosine>=0.995"``, or ``"drop<=0.5"`` points of the task metric on ``label_column``) the most
    sensitive Linear layers stay float until the budget holds on those held-out examples. The task metric
    is the accuracy of a text classifier (Spearman x100 for a single-logit regression head), Spearman x100
    of cosine(text, pair) against similarity scores for sentence embeddings (each text embedded on its
    own; the pair column is guessed as ``trt-quant evaluate`` does), entity-level F1 of word tags for token
    classification (one tag per whitespace-separated word, or a list of words) and SQuAD F1 for question
    answering (questions, ``pair_column`` contexts, lists of answer texts); feature extraction has none.
    A sentence-embedding model is calibrated on each text of a pair on its own.
    """
    config = config or QuantConfig()
    export_config = export_config or ExportConfig()
    output = Path(output)
    check_output_dir(output, overwrite)
    name = check_name(name or output.name)
    budget = parse_budget(accuracy_budget) if accuracy_budget else None
    check_budget(budget, task, label_column)
    labelled = label_column if budget is not None and budget.kind == "drop" else None
    guess_pairs = labelled is not None and task in PAIRED_TASKS  # the metric needs second texts
    timings: dict[str, float] = {}
    started = time.perf_counter()
    loaded = load_model(model, task, trust_remote_code=trust_remote_code)
    check_max_length(loaded, config.max_length)
    if eval_data is None:  # the held-out examples are the calibration file's rows after calib_samples
        data, held_out = read_texts(calib, text_column, pair_column, labelled, guess_pairs), None
        labels = LabelSource(Path(calib), labelled, config.calib_samples + 1)
    else:
        data = read_texts(calib, text_column, pair_column)
        held_out = read_texts(eval_data, text_column, pair_column, labelled, guess_pairs)
        labels = LabelSource(Path(eval_data), labelled)
    calibration, evaluation, evaluation_source = split_calibration(data, config.calib_samples, held_out)
    calibration = model_texts(calibration, task)
    batches = tokenize_batches(
        loaded.tokenizer, calibration, loaded.input_names, config.batch_size, config.max_length
    )
    timings["load"] = time.perf_counter() - started

    with staged_directory(output, overwrite) as stage:
        export_float(stage, loaded, batches[0], export_config, timings)

        step = time.perf_counter()
        measure = measure_budget(loaded, budget, evaluation, labels, config) if budget is not None else None
        quantized = quantize(
            loaded.model, batches, config, extra_float=loaded.recipe.keep_float, family=loaded.recipe.family
        )
        timings["quantize + calibrate"] = time.perf_counter() - step

        mixed = None
        if measure is not None:
            step = time.perf_counter()
            mixed = apply_budget(quantized, measure)
            timings["mixed precision"] = time.perf_counter() - step

        manifest, findings = write_int8_artifact(
            stage,
            loaded,
            quantized,
            batches[0],
            config,
            export_config,
            timings,
            ArtifactSource(
                str(model),
                name,
                str(calib),
                len(calibration),
                model_texts(evaluation, task) if evaluation is not None else None,
                evaluation_source,
            ),
        )
        if measure is not None and mixed is not None:
            manifest.quantization["mixed_precision"] = {"metric": measure.metric, **asdict(mixed)}
            write_manifest(stage, manifest)
    timings["total"] = time.perf_counter() - started
    return ConvertReport(output, manifest, timings, findings)


__all__ = ["ArtifactSource", "ConvertReport", "convert", "library_versions", "write_int8_artifact"]
