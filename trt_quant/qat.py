"""Quantization-aware training (QAT): fine-tune a calibrated model with its INT8 quantizers active.

The forward pass fake-quantizes exactly as the exported graph will (Model Optimizer's quantizers, whose
ranges stay at their calibrated amax); the backward pass is the clipped straight-through estimator. The
loss is the task loss on labels (cross-entropy, or MSE for a single-logit regression head), or, without
labels, the distance to the float model's outputs; optional distillation from the float model adds the
KL divergence of temperature-softened logits and the MSE of the last hidden states. Training runs on
Hugging Face ``Trainer``: launched with ``torchrun`` or ``accelerate launch``, every process trains on its
share of the batches (DistributedDataParallel). :func:`qat` runs the whole pipeline and writes the same
artifact as :func:`~trt_quant.convert.convert` (the first process only).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import pickle
import random
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from transformers import (
    PrinterCallback,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from trt_quant.artifacts import check_name, check_output_dir, staged_directory
from trt_quant.config import ExportConfig, QatConfig, QuantConfig
from trt_quant.data import TextData, read_rows, read_texts
from trt_quant.errors import TrtQuantError
from trt_quant.models import LoadedModel
from trt_quant.pipeline import (
    EVAL_SAMPLES,
    ArtifactSource,
    ConvertReport,
    HeldOutScore,
    StepTimer,
    calibration_batches,
    export_float,
    held_out_score,
    load,
    model_texts,
    quantize_with_recipe,
    write_artifact,
)
from trt_quant.quantize.quantizers import (
    clip_gradients_outside_range,
    quantized_linears,
    quantizer_state,
    restore_quantizers,
    round_embeddings,
)
from trt_quant.quantize.sensitivity import Score
from trt_quant.tasks.base import LabelledBatch, TaskModel
from trt_quant.tasks.labels import LabelSource
from trt_quant.tasks.registry import CLASSIFYING_TASKS
from trt_quant.tasks.token_classification import IGNORE_INDEX

log = logging.getLogger(__name__)

LABELLED_TASKS = ("text-classification", "token-classification")
MAX_GRAD_NORM = 1.0
CHECKPOINT_NAME = "epoch-{epoch:03d}.pt"


def save_checkpoint(model: TaskModel, path: Path, epoch: int) -> None:
    """Write the quantized model's weights, ranges and quantizer layout to ``path`` (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.{uuid.uuid4().hex}"
    checkpoint = {"state_dict": model.state_dict(), "epoch": epoch, "quantizers": quantizer_state(model)}
    torch.save(checkpoint, temporary)
    os.replace(temporary, path)


