"""RoBERTa (and XLM-RoBERTa, the same architecture)."""

from .base import Recipe

ROBERTA = Recipe(family="roberta", model_types=("roberta", "xlm-roberta"))
