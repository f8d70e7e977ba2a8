"""Quantize stage: Q/DQ insertion and calibration through Model Optimizer (the only package that imports
it or touches its quantizer objects), SmoothQuant, PEG, attention quantizers and the sensitivity analysis."""
