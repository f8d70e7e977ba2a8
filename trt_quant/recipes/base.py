"""What a recipe says about one model family."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn


def no_export_fix(model: nn.Module) -> None:
    """Families whose export needs no change."""


@dataclass(frozen=True)
class Recipe:
    """A model family: its ``model_type`` names, Linear layers that stay float, and export fixes.

    ``keep_float`` holds fnmatch patterns of module names whose quantizers stay disabled.
    ``export_fix`` edits a loaded model in place so that its ONNX export is TensorRT friendly.
    ``smoothquant_folds`` pairs (Linear, preceding Linear) by module-name suffix where SmoothQuant's
    per-channel division is exact to fold into the preceding Linear's output channels (attention output
    projection after the value projection), so no Mul is exported for it.
    """

    family: str
    model_types: tuple[str, ...]
    keep_float: tuple[str, ...] = field(default_factory=tuple)
    export_fix: Callable[[nn.Module], None] = no_export_fix
    smoothquant_folds: tuple[tuple[str, str], ...] = (("attention.output.dense", "attention.self.value"),)
