"""ALBERT: one set of layer modules shared by every layer (and a factorized embedding projection).

Model Optimizer puts one quantizer on each module, so a shared Linear's quantizers serve every layer
that uses it: calibration sees every use (the activation range is the maximum over all layers), the
exported graph holds each use's own QuantizeLinear/DequantizeLinear pair (all with that one scale) and
each shared weight is stored once in INT8 (``export.share_identical_initializers``).
"""

from trt_quant.recipes.base import Recipe

ALBERT = Recipe(
    family="albert",
    model_types=("albert",),
    smoothquant_folds=(("attention.dense", "attention.value"),),
)
