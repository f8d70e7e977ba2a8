"""Triton Inference Server model repositories: an encoder, a Python-backend tokenizer and an ensemble."""

from trt_quant.triton.repository import write_triton_repository
from trt_quant.triton.validate import validate_repository

__all__ = ["validate_repository", "write_triton_repository"]
