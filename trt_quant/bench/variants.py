"""The names of the CPU benchmark's variants (no heavy imports: the command line lists them in its help)."""

OPENVINO_VARIANTS = ("openvino-float", "openvino-fp32", "trt-quant-int8-openvino")
"""OpenVINO on the float ONNX at its default precision (bf16 where the CPU has it) and at f32, and on
trt-quant's INT8 ONNX; run only where the ``openvino`` extra is installed."""
VARIANTS = (
    "pytorch-fp32",
    "pytorch-dynamic-int8",
    "ort-fp32",
    "ort-dynamic-int8",
    "trt-quant-int8",
    *OPENVINO_VARIANTS,
)
