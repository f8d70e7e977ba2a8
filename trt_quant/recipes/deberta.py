"""DeBERTa v2 and v3 (both ``model_type`` "deberta-v2").

transformers' ``build_rpos`` is a TorchScript function whose ``if`` (key length != query length) exports
as an ONNX ``If`` returning a rank-3 tensor in one branch and the rank-4 relative positions in the
other; TensorRT's ``IIfConditional`` refuses branch outputs of different ranks unless the condition is
a build-time constant (NVIDIA/TensorRT issue 4032). In self-attention the query and key lengths are
always equal, so the export fix swaps in a plain Python ``build_rpos``: the tracer evaluates the
comparison while exporting and records only the branch taken, with no ``If``. It returns the same values
as the scripted function and calls it when the lengths differ, so eager results do not change.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from trt_quant.recipes.base import Recipe


def _traceable_build_rpos(scripted: Any) -> Any:
    """``build_rpos`` without TorchScript, so tracing records the branch taken instead of an ``If``."""

    def build_rpos(
        query_layer: Any,
        key_layer: Any,
        relative_pos: Any,
        position_buckets: int,
        max_relative_positions: int,
    ) -> Any:
        if key_layer.size(-2) == query_layer.size(-2):
            return relative_pos
        return scripted(query_layer, key_layer, relative_pos, position_buckets, max_relative_positions)

    build_rpos.scripted = scripted  # type: ignore[attr-defined]
    return build_rpos


def export_without_if(model: nn.Module) -> None:
    """Replace transformers' scripted ``build_rpos`` by :func:`_traceable_build_rpos` (idempotent)."""
    from transformers.models.deberta_v2 import modeling_deberta_v2

    current = modeling_deberta_v2.build_rpos
    if not hasattr(current, "scripted"):
        modeling_deberta_v2.build_rpos = _traceable_build_rpos(current)


DEBERTA_V2 = Recipe(
    family="deberta-v2",
    model_types=("deberta-v2",),
    export_fix=export_without_if,
    smoothquant_folds=(("attention.output.dense", "attention.self.value_proj"),),
)
