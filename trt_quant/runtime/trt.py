"""TensorRT backend (NVIDIA GPU) behind the ``Runtime`` interface.

Device buffers are torch CUDA tensors, kept per input shape (a few shapes, least recently used dropped)
and bound with ``set_tensor_address``; inference runs with ``execute_async_v3`` on a torch stream. The
profile and any padding up to a profile's minimum length come from :mod:`.shapes`; input dtypes (INT64
or INT32) come from the engine. Every TensorRT call's return value is checked.

With ``cuda_graphs=True`` each (profile, shape) gets its own execution context, run once plainly (which
applies its profile and shapes, as ``NvInferRuntime.h`` requires before a capture) and then captured in
thread-local mode and replayed; a graph is never replayed on a context whose state changed since. These
contexts share one block of scratch memory (user-managed allocation), which is safe because executions
never overlap. When a capture fails the shape runs without a graph, as trtexec does. One lock
serializes execution, so one runtime is safe to share between threads.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trt_quant.artifacts import ENGINE, TOKENIZER_DIR, EngineRecord, Manifest, quantized_precision
from trt_quant.engine.build import Profile, check_fp8_capability, require_tensorrt
from trt_quant.errors import ArtifactError, EngineMismatchError, InputError, TrtQuantError
from trt_quant.runtime.base import Runtime
from trt_quant.runtime.shapes import run_fitted

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


def engine_mismatch(record: EngineRecord | None, tensorrt_version: str, capability: str) -> str | None:
    """Why the engine the manifest records cannot run here (other TensorRT or GPU), or None if it can."""
    if record is None:
        return "the manifest records no engine (the build did not finish)"
    if record.tensorrt != tensorrt_version:
        return f"it was built with TensorRT {record.tensorrt} and this machine has {tensorrt_version}"
    if record.compute_capability != capability:
        return (
            f"it was built for compute capability {record.compute_capability} ({record.gpu}) "
            f"and this GPU has {capability}"
        )
    return None


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a TensorRT ``DataType`` member name."""
    if name not in TORCH_DTYPES:
        raise ArtifactError(f"The engine has a {name} tensor, which trt-quant cannot bind: build it again.")
    return TORCH_DTYPES[name]


class CheckedContext:
    """A TensorRT execution context whose every call's return value is checked.

    Remembers its optimization profile (TensorRT starts a context on profile 0) so that a profile that
    is already selected is not selected again.
    """

    def __init__(self, context: Any) -> None:
        if context is None:
            raise TrtQuantError("TensorRT could not create an execution context: free GPU memory and retry.")
        self.context = context
        self.profile = 0

    def select_profile(self, profile: int, stream: int) -> None:
        """Switch to ``profile`` (asynchronously on ``stream``) unless it is the current one."""
        if profile == self.profile:
            return
        if not self.context.set_optimization_profile_async(profile, stream):
            raise TrtQuantError(
                f"TensorRT refused to switch to optimization profile {profile} (its log says why): rebuild "
                "the engine, or pass inputs within the profile in use."
            )
        self.profile = profile

    def set_input_shapes(self, names: Sequence[str], shape: Sequence[int]) -> None:
        """Set every input to ``shape``; InputError naming the input when TensorRT refuses it."""
        for name in names:
            if not self.context.set_input_shape(name, tuple(shape)):
                raise InputError(
                    f"TensorRT refused shape {tuple(shape)} for input '{name}' in optimization profile "
                    f"{self.profile}: pass a shape within that profile's ranges."
                )

    def set_addresses(self, addresses: Mapping[str, int]) -> None:
        """Bind each tensor name to its device address."""
        for name, address in addresses.items():
            if not self.context.set_tensor_address(name, address):
                raise TrtQuantError(
                    f"TensorRT refused the device buffer of tensor '{name}' (misaligned or not an engine "
                    "tensor): rebuild the engine with 'trt-quant build'."
                )

    def execute(self, stream: int) -> None:
        """Enqueue the engine on ``stream``."""
        if not self.context.execute_async_v3(stream):
            raise TrtQuantError(
                "TensorRT failed to run the engine (its log says why): check the inputs and GPU memory."
            )


@dataclass
class _Bindings:
    """Device buffers of one input shape, the context they are bound to and its CUDA graph once captured."""

    inputs: dict[str, torch.Tensor]
    outputs: dict[str, torch.Tensor]
    context: CheckedContext
    graph: Any = None  # torch.cuda.CUDAGraph once captured
    capture_failed: bool = False

    def addresses(self) -> dict[str, int]:
        return {name: tensor.data_ptr() for name, tensor in {**self.inputs, **self.outputs}.items()}


