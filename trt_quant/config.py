"""Small validated settings objects shared by the pipeline stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from trt_quant.errors import TrtQuantError

CALIBRATION_METHODS = ("max", "percentile", "entropy", "mse")
PRECISIONS = ("int8", "fp8")
# entropy minimizes the KL divergence of a uniform 8-bit integer grid, which FP8's exponent grid is not
FP8_CALIBRATION_METHODS = ("max", "percentile", "mse")
DEFAULT_SMOOTHQUANT = 0.8
AUTO = -1.0
"""``smoothquant=AUTO`` (the default): SmoothQuant 0.8 at INT8, off at FP8."""


@dataclass(frozen=True)
class QuantConfig:
    """How to insert and calibrate INT8 or FP8 quantizers.

    ``precision`` "int8" (default) or "fp8": FP8 is E4M3 with the same layout (per-output-channel
    weights, per-tensor activations, symmetric), calibrated with max (default), percentile or mse;
    SmoothQuant is off at FP8 unless ``smoothquant`` names an alpha, weights are rounded with GPTQ
    (``gptq``), and the INT8-only settings (``weight_bits`` 7, ``peg_groups``) are refused.

    Every ``nn.Linear`` gets per-output-channel symmetric INT8 weights and a per-tensor symmetric INT8
    input quantizer; embeddings stay float. ``quantize_residual`` also quantizes the inputs of the
    LayerNorms (the residual sums), which costs BERT-class models much accuracy, so it is off by default.
    ``keep_float`` lists module-name patterns (fnmatch) whose Linear layers stay float.
    ``smoothquant`` is the SmoothQuant migration strength alpha (None turns it off): each Linear input is
    divided per channel by s = max|x|^alpha / max|w|^(1-alpha) and the weight's input channels multiplied
    by s, which moves activation outliers into the per-channel-quantized weights. The default
    (:data:`AUTO`) means 0.8 at INT8 and off at FP8.
    ``int8_embeddings`` stores embedding tables as INT8 rows with one scale each (lookups stay float).
    ``peg_groups`` K > 1 quantizes the feed-forward Linears' inputs per embedding group (PEG): K groups
    of input channels (sorted by range first with ``peg_permute``), each with its own per-tensor scale.
    ``quantize_attention`` adds INT8 Q/DQ on query, key, softmax output and value inside attention.
    ``gptq`` rounds each quantized weight with GPTQ (column by column, each column's rounding error spread
    over the later ones through the calibration inputs' statistics) instead of to nearest: same scales
    and grid, a closer layer output. None (the default) means on at FP8 (E4M3's 3-bit mantissa makes
    weight rounding FP8's largest error) and off at INT8.
    ``weight_bits`` 7 keeps INT8 weights within +-64: ONNX Runtime's fast integer GEMM on x86 CPUs
    without VNNI then cannot saturate (use it for CPU deployment; TensorRT wants the full 8).
    """

    method: str = "max"
    percentile: float = 99.99
    calib_samples: int = 256
    batch_size: int = 16
    max_length: int = 128
    quantize_residual: bool = False
    keep_float: tuple[str, ...] = field(default_factory=tuple)
    smoothquant: float | None = AUTO
    int8_embeddings: bool = True
    weight_bits: int = 8
    peg_groups: int = 0
    quantize_attention: bool = False
    peg_permute: bool = True
    precision: str = "int8"
    gptq: bool | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise TrtQuantError(f"Unknown precision '{self.precision}': use one of {', '.join(PRECISIONS)}.")
        if self.smoothquant == AUTO:
            object.__setattr__(self, "smoothquant", DEFAULT_SMOOTHQUANT if self.precision == "int8" else None)
        if self.gptq is None:
            object.__setattr__(self, "gptq", self.precision == "fp8")
        if self.method not in CALIBRATION_METHODS:
            raise TrtQuantError(
                f"Unknown calibration method '{self.method}': use one of {', '.join(CALIBRATION_METHODS)}."
            )
        if not 0.0 < self.percentile <= 100.0:
            raise TrtQuantError(f"Percentile {self.percentile} is out of range: pass a value in (0, 100].")
        if self.calib_samples < 1:
            raise TrtQuantError(
                "The number of calibration samples must be at least 1: pass --calib-samples N."
            )
        if self.batch_size < 1:
            raise TrtQuantError("The batch size must be at least 1: pass --batch-size N with N >= 1.")
        if self.smoothquant is not None and not 0.0 < self.smoothquant < 1.0:
            raise TrtQuantError(
                f"SmoothQuant alpha {self.smoothquant} is out of range: pass a value in (0, 1)."
            )
        if self.peg_groups < 0 or self.peg_groups == 1:
            raise TrtQuantError(
                f"--peg-groups {self.peg_groups} is not valid: pass 0 (off) or 2 and more groups."
            )
        if self.weight_bits not in (7, 8):
            raise TrtQuantError(f"--weight-bits {self.weight_bits} is not supported: pass 8 (default) or 7.")
        if self.max_length < 2:
            raise TrtQuantError(
                "The maximum length must be at least 2 tokens: pass --max-length L with L >= 2."
            )
        if self.precision == "fp8":
            self._check_fp8()

    def _check_fp8(self) -> None:
        if self.method not in FP8_CALIBRATION_METHODS:
            raise TrtQuantError(
                f"Calibration method '{self.method}' fits only INT8's uniform grid: at FP8 use one of "
                f"{', '.join(FP8_CALIBRATION_METHODS)}."
            )
        if self.weight_bits != 8:
            raise TrtQuantError(
                "--weight-bits 7 is an INT8 setting for ONNX Runtime on CPUs: leave it at 8 for FP8."
            )
        if self.peg_groups:
            raise TrtQuantError("PEG groups are an INT8 setting: leave --peg-groups at 0 for FP8.")

    @property
    def min_opset(self) -> int:
        """The lowest ONNX opset that can hold this precision's Q/DQ (FP8 needs QuantizeLinear-19)."""
        return 19 if self.precision == "fp8" else 17


@dataclass(frozen=True)
class ExportConfig:
    """ONNX export settings: opset (17 or newer) for both the float and the INT8 graph."""

    opset: int = 17

    def __post_init__(self) -> None:
        if self.opset < 17:
            raise TrtQuantError(f"Opset {self.opset} is too old: use opset 17 or newer.")


@dataclass(frozen=True)
class QatConfig:
    """How to fine-tune a quantized model.

    AdamW with ``learning_rate`` and ``weight_decay`` (not on biases and LayerNorm weights), warmed up
    linearly over the first ``warmup_ratio`` of the steps and decayed linearly to zero. ``distill`` adds
    ``kl_weight`` x KL(float || quantized) of the logits at ``temperature`` (MSE for a single-logit head)
    and ``hidden_mse_weight`` x MSE of the last hidden states. With ``checkpoint_dir`` a checkpoint is
    written after every epoch (``checkpoint_every_epoch``) or after the last one only.
    """

    epochs: int = 3
    learning_rate: float = 2e-5
    batch_size: int = 16
    max_length: int = 128
    distill: bool = False
    temperature: float = 2.0
    kl_weight: float = 1.0
    hidden_mse_weight: float = 1.0
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    seed: int = 0
    checkpoint_dir: Path | None = None
    checkpoint_every_epoch: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise TrtQuantError("QAT needs at least one epoch: pass --epochs N with N >= 1.")
        if not self.learning_rate > 0:
            raise TrtQuantError(f"Learning rate {self.learning_rate} is not positive: pass one such as 2e-5.")
        if self.batch_size < 1:
            raise TrtQuantError("The batch size must be at least 1: pass --batch-size N with N >= 1.")
        if self.max_length < 2:
            raise TrtQuantError("The maximum length must be at least 2 tokens: pass --max-length 2 or more.")
        if not self.temperature > 0:
            raise TrtQuantError(f"Temperature {self.temperature} is not positive: pass a value such as 2.")
        if self.kl_weight < 0 or self.hidden_mse_weight < 0 or self.weight_decay < 0:
            raise TrtQuantError("Loss weights and weight decay cannot be negative: pass values of 0 or more.")
        if self.distill and self.kl_weight == 0 and self.hidden_mse_weight == 0:
            raise TrtQuantError(
                "Distillation with a KL weight and a hidden-state weight of 0 does nothing: set one above 0 "
                "or turn distillation off."
            )
        if not 0 <= self.warmup_ratio < 1:
            raise TrtQuantError(f"Warmup ratio {self.warmup_ratio} is out of range: pass a value in [0, 1).")
        if self.checkpoint_dir is not None:
            directory = Path(self.checkpoint_dir)
            if directory.exists() and not directory.is_dir():
                raise TrtQuantError(f"Checkpoint path {directory} is a file: pass a directory instead.")
            object.__setattr__(self, "checkpoint_dir", directory)
