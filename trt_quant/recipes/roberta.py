"""RoBERTa."""

from trt_quant.recipes.base import Recipe

ROBERTA = Recipe(family="roberta", model_types=("roberta",))
