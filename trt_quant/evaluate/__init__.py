"""Evaluation reports: task metrics of float and quantized models on user data."""
