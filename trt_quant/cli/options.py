"""Option groups of the ``trt-quant`` command, each declared once and shared by every command that needs it.

An :class:`OptionGroup` adds its options to a command's signature (so typer shows them in ``--help``) and
hands the command one object built from their values, e.g. a :class:`~trt_quant.config.QuantConfig`:

    @app.command()
    @QUANTIZATION
    def convert(model: str, quant_config: QuantConfig) -> None: ...
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from trt_quant.config import AUTO, CALIBRATION_METHODS, QatConfig, QuantConfig
from trt_quant.errors import TrtQuantError

Command = TypeVar("Command", bound=Callable[..., Any])


@dataclass(frozen=True)
class OptionGroup:
    """Options that together build one keyword argument (``target``) of the commands that use them."""

    target: str
    options: dict[str, tuple[Any, Any]]
    """Option name -> (Annotated type with its typer.Option, default)."""
    build: Callable[..., Any]

    def __call__(self, command: Command) -> Command:
        signature = inspect.signature(command, eval_str=True)
        if self.target not in signature.parameters:
            raise TypeError(f"{command.__name__} has no parameter '{self.target}' for this option group")
        own = [parameter for parameter in signature.parameters.values() if parameter.name != self.target]
        added = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
            for name, (annotation, default) in self.options.items()
        ]

        @functools.wraps(command)
        def with_group(**values: Any) -> Any:
            group = {name: values.pop(name) for name in self.options}
            return command(**values, **{self.target: self.build(**group)})

        with_group.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[*(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own), *added]
        )
        with_group.__annotations__ = {
            **{p.name: p.annotation for p in own},
            **{name: annotation for name, (annotation, _) in self.options.items()},
        }
        return with_group  # type: ignore[return-value]


def _quant_config(keep_float: list[str] | None, smoothquant: float | None, **values: Any) -> QuantConfig:
    alpha = AUTO if smoothquant is None else smoothquant or None  # unset: 0.8 at int8, off at fp8; 0: off
    return QuantConfig(keep_float=tuple(keep_float or ()), smoothquant=alpha, **values)


QUANTIZATION = OptionGroup(
    "quant_config",
    {
        "method": (
            Annotated[str, typer.Option(help=f"Calibration method: {', '.join(CALIBRATION_METHODS)}.")],
            "max",
        ),
        "percentile": (Annotated[float, typer.Option(help="Percentile for --method percentile.")], 99.99),
        "calib_samples": (Annotated[int, typer.Option(help="Number of calibration examples.")], 256),
        "batch_size": (Annotated[int, typer.Option(help="Calibration batch size.")], 16),
        "max_length": (Annotated[int, typer.Option(help="Maximum tokens per example.")], 128),
        "quantize_attention": (
            Annotated[bool, typer.Option(help="INT8/FP8 Q/DQ on query, key, softmax output and value.")],
            False,
        ),
        "quantize_residual": (
            Annotated[bool, typer.Option(help="Also quantize LayerNorm inputs (costs accuracy).")],
            False,
        ),
        "precision": (
            Annotated[
                str, typer.Option(help="int8, or fp8 (E4M3; TensorRT engines need compute capability 8.9+).")
            ],
            "int8",
        ),
        "smoothquant": (
            Annotated[
                float | None,
                typer.Option(
                    help="SmoothQuant alpha in (0, 1); 0 turns it off (default: 0.8 at int8, off at fp8)."
                ),
            ],
            None,
        ),
        "gptq": (
            Annotated[
                bool | None,
                typer.Option(
                    "--gptq/--no-gptq",
                    help="Round weights with GPTQ instead of to nearest (default: on at fp8, off at int8).",
                ),
            ],
            None,
        ),
        "weight_bits": (
            Annotated[int, typer.Option(help="8, or 7 for ONNX Runtime on x86 CPUs without VNNI.")],
            8,
        ),
        "peg_groups": (
            Annotated[
                int, typer.Option(help="Per-embedding-group quantization of FFN inputs: K groups (0 off).")
            ],
            0,
        ),
        "keep_float": (
            Annotated[list[str] | None, typer.Option(help="Module-name pattern of Linears to keep float.")],
            None,
        ),
    },
    _quant_config,
)
"""How to quantize and calibrate: shared by ``convert``, ``qat`` and ``analyze``."""


def _qat_config(train_batch_size: int, **values: Any) -> QatConfig:
    return QatConfig(batch_size=train_batch_size, **values)


TRAINING = OptionGroup(
    "qat_config",
    {
        "epochs": (Annotated[int, typer.Option(help="Training epochs.")], 3),
        "learning_rate": (
            Annotated[float, typer.Option(help="Peak learning rate (AdamW, linear warm-up/decay).")],
            2e-5,
        ),
        "train_batch_size": (Annotated[int, typer.Option(help="Training batch size (per process).")], 16),
        "weight_decay": (
            Annotated[float, typer.Option(help="AdamW weight decay (not on biases and LayerNorm weights).")],
            0.01,
        ),
        "warmup_ratio": (Annotated[float, typer.Option(help="Share of the steps to warm up over.")], 0.1),
        "distill": (
            Annotated[
                bool, typer.Option(help="Distil from the float model (KL on logits, MSE on hidden states).")
            ],
            False,
        ),
        "temperature": (Annotated[float, typer.Option(help="Temperature of the distillation KL term.")], 2.0),
        "kl_weight": (Annotated[float, typer.Option(help="Weight of the distillation KL term.")], 1.0),
        "hidden_mse_weight": (
            Annotated[float, typer.Option(help="Weight of the last hidden states' MSE term.")],
            1.0,
        ),
        "seed": (Annotated[int, typer.Option(help="Seed of the shuffling and the training.")], 0),
        "checkpoint_dir": (
            Annotated[Path | None, typer.Option(help="Write a checkpoint per epoch here.")],
            None,
        ),
    },
    _qat_config,
)
"""How to fine-tune with the quantizers active (``qat``); the training length is ``--max-length``."""


COLUMNS = OptionGroup(
    "columns",
    {
        "text_column": (
            Annotated[
                str | None,
                typer.Option(
                    help="Column holding the text (default: text, sentence, ... or the only column)."
                ),
            ],
            None,
        ),
        "pair_column": (
            Annotated[str | None, typer.Option(help="Column holding the second text of a pair.")],
            None,
        ),
    },
    dict,
)
"""Which columns of a data file hold the text: shared by ``convert``, ``qat``, ``analyze`` and ``evaluate``."""

HELD_OUT = OptionGroup(
    "eval_data",
    {
        "eval_data": (
            Annotated[
                Path | None,
                typer.Option(
                    help="Held-out data (first 256 rows) the quantized model is scored on: convert's agreement "
                    "and --accuracy-budget, qat's best epoch, analyze's per-layer ranking (convert and analyze "
                    "default to the calibration rows after those used; qat scores nothing without it)."
                ),
            ],
            None,
        ),
    },
    lambda eval_data: eval_data,
)
"""Where the quantized model is scored (agreement and a budget, QAT's best epoch, the per-layer ranking):
shared by ``convert``, ``qat`` and ``analyze``."""


def _repository_options(preferred_batch: str | None, max_queue_delay: int, **values: Any) -> dict[str, Any]:
    sizes = integers(preferred_batch, "--preferred-batch") if preferred_batch else ()
    return {"preferred_batch_sizes": sizes, "max_queue_delay_us": max_queue_delay, **values}


def integers(spec: str, option: str) -> tuple[int, ...]:
    """A comma-separated list of positive integers given to ``option``."""
    try:
        values = tuple(int(part) for part in spec.split(","))
    except ValueError:
        raise TrtQuantError(
            f"{option} '{spec}' is not a comma-separated list of integers: pass e.g. 1,8,32."
        ) from None
    if not values or min(values) < 1:
        raise TrtQuantError(f"{option} '{spec}' must list positive integers: pass e.g. 1,8,32.")
    return values


REPOSITORY = OptionGroup(
    "repository_options",
    {
        "max_batch": (Annotated[int, typer.Option(help="max_batch_size of the model.")], 8),
        "instances": (Annotated[int, typer.Option(help="Model instances per device.")], 1),
        "kind": (Annotated[str | None, typer.Option(help="Instance kind: gpu or cpu.")], None),
        "preferred_batch": (
            Annotated[str | None, typer.Option(help="Preferred dynamic batch sizes, e.g. 4,8.")],
            None,
        ),
        "max_queue_delay": (
            Annotated[int, typer.Option(help="Dynamic batching max queue delay (microseconds).")],
            100,
        ),
        "max_length": (Annotated[int | None, typer.Option(help="Tokenizer truncation length.")], None),
    },
    _repository_options,
)
"""How the Triton model repository serves the model: shared by ``triton`` and ``serve``."""
