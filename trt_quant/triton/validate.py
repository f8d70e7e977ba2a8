"""Check a Triton model repository as Triton does when it loads it, without a server.

Every ``config.pbtxt`` is parsed into Triton's own ``ModelConfig`` protobuf (from ``tritonclient[grpc]``);
model files, tensor dims and dtypes, batching settings, ONNX graphs against their configs and ensemble
wiring (the rules of Triton's ``ensemble_utils.cc``) are checked. Findings are returned as sentences.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trt_quant.triton.configs import (
    ENSEMBLE_PLATFORM,
    ONNX_PLATFORM,
    TENSORRT_PLATFORM,
    model_config_pb2,
    triton_dtype,
)

VERSION = "1"
DEFAULT_FILES = {TENSORRT_PLATFORM: "model.plan", ONNX_PLATFORM: "model.onnx"}


def _pb2() -> Any:
    return model_config_pb2("Validating a Triton repository")


def _dtype_name(data_type: int) -> str:
    return _pb2().DataType.Name(data_type)


def _dims_match(left: list[int], right: list[int]) -> bool:
    """Triton's CompareDimsWithWildcard: same rank, each dim equal or one of them -1."""
    return len(left) == len(right) and all(a == b or -1 in (a, b) for a, b in zip(left, right, strict=True))


def check_tensors(name: str, config: Any) -> list[str]:
    """Names, dtypes and dims of a model's inputs and outputs."""
    errors = []
    seen: set[str] = set()
    for kind, tensors in (("input", config.input), ("output", config.output)):
        for tensor in tensors:
            if tensor.name in seen:
                errors.append(
                    f"{name}: tensor name '{tensor.name}' is used twice; give every tensor its own name."
                )
            seen.add(tensor.name)
            if _dtype_name(tensor.data_type) == "TYPE_INVALID":
                errors.append(f"{name}: {kind} '{tensor.name}' has no data_type; set one.")
            if not tensor.dims or any(dim < 1 and dim != -1 for dim in tensor.dims):
                errors.append(
                    f"{name}: {kind} '{tensor.name}' has dims {list(tensor.dims)}; dims must be >= 1 or -1."
                )
    return errors


