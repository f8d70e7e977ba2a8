"""DeBERTa v2 and v3 (both ``model_type`` "deberta-v2")."""

from .base import Recipe

DEBERTA_V2 = Recipe(
    family="deberta-v2",
    model_types=("deberta-v2",),
    smoothquant_folds=(("attention.output.dense", "attention.self.value_proj"),),
)
