"""trt-quant: INT8 quantization of Hugging Face encoders with explicit Q/DQ, for ONNX Runtime and TensorRT."""

__version__ = "0.1.0"