def load_checkpoint(model: TaskModel, path: str | Path) -> tuple[TaskModel, int]:
    """Restore a :func:`save_checkpoint` file into ``model``, the float model it was trained from (as
    :func:`~trt_quant.models.load_model` returns it): quantizers are inserted as they were, then weights
    and ranges loaded. Returns the quantized model (in eval mode) and the epoch the checkpoint ends."""
    path = Path(path)
    if not path.is_file():
        raise TrtQuantError(f"Checkpoint {path} does not exist: pass a file written by QAT (epoch-NNN.pt).")
    if quantized_linears(model):
        raise TrtQuantError(
            "The model already has quantizers: pass the float model as load_model returns it, a checkpoint "
            "brings its own quantizers."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        restored = restore_quantizers(model, checkpoint["quantizers"])
        restored.load_state_dict(checkpoint["state_dict"])
    except (pickle.UnpicklingError, RuntimeError, KeyError, TypeError, EOFError) as exc:
        raise TrtQuantError(
            f"Checkpoint {path} does not fit this model ({str(exc).splitlines()[0][:120]}): pass the model "
            "it was trained from, or a checkpoint written by QAT."
        ) from exc
    restored.eval()
    return restored, int(checkpoint["epoch"])


Forward = tuple[tuple[torch.Tensor, ...], torch.Tensor]
"""The task outputs and the last hidden states of a model."""


def _forward(model: TaskModel, feeds: dict[str, torch.Tensor]) -> Forward:
    """The task outputs and the last hidden states (the TaskModel's own forward, plus hidden states)."""
    inputs = {name: feeds[name] for name in model.input_names}
    output = model.model(**inputs, output_hidden_states=True, return_dict=True)
    return model.task.select(output, _mask(feeds)), output.hidden_states[-1]


def _mask(feeds: dict[str, torch.Tensor]) -> torch.Tensor:
    mask = feeds.get("attention_mask")
    return mask if mask is not None else torch.ones_like(feeds["input_ids"])


def _label_loss(task: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if task == "token-classification":
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
    return F.cross_entropy(logits, labels)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return values.mean()
    weights = mask.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=1.0)


def _logit_distance(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float, mask: torch.Tensor | None
) -> torch.Tensor:
    """KL(teacher || student) of softmax(logits / T), times T^2; MSE for a single logit (regression)."""
    if student.shape[-1] == 1:
        return _masked_mean((student - teacher).square().squeeze(-1), mask)
    target = F.log_softmax(teacher / temperature, dim=-1)
    divergence = (target.exp() * (target - F.log_softmax(student / temperature, dim=-1))).sum(-1)
    return _masked_mean(divergence, mask) * temperature**2


def _logits_distance(
    task: TaskModel,
    student: tuple[torch.Tensor, ...],
    teacher: tuple[torch.Tensor, ...],
    temperature: float,
    mask: torch.Tensor,
) -> torch.Tensor:
    """Mean :func:`_logit_distance` over the task's outputs; per-token logits count unpadded tokens only."""
    distances = [
        _logit_distance(mine, theirs, temperature, mask if per_token and mine.dim() == 3 else None)
        for mine, theirs, per_token in zip(student, teacher, task.task.per_token, strict=True)
    ]
    return torch.stack(distances).mean()


def _hidden_distance(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return _masked_mean((student - teacher).square().mean(-1), mask)


def _output_distance(
    model: TaskModel, student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...], mask: torch.Tensor
) -> torch.Tensor:
    """How far the task outputs are from the float model's: 1 - cosine for sentence embeddings, MSE for
    token features, KL at temperature 1 for logits."""
    if model.task.name == "sentence-embedding":
        return (1 - F.cosine_similarity(student[0], teacher[0], dim=-1)).mean()
    if model.task.name == "feature-extraction":
        return _hidden_distance(student[0], teacher[0], mask)
    return _logits_distance(model, student, teacher, 1.0, mask)


def _loss(
    model: TaskModel,
    student: Forward,
    reference: Forward | None,
    feeds: dict[str, torch.Tensor],
    labels: torch.Tensor | None,
    config: QatConfig,
) -> torch.Tensor:
    """The QAT loss of the quantized model's ``student`` forward, against labels or the float model's
    ``reference`` forward, plus the distillation terms."""
    outputs, hidden = student
    mask = _mask(feeds)
    if labels is not None:
        loss = _label_loss(model.task.name, outputs[0], labels)
    else:
        assert reference is not None  # checked by train_qat
        loss = _output_distance(model, outputs, reference[0], mask)
    if config.distill and reference is not None:
        if config.kl_weight and model.task.name in CLASSIFYING_TASKS:
            distance = _logits_distance(model, outputs, reference[0], config.temperature, mask)
            loss = loss + config.kl_weight * distance
        if config.hidden_mse_weight:
            loss = loss + config.hidden_mse_weight * _hidden_distance(hidden, reference[1], mask)
    return loss


def _check_training(
    model: TaskModel, teacher: TaskModel | None, batches: Sequence[LabelledBatch], config: QatConfig
) -> None:
    if not batches:
        raise TrtQuantError("There is no training data: pass a training file with at least one example.")
    if not quantized_linears(model):
        raise TrtQuantError("The model has no quantizers: quantize and calibrate it before QAT.")
    unlabelled = any(labels is None for _, labels in batches)
    if teacher is None and (config.distill or unlabelled):
        reason = "distillation" if config.distill else "training without labels"
        raise TrtQuantError(f"{reason.capitalize()} needs the float model: pass it as the teacher.")
    if not unlabelled and model.task.name not in LABELLED_TASKS:
        raise TrtQuantError(
            f"A {model.task.name} model learns from the float model's outputs, not from labels: "
            "pass batches without labels and the float model as the teacher."
        )


class _Student(nn.Module):
    """The quantized model as Trainer (and DistributedDataParallel around it) calls it: a batch of named
    inputs in, the task outputs and the last hidden states out."""

    def __init__(self, model: TaskModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, feeds: dict[str, torch.Tensor]) -> Forward:
        return _forward(self.model, feeds)


class _Batches(Dataset):
    """The tokenized training batches as a dataset of batches: Trainer draws one per step (and per process)."""

    def __init__(self, batches: Sequence[LabelledBatch]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict[str, Any]:
        feeds, labels = self.batches[index]
        return {"feeds": feeds, "targets": labels}


def _one_batch(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate a draw of one prepared batch (the dataset's items are whole batches)."""
    return items[0]


class _QatTrainer(Trainer):
    """Trainer with the QAT loss (labels or the float model's outputs, plus distillation from the frozen
    float ``teacher``), weight decay on matrices only (not on biases and LayerNorm weights, as BERT
    fine-tuning does), and the mean training loss of each epoch over all processes."""

    def __init__(self, model: TaskModel, teacher: TaskModel | None, config: QatConfig, **kwargs: Any) -> None:
        super().__init__(model=_Student(model), **kwargs)
        self.task_model, self.qat_config = model, config
        self.teacher = teacher.to(self.args.device) if teacher is not None else None
        self.losses: list[float] = []

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        feeds, labels = inputs["feeds"], inputs["targets"]
        reference = None
        if self.teacher is not None:
            with torch.no_grad():
                reference = _forward(self.teacher, feeds)
        loss = _loss(self.task_model, model(feeds), reference, feeds, labels, self.qat_config)
        if not torch.isfinite(loss):
            epoch = math.floor(self.state.epoch or 0) + 1
            raise TrtQuantError(
                f"QAT diverged (loss {loss.item()} in epoch {epoch}): pass a lower learning rate."
            )
        self.losses.append(loss.item())
        return loss

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        return [name for name, parameter in model.named_parameters() if parameter.dim() >= 2]

    def epoch_loss(self) -> float:
        """The mean training loss since the last call, averaged over all processes."""
        mean = torch.tensor(sum(self.losses) / max(1, len(self.losses)), device=self.args.device)
        self.losses.clear()
        return float(self.accelerator.reduce(mean, reduction="mean"))


class _AfterEpoch(TrainerCallback):
    """After each epoch: log the mean training loss, write the checkpoint (first process only) and call
    ``on_epoch`` (on every process, so that all hold the same model after a keep-best restore)."""

    def __init__(
        self, trainer: _QatTrainer, config: QatConfig, on_epoch: Callable[[int, float], None] | None
    ) -> None:
        self.trainer, self.config, self.on_epoch = trainer, config, on_epoch

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        epoch, loss = round(state.epoch or 0), self.trainer.epoch_loss()
        log.info("QAT epoch %d/%d: mean training loss %.4f", epoch, self.config.epochs, loss)
        last = epoch == self.config.epochs
        directory = self.config.checkpoint_dir
        if (
            directory is not None
            and (self.config.checkpoint_every_epoch or last)
            and state.is_world_process_zero
        ):
            save_checkpoint(self.trainer.task_model, directory / CHECKPOINT_NAME.format(epoch=epoch), epoch)
        if self.on_epoch is not None:
            self.on_epoch(epoch, loss)


class _Progress(ProgressCallback):
    """Trainer's progress bar without the dictionaries of logged values it prints."""

    def on_log(self, *args: Any, **kwargs: Any) -> None:
        return None


def _training_arguments(config: QatConfig, output_dir: str) -> TrainingArguments:
    """Trainer's settings from ``config``: AdamW with linear warmup and decay, gradients clipped at norm 1,
    one prepared batch per step and process, no saving, evaluation, reporting or network of its own."""
    return TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=config.epochs,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,  # below 1: a fraction of the steps
        lr_scheduler_type="linear",
        optim="adamw_torch",
        max_grad_norm=MAX_GRAD_NORM,
        per_device_train_batch_size=1,  # one item is one batch of config.batch_size examples
        seed=config.seed,
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),  # without it, processes on CPUs would not form a DDP group
        dataloader_pin_memory=torch.cuda.is_available(),
    )


@contextlib.contextmanager
def _global_random_state_kept() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's (CPU) global random state afterwards (Trainer seeds all three)."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(python_state)
    np.random.set_state(numpy_state)


def train_qat(
    quantized_model: TaskModel,
    teacher: TaskModel | None,
    batches_with_labels: Sequence[LabelledBatch],
    config: QatConfig,
    on_epoch: Callable[[int, float], None] | None = None,
) -> TaskModel:
    """Fine-tune ``quantized_model`` (in place) with its quantizers active; return it on the CPU in eval mode.

    Runs on Hugging Face Trainer: launched with ``torchrun`` or ``accelerate launch``, every process calls
    this with the same model and batches, Trainer wraps the model in DistributedDataParallel and each
    process trains on its share of the batches. ``teacher`` is the float model, needed for distillation
    and for batches without labels (it is frozen here). Quantizer ranges stay fixed; gradients are zero
    where a quantizer clipped. ``on_epoch`` is called on every process after each epoch with its number
    and the mean training loss over all processes; checkpoints are written by the first process only.
    Seeded: the same inputs give the same model; the global random state (Python's, NumPy's, torch's on
    the CPU) is left as it was.
    """
    _check_training(quantized_model, teacher, batches_with_labels, config)
    clip_gradients_outside_range(quantized_model)
    if teacher is not None:
        teacher.eval()
        teacher.requires_grad_(False)
    with _global_random_state_kept(), tempfile.TemporaryDirectory(prefix="trt-quant-qat-") as scratch:
        trainer = _QatTrainer(
            quantized_model,
            teacher,
            config,
            args=_training_arguments(config, str(config.checkpoint_dir or scratch)),
            train_dataset=_Batches(batches_with_labels),
            data_collator=_one_batch,
        )
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        if sys.stderr.isatty():
            trainer.add_callback(_Progress)
        trainer.add_callback(_AfterEpoch(trainer, config, on_epoch))
        trainer.train()
    quantized_model.to("cpu")
    quantized_model.eval()
    return quantized_model


def read_inputs(
    loaded: LoadedModel, path: str | Path, text_column: str | None, pair_column: str | None
) -> TextData:
    """Texts (and second texts) as the task's training data holds them; token-classification words joined."""
    return loaded.task.read_inputs(loaded, path, text_column, pair_column)


def training_batches(
    loaded: LoadedModel,
    train_data: str | Path,
    label_column: str | None,
    text_column: str | None,
    pair_column: str | None,
    config: QatConfig,
) -> tuple[list[LabelledBatch], TextData]:
    """Shuffled (seeded), tokenized training batches with labels where the task has them, and the
    training texts; the task's module builds them. Labels are read for text and token classification
    only; other tasks learn the float model's outputs."""
    labelled = label_column if loaded.task.name in LABELLED_TASKS else None
    return loaded.task.training_batches(
        loaded,
        train_data,
        labelled,
        text_column,
        pair_column,
        config.batch_size,
        config.max_length,
        config.seed,
    )


def selection_score(
    loaded: LoadedModel,
    eval_data: str | Path,
    evaluation: TextData,
    label_column: str | None,
    text_column: str | None,
    pair_column: str | None,
    config: QuantConfig,
) -> HeldOutScore:
    """What QAT keeps the best model by, measured on the held-out data with ``loaded.model`` still float:
    a text classifier's accuracy (Spearman x100 for a regression head) when the evaluation file has
    labels in ``label_column``, otherwise the mean cosine of the outputs against the float model's."""
    rows = read_rows(eval_data)
    labelled = label_column is not None and bool(rows) and label_column in rows[0]
    if labelled and loaded.task.name == "text-classification":
        held_out = read_texts(eval_data, text_column, pair_column, label_column).head(EVAL_SAMPLES)
        return held_out_score(loaded, held_out, config, LabelSource(Path(eval_data), label_column))
    return held_out_score(loaded, evaluation, config)


def is_main_process() -> bool:
    """Whether this process writes the artifact: the only one, or the first (rank 0) of a ``torchrun`` or
    ``accelerate launch`` run."""
    return int(os.environ.get("RANK", "0")) == 0


@contextlib.contextmanager
def _scratch_stage(output: Path, overwrite: bool) -> Iterator[Path]:
    """A throw-away stage for the processes other than the first: they train, the first writes ``output``."""
    with tempfile.TemporaryDirectory(prefix="trt-quant-qat-stage-") as directory:
        yield Path(directory)


class BestModel:
    """Keeps the weights of the best-scoring model seen: the calibrated model, then each QAT epoch."""

    def __init__(self, model: TaskModel, metric: str, score: Score) -> None:
        self.model, self.metric, self.score = model, metric, score
        self.scores: list[float] = []
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] = {}
        self.after_epoch(0)

    def after_epoch(self, epoch: int) -> None:
        """Score the model as it is after ``epoch`` (0: calibrated, before training); keep it if best."""
        self.model.eval()
        # The score runs on the CPU: a model training on an accelerator is scored as a CPU copy.
        on_cpu = all(tensor.device.type == "cpu" for tensor in self.model.state_dict().values())
        scored = self.model if on_cpu else copy.deepcopy(self.model).to("cpu")
        value = self.score(scored)
        self.scores.append(value)
        if epoch == 0 or value > max(self.scores[:-1]):
            self.best_epoch = epoch
            self.best_state = {
                name: t.detach().to("cpu", copy=True) for name, t in scored.state_dict().items()
            }
        log.info("QAT %s: %s %.4f", self.label(epoch), self.metric, value)

    def restore(self) -> None:
        """Load the best weights (and quantizer ranges) back into the model (wherever it is)."""
        self.model.load_state_dict(self.best_state)
        self.model.eval()

    @staticmethod
    def label(epoch: int) -> str:
        return "calibrated model" if epoch == 0 else f"epoch {epoch}"

    def record(self) -> dict[str, Any]:
        """The manifest entry: the metric, every score and which model was kept."""
        return {
            "metric": self.metric,
            "calibrated": round(self.scores[0], 6),
            "epochs": [round(value, 6) for value in self.scores[1:]],
            "selected": self.label(self.best_epoch),
        }


def qat(
    model: str | Path,
    task: str,
    train_data: str | Path,
    output: str | Path,
    calib: str | Path | None = None,
    label_column: str | None = "label",
    text_column: str | None = None,
    pair_column: str | None = None,
    quant_config: QuantConfig | None = None,
    qat_config: QatConfig | None = None,
    eval_data: str | Path | None = None,
    overwrite: bool = False,
    export_config: ExportConfig | None = None,
    trust_remote_code: bool = False,
    name: str | None = None,
) -> ConvertReport | None:
    """Quantize ``model``, fine-tune it with its quantizers active on ``train_data``, write an artifact.

    Calibration (PTQ) uses ``calib``, or the first training texts when it is None. Labels come from
    ``label_column`` for text classification (class index or name; a number for a single-logit head) and
    token classification (a words column such as "tokens" and one tag per word); with ``label_column``
    None, and for the other tasks, the model learns the float model's outputs. The artifact is written
    exactly as :func:`~trt_quant.convert.convert` writes it (the float ONNX is the model before QAT), and
    its manifest's quantization block gets a "qat" entry. Agreement is measured on ``eval_data`` only:
    every training row has been seen. Under ``torchrun``/``accelerate launch`` every process runs this and
    trains on its share of the batches; the first writes the artifact, the others return None.
    """
    quant_config = quant_config or QuantConfig()
    qat_config = qat_config or QatConfig()
    export_config = export_config or ExportConfig()
    output = Path(output)
    check_output_dir(output, overwrite)
    name = check_name(name or output.name)
    timer = StepTimer()
    with timer.step("load"):
        loaded = load(model, task, max(quant_config.max_length, qat_config.max_length), trust_remote_code)
        batches, train_texts = training_batches(
            loaded, train_data, label_column, text_column, pair_column, qat_config
        )
        calib_texts = (
            read_inputs(loaded, calib, text_column, pair_column) if calib is not None else train_texts
        )
        calibration = calib_texts.head(quant_config.calib_samples)
        calib_batches = calibration_batches(loaded, calibration, quant_config)
        evaluation = None
        if eval_data is not None:  # never the training file's rows: QAT has seen every one of them
            evaluation = model_texts(
                read_inputs(loaded, eval_data, text_column, pair_column).head(EVAL_SAMPLES), loaded.task.name
            )

    main = is_main_process()
    with (staged_directory if main else _scratch_stage)(output, overwrite) as stage:
        with timer.step("export float"):
            export_float(stage, loaded, calib_batches[0], export_config)

        with timer.step("quantize + calibrate"):
            unlabelled = any(labels is None for _, labels in batches)
            teacher = copy.deepcopy(loaded.model) if qat_config.distill or unlabelled else None
            selection = (
                selection_score(
                    loaded, eval_data, evaluation, label_column, text_column, pair_column, quant_config
                )
                if eval_data is not None and evaluation is not None
                else None
            )
            quantized = quantize_with_recipe(loaded, calib_batches, quant_config)

        with timer.step("qat"):
            losses: list[float] = []
            keeper = (
                BestModel(quantized, selection.metric, selection.score) if selection is not None else None
            )

            def on_epoch(epoch: int, loss: float) -> None:
                losses.append(loss)
                if keeper is not None:
                    keeper.after_epoch(epoch)

            train_qat(quantized, teacher, batches, qat_config, on_epoch=on_epoch)
            if not main:
                return None
            if keeper is not None:
                keeper.restore()
            if quant_config.int8_embeddings:
                round_embeddings(quantized)  # the trained tables, rounded as the INT8 graph stores them

        source = ArtifactSource(
            model=str(model),
            name=name,
            calib_file=str(calib if calib is not None else train_data),
            calib_samples=len(model_texts(calibration, loaded.task.name)),
            evaluation=evaluation,
            evaluation_source="evaluation file" if evaluation is not None else "none (no eval_data given)",
            qat={
                "train_file": str(train_data),
                "examples": sum(len(feeds["input_ids"]) for feeds, _ in batches),
                "labels": label_column if not unlabelled else None,
                "epochs": qat_config.epochs,
                "learning_rate": qat_config.learning_rate,
                "batch_size": qat_config.batch_size,
                "max_length": qat_config.max_length,
                "distill": qat_config.distill,
                "temperature": qat_config.temperature if qat_config.distill else None,
                "kl_weight": qat_config.kl_weight if qat_config.distill else None,
                "hidden_mse_weight": qat_config.hidden_mse_weight if qat_config.distill else None,
                "seed": qat_config.seed,
                "epoch_losses": [round(loss, 6) for loss in losses],
                "final_train_loss": round(losses[-1], 6),
                "selection": keeper.record()
                if keeper is not None
                else {"selected": f"epoch {qat_config.epochs}", "reason": "no --eval-data to compare on"},
            },
        )
        manifest, findings = write_artifact(
            stage, loaded, quantized, calib_batches[0], quant_config, export_config, timer, source
        )
    return ConvertReport(output, manifest, timer.finish(), findings)


__all__ = ["QatConfig", "is_main_process", "load_checkpoint", "qat", "save_checkpoint", "train_qat"]
