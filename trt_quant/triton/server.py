"""A Triton Inference Server process on loopback: start, wait until ready, query, stop with its stubs.

The server runs in a session of its own, so a Ctrl-C in the terminal reaches only trt-quant, which then
stops the server with SIGTERM (Triton unloads its models and ends their Python-backend stubs) and, after a
grace period, kills whatever is left of its process group. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trt_quant.errors import TrtQuantError
from trt_quant.triton.environment import ServerEnvironment

LOOPBACK = "127.0.0.1"
POLL_S = 0.25
STUB_GRACE_S = 5.0
PR_SET_PDEATHSIG = 1


def group_processes(group: int) -> list[int]:
    """Live (not zombie) processes of process group ``group``, from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state, ppid, pgrp, ...
        if int(fields[2]) == group and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the process that started it dies (Linux
    PR_SET_PDEATHSIG), so even a killed trt-quant leaves no server behind."""
    _PRCTL[0](PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


_PRCTL: list[Any] = []  # libc's prctl, looked up before fork (no dynamic loading in the child)


def _wait_until_gone(group: int, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for process group ``group`` to have no live process; whether it has none."""
    deadline = time.monotonic() + timeout_s
    while group_processes(group):
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


class TritonServer:
    """``tritonserver`` serving ``repositories`` on ``host`` (loopback); use as a context manager.

    ``environment`` is the nvidia-pytriton environment (its binary, backends and stub Python); with
    ``tritonserver`` another binary runs with its own backends and Python instead."""

    def __init__(
        self,
        repositories: Sequence[str | Path],
        environment: ServerEnvironment | None = None,
        tritonserver: str | Path | None = None,
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        host: str = LOOPBACK,
        exit_timeout_s: int = 10,
    ) -> None:
        if environment is None and tritonserver is None:
            raise TrtQuantError(
                "No Triton server was given: pass --tritonserver PATH or use the built-in one."
            )
        self.repositories = [Path(repo).resolve() for repo in repositories]
        self.environment = environment
        self.binary = Path(tritonserver) if tritonserver is not None else environment.tritonserver  # type: ignore[union-attr]
        self.host = host
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.exit_timeout_s = exit_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self._log_dir = tempfile.TemporaryDirectory(prefix="trt-quant-triton-")
        self.log_path = Path(self._log_dir.name) / "tritonserver.log"

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def command(self) -> list[str]:
        arguments = [str(self.binary)]
        arguments += [f"--model-repository={repo}" for repo in self.repositories]
        if self.environment is not None:
            arguments.append(f"--backend-directory={self.environment.backends}")
        arguments += [
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            "--disable-auto-complete-config",
        ]
        return arguments

    def start(self, timeout_s: float = 300.0) -> TritonServer:
        """Start the server and wait until it and all its models are ready; raise with its log if not."""
        if not self.binary.is_file():
            raise TrtQuantError(
                f"There is no tritonserver at {self.binary}: pass --tritonserver with its path."
            )
        env = self.environment.process_environment() if self.environment is not None else dict(os.environ)
        if not _PRCTL:
            _PRCTL.append(ctypes.CDLL(None, use_errno=True).prctl)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 8) -> str:
        try:
            return " / ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running():
                raise TrtQuantError(
                    f"tritonserver exited with code {self.process.returncode if self.process else None} before it was "
                    f"ready ({self.log_tail()}): fix what its log says."
                )
            if self.is_ready():
                return
            time.sleep(POLL_S)
        raise TrtQuantError(
            f"tritonserver was not ready within {timeout_s:.0f} s ({self.log_tail()}): fix what its log says or wait "
            "longer."
        )

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def get(self, path: str) -> Any:
        """JSON of ``GET http://HOST:PORT/v2/<path>`` (model metadata, config, statistics)."""
        with urllib.request.urlopen(f"http://{self.http_url}/v2/{path}", timeout=10) as response:
            return json.loads(response.read())

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM and wait up to ``timeout_s``; then SIGKILL whatever is left of the process group (the
        server past its timeout, stubs that outlived it); return once the group is gone."""
        if self.process is None:
            return
        group = self.process.pid
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout_s)
        if not _wait_until_gone(group, STUB_GRACE_S):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
            _wait_until_gone(group, STUB_GRACE_S)
        self.process.wait(STUB_GRACE_S)

    def close(self) -> None:
        self.stop()
        self._log_dir.cleanup()

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
