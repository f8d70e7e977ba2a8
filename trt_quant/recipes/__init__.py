"""Per-family quantization recipes, keyed by ``config.model_type``."""

from __future__ import annotations

from ..errors import TrtQuantError
from .albert import ALBERT
from .base import Recipe
from .bert import BERT
from .deberta import DEBERTA_V2
from .distilbert import DISTILBERT
from .electra import ELECTRA
from .modernbert import MODERNBERT
from .mpnet import MPNET
from .roberta import ROBERTA
from .xlm_roberta import XLM_ROBERTA

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
