"""RoBERTa."""

from .base import Recipe

ROBERTA = Recipe(family="roberta", model_types=("roberta",))
