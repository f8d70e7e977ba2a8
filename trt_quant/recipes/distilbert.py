"""DistilBERT: no token type ids."""

from .base import Recipe

DISTILBERT = Recipe(family="distilbert", model_types=("distilbert",))
