"""ELECTRA discriminators."""

from trt_quant.recipes.base import Recipe

ELECTRA = Recipe(family="electra", model_types=("electra",))
