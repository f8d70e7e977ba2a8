"""Benchmarks: latency, throughput, padding and the dynamic-quantization baselines."""
