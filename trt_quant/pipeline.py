"""The steps that ``convert``, ``qat`` and ``analyze`` compose: load, read and split examples, export the
float graph, quantize and calibrate with the family's recipe, score on held-out examples, then export,
check, measure and write the artifact.

Each decision is made here once: which rows calibrate and which are held out (:func:`read_examples`), which
layers the recipe keeps float (:func:`quantize_with_recipe`), how a quantized model is scored against the
float one (:func:`held_out_score`), and what the manifest records (:func:`write_artifact`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import onnx
import torch

from trt_quant import __version__
from trt_quant.artifacts import (
    FLOAT_ONNX,
    MODEL_CONFIG,
    QUANTIZED_ONNX,
    TOKENIZER_DIR,
    AccuracyRecord,
    Manifest,
    QuantizationRecord,
    SizesRecord,
    write_manifest,
)
from trt_quant.compare import OutputAgreement, output_agreement
from trt_quant.config import ExportConfig, QuantConfig
from trt_quant.data import TextData, read_texts, split_pairs, tokenize_batches
from trt_quant.errors import TrtQuantError
from trt_quant.models import LoadedModel, load_model
from trt_quant.onnx.check import check_onnx
from trt_quant.onnx.export import (
    count_ops,
    export_onnx,
    export_quantized,
    finalize_fp8_graph,
    finalize_int8_graph,
    graph_inputs,
    graph_outputs,
    save_onnx,
)
from trt_quant.quantize.model import quantize
from trt_quant.quantize.quantizers import summarize
from trt_quant.quantize.sensitivity import Score, cosine_score, outputs_of
from trt_quant.runtime.base import Runtime
from trt_quant.runtime.ort import OrtRuntime
from trt_quant.tasks.base import TaskModel
from trt_quant.tasks.labels import LabelSource
from trt_quant.tasks.registry import CLASSIFYING_TASKS, task_metric

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
    stage: Path, loaded: LoadedModel, example: dict[str, torch.Tensor], export_config: ExportConfig
) -> None:
    """Apply the family's export fix and export the float reference ONNX into ``stage``."""
    loaded.recipe.export_fix(loaded.model)
    export_onnx(loaded.model, example, stage / FLOAT_ONNX, export_config.opset)


def model_texts(data: TextData, task: str) -> TextData:
    """The texts the model runs on: a sentence-embedding model embeds each text of a pair on its own."""
    return split_pairs(data) if task == "sentence-embedding" else data


class StepTimer:
    """Seconds each named step took, and the total since the timer was made."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._started = time.perf_counter()

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time the block as step ``name``."""
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start

    def finish(self) -> dict[str, float]:
        """Every step's seconds with the total."""
        self.seconds["total"] = time.perf_counter() - self._started
        return self.seconds


def load(model: str | Path, task: str, max_length: int, trust_remote_code: bool = False) -> LoadedModel:
    """Load ``model`` for ``task`` with its family's recipe; refuse a ``max_length`` above its positions."""
    loaded = load_model(model, task, trust_remote_code=trust_remote_code)
    check_max_length(loaded, max_length)
    return loaded


@dataclass
class Examples:
    """Calibration rows, held-out rows kept apart from them (or None), where the latter came from, and
    where their labels are read (for a task-metric score)."""

    calibration: TextData
    evaluation: TextData | None
    evaluation_source: str
    labels: LabelSource


def read_examples(
    calib: str | Path,
    config: QuantConfig,
    eval_data: str | Path | None = None,
    text_column: str | None = None,
    pair_column: str | None = None,
    label_column: str | None = None,
    guess_pairs: bool = False,
) -> Examples:
    """Read calibration and held-out examples the one way every command splits them: the first
    ``config.calib_samples`` rows of ``calib`` calibrate; ``eval_data`` (at most 256 rows), or else the
    calibration file's rows after them, are held out. Labels (``label_column``) are read from the held-out
    rows only."""
    if eval_data is None:
        data, held_out = read_texts(calib, text_column, pair_column, label_column, guess_pairs), None
        labels = LabelSource(Path(calib), label_column, config.calib_samples + 1)
    else:
        data = read_texts(calib, text_column, pair_column)
        held_out = read_texts(eval_data, text_column, pair_column, label_column, guess_pairs)
        labels = LabelSource(Path(eval_data), label_column)
    calibration, evaluation, source = split_calibration(data, config.calib_samples, held_out)
    return Examples(calibration, evaluation, source, labels)


