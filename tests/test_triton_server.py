"""The Triton repository on a real Triton server (the nvidia-pytriton wheel's, in its own NumPy 1.x environment).

Loopback only; every request has a network timeout, every loop a count and a deadline; each server is
stopped at the end and its process group checked empty. The environment is built with pip on first use
(``python -m trt_quant.triton.environment``); the tests skip only where that server cannot run at all.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_models import sentences

from trt_quant.runtime import load_runtime
from trt_quant.triton import write_triton_repository
from trt_quant.triton.environment import ServerEnvironment, server_environment, unsupported_reason
from trt_quant.triton.server import TritonServer, group_processes

http = pytest.importorskip("tritonclient.http")
grpc = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLS, EMB = "cls", "emb"
MAX_BATCH = 8
TIMEOUT_S = 60.0
ATOL = 1e-5


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def start_server(
    repositories: list[Path], environment: ServerEnvironment, exit_timeout_s: int = 10
) -> TritonServer:
    ports = free_ports(3)  # HTTP, gRPC, metrics
    return TritonServer(repositories, environment, None, *ports, exit_timeout_s=exit_timeout_s).start(300)


def close(server: TritonServer) -> None:
    group = server.process.pid if server.process else None
    server.close()
    if group is not None:
        assert group_processes(group) == [], "tritonserver or a stub outlived the server"


@pytest.fixture(scope="module")
def environment() -> ServerEnvironment:
    reason = unsupported_reason()
    if reason is not None:
        pytest.skip(f"no Triton server can run here: {reason}")
    return server_environment()


@pytest.fixture(scope="module")
def embedding_artifact(tiny_model: Any, calib_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trt_quant.config import QuantConfig
    from trt_quant.convert import convert

    output = tmp_path_factory.mktemp("embedding") / "tiny-distilbert"
    convert(
        tiny_model("distilbert", "sentence-embedding"),
        "sentence-embedding",
        calib_file,
        output,
        QuantConfig(calib_samples=64, batch_size=16, max_length=32),
    )
    return output


@pytest.fixture(scope="module")
def artifacts(tiny_artifact: Path, embedding_artifact: Path) -> dict[str, Path]:
    return {CLS: tiny_artifact, EMB: embedding_artifact}


@pytest.fixture(scope="module")
def runtimes(artifacts: dict[str, Path]) -> dict[str, Any]:
    return {name: load_runtime(path, backend="onnxruntime") for name, path in artifacts.items()}


@pytest.fixture(scope="module")
def repositories(artifacts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("repos")
    return {
        name: write_triton_repository(
            path, root / name, name=name, backend="python", max_batch=MAX_BATCH, max_queue_delay_us=5000
        )
        for name, path in artifacts.items()
    }


@pytest.fixture(scope="module")
def server(environment: ServerEnvironment, repositories: dict[str, Path]) -> Iterator[TritonServer]:
    server = start_server(list(repositories.values()), environment)
    try:
        yield server
    finally:
        close(server)


def client(server: TritonServer, protocol: str) -> Any:
    if protocol == "http":
        return http.InferenceServerClient(server.http_url, network_timeout=TIMEOUT_S)
    return grpc.InferenceServerClient(server.grpc_url)


def text_input(module: Any, name: str, values: list[Any], datatype: str = "BYTES") -> Any:
    tensor = module.InferInput(name, [len(values), 1], datatype)
    dtype = np.object_ if datatype == "BYTES" else np.int32
    tensor.set_data_from_numpy(np.array([[value] for value in values], dtype=dtype))
    return tensor


def infer(
    server: TritonServer, protocol: str, model: str, texts: list[Any], pairs: list[Any] | None = None
) -> dict[str, np.ndarray]:
    module = http if protocol == "http" else grpc
    inputs = [text_input(module, "TEXT", texts)]
    if pairs is not None:
        inputs.append(text_input(module, "TEXT_PAIR", pairs))
    kwargs = {"client_timeout": TIMEOUT_S} if protocol == "grpc" else {}
    result = client(server, protocol).infer(model, inputs, **kwargs)
    names = ["logits"] if model == CLS else ["sentence_embedding"]
    return {name: result.as_numpy(name) for name in names}


def assert_matches(served: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert list(served) == list(expected)
    for name, array in expected.items():
        assert served[name].shape == array.shape and served[name].dtype == np.float32, name
        np.testing.assert_allclose(served[name], array, rtol=0, atol=ATOL, err_msg=name)


def batch_counts(server: TritonServer, model: str) -> dict[int, int]:
    [stats] = server.get(f"models/{model}/stats")["model_stats"]
    return {entry["batch_size"]: entry["compute_infer"]["count"] for entry in stats.get("batch_stats", [])}


# --- 1. answers equal the runtime's ---------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model", [CLS, EMB])
def test_ensemble_returns_the_runtime_outputs(
    server: TritonServer, runtimes: dict[str, Any], protocol: str, model: str
) -> None:
    runtime = runtimes[model]
    texts, pairs = sentences(5, seed=11), sentences(5, seed=12)
    assert_matches(infer(server, protocol, model, texts[:1]), runtime.run_text(texts[:1]))
    assert_matches(infer(server, protocol, model, texts), runtime.run_text(texts))
    assert_matches(
        infer(server, protocol, model, texts[:3], pairs[:3]), runtime.run_text(texts[:3], pairs[:3])
    )


# --- 2. concurrent requests are batched and answered correctly ------------------------------------------------


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(
    server: TritonServer, runtimes: dict[str, Any]
) -> None:
    texts = sentences(64, seed=21)  # 3 to 30 words: padded to 16, 32 or 64 tokens
    expected = [runtimes[CLS].run_text([text])["logits"] for text in texts]
    before = batch_counts(server, f"{CLS}_model")
    barrier = threading.Barrier(len(texts), timeout=TIMEOUT_S)
    answers: dict[int, Any] = {}

    def send(index: int) -> None:
        connection = http.InferenceServerClient(server.http_url, network_timeout=TIMEOUT_S)
        barrier.wait()  # all 64 requests in flight at once
        answers[index] = connection.infer(CLS, [text_input(http, "TEXT", [texts[index]])]).as_numpy("logits")

    threads = [threading.Thread(target=send, args=(index,), daemon=True) for index in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(2 * TIMEOUT_S)
    assert sorted(answers) == list(range(len(texts)))
    for index, logits in enumerate(expected):
        np.testing.assert_allclose(answers[index], logits, rtol=0, atol=ATOL)
    after = batch_counts(server, f"{CLS}_model")
    added = {
        size: count - before.get(size, 0) for size, count in after.items() if count > before.get(size, 0)
    }
    assert sum(size * count for size, count in added.items()) == 64  # every request ran exactly once
    assert any(size > 1 for size in added), f"no batch merged two requests: {added}"


# --- 3. bad requests get errors, the model keeps serving ------------------------------------------------------


def bad_requests() -> list[tuple[str, list[Any], str]]:
    """(what, inputs, words the error names) for each bad request."""
    return [
        ("empty text", [text_input(http, "TEXT", [""])], "TEXT[0] is empty"),
        ("blank text", [text_input(http, "TEXT", ["fine", "   "])], "TEXT[1] is empty"),
        ("not UTF-8", [text_input(http, "TEXT", [b"\xffabc"])], "TEXT[0] is not valid UTF-8"),
        (
            "no TEXT",
            [text_input(http, "TEXT_PAIR", ["only a pair"])],
            "Input TEXT is missing: send the texts as TEXT.",
        ),
        (
            "empty pair",
            [text_input(http, "TEXT", ["a"]), text_input(http, "TEXT_PAIR", [""])],
            "TEXT_PAIR[0] is empty",
        ),
        ("TEXT as INT32", [text_input(http, "TEXT", [1], "INT32")], "expects 'BYTES'"),
        (
            "batch too large",
            [text_input(http, "TEXT", ["a"] * (MAX_BATCH + 1))],
            f"batch-size must be <= {MAX_BATCH}",
        ),
        (
            "pairs of another length",
            [text_input(http, "TEXT", ["a"]), text_input(http, "TEXT_PAIR", ["b", "c"])],
            "batch size does not match other inputs",
        ),
    ]


def test_each_bad_request_gets_an_error_and_the_model_keeps_serving(
    server: TritonServer, runtimes: dict[str, Any]
) -> None:
    connection = client(server, "http")
    good = sentences(2, seed=31)
    for what, inputs, named in bad_requests():
        with pytest.raises(InferenceServerException) as error:
            connection.infer(CLS, inputs)
        assert named in error.value.message(), (what, error.value.message())
        assert_matches(infer(server, "http", CLS, good), runtimes[CLS].run_text(good))
    assert connection.is_model_ready(CLS) and connection.is_model_ready(f"{CLS}_model")
    long_text = " ".join(["model"] * 500)  # truncated at the model's maximum length, as the runtime does
    assert_matches(
        infer(server, "http", CLS, [long_text, "short"]), runtimes[CLS].run_text([long_text, "short"])
    )


# --- 4. stopping the server mid-flight ------------------------------------------------------------------------


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` but Python bytecode caches: Triton's Python-backend stub writes
    ``1/__pycache__/model.*.pyc`` next to each model.py whatever PYTHONDONTWRITEBYTECODE says."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_server_stopped_in_flight_gives_client_errors_not_hangs(
    environment: ServerEnvironment, repositories: dict[str, Path]
) -> None:
    repo = repositories[CLS]
    before = tree_digest(repo)
    # Triton answers open connections until its exit timeout runs out: 2 s instead of the default 10 s
    # keeps the test short; what is checked (errors, no hang, nothing left behind) does not depend on it
    server = start_server([repo], environment, exit_timeout_s=2)
    group = server.process.pid if server.process else 0
    outcomes: dict[int, list[str]] = {}
    started = threading.Event()
    deadline = time.monotonic() + 120

    def send(worker: int) -> None:
        connection = http.InferenceServerClient(server.http_url, connection_timeout=10, network_timeout=10)
        results = outcomes.setdefault(worker, [])
        # bounded by the deadline: Triton keeps answering open connections until its exit timeout runs
        # out after SIGTERM, so a fixed small count could finish before the server is gone
        for _ in range(100_000):
            if time.monotonic() > deadline:
                results.append("deadline")
                return
            try:
                connection.infer(CLS, [text_input(http, "TEXT", sentences(2, seed=worker))])
                results.append("ok")
                started.set()
            except Exception:  # the server went away: any client error is the expected outcome
                results.append("error")
                return

    workers = [threading.Thread(target=send, args=(index,), daemon=True) for index in range(8)]
    for worker in workers:
        worker.start()
    try:
        assert started.wait(60), "no request succeeded before the stop"
    finally:
        server.close()
    for worker in workers:
        worker.join(30)
    assert not any(worker.is_alive() for worker in workers), "a client hung after the server stopped"
    assert all(results[-1] == "error" for results in outcomes.values()), outcomes
    assert "ok" in {result for results in outcomes.values() for result in results}
    assert group_processes(group) == []
    assert tree_digest(repo) == before


# --- trt-quant serve ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_serve_command_answers_and_stops_cleanly(
    environment: ServerEnvironment, tiny_artifact: Path, runtimes: dict[str, Any], tmp_path: Path, stop: int
) -> None:
    port = free_ports(1)[0]
    repo = tmp_path / "served"
    # As from a terminal's foreground: a shell starts background jobs (``cmd &``, nohup, some CI runners)
    # with SIGINT ignored, which the command inherits and rightly keeps, so Ctrl-C could not reach it. A
    # launcher restores SIGINT's default and execs the command (no preexec_fn: this process has threads).
    launcher = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.executable, sys.argv[1:])"
    command = [sys.executable, "-c", launcher, sys.executable, "-m", "trt_quant.cli.main", "serve"]
    command += [str(tiny_artifact), "--repo", str(repo)]
    command += ["--name", CLS, "--port", str(port), "--server-env", str(environment.root)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", "COLUMNS": "200"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 300
        assert process.stdout is not None
        while time.monotonic() < deadline:  # readline returns "" at the latest when the command exits
            line = process.stdout.readline()
            lines.append(line)
            if not line or "Press Ctrl-C" in line:
                break
        printed = "".join(lines)
        assert "Press Ctrl-C to stop." in printed, printed
        assert f"HTTP     http://127.0.0.1:{port}" in printed and f"gRPC     127.0.0.1:{port + 1}" in printed
        assert (
            f"model    {CLS}: inputs TEXT (BYTES [-1, 1]), TEXT_PAIR (BYTES [-1, 1], optional); "
            "outputs logits (FP32 [-1, 3])"
        ) in printed
        connection = http.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=TIMEOUT_S)
        result = connection.infer(CLS, [text_input(http, "TEXT", ["served by the command"])])
        expected = runtimes[CLS].run_text(["served by the command"])["logits"]
        np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=0, atol=ATOL)
        # A client's open keep-alive connection holds Triton's stop for its whole exit timeout (10 s)
        connection.close()
        process.send_signal(stop)
        # Stopping is bounded: 30 s for the server, 3 x 5 s for its stubs.
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    if stop == signal.SIGKILL:  # no chance to clean up: the server gets SIGTERM as its parent dies
        assert process.returncode == -signal.SIGKILL
    else:
        assert process.returncode == 0, rest
        assert rest.strip().splitlines()[-2:] == ["Stopping the Triton server...", "Stopped."]
    deadline = time.monotonic() + 60
    while _processes_mentioning(str(repo)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_mentioning(str(repo)) == [], "a tritonserver or stub outlived 'trt-quant serve'"


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids
