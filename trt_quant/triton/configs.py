"""Triton ``config.pbtxt`` text: numpy -> Triton dtypes, tensor dims and the three model configurations.

The text is written in protobuf text format by a small renderer, so writing a repository needs no protobuf
package; :mod:`trt_quant.triton.validate` parses it back with Triton's own ``ModelConfig`` message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trt_quant.artifacts import TensorSpec
from trt_quant.errors import ArtifactError, TrtQuantError

TEXT_INPUT = "TEXT"
PAIR_INPUT = "TEXT_PAIR"
TENSORRT_PLATFORM = "tensorrt_plan"
ONNX_PLATFORM = "onnxruntime_onnx"
ENSEMBLE_PLATFORM = "ensemble"
BATCH_AXIS = "batch"

TRITON_DTYPES: dict[str, str] = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "uint16": "TYPE_UINT16",
    "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "bfloat16": "TYPE_BF16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
    "object": "TYPE_STRING",
}


def triton_dtype(numpy_name: str) -> str:
    """The Triton ``TYPE_*`` name of a numpy dtype name such as ``"int64"``."""
    if numpy_name not in TRITON_DTYPES:
        raise TrtQuantError(
            f"Tensor dtype '{numpy_name}' has no Triton equivalent: export the model with one of "
            f"{', '.join(TRITON_DTYPES)}."
        )
    return TRITON_DTYPES[numpy_name]


@dataclass(frozen=True)
class Symbol:
    """A protobuf enum value, written without quotes."""

    name: str


@dataclass(frozen=True)
class TensorConfig:
    """One input or output of a Triton model: dims exclude the batch axis, -1 marks a variable axis."""

    name: str
    data_type: str
    dims: tuple[int, ...]
    optional: bool = False

    def message(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "name": self.name,
            "data_type": Symbol(self.data_type),
            "dims": list(self.dims),
        }
        if self.optional:
            fields["optional"] = True
        return fields


# TEXT is required by the tokenizer, which answers its absence with an error naming it; declared optional
# because Triton 2.51 only counts a request's inputs, so a request with TEXT_PAIR alone would otherwise pass
# its checks and stall the ensemble ("unexpected deadlock") instead of reaching the tokenizer.
TEXT_TENSORS = (
    TensorConfig(TEXT_INPUT, "TYPE_STRING", (1,), optional=True),
    TensorConfig(PAIR_INPUT, "TYPE_STRING", (1,), optional=True),
)


def tensor_config(spec: TensorSpec) -> TensorConfig:
    """The Triton tensor of a graph input or output whose leading axis is the batch axis."""
    if not spec.shape or spec.shape[0] != BATCH_AXIS:
        raise ArtifactError(
            f"Tensor '{spec.name}' has shape {spec.shape} without a leading batch axis, so Triton cannot "
            "batch it: "
            "convert the model again with this trt-quant."
        )
    dims = tuple(-1 if isinstance(dim, str) else int(dim) for dim in spec.shape[1:])
    return TensorConfig(spec.name, triton_dtype(spec.dtype), dims)


@dataclass(frozen=True)
class Scheduling:
    """Batching and placement of one model: max batch, dynamic batcher settings, instances and their kind."""

    max_batch: int
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int
    instances: int
    kind: str

    def fields(self, profiles: int = 1) -> dict[str, Any]:
        batcher: dict[str, Any] = {"max_queue_delay_microseconds": self.max_queue_delay_us}
        if self.preferred_batch_sizes:
            batcher["preferred_batch_size"] = list(self.preferred_batch_sizes)
        group: dict[str, Any] = {"count": self.instances, "kind": Symbol(f"KIND_{self.kind.upper()}")}
        if profiles > 1:
            group["profile"] = [str(index) for index in range(profiles)]
        return {"max_batch_size": self.max_batch, "dynamic_batching": batcher, "instance_group": [group]}


def _scalar(value: Any) -> str:
    if isinstance(value, Symbol):
        return value.name
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def render(message: Mapping[str, Any], indent: int = 0) -> str:
    """Protobuf text format of a message given as a dict (lists are repeated fields, dicts sub-messages)."""
    pad = "  " * indent
    lines = []
    for key, value in message.items():
        if isinstance(value, Mapping):
            lines.append(f"{pad}{key} {{\n{render(value, indent + 1)}{pad}}}")
        elif isinstance(value, list) and value and isinstance(value[0], Mapping):
            items = ",\n".join(f"{pad}  {{\n{render(item, indent + 2)}{pad}  }}" for item in value)
            lines.append(f"{pad}{key} [\n{items}\n{pad}]")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(item) for item in value)} ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "".join(line + "\n" for line in lines)


def _map(entries: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A protobuf map field as its repeated key/value entries."""
    return [{"key": key, "value": value} for key, value in entries.items()]