def calibration_batches(
    loaded: LoadedModel, texts: TextData, config: QuantConfig
) -> list[dict[str, torch.Tensor]]:
    """``texts`` tokenized into batches the way the model runs on them (see :func:`model_texts`)."""
    return tokenize_batches(
        loaded.tokenizer,
        model_texts(texts, loaded.task.name),
        loaded.input_names,
        config.batch_size,
        config.max_length,
    )


def quantize_with_recipe(
    loaded: LoadedModel, batches: list[dict[str, torch.Tensor]], config: QuantConfig
) -> TaskModel:
    """Quantize and calibrate ``loaded.model`` in place, keeping float what the family's recipe keeps float."""
    return quantize(
        loaded.model, batches, config, extra_float=loaded.recipe.keep_float, family=loaded.recipe.family
    )


@dataclass
class HeldOutScore:
    """How a quantized model is scored on held-out examples: the metric's name, the score (a function of
    a model) and whether it compares outputs with the float model's (which then scores 1.0 by definition)."""

    metric: str
    score: Score
    against_float: bool

    def of_float(self, model: TaskModel) -> float:
        """The float ``model``'s own score: 1.0 against itself, else one pass of the task metric."""
        return 1.0 if self.against_float else self.score(model)


def held_out_score(
    loaded: LoadedModel,
    evaluation: TextData,
    config: QuantConfig,
    labels: LabelSource | None = None,
) -> HeldOutScore:
    """Score models on ``evaluation`` with ``loaded.model`` still float: the task metric on the labels
    ``labels`` reads, or without ``labels`` the mean cosine of the outputs against the float outputs."""
    if labels is not None:
        metric = task_metric(loaded, evaluation, labels, config.batch_size, config.max_length)
        return HeldOutScore(metric.name, metric.score, against_float=False)
    batches = calibration_batches(loaded, evaluation, config)
    score = cosine_score(outputs_of(loaded.model, batches), batches)
    return HeldOutScore("mean cosine vs float", score, against_float=True)


def check_max_length(loaded: LoadedModel, max_length: int) -> None:
    """Refuse a ``max_length`` above the model's position embeddings."""
    if max_length > loaded.max_positions:
        raise TrtQuantError(
            f"--max-length {max_length} is above the model's maximum of {loaded.max_positions} positions: "
            f"pass --max-length {loaded.max_positions} or less."
        )


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
    compared with the float graph, or None; ``qat`` says how quantization-aware training ran, if it did.
    """

    model: str
    name: str
    calib_file: str
    calib_samples: int
    evaluation: TextData | None
    evaluation_source: str
    qat: dict[str, Any] | None = None


def export_quantized_graph(
    stage: Path,
    loaded: LoadedModel,
    quantized: TaskModel,
    sample: dict[str, torch.Tensor],
    config: QuantConfig,
    export_config: ExportConfig,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Export the INT8 (or FP8) ONNX into ``stage`` with its weights stored as INT8 (FP8), next to the
    tokenizer and the model config (label names travel with the artifact); return the graph and its edits."""
    precision = config.precision
    quantized_file = stage / QUANTIZED_ONNX[precision]
    opset = max(export_config.opset, config.min_opset)
    graph, fp8_scales = export_quantized(quantized, sample, quantized_file, opset, precision)
    if precision == "fp8":
        edits = finalize_fp8_graph(graph, fp8_scales, config.int8_embeddings)
    else:
        edits = finalize_int8_graph(graph, config.int8_embeddings)
    save_onnx(graph, quantized_file)
    loaded.tokenizer.save_pretrained(str(stage / TOKENIZER_DIR))
    loaded.config.to_json_file(stage / MODEL_CONFIG)
    return graph, edits


