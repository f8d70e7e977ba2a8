"""TensorRT backend (NVIDIA GPU) behind the ``Runtime`` interface.

Device buffers are torch CUDA tensors, kept per input shape (a few shapes, least recently used dropped)
and bound with ``set_tensor_address``; inference runs with ``execute_async_v3`` on a torch stream. The
optimization profile is picked from the input shape, input dtypes (INT64 or INT32) come from the engine.
With ``cuda_graphs=True`` each shape's launch is captured once as a CUDA graph and replayed afterwards.
One lock serializes execution, so one runtime is safe to share between threads.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..artifacts import ENGINE, Manifest, quantized_precision
from ..engine import Profile, check_fp8_capability, require_tensorrt
from ..errors import ArtifactError, InputError, TrtQuantError
from .base import Runtime

TORCH_DTYPES = {
    "FLOAT": torch.float32,
    "HALF": torch.float16,
    "BF16": torch.bfloat16,
    "INT64": torch.int64,
    "INT32": torch.int32,
    "INT8": torch.int8,
    "UINT8": torch.uint8,
    "BOOL": torch.bool,
}
CACHED_SHAPES = 8


def tensorrt_usable() -> bool:
    """Whether TensorRT imports and a CUDA GPU is visible; never raises."""
    try:
        import tensorrt  # noqa: F401

        return bool(torch.cuda.is_available())
    except Exception:  # ImportError, or OSError when TensorRT's CUDA libraries are missing
        return False


def select_profile(profiles: Sequence[Profile], shape: Sequence[int]) -> int:
    """Index of the tightest profile (smallest max shape) that holds ``shape``; InputError when none does."""
    fitting = [index for index, profile in enumerate(profiles) if profile.contains(shape)]
    if not fitting:
        ranges = "; ".join(f"profile {index}: {profile.describe()}" for index, profile in enumerate(profiles))
        raise InputError(
            f"Input shape (batch {shape[0]}, sequence {shape[-1]}) is outside every optimization profile of "
            f"the engine ({ranges}): pass inputs inside one, or rebuild with wider --batch/--seq ranges."
        )
    return min(fitting, key=lambda index: (math.prod(profiles[index].shape(2)), index))


def engine_mismatch(record: dict[str, Any] | None, tensorrt_version: str, capability: str) -> str | None:
    """Why the engine the manifest records cannot run here (other TensorRT or GPU), or None if it can."""
    if not record:
        return "the manifest records no engine (the build did not finish)"
    if record.get("tensorrt") != tensorrt_version:
        return f"it was built with TensorRT {record.get('tensorrt')} and this machine has {tensorrt_version}"
    if record.get("compute_capability") != capability:
        return (
            f"it was built for compute capability {record.get('compute_capability')} ({record.get('gpu')}) "
            f"and this GPU has {capability}"
        )
    return None


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a TensorRT ``DataType`` member name."""
    if name not in TORCH_DTYPES:
        raise ArtifactError(f"The engine has a {name} tensor, which trt-quant cannot bind: build it again.")
    return TORCH_DTYPES[name]


@dataclass
class _Bindings:
    """Device buffers of one input shape, and the CUDA graph of its launch once captured."""

    inputs: dict[str, torch.Tensor]
    outputs: dict[str, torch.Tensor]
    graph: Any = None  # torch.cuda.CUDAGraph once captured


