"""Triton Python-backend model that turns text into the encoder's inputs (copied as ``1/model.py``).

Inputs: ``TEXT`` (TYPE_STRING, one text per batch row) and the optional ``TEXT_PAIR`` (second texts, e.g.
question + context). Outputs: one tensor per output of ``config.pbtxt`` (the encoder's inputs), cast to
the dtype declared there. Settings come from the ``parameters`` of ``config.pbtxt``: ``max_length``
(truncation limit), ``buckets`` (the padded lengths, comma-separated, the last one ``max_length``),
``text_input`` and ``pair_input`` (input names) and, for a TensorRT engine, ``sequence_ranges`` (JSON
[[min, max], ...] sequence lengths of its optimization profiles). The tokenizer files live in
``1/tokenizer`` next to this file.

The requests of one ``execute`` call are tokenized together (those with second texts apart from those
without) and padded to the shortest bucket that holds their longest text. Triton's dynamic batcher
merges only requests of equal shapes: the requests of one call reach the encoder with one shape, and
requests of different calls meet in a few shapes. When no engine profile holds the bucket's length, the
batch is padded further up to the shortest profile minimum above it (attention mask 0), so short texts
fit an engine whose profiles start above 1 token. A request with empty or non-UTF-8 text gets an error
response; the others are still answered.
"""

import json

import numpy as np
import transformers
import triton_python_backend_utils as pb_utils

OPTIONAL_OUTPUTS = ("token_type_ids",)


class TritonPythonModel:
    """Tokenizes ``TEXT`` (+ ``TEXT_PAIR``) with the artifact's tokenizer."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.max_length = int(parameters["max_length"])
        self.buckets = sorted(int(length) for length in parameters["buckets"].split(","))
        self.text_input = parameters["text_input"]
        self.pair_input = parameters["pair_input"]
        self.sequence_ranges = [tuple(pair) for pair in json.loads(parameters.get("sequence_ranges", "[]"))]
        self.outputs = [
            (output["name"], pb_utils.triton_string_to_numpy(output["data_type"]))
            for output in config["output"]
        ]
        path = f"{args['model_repository']}/{args['model_version']}/tokenizer"
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        produced = self.tokenizer(["probe"], return_tensors="np")
        missing = [name for name, _ in self.outputs if name not in produced and name not in OPTIONAL_OUTPUTS]
        if missing:
            raise pb_utils.TritonModelException(
                f"The tokenizer in {path} does not produce {', '.join(missing)}: regenerate the repository "
                "from the artifact with 'trt-quant triton'."
            )

    def execute(self, requests: "list[pb_utils.InferenceRequest]") -> "list[pb_utils.InferenceResponse]":
        responses = [None] * len(requests)
        groups: dict[bool, list[tuple]] = {False: [], True: []}
        for index, request in enumerate(requests):
            try:
                texts, pairs = self._read(request)
            except ValueError as error:
                responses[index] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(str(error), pb_utils.TritonError.INVALID_ARG)
                )
                continue
            groups[pairs is not None].append((index, texts, pairs))
        for members in groups.values():
            if members:
                self._encode(members, responses)
        return responses

    def _read(self, request: "pb_utils.InferenceRequest") -> tuple[list[str], list[str] | None]:
        """The texts (and second texts, or None) of one request; ValueError names what is wrong."""
        text_tensor = pb_utils.get_input_tensor_by_name(request, self.text_input)
        if text_tensor is None:
            raise ValueError(f"Input {self.text_input} is missing: send the texts as {self.text_input}.")
        texts = _decode(text_tensor, self.text_input)
        if not texts:
            raise ValueError(f"{self.text_input} holds no texts: send at least one.")
        pair_tensor = pb_utils.get_input_tensor_by_name(request, self.pair_input)
        if pair_tensor is None:
            return texts, None
        pairs = _decode(pair_tensor, self.pair_input)
        if len(pairs) != len(texts):
            raise ValueError(
                f"{self.pair_input} has {len(pairs)} texts and {self.text_input} has {len(texts)}: "
                f"send one {self.pair_input} per {self.text_input}."
            )
        return texts, pairs

    def _encode(self, members: list[tuple], responses: list) -> None:
        """Tokenize the texts of ``members`` in one call, pad them to the shortest bucket that holds the
        longest, and answer each request with its rows."""
        texts = [text for _, request_texts, _ in members for text in request_texts]
        pairs = (
            None
            if members[0][2] is None
            else [pair for _, _, request_pairs in members for pair in request_pairs]
        )
        encoded = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length)
        longest = max(len(ids) for ids in encoded["input_ids"])
        bucket = next(bucket for bucket in self.buckets if bucket >= longest)
        length = padded_length(bucket, self.sequence_ranges)
        padded = self.tokenizer.pad(encoded, padding="max_length", max_length=length, return_tensors="np")
        arrays = [(name, _column(padded, name).astype(dtype)) for name, dtype in self.outputs]
        start = 0
        for index, request_texts, _ in members:
            stop = start + len(request_texts)
            tensors = [pb_utils.Tensor(name, array[start:stop]) for name, array in arrays]
            responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
            start = stop


def _decode(tensor: "pb_utils.Tensor", name: str) -> list[str]:
    """UTF-8 strings of a TYPE_STRING tensor; ValueError for empty or undecodable elements."""
    texts = []
    for position, value in enumerate(tensor.as_numpy().reshape(-1)):
        try:
            text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        except UnicodeDecodeError as error:
            raise ValueError(
                f"{name}[{position}] is not valid UTF-8 ({error.reason}): send UTF-8 encoded text."
            ) from None
        if not text.strip():
            raise ValueError(f"{name}[{position}] is empty: send at least one non-space character.")
        texts.append(text)
    return texts


def _column(encoded: "transformers.BatchEncoding", name: str) -> np.ndarray:
    """One tokenizer output; token type ids default to zeros, as the encoder was exported with."""
    if name in encoded:
        return encoded[name]
    return np.zeros_like(encoded["input_ids"])


def padded_length(length: int, ranges: list[tuple[int, int]]) -> int:
    """``length``, or the smallest profile minimum above it when no (min, max) range holds it."""
    if not ranges or any(low <= length <= high for low, high in ranges):
        return length
    return min((low for low, _ in ranges if low > length), default=length)
