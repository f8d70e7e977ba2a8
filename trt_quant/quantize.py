"""INT8/FP8 Q/DQ insertion and calibration through NVIDIA Model Optimizer (the only module that imports it).

Every ``nn.Linear`` gets a per-output-channel symmetric weight quantizer and a per-tensor symmetric input
quantizer, INT8 or FP8 E4M3 (``QuantConfig.precision``; scale = amax/127 or amax/448); embeddings stay
float; LayerNorm inputs (the residual sums) are quantized only with ``QuantConfig.quantize_residual``.
Calibration runs our own loop over the quantizers so that every method works on CPU: ``max`` with
Model Optimizer's max calibrator, and ``percentile``, ``entropy`` and ``mse`` with its histogram
calibrator. (In the pinned release, ``mtq.quantize`` with a histogram
calibrator fails: its max-calibration pass calls ``compute_amax()`` without the method argument. Its
``mse`` search is broken too: it calls ``fake_tensor_quant(centers, amax, num_bits, unsigned)``, which
takes ``bias`` third, so every candidate range scores garbage and the smallest one, 1/16 of the observed
maximum, wins; ``mse_amax`` searches the same histogram correctly.) At FP8, ``mse`` scores the E4M3
grid; ``entropy`` (a uniform-grid KL search) is refused by ``QuantConfig``.

Model Optimizer 0.47 exports FP8 quantizers through the TorchScript exporter only per tensor, as the
custom ops ``trt::TRT_FP8QuantizeLinear``/``trt::TRT_FP8DequantizeLinear`` (it asserts on per-channel
amax). :func:`fp8_weights_for_export` therefore exports per-channel FP8 weights as their fake-quantized
float values and hands the scales to the export step, which stores them as float8e4m3fn.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .config import QuantConfig
from .progress import progress
from .tasks import TaskModel

log = logging.getLogger(__name__)

# entropy and mse try a clipping range at every STRIDE-th of the histogram's 2048 bins (0.4% steps of the
# observed maximum); every bin would be 8x slower on CPU for no measurable change in range.
HISTOGRAM_SEARCH_STRIDE = 8
WEIGHT_QUANTIZER = "weight_quantizer"
INPUT_QUANTIZER = "input_quantizer"


FP8_E4M3 = (4, 3)  # Model Optimizer's num_bits for FP8 E4M3
FP8_MAX = 448.0


def _num_bits(precision: str) -> int | tuple[int, int]:
    return FP8_E4M3 if precision == "fp8" else 8


def _modelopt_config(quantize_residual: bool, precision: str = "int8") -> dict:
    bits = _num_bits(precision)
    entries: list[dict] = [
        {"quantizer_name": "*", "enable": False},
        {
            "quantizer_name": f"*{WEIGHT_QUANTIZER}",
            "parent_class": "nn.Linear",
            "cfg": {"num_bits": bits, "axis": 0},
        },
        {
            "quantizer_name": f"*{INPUT_QUANTIZER}",
            "parent_class": "nn.Linear",
            "cfg": {"num_bits": bits, "axis": None},
        },
    ]
    if quantize_residual:
        entries.append(
            {
                "quantizer_name": f"*{INPUT_QUANTIZER}",
                "parent_class": "nn.LayerNorm",
                "cfg": {"num_bits": bits, "axis": None},
            }
        )
    return {"quant_cfg": entries, "algorithm": "max"}


def _tensor_quantizer_class() -> Any:
    from modelopt.torch.quantization.nn import TensorQuantizer

    return TensorQuantizer


def quantized_linears(model: nn.Module) -> dict[str, Any]:
    """Linear layers that carry quantizers, keyed by module name."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and hasattr(module, WEIGHT_QUANTIZER)
        and hasattr(module, INPUT_QUANTIZER)
    }


def enabled_input_quantizers(model: nn.Module) -> dict[str, Any]:
    """Enabled activation quantizers (Linear and, if chosen, LayerNorm inputs), keyed by quantizer name."""
    quantizer_class = _tensor_quantizer_class()
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, quantizer_class) and name.endswith(INPUT_QUANTIZER) and module.is_enabled
    }


