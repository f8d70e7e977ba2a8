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
    """

    family: str
    model_types: tuple[str, ...]
    keep_float: tuple[str, ...] = field(default_factory=tuple)
    export_fix: Callable[[nn.Module], None] = no_export_fix
