"""XLM-RoBERTa (multilingual-e5, bge-m3, ...): RoBERTa's architecture with a SentencePiece tokenizer."""

from trt_quant.recipes.base import Recipe

XLM_ROBERTA = Recipe(family="xlm-roberta", model_types=("xlm-roberta",))
