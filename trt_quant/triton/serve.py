"""``trt-quant serve``: write the repository, run a local Triton server on loopback until Ctrl-C or SIGTERM."""

from __future__ import annotations

import contextlib
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from trt_quant.errors import TrtQuantError
from trt_quant.triton.configs import TEXT_INPUT
from trt_quant.triton.environment import server_environment
from trt_quant.triton.repository import write_triton_repository
from trt_quant.triton.server import TritonServer

BUILT_IN_BACKENDS = ("python",)  # the nvidia-pytriton server has only the Python backend


class Stop(Exception):
    """SIGTERM arrived: stop serving."""


def _raise_stop(signum: int, frame: Any) -> None:
    raise Stop


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into ``Stop`` inside the block (Ctrl-C already raises KeyboardInterrupt)."""
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM inside the block."""
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def describe(server: TritonServer, name: str) -> str:
    """Endpoints and the ensemble's inputs and outputs, as the server reports them."""
    metadata = server.get(f"models/{name}")
    config = server.get(f"models/{name}/config")
    # TEXT is declared optional only so that its absence reaches the tokenizer's error (configs.TEXT_TENSORS)
    optional = {t["name"] for t in config.get("input", []) if t.get("optional") and t["name"] != TEXT_INPUT}

    def tensors(entries: list[dict[str, Any]]) -> str:
        return ", ".join(
            f"{t['name']} ({t['datatype']} {t['shape']}{', optional' if t['name'] in optional else ''})"
            for t in entries
        )

    return (
        f"HTTP     http://{server.http_url}  (POST /v2/models/{name}/infer)\n"
        f"gRPC     {server.grpc_url}\n"
        f"metrics  http://{server.host}:{server.metrics_port}/metrics\n"
        f"model    {name}: inputs {tensors(metadata['inputs'])}; outputs {tensors(metadata['outputs'])}"
    )


def serve(
    artifact: str | Path,
    repo: str | Path | None = None,
    name: str | None = None,
    backend: str | None = None,
    tritonserver: str | Path | None = None,
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
    server_env: str | Path | None = None,
    ready_timeout_s: float = 300.0,
    echo: Callable[[str], None] = print,
    **repository_options: Any,
) -> None:
    """Serve ``artifact`` with Triton on loopback until Ctrl-C or SIGTERM, then stop the server cleanly.

    The repository is written to ``repo`` (default: a temporary folder, removed afterwards) with the
    options of ``write_triton_repository``. Without ``tritonserver`` the server of the nvidia-pytriton
    wheel runs from its own environment (``server_env``; built with pip on first use), which has only the
    python backend; ``backend`` defaults to it."""
    if tritonserver is None:
        backend = backend or "python"
        if backend not in BUILT_IN_BACKENDS:
            raise TrtQuantError(
                f"The built-in Triton server has only the python backend, not {backend}: pass --backend python or "
                "--tritonserver with a server that has it."
            )
    with tempfile.TemporaryDirectory(prefix="trt-quant-serve-") as temp:
        written = write_triton_repository(
            artifact,
            Path(repo) if repo is not None else Path(temp) / "repo",
            name=name,
            backend=backend,
            **repository_options,
        )
        model = name or ensemble_name(written)
        environment = None
        if tritonserver is None:
            echo("Preparing the Triton server environment (built with pip on first use, then cached)...")
            environment = server_environment(server_env)
        server = TritonServer([written], environment, tritonserver, http_port, grpc_port, metrics_port)
        with stop_on_sigterm():
            try:
                server.start(ready_timeout_s)
                echo(f"Serving {written}\n{describe(server, model)}\nPress Ctrl-C to stop.")
                while server.running():
                    time.sleep(0.5)
                raise TrtQuantError(
                    f"tritonserver stopped by itself (exit code {server.process.returncode if server.process else None}; "
                    f"{server.log_tail()}): fix what its log says and serve again."
                )
            except (KeyboardInterrupt, Stop):
                echo("Stopping the Triton server...")
            finally:
                with signals_ignored():  # a second Ctrl-C must not leave the server's stubs behind
                    server.close()
        echo("Stopped.")


def ensemble_name(repo: Path) -> str:
    """The ensemble of a repository written by trt-quant: the model directory whose config is an ensemble."""
    for config in sorted(repo.glob("*/config.pbtxt")):
        if 'platform: "ensemble"' in config.read_text(encoding="utf-8"):
            return config.parent.name
    raise TrtQuantError(f"{repo} has no ensemble: write it with 'trt-quant triton'.")