def model_config(
    name: str,
    platform: str,
    filename: str,
    inputs: Sequence[TensorConfig],
    outputs: Sequence[TensorConfig],
    scheduling: Scheduling,
    profiles: int = 1,
    cc_filenames: Mapping[str, str] | None = None,
) -> str:
    """``config.pbtxt`` of the encoder: a TensorRT plan or an ONNX Runtime graph."""
    message: dict[str, Any] = {
        "name": name,
        "platform": platform,
        "max_batch_size": scheduling.max_batch,
        "input": [tensor.message() for tensor in inputs],
        "output": [tensor.message() for tensor in outputs],
        "default_model_filename": filename,
    }
    if cc_filenames:
        message["cc_model_filenames"] = _map(cc_filenames)
    message.update(
        {key: value for key, value in scheduling.fields(profiles).items() if key != "max_batch_size"}
    )
    return render(message)


def python_model_config(
    name: str,
    inputs: Sequence[TensorConfig],
    outputs: Sequence[TensorConfig],
    scheduling: Scheduling,
    parameters: Mapping[str, str],
) -> str:
    """``config.pbtxt`` of the encoder in the Python backend (trt-quant's runtime inside Triton)."""
    message: dict[str, Any] = {
        "name": name,
        "backend": "python",
        "max_batch_size": scheduling.max_batch,
        "input": [tensor.message() for tensor in inputs],
        "output": [tensor.message() for tensor in outputs],
        "parameters": _map({key: {"string_value": value} for key, value in parameters.items()}),
    }
    message.update({key: value for key, value in scheduling.fields().items() if key != "max_batch_size"})
    return render(message)


def tokenizer_config(
    name: str, outputs: Sequence[TensorConfig], scheduling: Scheduling, parameters: Mapping[str, str]
) -> str:
    """``config.pbtxt`` of the Python-backend tokenizer: TEXT (+ TEXT_PAIR) in, encoder inputs out."""
    message: dict[str, Any] = {
        "name": name,
        "backend": "python",
        "max_batch_size": scheduling.max_batch,
        "input": [tensor.message() for tensor in TEXT_TENSORS],
        "output": [tensor.message() for tensor in outputs],
        "parameters": _map({key: {"string_value": value} for key, value in parameters.items()}),
    }
    message.update({key: value for key, value in scheduling.fields().items() if key != "max_batch_size"})
    return render(message)


def ensemble_config(
    name: str,
    max_batch: int,
    tokenizer: str,
    model: str,
    model_inputs: Sequence[TensorConfig],
    outputs: Sequence[TensorConfig],
) -> str:
    """``config.pbtxt`` of the ensemble: TEXT -> tokenizer -> encoder -> the encoder's outputs."""
    encoded = {tensor.name: tensor.name for tensor in model_inputs}
    produced = {tensor.name: tensor.name for tensor in outputs}
    steps = [
        {
            "model_name": tokenizer,
            "model_version": -1,
            "input_map": _map({TEXT_INPUT: TEXT_INPUT, PAIR_INPUT: PAIR_INPUT}),
            "output_map": _map(encoded),
        },
        {"model_name": model, "model_version": -1, "input_map": _map(encoded), "output_map": _map(produced)},
    ]
    message: dict[str, Any] = {
        "name": name,
        "platform": ENSEMBLE_PLATFORM,
        "max_batch_size": max_batch,
        "input": [tensor.message() for tensor in TEXT_TENSORS],
        "output": [tensor.message() for tensor in outputs],
        "ensemble_scheduling": {"step": steps},
    }
    return render(message)