class TensorRTRuntime(Runtime):
    """Runs the artifact's TensorRT engine (``model.plan``) on the current CUDA device; thread-safe.

    ``engine_path`` runs another engine of the same model (the manifest's version record is then not
    checked); ``cuda_graphs`` captures each input shape's launch as a CUDA graph after its first run.
    Inputs shorter than every profile's minimum length are padded and per-token outputs cut back.
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
        self.cuda_graphs = cuda_graphs
        self._context = None if cuda_graphs else CheckedContext(self._engine.create_execution_context())
        self._scratch: torch.Tensor | None = None  # device memory of the per-shape graph contexts
        self._inputs, self._outputs = self._io_names()
        self.dtypes = {name: torch_dtype(self._engine.get_tensor_dtype(name).name) for name in self._inputs}
        self.dtypes |= {name: torch_dtype(self._engine.get_tensor_dtype(name).name) for name in self._outputs}
        self.profiles = [self._profile(index) for index in range(self._engine.num_optimization_profiles)]
        self._stream = torch.cuda.Stream()
        self._last_profile = 0
        self._pad_token_id: int | None = None
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
            raise EngineMismatchError(
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
            raise EngineMismatchError(
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
        with self._lock:
            current = self._context.profile if self._context is not None else self._last_profile
            outputs, plan = run_fitted(
                self._execute, feeds, self.profiles, self.manifest.per_token, self._pad_id, current
            )
            self._last_profile = plan.profile
        return outputs

    def _pad_id(self) -> int:
        """The tokenizer's padding id, used for padding up to a profile (0 without a saved tokenizer)."""
        if self._pad_token_id is None:
            has_tokenizer = (self.directory / TOKENIZER_DIR).is_dir()
            self._pad_token_id = int(self.tokenizer.pad_token_id or 0) if has_tokenizer else 0
        return self._pad_token_id

    def _execute(self, feeds: dict[str, np.ndarray], profile: int) -> dict[str, np.ndarray]:
        with torch.cuda.stream(self._stream):
            return self._execute_on_stream(feeds, profile)

    def _execute_on_stream(self, feeds: dict[str, np.ndarray], profile: int) -> dict[str, np.ndarray]:
        shape = next(iter(feeds.values())).shape
        key = (profile, *shape) if self.cuda_graphs else tuple(shape)
        bindings = self._bindings.get(key) or self._allocate(key, shape, profile)
        self._bindings.move_to_end(key)
        for name, array in feeds.items():
            bindings.inputs[name].copy_(torch.from_numpy(array))
        self._launch(bindings, shape, profile)
        return {name: bindings.outputs[name].cpu().numpy() for name in self.output_names}

    def _allocate(self, key: tuple[int, ...], shape: Sequence[int], profile: int) -> _Bindings:
        """Buffers for ``shape`` (outputs sized by the context) and, with CUDA graphs, a context of its
        own; the least recently used shape is dropped."""
        device = torch.device("cuda", torch.cuda.current_device())
        context = self._context or self._graph_context(device)
        context.select_profile(profile, self._stream.cuda_stream)
        context.set_input_shapes(self._inputs, shape)

        def buffer(name: str, size: Sequence[int]) -> torch.Tensor:
            return torch.empty(tuple(size), dtype=self.dtypes[name], device=device)

        inputs = {name: buffer(name, shape) for name in self._inputs}
        outputs = {name: buffer(name, context.context.get_tensor_shape(name)) for name in self._outputs}
        self._bindings[key] = _Bindings(inputs, outputs, context)
        while len(self._bindings) > CACHED_SHAPES:
            self._bindings.popitem(last=False)
        return self._bindings[key]

    def _graph_context(self, device: torch.device) -> CheckedContext:
        """A context of its own for one captured shape, on the scratch memory all such contexts share."""
        strategy = self._trt.ExecutionContextAllocationStrategy.USER_MANAGED
        context = CheckedContext(self._engine.create_execution_context(strategy))
        if self._scratch is None:
            size = max(int(self._engine.device_memory_size_v2), 1)
            self._scratch = torch.empty(size, dtype=torch.uint8, device=device)
        context.context.set_device_memory(self._scratch.data_ptr(), self._scratch.numel())
        return context

    def _launch(self, bindings: _Bindings, shape: Sequence[int], profile: int) -> None:
        """Replay the shape's CUDA graph, or set the context up and execute (then capture, with graphs)."""
        if bindings.graph is not None:
            bindings.graph.replay()
            return
        stream = self._stream.cuda_stream
        bindings.context.select_profile(profile, stream)
        bindings.context.set_input_shapes(self._inputs, shape)
        bindings.context.set_addresses(bindings.addresses())
        bindings.context.execute(stream)
        if self.cuda_graphs and not bindings.capture_failed:
            bindings.graph = self._capture(bindings.context)
            bindings.capture_failed = bindings.graph is None

    def _capture(self, context: CheckedContext) -> Any:
        """A CUDA graph of one launch of ``context`` (its state already applied by a plain run), or None
        with a warning when the capture fails (that shape then runs without a graph)."""
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=self._stream, capture_error_mode="thread_local"):
                context.execute(self._stream.cuda_stream)
        except (RuntimeError, TrtQuantError) as error:
            warnings.warn(
                f"CUDA graph capture failed ({error}); this shape runs without a CUDA graph.", stacklevel=2
            )
            return None
        return graph


__all__ = ["CheckedContext", "TensorRTRuntime", "engine_mismatch", "tensorrt_usable"]
