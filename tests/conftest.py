"""Shared fixtures: tiny models, calibration files and converted artifacts, built once per session."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from tiny_models import make_tiny_model, sentences

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED_GLUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"


def pytest_configure(config: pytest.Config) -> None:
    """In each of ``make test``'s parallel workers, one PyTorch thread: with a thread per core in every
    worker the cores are oversubscribed (on 2 cores the suite took 494 s; 377-440 s with one per worker)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # for the processes that tests start


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    """Factory: directory of a tiny random model of (family, task), built once per session."""
    cache: dict[tuple[str, str], Path] = {}

    def build(family: str, task: str) -> Path:
        if (family, task) not in cache:
            cache[(family, task)] = make_tiny_model(tmp_path_factory.mktemp(f"{family}-{task}"), family, task)
        return cache[(family, task)]

    return build


@pytest.fixture(scope="session")
def calib_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A text file of 96 pseudo-sentences, one per line."""
    path = tmp_path_factory.mktemp("calib") / "calib.txt"
    path.write_text("\n".join(sentences(96)) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_artifact(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Callable[[str, str], Path], calib_file: Path
) -> Path:
    """A converted tiny BERT text-classification artifact (INT8 + float ONNX, tokenizer, manifest)."""
    from trt_quant.config import QuantConfig
    from trt_quant.convert import convert

    output = tmp_path_factory.mktemp("artifacts") / "tiny-bert"
    convert(
        tiny_model("bert", "text-classification"),
        "text-classification",
        calib_file,
        output,
        QuantConfig(calib_samples=64, batch_size=16, max_length=32),
    )
    return output
