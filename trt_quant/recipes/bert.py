"""BERT and the BERT-shaped MiniLM family."""

from trt_quant.recipes.base import Recipe

BERT = Recipe(family="bert", model_types=("bert",))
