"""Per-family quantization recipes, keyed by ``config.model_type``."""

from __future__ import annotations

from trt_quant.errors import TrtQuantError
from trt_quant.recipes.albert import ALBERT
from trt_quant.recipes.base import Recipe
from trt_quant.recipes.bert import BERT
from trt_quant.recipes.deberta import DEBERTA_V2
from trt_quant.recipes.distilbert import DISTILBERT
from trt_quant.recipes.electra import ELECTRA
from trt_quant.recipes.modernbert import MODERNBERT
from trt_quant.recipes.mpnet import MPNET
from trt_quant.recipes.roberta import ROBERTA
from trt_quant.recipes.xlm_roberta import XLM_ROBERTA

RECIPES: dict[str, Recipe] = {
    model_type: recipe
    for recipe in (BERT, ROBERTA, XLM_ROBERTA, DEBERTA_V2, ELECTRA, DISTILBERT, MPNET, MODERNBERT, ALBERT)
    for model_type in recipe.model_types
}


def recipe_for(model_type: str) -> Recipe:
    """The recipe for a ``config.model_type``; an unsupported family is an error listing the supported ones."""
    if model_type not in RECIPES:
        raise TrtQuantError(
            f"Model family '{model_type}' is not supported: use a model of type {', '.join(sorted(RECIPES))}."
        )
    return RECIPES[model_type]


__all__ = ["RECIPES", "Recipe", "recipe_for"]
