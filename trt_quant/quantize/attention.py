"""Optional INT8 or FP8 attention: Q/DQ on query and key before Q.K^T, on the softmax output and on the
value before P.V — the pattern TensorRT's fused INT8/FP8 attention needs. Off by default.

The FP8 pattern follows TensorRT's "Fused Attention" guide (docs.nvidia.com/deeplearning/tensorrt/latest/
inference-library/transformers-fused-attention.html: Q/DQ-quantized inputs of both batched matrix
products, the attention scale applied to Q before the first one) and Model Optimizer's FP8 ONNX
exporter for TensorRT's MHA-v2 fusion (NVIDIA/Model-Optimizer pull request 1289,
``modelopt/onnx/export/fp8_exporter.py``: DequantizeLinear feeding each attention MatMul directly, FP8
Q/DQ on the Softmax output). That exporter gives the Softmax output a fixed scale of 1/448 (amax 1);
here it is calibrated like every other activation, and max calibration of probabilities lands at or
just below 1.

It is a transformers attention implementation ("trt_quant_int8", registered through transformers'
AttentionInterface and AttentionMaskInterface) that computes what the eager implementation computes,
with four activation quantizers attached to each attention module.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trt_quant.errors import TrtQuantError
from trt_quant.quantize.quantizers import new_activation_quantizer

IMPLEMENTATION = "trt_quant_int8"
QUANTIZERS = (
    "query_input_quantizer",
    "key_input_quantizer",
    "value_input_quantizer",
    "probs_input_quantizer",
)
SUPPORTED_FAMILIES = ("bert", "roberta", "xlm-roberta", "electra", "distilbert")


def int8_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' eager attention with the four activation quantizers of ``module`` applied."""
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    scores = torch.matmul(
        module.query_input_quantizer(query), module.key_input_quantizer(key).transpose(2, 3)
    )
    scores = scores * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = nn.functional.softmax(scores, dim=-1)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    output = torch.matmul(module.probs_input_quantizer(probs), module.value_input_quantizer(value))
    return output.transpose(1, 2).contiguous(), probs


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(IMPLEMENTATION, int8_attention)
    AttentionMaskInterface.register(IMPLEMENTATION, eager_mask)


def attention_modules(model: nn.Module) -> list[Any]:
    """Self-attention modules that call transformers' attention interface (they hold a ``config``)."""
    return [m for m in model.modules() if hasattr(m, "config") and type(m).__name__.endswith("SelfAttention")]


def quantize_attention(model: nn.Module, family: str, precision: str = "int8") -> int:
    """Attach the four ``precision`` (int8, fp8) quantizers to every self-attention module and switch the model to
    :data:`IMPLEMENTATION`; return how many attention modules were quantized."""
    if family not in SUPPORTED_FAMILIES:
        raise TrtQuantError(
            f"Attention quantization is not available for {family}: use it with {', '.join(SUPPORTED_FAMILIES)}, "
            "or leave --quantize-attention off."
        )
    _register()
    modules = attention_modules(model)
    if not modules:
        raise TrtQuantError(
            f"No self-attention module of this {family} model uses transformers' attention interface: "
            "leave --quantize-attention off for it."
        )
    for module in modules:
        for name in QUANTIZERS:
            module.add_module(name, new_activation_quantizer(precision))
        module.config._attn_implementation = IMPLEMENTATION
    return len(modules)
