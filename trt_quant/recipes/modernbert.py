"""ModernBERT: pre-LayerNorm, rotary positions, GeGLU, alternating global and local (sliding window)
attention, no token type ids.

The attention output projection reads the value slice of the fused query/key/value projection, so its
SmoothQuant division stays a Mul (no fold into a slice of ``Wqkv``).
"""

from trt_quant.recipes.base import Recipe

MODERNBERT = Recipe(family="modernbert", model_types=("modernbert",), smoothquant_folds=())
