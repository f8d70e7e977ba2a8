"""The ``trt-quant`` command: option groups declared once, no logic of its own."""
