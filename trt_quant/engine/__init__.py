"""TensorRT engine stage: strongly typed build, profiles, timing cache, layer report."""