class TensorRTRuntime(Runtime):
    """Runs the artifact's TensorRT engine (``model.plan``) on the current CUDA device; thread-safe.

    ``engine_path`` runs another engine of the same model (the manifest's version record is then not
    checked); ``cuda_graphs`` captures each input shape's launch as a CUDA graph after its first run.
    """

    backend = "tensorrt"

    def __init__(
        self, directory: Path, manifest: Manifest, engine_path: Path | None = None, cuda_graphs: bool = False
    ) -> None:
        super().__init__(directory, manifest)
        self._trt = require_tensorrt()
        self.engine_path = Path(engine_path) if engine_path is not None else self.directory / ENGINE
        if engine_path is None:
            self._check_record()
        self._logger = self._trt.Logger(self._trt.Logger.WARNING)
        self._runtime = self._trt.Runtime(self._logger)  # both outlive the engine
        self._engine = self._deserialize()
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise TrtQuantError("TensorRT could not create an execution context: free GPU memory and retry.")
        self._inputs, self._outputs = self._io_names()
        self.dtypes = {name: torch_dtype(self._engine.get_tensor_dtype(name).name) for name in self._inputs}
        self.dtypes |= {name: torch_dtype(self._engine.get_tensor_dtype(name).name) for name in self._outputs}
        self.profiles = [self._profile(index) for index in range(self._engine.num_optimization_profiles)]
        self.cuda_graphs = cuda_graphs
        self._stream = torch.cuda.Stream()
        self._active_profile = 0
        self._bindings: OrderedDict[tuple[int, ...], _Bindings] = OrderedDict()
        self._lock = threading.Lock()

    def _rebuild_hint(self) -> str:
        return f"rebuild it with 'trt-quant build {self.directory}'"

    def _check_record(self) -> None:
        major, minor = torch.cuda.get_device_capability()
        if quantized_precision(self.manifest) == "fp8":
            check_fp8_capability((major, minor))
        reason = engine_mismatch(self.manifest.engine, self._trt.__version__, f"{major}.{minor}")
        if reason is not None:
            raise ArtifactError(
                f"The engine in {self.directory} cannot run here because {reason}: {self._rebuild_hint()} "
                "on this machine."
            )

    def _deserialize(self) -> Any:
        if not self.engine_path.is_file():
            raise ArtifactError(
                f"There is no TensorRT engine at {self.engine_path}: build one with "
                f"'trt-quant build {self.directory}'."
            )
        engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if engine is None:
            raise ArtifactError(
                f"TensorRT {self._trt.__version__} cannot load {self.engine_path} (built by another TensorRT "
                f"version or GPU, or corrupt): {self._rebuild_hint()}."
            )
        return engine

    def _io_names(self) -> tuple[list[str], list[str]]:
        """The engine's input and output names, checked against the manifest."""
        names = [self._engine.get_tensor_name(index) for index in range(self._engine.num_io_tensors)]
        is_input = self._trt.TensorIOMode.INPUT
        inputs = [name for name in names if self._engine.get_tensor_mode(name) == is_input]
        outputs = [name for name in names if name not in inputs]
        if sorted(inputs) != sorted(self.input_names) or not set(self.output_names) <= set(outputs):
            raise ArtifactError(
                f"The engine's tensors ({', '.join(names)}) do not match the manifest's inputs and outputs: "
                f"{self._rebuild_hint()}."
            )
        return inputs, outputs

    def _profile(self, index: int) -> Profile:
        shapes = self._engine.get_tensor_profile_shape(self._inputs[0], index)
        low, opt, high = (tuple(dims) for dims in shapes)
        return Profile((low[0], opt[0], high[0]), (low[-1], opt[-1], high[-1]))

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shape = next(iter(feeds.values())).shape
        profile = select_profile(self.profiles, shape)
        with self._lock, torch.cuda.stream(self._stream):
            bindings = self._prepare(shape, profile)
            for name, array in feeds.items():
                bindings.inputs[name].copy_(torch.from_numpy(array))
            self._launch(bindings)
            return {name: bindings.outputs[name].cpu().numpy() for name in self.output_names}

    def _prepare(self, shape: tuple[int, ...], profile: int) -> _Bindings:
        """Select the profile, set input shapes and bind this shape's buffers (allocated on first use)."""
        if profile != self._active_profile:
            self._context.set_optimization_profile_async(profile, self._stream.cuda_stream)
            self._active_profile = profile
        for name in self._inputs:
            self._context.set_input_shape(name, shape)
        bindings = self._bindings.get(shape) or self._allocate(shape)
        self._bindings.move_to_end(shape)
        for name, tensor in {**bindings.inputs, **bindings.outputs}.items():
            self._context.set_tensor_address(name, tensor.data_ptr())
        return bindings

    def _allocate(self, shape: tuple[int, ...]) -> _Bindings:
        """Buffers for ``shape`` (outputs sized by the context); the least recently used shape is dropped."""
        device = torch.device("cuda", torch.cuda.current_device())

        def buffer(name: str, size: Sequence[int]) -> torch.Tensor:
            return torch.empty(tuple(size), dtype=self.dtypes[name], device=device)

        inputs = {name: buffer(name, shape) for name in self._inputs}
        outputs = {name: buffer(name, self._context.get_tensor_shape(name)) for name in self._outputs}
        self._bindings[shape] = _Bindings(inputs, outputs)
        while len(self._bindings) > CACHED_SHAPES:
            self._bindings.popitem(last=False)
        return self._bindings[shape]

    def _launch(self, bindings: _Bindings) -> None:
        """Replay the shape's CUDA graph, or execute it (then capture it, with ``cuda_graphs``)."""
        if bindings.graph is not None:
            bindings.graph.replay()
            return
        self._execute()
        if self.cuda_graphs:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self._stream):
                self._execute()
            bindings.graph = graph

    def _execute(self) -> None:
        if not self._context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise TrtQuantError("TensorRT failed to run the engine (its log says why): check the inputs.")


__all__ = ["TensorRTRuntime", "engine_mismatch", "select_profile", "tensorrt_usable"]