def check_onnx(name: str, path: Path, config: Any) -> list[str]:
    """The config's inputs and outputs against the ONNX graph's names, dtypes and dims."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {tensor.name for tensor in graph.initializer}
    batching = config.max_batch_size > 0
    errors = []
    for kind, declared, values in (
        ("input", config.input, [value for value in graph.input if value.name not in initializers]),
        ("output", config.output, list(graph.output)),
    ):
        graph_tensors = {value.name: value.type.tensor_type for value in values}
        for missing in sorted(set(graph_tensors) - {tensor.name for tensor in declared}):
            errors.append(
                f"{name}: the ONNX graph has {kind} '{missing}' that config.pbtxt does not declare."
            )
        for tensor in declared:
            if tensor.name not in graph_tensors:
                errors.append(
                    f"{name}: {kind} '{tensor.name}' is not an {kind} of the ONNX graph {path.name}."
                )
                continue
            graph_type = graph_tensors[tensor.name]
            expected = triton_dtype(tensor_dtype_to_np_dtype(graph_type.elem_type).name)
            if _dtype_name(tensor.data_type) != expected:
                errors.append(
                    f"{name}: {kind} '{tensor.name}' is {_dtype_name(tensor.data_type)} in config.pbtxt but "
                    f"{expected} in the ONNX graph."
                )
            graph_dims = [dim.dim_value if dim.HasField("dim_value") else -1 for dim in graph_type.shape.dim]
            config_dims = ([-1] if batching else []) + list(tensor.dims)
            if len(graph_dims) != len(config_dims) or any(
                g != -1 and g != c for g, c in zip(graph_dims, config_dims, strict=True)
            ):
                errors.append(
                    f"{name}: {kind} '{tensor.name}' has dims {config_dims} (with batch) in config.pbtxt but "
                    f"{graph_dims} in the ONNX graph."
                )
    return errors


def check_model(directory: Path, config: Any) -> list[str]:
    """One model: name, version directory, model files, batching, instance groups and tensors."""
    name = directory.name
    errors = []
    if config.name and config.name != name:
        errors.append(
            f"{name}: config.pbtxt names the model '{config.name}'; it must equal its directory name."
        )
    version = directory / VERSION
    if not version.is_dir():
        errors.append(f"{name}: version directory {VERSION}/ is missing.")
    if config.max_batch_size < 1:
        errors.append(
            f"{name}: max_batch_size is {config.max_batch_size}; set it to 1 or more for batched inputs."
        )
    too_large = [
        size for size in config.dynamic_batching.preferred_batch_size if size > config.max_batch_size
    ]
    if too_large:
        errors.append(
            f"{name}: preferred batch size {too_large[0]} is above max_batch_size {config.max_batch_size}."
        )
    if config.platform == ENSEMBLE_PLATFORM:
        if config.instance_group:
            errors.append(f"{name}: an ensemble must not have an instance_group; remove it.")
    elif config.platform in DEFAULT_FILES:
        files = [
            config.default_model_filename or DEFAULT_FILES[config.platform],
            *config.cc_model_filenames.values(),
        ]
        errors += [
            f"{name}: model file {VERSION}/{file} is missing."
            for file in files
            if not (version / file).is_file()
        ]
        if config.platform == TENSORRT_PLATFORM and any(
            group.kind == group.KIND_CPU for group in config.instance_group
        ):
            errors.append(f"{name}: TensorRT plans run only on GPUs; use instance kind KIND_GPU.")
        onnx_file = version / files[0]
        if config.platform == ONNX_PLATFORM and onnx_file.is_file():
            errors += check_onnx(name, onnx_file, config)
    elif config.backend == "python":
        if not (version / "model.py").is_file():
            errors.append(f"{name}: Python model {VERSION}/model.py is missing.")
    else:
        errors.append(
            f"{name}: platform '{config.platform}' / backend '{config.backend}' is not one trt-quant writes."
        )
    return errors + check_tensors(name, config)


class _EnsembleTensors:
    """Dtype and dims of every ensemble tensor, checked for consistency at each use (Triton's TensorNode)."""

    def __init__(self, ensemble: str) -> None:
        self.ensemble = ensemble
        self.known: dict[str, tuple[str, list[int], list[int], str]] = {}
        self.errors: list[str] = []

    def use(self, tensor: str, data_type: int, dims: list[int], batching: bool, where: str) -> None:
        entry = (_dtype_name(data_type), dims, ([-1] if batching else []) + dims, where)
        if tensor not in self.known:
            self.known[tensor] = entry
            return
        dtype, first_dims, first_full, first_where = self.known[tensor]
        if dtype != entry[0]:
            self.errors.append(
                f"{self.ensemble}: tensor '{tensor}' is {dtype} at {first_where} but {entry[0]} at {where}."
            )
        elif not _dims_match(first_dims, dims) and not _dims_match(first_full, entry[2]):
            self.errors.append(
                f"{self.ensemble}: tensor '{tensor}' has dims {first_full} at {first_where} but {entry[2]} "
                f"at {where}."
            )


def check_ensemble(name: str, config: Any, configs: dict[str, Any]) -> list[str]:
    """Ensemble wiring: steps name existing models, maps name existing tensors, dtypes and dims agree
    at every use, and data flows from the ensemble inputs to its outputs."""
    steps = list(config.ensemble_scheduling.step)
    if not steps:
        return [f"{name}: the ensemble has no steps."]
    tensors = _EnsembleTensors(name)
    batching = config.max_batch_size > 0
    for tensor in config.input:
        tensors.use(tensor.name, tensor.data_type, list(tensor.dims), batching, "the ensemble input")
    for tensor in config.output:
        tensors.use(tensor.name, tensor.data_type, list(tensor.dims), batching, "the ensemble output")
    errors = []
    for step in steps:
        model = configs.get(step.model_name)
        if model is None:
            errors.append(f"{name}: step model '{step.model_name}' is not in the repository.")
        elif model.max_batch_size < config.max_batch_size:
            errors.append(
                f"{name}: max_batch_size {config.max_batch_size} is above the {model.max_batch_size} of step "
                f"model '{step.model_name}'."
            )
        if model is not None:
            errors += _check_step(name, step, model, config, tensors)
    return errors + tensors.errors + _check_data_flow(name, config, steps)


def _check_step(name: str, step: Any, model: Any, config: Any, tensors: _EnsembleTensors) -> list[str]:
    """One step's input and output maps against its model's inputs and outputs (Triton's
    ValidateTensorMapping); records every mapped tensor's dtype and dims in ``tensors``."""
    batching = model.max_batch_size > 0
    inputs = {tensor.name: tensor for tensor in model.input}
    outputs = {tensor.name: tensor for tensor in model.output}
    optional = {tensor.name for tensor in config.input if tensor.optional}
    where = f"'{step.model_name}'"
    errors = []
    for key, tensor_name in step.input_map.items():
        if key not in inputs:
            errors.append(f"{name}: tensor '{tensor_name}' is mapped to '{key}', not an input of {where}.")
            continue
        target = inputs[key]
        tensors.use(tensor_name, target.data_type, list(target.dims), batching, f"input '{key}' of {where}")
        if tensor_name in optional and not target.optional:
            errors.append(f"{name}: optional input '{tensor_name}' feeds required input '{key}' of {where}.")
    errors += [
        f"{name}: input '{tensor.name}' of {where} is not mapped to any ensemble tensor."
        for tensor in model.input
        if not tensor.optional and tensor.name not in step.input_map
    ]
    for key, tensor_name in step.output_map.items():
        if key not in outputs:
            errors.append(f"{name}: tensor '{tensor_name}' is mapped from '{key}', not an output of {where}.")
            continue
        source = outputs[key]
        tensors.use(tensor_name, source.data_type, list(source.dims), batching, f"output '{key}' of {where}")
    return errors


def _check_data_flow(name: str, config: Any, steps: list[Any]) -> list[str]:
    """Every step's inputs are produced, every ensemble output is written, every ensemble input is used."""
    ready = {tensor.name for tensor in config.input}
    waiting = list(steps)
    progressed = True
    while progressed:
        runnable = [step for step in waiting if set(step.input_map.values()) <= ready]
        for step in runnable:
            ready |= set(step.output_map.values())
            waiting.remove(step)
        progressed = bool(runnable)
    errors = [
        f"{name}: step '{step.model_name}' waits for {sorted(set(step.input_map.values()) - ready)}, "
        "which no ensemble input or step produces."
        for step in waiting
    ]
    errors += [
        f"{name}: ensemble output '{tensor.name}' is not written by any step."
        for tensor in config.output
        if tensor.name not in ready
    ]
    used = {tensor for step in steps for tensor in step.input_map.values()}
    errors += [
        f"{name}: ensemble input '{tensor.name}' is not used by any step."
        for tensor in config.input
        if tensor.name not in used
    ]
    return errors


def validate_repository(repo: str | Path) -> list[str]:
    """Check every model of a Triton repository; return the errors found (an empty list when it is fine)."""
    pb2 = _pb2()
    from google.protobuf import text_format

    repo = Path(repo)
    if not repo.is_dir():
        return [f"{repo} is not a directory: pass the repository written by 'trt-quant triton'."]
    configs: dict[str, Any] = {}
    errors = []
    for directory in sorted(
        path for path in repo.iterdir() if path.is_dir() and not path.name.startswith(".")
    ):
        path = directory / "config.pbtxt"
        if not path.is_file():
            errors.append(f"{directory.name}: config.pbtxt is missing.")
            continue
        try:
            config = text_format.Parse(path.read_text(encoding="utf-8"), pb2.ModelConfig())
        except text_format.ParseError as exc:
            errors.append(f"{directory.name}: config.pbtxt is not a valid Triton ModelConfig ({exc}).")
            continue
        configs[directory.name] = config
        errors += check_model(directory, config)
    if not configs:
        errors.append(f"{repo} holds no model directories with a config.pbtxt.")
    for name, config in configs.items():
        if config.platform == ENSEMBLE_PLATFORM:
            errors += check_ensemble(name, config, configs)
    return errors
