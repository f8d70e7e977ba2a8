"""BERT and the BERT-shaped MiniLM family."""

from .base import Recipe

BERT = Recipe(family="bert", model_types=("bert",))
