"""A test stand-in for Triton's ``triton_python_backend_utils`` (the Python backend's ``pb_utils``).

It mirrors the documented interface of triton-inference-server/python_backend: the pure-Python helpers of
``src/resources/triton_python_backend_utils.py`` and the classes the C++ stub binds into the same module
(``src/pb_stub.cc``: Tensor, InferenceRequest, InferenceResponse, TritonError, TritonModelException).
Behaviour that matters to a model is kept: string tensors travel as length-prefixed bytes, so a model sees
``bytes`` elements exactly as under Triton; ``np.str_`` arrays and empty names are refused; InferenceResponse
takes only Tensors; TritonError carries a code (INTERNAL by default).
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

TRITON_STRING_TO_NUMPY = {
    "TYPE_BOOL": bool,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}
_TRITON_TYPES = [
    np.bool_,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.float16,
    np.float32,
    np.float64,
    np.object_,
]


def triton_to_numpy_type(data_type: int) -> Any:
    """numpy type of a TRITONSERVER data type number (1 = BOOL ... 13 = BYTES)."""
    return _TRITON_TYPES[data_type - 1] if 1 <= data_type <= len(_TRITON_TYPES) else None


def numpy_to_triton_type(data_type: Any) -> int | None:
    """TRITONSERVER data type number of a numpy dtype or type; None when Triton has no equivalent."""
    if data_type == np.bytes_:
        return 13
    for number, candidate in enumerate(_TRITON_TYPES, start=1):
        if data_type == candidate:
            return number
    return None


def triton_string_to_numpy(triton_type_string: str) -> Any:
    return TRITON_STRING_TO_NUMPY[triton_type_string]


def serialize_byte_tensor(input_tensor: np.ndarray) -> bytes | None:
    """Flatten a bytes/object tensor into 4-byte little-endian lengths followed by the element bytes."""
    if input_tensor.size == 0:
        return b""
    if input_tensor.dtype != np.object_ and input_tensor.dtype.type != np.bytes_:
        return None
    chunks = []
    for element in input_tensor.reshape(-1):
        item = element if isinstance(element, bytes) else str(element).encode("utf-8")
        chunks += [struct.pack("<I", len(item)), item]
    return b"".join(chunks)


def deserialize_bytes_tensor(encoded_tensor: bytes) -> np.ndarray:
    """Inverse of :func:`serialize_byte_tensor`: a 1-D object array of bytes."""
    items, offset = [], 0
    while offset < len(encoded_tensor):
        (length,) = struct.unpack_from("<I", encoded_tensor, offset)
        offset += 4
        items.append(bytes(encoded_tensor[offset : offset + length]))
        offset += length
    array = np.empty(len(items), dtype=np.object_)
    array[:] = items
    return array


class TritonModelException(Exception):
    """Raised by the backend utilities (and by models) for a non-success status."""


class TritonError:
    """An error for one response: a message and a code (INTERNAL unless given)."""

    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS, CANCELLED = range(8)

    def __init__(self, message: str, code: int = INTERNAL) -> None:
        if message is None or code is None:
            raise TypeError("TritonError(): message and code must not be None")
        self._message = message
        self._code = code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code


class Tensor:
    """A named tensor on the CPU; string tensors are stored serialized, as in the backend's shared memory."""

    def __init__(self, name: str, numpy_array: np.ndarray) -> None:
        if name == "":
            raise TritonModelException("Tensor name cannot be an empty string.")
        if numpy_array.dtype.type == np.str_ or numpy_array.dtype == np.void:
            raise TritonModelException(
                "Tensor dtype used for numpy_array is not support by Python backend. "
                "Please use np.object_ instead."
            )
        dtype = numpy_to_triton_type(numpy_array.dtype)
        if dtype is None:
            dtype = numpy_to_triton_type(numpy_array.dtype.type)
        if dtype is None:
            raise TritonModelException(f"Tensor dtype {numpy_array.dtype} is not supported by Triton.")
        self._name = name
        self._dtype = dtype
        self._shape = tuple(numpy_array.shape)
        array = np.ascontiguousarray(numpy_array)
        self._data: Any = serialize_byte_tensor(array) if dtype == 13 else array.copy()

    def name(self) -> str:
        return self._name

    def triton_dtype(self) -> int:
        return self._dtype

    def shape(self) -> list[int]:
        return list(self._shape)

    def is_cpu(self) -> bool:
        return True

    def as_numpy(self) -> np.ndarray:
        if self._dtype == 13:
            return deserialize_bytes_tensor(self._data).reshape(self._shape)
        return self._data


class InferenceRequest:
    """A request as handed to ``execute``: input tensors plus ids, flags and JSON parameters (keywords only,
    as the pybind11 constructor is called in practice)."""

    def __init__(
        self,
        *,
        inputs: list[Tensor],
        requested_output_names: list[str],
        model_name: str,
        request_id: str = "",
        correlation_id: int | str = 0,
        model_version: int = -1,
        flags: int = 0,
        timeout: int = 0,
        parameters: dict[str, Any] | None = None,
    ) -> None:
        self._inputs = list(inputs)
        self._requested_output_names = list(requested_output_names)
        self._model_name = model_name
        self._request_id = request_id
        self._correlation_id = correlation_id
        self._model_version = model_version
        self._flags = flags
        self._timeout = timeout
        self._parameters = json.dumps(parameters or {})

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def requested_output_names(self) -> list[str]:
        return self._requested_output_names

    def request_id(self) -> str:
        return self._request_id

    def correlation_id(self) -> int | str:
        return self._correlation_id

    def flags(self) -> int:
        return self._flags

    def timeout(self) -> int:
        return self._timeout

    def parameters(self) -> str:
        return self._parameters

    def is_cancelled(self) -> bool:
        return False


class InferenceResponse:
    """The response to one request: output tensors, or an error."""

    def __init__(
        self,
        output_tensors: list[Tensor] | None = None,
        error: TritonError | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> None:
        tensors = list(output_tensors or [])
        if not all(isinstance(tensor, Tensor) for tensor in tensors):
            raise TypeError("InferenceResponse(): output_tensors must be a list of pb_utils.Tensor")
        if error is not None and not isinstance(error, TritonError):
            raise TypeError("InferenceResponse(): error must be a pb_utils.TritonError")
        self._output_tensors = tensors
        self._error = error
        self._parameters = json.dumps(parameters or {})

    def output_tensors(self) -> list[Tensor]:
        return self._output_tensors

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error

    def parameters(self) -> str:
        return self._parameters


def get_input_tensor_by_name(inference_request: InferenceRequest, name: str) -> Tensor | None:
    for tensor in inference_request.inputs():
        if tensor.name() == name:
            return tensor
    return None


def get_output_tensor_by_name(inference_response: InferenceResponse, name: str) -> Tensor | None:
    for tensor in inference_response.output_tensors():
        if tensor.name() == name:
            return tensor
    return None


def get_input_config_by_name(model_config: dict[str, Any], name: str) -> dict[str, Any] | None:
    for properties in model_config.get("input", []):
        if properties["name"] == name:
            return properties
    return None


def get_output_config_by_name(model_config: dict[str, Any], name: str) -> dict[str, Any] | None:
    for properties in model_config.get("output", []):
        if properties["name"] == name:
            return properties
    return None