def quantization_record(
    quantized: TaskModel,
    graph: onnx.ModelProto,
    edits: dict[str, int],
    config: QuantConfig,
    source: ArtifactSource,
) -> QuantizationRecord:
    """The manifest's quantization section: how the model was quantized and what the graph holds."""
    precision = config.precision
    summary = summarize(quantized)
    return QuantizationRecord(
        precision=precision,
        method=config.method,
        percentile=config.percentile if config.method == "percentile" else None,
        calib_file=source.calib_file,
        calib_samples=source.calib_samples,
        calib_samples_requested=config.calib_samples,
        batch_size=config.batch_size,
        max_length=config.max_length,
        quantize_residual=config.quantize_residual,
        weights=f"{QUANTIZED_FORMATS[precision]} per output channel, symmetric",
        activations=f"{QUANTIZED_FORMATS[precision]} per tensor, symmetric",
        quantized_linears=summary.quantized_linears,
        float_linears=list(summary.float_linear_names),
        quantized_weight_initializers=edits["quantized_weight_initializers"],
        int8_embedding_tables=edits["int8_embedding_tables"],
        merged_duplicate_nodes=edits["merged_duplicate_nodes"],
        smoothquant_alpha=config.smoothquant,
        gptq=bool(config.gptq),
        weight_bits=config.weight_bits,
        quantize_attention=config.quantize_attention,
        peg_groups=config.peg_groups,
        quantize_linear_nodes=count_ops(graph, "QuantizeLinear"),
        dequantize_linear_nodes=count_ops(graph, "DequantizeLinear"),
        opset=next(entry.version for entry in graph.opset_import if entry.domain in ("", "ai.onnx")),
        qat=source.qat,
    )


def write_artifact(
    stage: Path,
    loaded: LoadedModel,
    quantized: TaskModel,
    sample: dict[str, torch.Tensor],
    config: QuantConfig,
    export_config: ExportConfig,
    timer: StepTimer,
    source: ArtifactSource,
) -> tuple[Manifest, list[Any]]:
    """Everything after quantization, into ``stage`` (which already holds the float ONNX): export the
    quantized graph, check it, measure its agreement with the float graph on the held-out examples and
    write the manifest. Each step is timed on ``timer``."""
    precision = config.precision
    with timer.step(f"export {precision}"):
        graph, edits = export_quantized_graph(stage, loaded, quantized, sample, config, export_config)
    quantized_file = stage / QUANTIZED_ONNX[precision]
    with timer.step("check"):
        findings = check_onnx(quantized_file)
    float_bytes = (stage / FLOAT_ONNX).stat().st_size
    quantized_bytes = quantized_file.stat().st_size
    manifest = Manifest(
        name=source.name,
        source_model=source.model,
        family=loaded.recipe.family,
        model_type=loaded.config.model_type,
        task=loaded.task.name,
        max_length=loaded.max_positions,
        vocab_size=int(getattr(loaded.config, "vocab_size", 0) or 0),
        inputs=graph_inputs(graph),
        outputs=graph_outputs(graph),
        quantization=quantization_record(quantized, graph, edits, config, source),
        sizes=SizesRecord(float_bytes, quantized_bytes),
        accuracy=AccuracyRecord(data=source.evaluation_source),
        versions=library_versions(),
    )
    manifest.quantization.check = [asdict(finding) for finding in findings]
    if source.evaluation is not None:
        with timer.step("measure accuracy"):
            agreement = measure_agreement(stage, manifest, source.evaluation, config.max_length)
        manifest.accuracy = AccuracyRecord(
            data=source.evaluation_source, backend="onnxruntime", **asdict(agreement)
        )
    write_manifest(stage, manifest)
    return manifest, findings
