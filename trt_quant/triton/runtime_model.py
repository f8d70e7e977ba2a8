"""Triton Python-backend model that runs the encoder with trt-quant's own runtime (copied as ``1/model.py``).

Next to this file, ``artifact/`` holds the manifest and the INT8 graph (and the TensorRT engine for GPU
instances) and ``trt_quant/`` the code of the trt-quant that wrote the repository, so the server's Python needs
only numpy and onnxruntime: no torch, no onnx, no trt-quant installed. The runtime is ONNX Runtime on CPU
instances, TensorRT on GPU instances when the artifact has an engine (that needs trt-quant's GPU
dependencies, torch and tensorrt, in the server's Python). ``parameters`` of ``config.pbtxt``: ``artifact``
(the folder name) and ``threads`` (ONNX Runtime intra-op threads, 0 = all cores).

The dynamic batcher hands over requests of equal shapes together; they run as one batch. A request the
runtime refuses gets an error response naming the problem; the others are still answered.
"""

import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from trt_quant.errors import TrtQuantError  # noqa: E402 (the copy next to this file, on the path above)
from trt_quant.runtime import load_runtime  # noqa: E402

ENGINE = "model.plan"


class TritonPythonModel:
    """Runs batches of encoder inputs through ``trt_quant.runtime``."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        artifact = os.path.join(args["model_repository"], args["model_version"], parameters["artifact"])
        gpu = args["model_instance_kind"] == "GPU"
        backend = "tensorrt" if gpu and os.path.isfile(os.path.join(artifact, ENGINE)) else "onnxruntime"
        if gpu:
            import torch

            torch.cuda.set_device(int(args["model_instance_device_id"]))
        try:
            # the repository writer verified the artifact's checksums; its graph is stored pre-folded
            self.runtime = load_runtime(
                artifact, backend=backend, verify=False, threads=int(parameters.get("threads", "0")) or None
            )
        except TrtQuantError as error:
            raise pb_utils.TritonModelException(str(error)) from None
        self.input_names = self.runtime.input_names
        self.outputs = [
            (output["name"], pb_utils.triton_string_to_numpy(output["data_type"]))
            for output in config["output"]
        ]

    def execute(self, requests: "list[pb_utils.InferenceRequest]") -> "list[pb_utils.InferenceResponse]":
        responses: list = [None] * len(requests)
        groups: dict[tuple, list[tuple[int, dict[str, np.ndarray]]]] = {}
        for index, request in enumerate(requests):
            feeds = {}
            for name in self.input_names:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                if tensor is None:
                    responses[index] = _error(
                        f"Input '{name}' is missing: send all of {', '.join(self.input_names)}."
                    )
                    break
                feeds[name] = tensor.as_numpy()
            else:
                key = tuple(feeds[name].shape for name in self.input_names)
                groups.setdefault(key, []).append((index, feeds))
        for members in groups.values():
            self._run(members, responses)
        return responses

    def _run(self, members: list, responses: list) -> None:
        """Run requests of one shape as one batch; if the runtime refuses it, each request on its own."""
        batch = {name: np.concatenate([feeds[name] for _, feeds in members]) for name in self.input_names}
        try:
            outputs = self.runtime.run(batch)
        except TrtQuantError as error:
            if len(members) > 1:
                for member in members:
                    self._run([member], responses)
            else:
                responses[members[0][0]] = _error(str(error))
            return
        start = 0
        for index, feeds in members:
            stop = start + len(feeds[self.input_names[0]])
            tensors = [
                pb_utils.Tensor(name, outputs[name][start:stop].astype(dtype)) for name, dtype in self.outputs
            ]
            responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
            start = stop


def _error(message: str) -> "pb_utils.InferenceResponse":
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG))