def keep_float(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Disable the quantizers of Linear layers whose name matches any fnmatch pattern; return their names."""
    kept = []
    for name, module in quantized_linears(model).items():
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            getattr(module, WEIGHT_QUANTIZER).disable()
            getattr(module, INPUT_QUANTIZER).disable()
            kept.append(name)
    return kept


def insert_quantizers(model: TaskModel, config: QuantConfig, extra_float: Sequence[str] = ()) -> TaskModel:
    """Replace supported modules by quantized ones and calibrate the weights (max, per output channel).

    Activation quantizers are created but not calibrated: call :func:`calibrate` next.
    """
    import modelopt.torch.quantization as mtq

    with contextlib.redirect_stdout(io.StringIO()):  # Model Optimizer prints every class it registers
        quantized = mtq.quantize(
            model, _modelopt_config(config.quantize_residual, config.precision), forward_loop=None
        )
    keep_float(quantized, [*config.keep_float, *extra_float])
    return quantized


def recipe_for_family(family: str) -> Any:
    """The recipe of a family name (bert, roberta, xlm-roberta, deberta-v2, electra, distilbert, mpnet, ...)."""
    from .recipes import RECIPES

    return next(recipe for recipe in RECIPES.values() if recipe.family == family)


def new_activation_quantizer(precision: str = "int8") -> nn.Module:
    """A per-tensor symmetric INT8 or FP8 activation quantizer (for quantizers outside Linear layers)."""
    from modelopt.torch.quantization.config import QuantizerAttributeConfig
    from modelopt.torch.quantization.nn import TensorQuantizer

    return TensorQuantizer(QuantizerAttributeConfig(num_bits=_num_bits(precision), axis=None))


def _new_calibrator(method: str) -> Any:
    from modelopt.torch.quantization.calib import HistogramCalibrator, MaxCalibrator

    if method == "max":
        return MaxCalibrator(num_bits=8, axis=None, unsigned=False)
    return HistogramCalibrator(num_bits=8, axis=None, unsigned=False)


def mse_amax(
    histogram: Any, edges: Any, start_bin: int = 128, precision: str = "int8"
) -> torch.Tensor | None:
    """The clipping range that minimizes the mean squared error of symmetric INT8 (or FP8 E4M3)
    quantization over a histogram of |x| (bin counts and edges): every ``HISTOGRAM_SEARCH_STRIDE``-th bin
    centre from ``start_bin`` on is tried as the range, values above it clip. None for an empty histogram."""
    if histogram is None or edges is None:
        return None
    counts = torch.as_tensor(histogram, dtype=torch.float64)
    bin_edges = torch.as_tensor(edges, dtype=torch.float64)
    centers = (bin_edges[1:] + bin_edges[:-1]) / 2
    candidates = centers[min(start_bin, len(centers) - 1) :: HISTOGRAM_SEARCH_STRIDE].clamp(min=1e-12)
    if precision == "fp8":
        steps = (candidates / FP8_MAX).unsqueeze(1)
        grid = torch.clamp(centers / steps, max=FP8_MAX).float().to(torch.float8_e4m3fn)
        quantized = grid.to(torch.float64) * steps
    else:
        steps = (candidates / 127).unsqueeze(1)
        quantized = torch.clamp(torch.round(centers / steps), max=127) * steps
    errors = ((quantized - centers) ** 2 * counts).sum(dim=1)
    return candidates[int(torch.argmin(errors))].float()


@torch.no_grad()
def calibrate(
    model: TaskModel, batches: Sequence[dict[str, torch.Tensor]], config: QuantConfig
) -> dict[str, float]:
    """Collect activation statistics over ``batches`` and set every input quantizer's range (amax).

    Returns the calibrated amax per quantizer name. Quantizers that saw no data (layers the task never
    runs) are disabled.
    """
    quantizers = enabled_input_quantizers(model)
    for quantizer in quantizers.values():
        quantizer._calibrator = _new_calibrator(config.method)
        quantizer.disable_quant()
        quantizer.enable_calib()
    model.eval()
    for batch in progress(batches, f"calibrating ({config.method})", total=len(batches)):
        model.run(batch)
    ranges: dict[str, float] = {}
    for name, quantizer in quantizers.items():
        calibrator = quantizer._calibrator
        if config.method == "mse":
            amax = mse_amax(calibrator._calib_hist, calibrator._calib_bin_edges, precision=config.precision)
        else:
            arguments: tuple = () if config.method == "max" else (config.method,)
            keywords: dict[str, float] = {}
            if config.method == "percentile":
                keywords["percentile"] = config.percentile
            elif config.method == "entropy":
                keywords["stride"] = HISTOGRAM_SEARCH_STRIDE
            amax = calibrator.compute_amax(*arguments, **keywords)
        quantizer.disable_calib()
        if amax is None:
            log.info("quantizer %s saw no data during calibration; disabled", name)
            quantizer.disable()
            continue
        quantizer.amax = amax
        quantizer.enable_quant()
        ranges[name] = float(quantizer.amax.max())
        calibrator.reset()
    return ranges


@dataclass
class ChannelStatistics:
    """Per-input-channel |x| maxima of quantized Linears, and groups of Linears that read one tensor."""

    ranges: dict[str, torch.Tensor]
    siblings: list[list[str]]


@torch.no_grad()
def input_channel_ranges(model: TaskModel, batches: Sequence[dict[str, torch.Tensor]]) -> ChannelStatistics:
    """Per-input-channel absolute maximum of every quantized Linear's input, from a float forward pass,
    and which Linears read the very same tensor (query/key/value projections)."""
    linears = quantized_linears(model)
    ranges: dict[str, torch.Tensor] = {}
    readers: dict[int, list[str]] = {}
    alive: list[torch.Tensor] = []  # first-batch inputs stay referenced, so their ids stay unique

    def record(name: str, inputs: tuple[torch.Tensor, ...]) -> None:
        channel_max = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(dim=0)
        if name not in ranges:
            alive.append(inputs[0])
            readers.setdefault(id(inputs[0]), []).append(name)
        ranges[name] = torch.maximum(ranges[name], channel_max) if name in ranges else channel_max

    hooks = [
        module.register_forward_pre_hook(lambda _, inputs, name=name: record(name, inputs))
        for name, module in linears.items()
    ]
    try:
        with _float_forward(model):
            for batch in progress(batches, "collecting channel ranges", total=len(batches)):
                model.run(batch)
    finally:
        for hook in hooks:
            hook.remove()
    alive.clear()
    return ChannelStatistics(ranges, list(readers.values()))


@contextlib.contextmanager
def _float_forward(model: nn.Module) -> Iterator[None]:
    """Temporarily run with every enabled quantizer switched off."""
    quantizer_class = _tensor_quantizer_class()
    active = [
        module for module in model.modules() if isinstance(module, quantizer_class) and module.is_enabled
    ]
    for quantizer in active:
        quantizer.disable()
    try:
        yield
    finally:
        for quantizer in active:
            quantizer.enable()


@torch.no_grad()
def smooth(
    model: TaskModel, statistics: ChannelStatistics, alpha: float, folds: Sequence[tuple[str, str]] = ()
) -> int:
    """SmoothQuant: divide each quantized Linear's input by s per channel, multiply its weight by s.

    s = max|x|^alpha / max|w|^(1-alpha) per input channel, with max|w| taken over all Linears that read
    the same tensor, so siblings (query/key/value) share one s and one Mul in the exported graph. Where
    ``folds`` names the preceding Linear (attention output after value), the division is folded into that
    Linear's output channels; elsewhere it is the input quantizer's ``pre_quant_scale`` (a Mul in front
    of QuantizeLinear). Weight ranges are recomputed. Returns how many layers were smoothed.
    """
    linears = quantized_linears(model)
    smoothed = 0
    for group in statistics.siblings:
        members = [name for name in group if getattr(linears[name], INPUT_QUANTIZER).is_enabled]
        if not members:
            continue
        weights = [linears[name].weight for name in members]
        weight_range = torch.stack([w.abs().amax(dim=0) for w in weights]).amax(dim=0).clamp(min=1e-5)
        activation_range = statistics.ranges[group[0]].clamp(min=1e-5)
        scale = (activation_range**alpha / weight_range ** (1 - alpha)).clamp(min=1e-5)
        preceding = _fold_target(members, linears, folds)
        if preceding is not None:
            preceding.weight.div_(scale.unsqueeze(1))
            if preceding.bias is not None:
                preceding.bias.div_(scale)
        for name in members:
            if preceding is None:
                getattr(linears[name], INPUT_QUANTIZER).pre_quant_scale = (1.0 / scale).to(weights[0].dtype)
            linears[name].weight.mul_(scale)
            smoothed += 1
    for module in linears.values():
        weight_quantizer = getattr(module, WEIGHT_QUANTIZER)
        if weight_quantizer.is_enabled:
            weight_quantizer.amax = module.weight.abs().amax(dim=1).reshape(weight_quantizer.amax.shape)
    return smoothed


def _fold_target(members: list[str], linears: dict[str, Any], folds: Sequence[tuple[str, str]]) -> Any:
    """The Linear whose output channels can absorb the smoothing of a lone ``members`` Linear, if any."""
    if len(members) != 1:
        return None
    for suffix, preceding_suffix in folds:
        if members[0].endswith(suffix):
            preceding = members[0][: -len(suffix)] + preceding_suffix
            return linears.get(preceding)
    return None


@torch.no_grad()
def round_embeddings(model: nn.Module) -> int:
    """Round every embedding table to INT8 rows with one symmetric scale each (what the INT8 ONNX stores)."""
    tables = 0
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            module.weight.copy_(dequantize_rows(module.weight))
            tables += 1
    return tables


def dequantize_rows(table: torch.Tensor) -> torch.Tensor:
    """Symmetric per-row INT8 quantize-dequantize (round half to even), as ONNX QuantizeLinear does."""
    scale = (table.abs().amax(dim=1, keepdim=True) / 127.0).clamp(min=torch.finfo(table.dtype).tiny)
    return torch.clamp(torch.round(table / scale), -127, 127) * scale


def quantize(
    model: TaskModel,
    batches: Sequence[dict[str, torch.Tensor]],
    config: QuantConfig,
    extra_float: Sequence[str] = (),
    family: str | None = None,
) -> TaskModel:
    """Insert INT8 or FP8 quantizers into ``model`` (in place) and calibrate them on ``batches``.

    With ``config.gptq`` (the FP8 default) the weights are then rounded with GPTQ on the same batches.
    ``family`` (the recipe's) matters only for ``config.quantize_attention``. Statistics are gathered in
    inference mode (no dropout), whatever mode ``model`` came in."""
    model.eval()
    if config.peg_groups:
        from .peg import apply_peg

        apply_peg(model, batches, config.peg_groups, config.peg_permute)
    quantized = insert_quantizers(model, config, extra_float).eval()  # Model Optimizer may restore train mode
    if config.quantize_attention:
        from .attention import quantize_attention

        quantize_attention(quantized, family or "unknown", config.precision)
    if config.smoothquant is not None:
        folds = recipe_for_family(family).smoothquant_folds if family else ()
        smooth(quantized, input_channel_ranges(quantized, batches), config.smoothquant, folds)
    if config.weight_bits < 8:
        narrow_weight_ranges(quantized, config.weight_bits)
    if config.int8_embeddings:
        round_embeddings(quantized)
    calibrate(quantized, batches, config)
    if config.gptq:
        from .gptq import gptq_round_weights

        gptq_round_weights(quantized, batches)
    return quantized


@torch.no_grad()
def narrow_weight_ranges(model: nn.Module, bits: int) -> None:
    """Use only ``bits`` bits of the INT8 grid for weights: |q| <= 2**(bits-1) instead of 127.

    With 7, ONNX Runtime's fast U8S8 integer GEMM on x86 CPUs without VNNI cannot saturate its 16-bit
    pair sums (2 x 255 x 64 < 32768), so it computes exactly; the graph stays plain symmetric INT8.
    """
    widen = 127.0 / (2 ** (bits - 1) - 1)
    for module in quantized_linears(model).values():
        quantizer = getattr(module, WEIGHT_QUANTIZER)
        if quantizer.is_enabled:
            quantizer.amax = quantizer.amax * widen


def precision_of(model: nn.Module) -> str:
    """ "fp8" when the model's quantizers are FP8 E4M3, else "int8"."""
    quantizer_class = _tensor_quantizer_class()
    for module in model.modules():
        if isinstance(module, quantizer_class) and module.is_enabled:
            return "fp8" if module.num_bits == FP8_E4M3 else "int8"
    return "int8"


def weight_fingerprint(weight: torch.Tensor | Any) -> str:
    """A digest of a 2-D float32 weight's values, to find it again among an exported graph's initializers."""
    import hashlib

    array = weight.detach().float().contiguous().numpy() if isinstance(weight, torch.Tensor) else weight
    return hashlib.sha256(array.astype("float32").tobytes() + str(array.shape).encode()).hexdigest()


@contextlib.contextmanager
def fp8_weights_for_export(model: nn.Module) -> Iterator[dict[str, tuple[torch.Tensor, int]]]:
    """While exporting: every enabled FP8 weight quantizer is off and its Linear holds the fake-quantized
    weight; yields (per-channel scales amax/448, output-channel axis) keyed by :func:`weight_fingerprint`
    of that weight (axis 0) and of its transpose (axis 1, how MatMul reads it), so the export step can
    store each as float8e4m3fn + scale.

    Model Optimizer 0.47 cannot export per-channel FP8 weights (see the module docstring)."""
    saved: list[tuple[nn.Module, torch.Tensor, Any]] = []
    scales: dict[str, tuple[torch.Tensor, int]] = {}
    try:
        for module in quantized_linears(model).values():
            quantizer = getattr(module, WEIGHT_QUANTIZER)
            if not quantizer.is_enabled or quantizer.num_bits != FP8_E4M3:
                continue
            with torch.no_grad():
                fake = quantizer(module.weight).detach()
            scale = (quantizer.amax.detach().float().reshape(-1) / FP8_MAX).clamp(min=2.0**-24)
            scales[weight_fingerprint(fake)] = (scale, 0)
            scales[weight_fingerprint(fake.t())] = (scale, 1)
            saved.append((module, module.weight.data, quantizer))
            module.weight.data = fake
            quantizer.disable()
        yield scales
    finally:
        for module, weight, quantizer in saved:
            module.weight.data = weight
            quantizer.enable()


@dataclass(frozen=True)
class QuantizationSummary:
    """Counts of what was quantized, for the manifest and the CLI summary."""

    quantized_linears: int
    float_linears: int
    float_linear_names: tuple[str, ...]


def summarize(model: nn.Module) -> QuantizationSummary:
    """How many Linear layers run in INT8 and which stayed float."""
    linears = quantized_linears(model)
    float_names = tuple(
        name for name, module in linears.items() if not getattr(module, WEIGHT_QUANTIZER).is_enabled
    )
    plain = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name not in linears
    ]
    return QuantizationSummary(
        quantized_linears=len(linears) - len(float_names),
        float_linears=len(float_names) + len(plain),
        float_linear_names=float_names + tuple(plain),
    )


def clip_gradients_outside_range(model: nn.Module) -> None:
    """Make every quantizer's backward the clipped straight-through estimator: gradients pass unchanged
    inside [-amax, amax] and are zero where the forward pass clipped (Model Optimizer's default passes
    them everywhere). Quantization-aware training then learns to work within fixed, even poor, ranges."""
    import modelopt.torch.quantization as mtq

    mtq.set_quantizer_attributes_partial(model, "*", {"pass_through_bwd": False})


def quantizer_state(model: nn.Module) -> dict:
    """Model Optimizer's description of the quantizers in ``model`` (placement, settings, enabled flags;
    not the amax values, which are in ``state_dict``). Plain data: loadable with ``weights_only=True``."""
    import modelopt.torch.opt as mto

    return mto.modelopt_state(model)


def restore_quantizers(model: TaskModel, state: dict) -> TaskModel:
    """Insert into the float ``model`` (in place) the quantizers that :func:`quantizer_state` described;
    load the model's ``state_dict`` afterwards for the weights and ranges."""
    import modelopt.torch.opt as mto

    with contextlib.redirect_stdout(io.StringIO()):  # Model Optimizer prints how many quantizers it inserted
        return mto.restore_from_modelopt_state(model, state)
