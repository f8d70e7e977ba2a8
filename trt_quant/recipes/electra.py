"""ELECTRA discriminators."""

from .base import Recipe

ELECTRA = Recipe(family="electra", model_types=("electra",))
