"""The ``Runtime`` interface shared by the ONNX Runtime, OpenVINO and TensorRT backends."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trt_quant.artifacts import TOKENIZER_DIR, Manifest
from trt_quant.data import select_inputs
from trt_quant.errors import InputError, TrtQuantError
from trt_quant.runtime.batching import batch_indices, check_strategy

INTEGER_KINDS = ("i", "u")


def to_numpy(value: Any) -> np.ndarray:
    """Turn a numpy array, torch tensor or nested list into a numpy array (CPU)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


class Runtime(ABC):
    """Runs one converted model: feeds are token-id style integer arrays of shape (batch, sequence).

    ``run`` takes a dict of numpy arrays or torch tensors; ``run_text`` tokenizes raw text with the
    artifact's saved tokenizer first. Both return a dict of named numpy outputs. Implementations are
    safe to call from several threads at once.
    """

    backend: str = ""

    def __init__(self, directory: Path, manifest: Manifest) -> None:
        self.directory = Path(directory)
        self.manifest = manifest
        self._tokenizer: Any = None
        self._tokenizer_lock = threading.Lock()

    @property
    def input_names(self) -> list[str]:
        return self.manifest.input_names

    @property
    def output_names(self) -> list[str]:
        return self.manifest.output_names

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Validate ``inputs`` against the model's declared inputs and run the model."""
        return self._run(self.validate(inputs))

    def validate(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Check names, dtypes, ranks and lengths of ``inputs``; return them cast to the declared dtypes."""
        if not isinstance(inputs, Mapping):
            raise InputError(
                "Runtime inputs must be a dict of arrays keyed by input name: pass {name: array}."
            )
        expected = self.input_names
        missing = [name for name in expected if name not in inputs]
        if missing:
            raise InputError(f"Input '{missing[0]}' is missing: pass all of {', '.join(expected)}.")
        unknown = [name for name in inputs if name not in expected]
        if unknown:
            raise InputError(
                f"Input '{unknown[0]}' is not an input of this model: pass only {', '.join(expected)}."
            )
        feeds: dict[str, np.ndarray] = {}
        shape: tuple[int, ...] | None = None
        for spec in self.manifest.inputs:
            array = to_numpy(inputs[spec.name])
            if array.dtype.kind not in INTEGER_KINDS:
                raise InputError(
                    f"Input '{spec.name}' has dtype {array.dtype}, the model takes integer token arrays: "
                    f"pass {spec.dtype} ids."
                )
            if array.ndim != len(spec.shape):
                raise InputError(
                    f"Input '{spec.name}' has rank {array.ndim}, the model takes rank {len(spec.shape)} "
                    "(batch, sequence): add or remove the batch dimension."
                )
            if shape is not None and array.shape != shape:
                raise InputError(
                    f"Input '{spec.name}' has shape {array.shape}, other inputs have {shape}: give all inputs one shape."
                )
            shape = array.shape
            if array.size == 0:
                raise InputError(
                    f"Input '{spec.name}' is empty (shape {array.shape}): pass at least one token."
                )
            if array.shape[-1] > self.manifest.max_length:
                raise InputError(
                    f"Sequence length {array.shape[-1]} exceeds the model's maximum of {self.manifest.max_length}: "
                    "truncate the inputs."
                )
            feeds[spec.name] = np.ascontiguousarray(array.astype(spec.dtype, copy=False))
        return feeds

    def tokenize(
        self,
        texts: Sequence[str],
        text_pairs: Sequence[str] | None = None,
        max_length: int | None = None,
        pad_to_max_length: bool = False,
    ) -> dict[str, np.ndarray]:
        """Tokenize texts (and optional second texts) as the model's tokenizer does, padded to the longest
        (or, with ``pad_to_max_length``, to ``max_length``)."""
        padding = "max_length" if pad_to_max_length else True
        encoded = self._encode(texts, text_pairs, self._limit(max_length), padding, "np")
        return select_inputs(encoded, self.input_names)

    def encode_unpadded(
        self, texts: Sequence[str], text_pairs: Sequence[str] | None = None, max_length: int | None = None
    ) -> dict[str, list[list[int]]]:
        """The tokenizer's fields (token ids, mask, ...) of each text, truncated at ``max_length``, not
        padded: pick rows of them and ``pad`` those into a batch."""
        return dict(self._encode(texts, text_pairs, self._limit(max_length), False, None))

    def token_counts(
        self, texts: Sequence[str], text_pairs: Sequence[str] | None = None, max_length: int | None = None
    ) -> list[int]:
        """Number of tokens of each text (with its second text), after truncation at ``max_length``."""
        return [len(ids) for ids in self.encode_unpadded(texts, text_pairs, max_length)["input_ids"]]

    def pad(
        self,
        encoded: dict[str, list[list[int]]],
        max_length: int | None = None,
        pad_to_max_length: bool = False,
    ) -> dict[str, np.ndarray]:
        """Model feeds from rows of ``encode_unpadded``: padded to the longest row, or to ``max_length``."""
        padding, limit = ("max_length", self._limit(max_length)) if pad_to_max_length else (True, None)
        with self._tokenizer_lock:
            padded = self.tokenizer.pad(encoded, padding=padding, max_length=limit, return_tensors="np")
        return select_inputs(padded, self.input_names)

    def _limit(self, max_length: int | None) -> int:
        return min(max_length or self.manifest.max_length, self.manifest.max_length)

    def _encode(
        self,
        texts: Sequence[str],
        text_pairs: Sequence[str] | None,
        limit: int,
        padding: bool | str,
        tensors: str | None,
    ) -> Any:
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            raise InputError("No texts were given: pass at least one text.")
        if text_pairs is not None and len(text_pairs) != len(texts):
            raise InputError(
                f"Got {len(texts)} texts and {len(text_pairs)} second texts: pass one second text per text."
            )
        with self._tokenizer_lock:
            return self.tokenizer(
                list(texts),
                list(text_pairs) if text_pairs is not None else None,
                padding=padding,
                truncation=True,
                max_length=limit,
                return_tensors=tensors,
            )

    def run_text(
        self, texts: Sequence[str], text_pairs: Sequence[str] | None = None, max_length: int | None = None
    ) -> dict[str, np.ndarray]:
        """Tokenize ``texts`` with the saved tokenizer and run the model on them."""
        return self.run(self.tokenize(texts, text_pairs, max_length))

    def run_texts(
        self,
        texts: Sequence[str],
        text_pairs: Sequence[str] | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
        padding: str = "bucketed",
    ) -> list[dict[str, np.ndarray]]:
        """Run any number of texts in batches; return one output dict per text, in the given order, with
        padding removed from per-token outputs. ``padding``: "bucketed" (batches of similar length,
        padded to their longest; the fastest), "longest" (batches in the given order) or "max-length"."""
        check_strategy(padding, batch_size)
        encoded = self.encode_unpadded(texts, text_pairs, max_length)
        counts = [len(ids) for ids in encoded["input_ids"]]
        per_token = self.manifest.per_token
        results: list[dict[str, np.ndarray]] = [{} for _ in counts]
        for indices in batch_indices(counts, batch_size, sort_by_length=padding == "bucketed"):
            rows = {field: [values[i] for i in indices] for field, values in encoded.items()}
            feeds = self.pad(rows, max_length, pad_to_max_length=padding == "max-length")
            mask = feeds["attention_mask"].astype(bool) if "attention_mask" in feeds else None
            for name, output in self.run(feeds).items():
                for row, index in enumerate(indices):
                    value = output[row]
                    if per_token[name] and mask is not None:
                        value = value[mask[row]]
                    results[index][name] = value
        return results

    @property
    def tokenizer(self) -> Any:
        """The tokenizer saved in the artifact, loaded on first use."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            path = self.directory / TOKENIZER_DIR
            if not path.is_dir():
                raise TrtQuantError(
                    f"{path} is missing, so raw text cannot be tokenized: convert the model again."
                )
            self._tokenizer = AutoTokenizer.from_pretrained(str(path))
        return self._tokenizer

    @abstractmethod
    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run validated feeds through the backend and return the named outputs."""
