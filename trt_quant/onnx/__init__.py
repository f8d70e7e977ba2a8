"""ONNX stage: export with explicit Q/DQ, half-precision conversion to the TensorRT-ready graph, the rules check."""
