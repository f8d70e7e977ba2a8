"""GPTQ weight rounding: FP8's default, off at INT8; rounded weights on the quantizer's grid with a closer
layer output than round-to-nearest; layers switched back to float get their float weights."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from tiny_models import sentences

from trt_quant.config import QuantConfig
from trt_quant.data import TextData, tokenize_batches
from trt_quant.models import load_model
from trt_quant.quantize.gptq import input_hessians, round_weight
from trt_quant.quantize.model import quantize
from trt_quant.quantize.quantizers import FP8_E4M3, WEIGHT_QUANTIZER, quantized_linears
from trt_quant.quantize.sensitivity import set_layer_quantized

PROBE = "model.encoder.layer.1.intermediate.dense"


def weight_quantizer(weight: torch.Tensor, bits: int | tuple[int, int]) -> torch.nn.Module:
    """A per-output-channel quantizer of ``bits`` (8 or FP8 E4M3) with its range set from ``weight``."""
    from modelopt.torch.quantization.config import QuantizerAttributeConfig
    from modelopt.torch.quantization.nn import TensorQuantizer

    quantizer = TensorQuantizer(QuantizerAttributeConfig(num_bits=bits, axis=0))
    quantizer.amax = weight.abs().amax(dim=1, keepdim=True)
    return quantizer


def test_gptq_is_the_fp8_default_and_off_at_int8() -> None:
    assert QuantConfig(precision="fp8").gptq is True
    assert QuantConfig().gptq is False
    assert QuantConfig(precision="fp8", gptq=False).gptq is False
    assert QuantConfig(gptq=True).gptq is True


@pytest.mark.parametrize("bits", [FP8_E4M3, 8], ids=["fp8", "int8"])
def test_rounded_weight_is_on_the_grid_and_its_output_is_closer_than_round_to_nearest(
    bits: int | tuple[int, int],
) -> None:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(48, 96, generator=generator)
    mixing = torch.randn(96, 96, generator=generator) / 4 + torch.eye(96)
    inputs = torch.randn(2000, 96, generator=generator) @ mixing  # correlated input channels
    quantizer = weight_quantizer(weight, bits)
    with torch.no_grad():
        rounded = round_weight(weight, inputs.t() @ inputs / len(inputs), quantizer)
        nearest = quantizer(weight)
        assert torch.equal(quantizer(rounded), rounded)  # exported as is: same scales, same grid
        gptq_error = ((inputs @ (weight - rounded).t()) ** 2).mean()
        nearest_error = ((inputs @ (weight - nearest).t()) ** 2).mean()
    assert gptq_error < 0.7 * nearest_error


@pytest.fixture(scope="module")
def prepared(tiny_model):
    loaded = load_model(tiny_model("bert", "feature-extraction"), "feature-extraction")
    batches = tokenize_batches(loaded.tokenizer, TextData(sentences(64, seed=5)), loaded.input_names, 16, 32)
    return loaded, batches


def test_fp8_quantize_rounds_with_gptq_and_a_layer_switched_to_float_gets_its_float_weight(prepared) -> None:
    loaded, batches = prepared
    original = dict(loaded.model.named_modules())[PROBE].weight.detach().clone()
    config = QuantConfig(calib_samples=64, batch_size=16, max_length=32, precision="fp8")
    model = quantize(copy.deepcopy(loaded.model), batches, config)
    module = quantized_linears(model)[PROBE]
    quantizer = getattr(module, WEIGHT_QUANTIZER)
    with torch.no_grad():
        rounded = module.weight.detach().clone()
        assert torch.equal(quantizer(rounded), rounded)
        assert not torch.equal(rounded, quantizer(original))  # not round-to-nearest
    set_layer_quantized(module, False)
    assert torch.equal(module.weight, original)
    set_layer_quantized(module, True)
    assert torch.equal(module.weight, rounded)

    nearest = quantize(copy.deepcopy(loaded.model), batches, replace(config, gptq=False))
    assert torch.equal(quantized_linears(nearest)[PROBE].weight, original)  # rounded only in the forward pass


def test_hessians_skip_padding_tokens(prepared) -> None:
    loaded, batches = prepared
    config = QuantConfig(calib_samples=64, batch_size=16, max_length=32, precision="fp8", gptq=False)
    model = quantize(copy.deepcopy(loaded.model), batches, config)
    module = quantized_linears(model)[PROBE]
    hessian = input_hessians(model, batches)[PROBE]
    seen: list[torch.Tensor] = []
    hook = module.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0]))
    with torch.no_grad():
        for batch in batches:
            model.run(batch)
    hook.remove()
    quantizer = module.input_quantizer
    rows = torch.cat(
        [
            quantizer(x).reshape(-1, x.shape[-1])[batch["attention_mask"].reshape(-1).bool()]
            for x, batch in zip(seen, batches, strict=True)
        ]
    )
    assert int(batches[0]["attention_mask"].eq(0).sum()) > 0  # the data has padding to skip
    torch.testing.assert_close(hessian, rows.t() @ rows / len(rows), rtol=1e-4, atol=1e-6)
