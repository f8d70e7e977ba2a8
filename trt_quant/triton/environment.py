"""The environment a local Triton server runs in: the ``nvidia-pytriton`` wheel's ``tritonserver`` and a
Python for its Python-backend stubs, built once with pip and cached.

The stubs embed the Python found first on ``PATH``. That Python needs NumPy 1.x (Triton 2.51's stub cannot
read BYTES tensors under NumPy 2: every text request kills the stub) and, for trt-quant's models, transformers
and onnxruntime; it needs no torch. trt-quant's own environment has NumPy 2, so the server gets a venv of
its own, with the wheel installed without its dependencies (they are PyTriton's client side, not the server's).

Run ``python -m trt_quant.triton.environment`` to build it ahead of time (CI does); it prints its path.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import venv
from dataclasses import dataclass
from pathlib import Path

from trt_quant.errors import TrtQuantError

PYTRITON = "nvidia-pytriton==0.7.0"
STUB_PACKAGES = ("numpy==1.26.4", "transformers==5.14.1", "onnxruntime==1.31.1")
STUB_PYTHONS = ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13")  # the wheel's python_backend_stubs/
ENVIRONMENT_VARIABLE = "TRT_QUANT_TRITON_ENV"
STAMP = "trt-quant-environment.json"
PIP_TIMEOUT_S = 1200


def python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def default_root() -> Path:
    """``$TRT_QUANT_TRITON_ENV``, or a folder under the user's cache named after the pinned packages."""
    if os.environ.get(ENVIRONMENT_VARIABLE):
        return Path(os.environ[ENVIRONMENT_VARIABLE])
    pins = hashlib.sha256(" ".join((PYTRITON, *STUB_PACKAGES)).encode()).hexdigest()[:8]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "trt-quant" / f"triton-py{python_version()}-{pins}"


def unsupported_reason() -> str | None:
    """Why the wheel's server cannot run on this machine, or None when it can."""
    if sys.platform != "linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        return (
            f"the nvidia-pytriton server runs only on Linux x86-64, not {sys.platform} {platform.machine()}"
        )
    if python_version() not in STUB_PYTHONS:
        return f"the nvidia-pytriton server has Python-backend stubs for Python {', '.join(STUB_PYTHONS)}, not {python_version()}"
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return "the Python-backend stub needs a shared libpython, and this Python was built without --enable-shared"
    return None


@dataclass(frozen=True)
class ServerEnvironment:
    """A built environment: the venv at ``root`` with the ``nvidia-pytriton`` wheel in its site-packages."""

    root: Path

    @property
    def site_packages(self) -> Path:
        return self.root / "lib" / f"python{python_version()}" / "site-packages"

    @property
    def tritonserver(self) -> Path:
        return self.site_packages / "pytriton" / "tritonserver" / "bin" / "tritonserver"

    @property
    def backends(self) -> Path:
        return self.site_packages / "pytriton" / "tritonserver" / "backends"

    @property
    def stub(self) -> Path:
        return self.backends / "python" / "triton_python_backend_stub"

    def is_built(self) -> bool:
        stamp = self.root / STAMP
        return stamp.is_file() and self.stub.is_file() and json.loads(stamp.read_text()) == _record()

    def process_environment(self) -> dict[str, str]:
        """Variables for tritonserver and its stubs: this Python's libpython first, then the wheel's libraries,
        the venv first on PATH, no bytecode written into the model repository, nothing of the caller's
        PYTHONPATH."""
        env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
        libraries = [
            str(sysconfig.get_config_var("LIBDIR")),
            str(self.site_packages / "nvidia_pytriton.libs"),
            str(self.site_packages / "pytriton" / "tritonserver" / "lib"),
        ]
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*libraries, env.get("LD_LIBRARY_PATH", "")]).rstrip(
            os.pathsep
        )
        env["PATH"] = os.pathsep.join([str(self.root / "bin"), env.get("PATH", "")])
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["PYTHONNOUSERSITE"] = "1"
        return env


def _record() -> dict[str, object]:
    return {"python": python_version(), "packages": [PYTRITON, *STUB_PACKAGES]}


def _pip(python: Path, *arguments: str) -> None:
    command = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *arguments]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.CalledProcessError as error:
        last = (error.stderr or error.stdout or "").strip().splitlines()[-3:]
        raise TrtQuantError(
            f"pip could not install {' '.join(arguments)} into the Triton server environment ({' / '.join(last)}): "
            "check that the package registry is reachable, or pass --tritonserver with a server of your own."
        ) from None
    except subprocess.TimeoutExpired:
        raise TrtQuantError(
            f"pip did not finish installing the Triton server environment within {PIP_TIMEOUT_S} s: check the "
            "connection to the package registry and retry."
        ) from None


def server_environment(root: str | Path | None = None) -> ServerEnvironment:
    """The server environment at ``root`` (default: ``default_root()``), built first if it is not complete.

    It is built in a staging folder next to ``root`` and renamed into place, so an interrupted build leaves
    nothing that looks complete."""
    reason = unsupported_reason()
    if reason is not None:
        raise TrtQuantError(
            f"Cannot run a local Triton server: {reason}; pass --tritonserver PATH to use another."
        )
    environment = ServerEnvironment(Path(root) if root is not None else default_root())
    if environment.is_built():
        return environment
    staging = environment.root.with_name(f".{environment.root.name}.building-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        venv.EnvBuilder(with_pip=True, symlinks=True).create(staging)
        built = ServerEnvironment(staging)
        python = staging / "bin" / "python"
        _pip(python, *STUB_PACKAGES)
        _pip(python, "--no-deps", PYTRITON)
        stub = built.site_packages / "pytriton" / "tritonserver" / "python_backend_stubs" / python_version()
        shutil.copy2(stub / "triton_python_backend_stub", built.stub)
        (staging / STAMP).write_text(json.dumps(_record()), encoding="utf-8")
        shutil.rmtree(environment.root, ignore_errors=True)
        os.replace(staging, environment.root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return environment


if __name__ == "__main__":
    try:
        print(server_environment().root)
    except TrtQuantError as error:
        print(error, file=sys.stderr)
        sys.exit(2)
