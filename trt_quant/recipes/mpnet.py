"""MPNet (all-mpnet-base-v2 and other sentence-transformers MPNet models): no token type ids."""

from trt_quant.recipes.base import Recipe

MPNET = Recipe(
    family="mpnet",
    model_types=("mpnet",),
    smoothquant_folds=(("attention.attn.o", "attention.attn.v"),),
)
