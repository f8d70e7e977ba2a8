"""DistilBERT: no token type ids."""

from trt_quant.recipes.base import Recipe

DISTILBERT = Recipe(
    family="distilbert",
    model_types=("distilbert",),
    smoothquant_folds=(("attention.out_lin", "attention.v_lin"),),
)
