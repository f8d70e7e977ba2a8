"""Send texts to a Triton server that serves a trt-quant repository; print the outputs and the latency.

    python scripts/triton_client.py --model NAME --text "first text" --text "second text"
    python scripts/triton_client.py --model NAME --protocol grpc --text "a question" --pair "its context"

Needs ``tritonclient[grpc,http]`` (``pip install 'trt-quant[triton]'``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import ModuleType
from typing import Any

import numpy as np

DEFAULT_URLS = {"http": "localhost:8000", "grpc": "localhost:8001"}
TEXT_INPUT = "TEXT"
PAIR_INPUT = "TEXT_PAIR"


def client_module(protocol: str) -> ModuleType:
    """``tritonclient.http`` or ``tritonclient.grpc``."""
    if protocol == "http":
        import tritonclient.http as module
    else:
        import tritonclient.grpc as module
    return module


def text_tensor(module: ModuleType, name: str, texts: list[str]) -> Any:
    """A BYTES input of shape (len(texts), 1): one UTF-8 text per batch row."""
    tensor = module.InferInput(name, [len(texts), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[text.encode("utf-8")] for text in texts], dtype=np.object_))
    return tensor


def build_inputs(module: ModuleType, texts: list[str], pairs: list[str] | None = None) -> list[Any]:
    """The ensemble's inputs: TEXT, and TEXT_PAIR when second texts are given."""
    inputs = [text_tensor(module, TEXT_INPUT, texts)]
    if pairs:
        inputs.append(text_tensor(module, PAIR_INPUT, pairs))
    return inputs


def output_names(client: Any, protocol: str, model: str) -> list[str]:
    """Output names from the model's metadata."""
    metadata = (
        client.get_model_metadata(model)
        if protocol == "http"
        else client.get_model_metadata(model, as_json=True)
    )
    return [output["name"] for output in metadata["outputs"]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", required=True, help="ensemble name (the NAME of 'trt-quant triton --name')"
    )
    parser.add_argument("--text", action="append", required=True, help="a text; repeat for a batch")
    parser.add_argument("--pair", action="append", help="second text of a pair; one per --text")
    parser.add_argument("--protocol", choices=sorted(DEFAULT_URLS), default="http")
    parser.add_argument(
        "--url", help="server address (default localhost:8000 for http, localhost:8001 for grpc)"
    )
    parser.add_argument("--repeat", type=int, default=20, help="timed requests")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests first")
    args = parser.parse_args(argv)
    if args.pair and len(args.pair) != len(args.text):
        parser.error(f"got {len(args.text)} --text and {len(args.pair)} --pair: give one --pair per --text")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the client; a server that cannot be reached or refuses the request ends it with one line."""
    from tritonclient.utils import InferenceServerException

    args = parse_args(argv)
    try:
        run(args)
    except (OSError, InferenceServerException) as exc:
        url = args.url or DEFAULT_URLS[args.protocol]
        raise SystemExit(
            f"error: {exc} ({args.protocol} {url}): start the server or pass --url/--model."
        ) from None


def run(args: argparse.Namespace) -> None:
    """Send the texts ``warmup + repeat`` times; print the outputs of the last request and the latency."""
    module = client_module(args.protocol)
    client = module.InferenceServerClient(url=args.url or DEFAULT_URLS[args.protocol])
    names = output_names(client, args.protocol, args.model)
    inputs = build_inputs(module, args.text, args.pair)
    outputs = [module.InferRequestedOutput(name) for name in names]
    for _ in range(args.warmup):
        client.infer(args.model, inputs, outputs=outputs)
    latencies = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        result = client.infer(args.model, inputs, outputs=outputs)
        latencies.append((time.perf_counter() - start) * 1e3)
    for name in names:
        array = result.as_numpy(name)
        print(f"{name} {array.dtype} {list(array.shape)}:\n{array}")
    quantiles = statistics.quantiles(latencies, n=10) if len(latencies) > 1 else latencies * 9
    print(
        f"latency over {args.repeat} requests of {len(args.text)} texts ({args.protocol}): "
        f"p50 {statistics.median(latencies):.2f} ms, p90 {quantiles[8]:.2f} ms, "
        f"mean {statistics.fmean(latencies):.2f} ms"
    )


if __name__ == "__main__":
    main()
