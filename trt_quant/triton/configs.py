"""Triton model configurations: numpy -> Triton dtypes, tensor dims and the encoder, tokenizer and ensemble
configs as Triton's own ``ModelConfig`` messages (``tritonclient[grpc]``), printed in protobuf text format.
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
class TensorConfig:
    """One input or output of a Triton model: dims exclude the batch axis, -1 marks a variable axis."""

    name: str
    data_type: str
    dims: tuple[int, ...]
    optional: bool = False


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


def model_config_pb2(purpose: str = "Writing a Triton repository") -> Any:
    """Triton's ``model_config_pb2`` module (from ``tritonclient[grpc]``), or an error naming the extra."""
    try:
        from tritonclient.grpc import model_config_pb2 as module
    except ImportError as exc:
        raise TrtQuantError(f"{purpose} needs tritonclient: pip install 'trt-quant[triton]'.") from exc
    return module


def config_text(config: Any) -> str:
    """``config.pbtxt``: a ``ModelConfig`` in protobuf text format, as Triton reads it."""
    from google.protobuf import text_format

    return str(text_format.MessageToString(config, use_short_repeated_primitives=True))


def _inputs(pb2: Any, tensors: Sequence[TensorConfig]) -> list[Any]:
    return [
        pb2.ModelInput(
            name=tensor.name, data_type=tensor.data_type, dims=tensor.dims, optional=tensor.optional
        )
        for tensor in tensors
    ]


def _outputs(pb2: Any, tensors: Sequence[TensorConfig]) -> list[Any]:
    """Outputs (Triton has no optional outputs)."""
    return [
        pb2.ModelOutput(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims) for tensor in tensors
    ]


def _config(
    name: str,
    scheduling: Scheduling,
    inputs: Sequence[TensorConfig],
    outputs: Sequence[TensorConfig],
    profiles: int = 1,
    **fields: Any,
) -> Any:
    """A ``ModelConfig`` with its tensors, its dynamic batcher and one instance group."""
    pb2 = model_config_pb2()
    config = pb2.ModelConfig(
        name=name,
        max_batch_size=scheduling.max_batch,
        input=_inputs(pb2, inputs),
        output=_outputs(pb2, outputs),
        dynamic_batching=pb2.ModelDynamicBatching(
            max_queue_delay_microseconds=scheduling.max_queue_delay_us,
            preferred_batch_size=scheduling.preferred_batch_sizes,
        ),
        instance_group=[
            pb2.ModelInstanceGroup(
                count=scheduling.instances,
                kind=f"KIND_{scheduling.kind.upper()}",
                profile=[str(index) for index in range(profiles)] if profiles > 1 else [],
            )
        ],
        **fields,
    )
    config.dynamic_batching.SetInParent()  # an empty batcher message still turns the dynamic batcher on
    return config


def model_config(
    name: str,
    platform: str,
    filename: str,
    inputs: Sequence[TensorConfig],
    outputs: Sequence[TensorConfig],
    scheduling: Scheduling,
    profiles: int = 1,
    cc_filenames: Mapping[str, str] | None = None,
) -> Any:
    """``ModelConfig`` of the encoder: a TensorRT plan or an ONNX Runtime graph."""
    return _config(
        name,
        scheduling,
        inputs,
        outputs,
        profiles,
        platform=platform,
        default_model_filename=filename,
        cc_model_filenames=dict(cc_filenames or {}),
    )


def python_model_config(
    name: str,
    inputs: Sequence[TensorConfig],
    outputs: Sequence[TensorConfig],
    scheduling: Scheduling,
    parameters: Mapping[str, str],
) -> Any:
    """``ModelConfig`` of a Python-backend model with string ``parameters`` for its ``model.py``."""
    pb2 = model_config_pb2()
    return _config(
        name,
        scheduling,
        inputs,
        outputs,
        backend="python",
        parameters={key: pb2.ModelParameter(string_value=value) for key, value in parameters.items()},
    )


def tokenizer_config(
    name: str, outputs: Sequence[TensorConfig], scheduling: Scheduling, parameters: Mapping[str, str]
) -> Any:
    """``ModelConfig`` of the Python-backend tokenizer: TEXT (+ TEXT_PAIR) in, encoder inputs out."""
    return python_model_config(name, TEXT_TENSORS, outputs, scheduling, parameters)


def ensemble_config(
    name: str,
    max_batch: int,
    tokenizer: str,
    model: str,
    model_inputs: Sequence[TensorConfig],
    outputs: Sequence[TensorConfig],
) -> Any:
    """``ModelConfig`` of the ensemble: TEXT -> tokenizer -> encoder -> the encoder's outputs."""
    pb2 = model_config_pb2()
    encoded = {tensor.name: tensor.name for tensor in model_inputs}
    step = pb2.ModelEnsembling.Step
    return pb2.ModelConfig(
        name=name,
        platform=ENSEMBLE_PLATFORM,
        max_batch_size=max_batch,
        input=_inputs(pb2, TEXT_TENSORS),
        output=_outputs(pb2, outputs),
        ensemble_scheduling=pb2.ModelEnsembling(
            step=[
                step(
                    model_name=tokenizer,
                    model_version=-1,
                    input_map={TEXT_INPUT: TEXT_INPUT, PAIR_INPUT: PAIR_INPUT},
                    output_map=encoded,
                ),
                step(
                    model_name=model,
                    model_version=-1,
                    input_map=encoded,
                    output_map={tensor.name: tensor.name for tensor in outputs},
                ),
            ]
        ),
    )
