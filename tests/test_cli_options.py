"""Every option of the pipeline commands reaches the Python API: a flag that silently does nothing fails here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main

from trt_quant.cli.main import app, main

# The Python API function each command calls, as ``module:attribute`` (looked up when the command runs).
API = {
    "convert": ("trt_quant.convert", "convert"),
    "qat": ("trt_quant.qat", "qat"),
    "analyze": ("trt_quant.analyze", "analyze"),
    "evaluate": ("trt_quant.evaluate.report", "evaluate_artifact"),
    "triton": ("trt_quant.triton", "write_triton_repository"),
    "serve": ("trt_quant.triton.serve", "serve"),
}
REQUIRED = {
    "convert": ["MODEL", "--task", "text-classification", "--calib", "c.txt", "--output", "out"],
    "qat": ["MODEL", "--task", "text-classification", "--train", "t.txt", "--output", "out"],
    "analyze": ["MODEL", "--task", "text-classification", "--calib", "c.txt", "--output", "out"],
    "evaluate": ["ARTIFACT", "--data", "d.txt"],
    "triton": ["ARTIFACT", "--repo", "repo"],
    "serve": ["ARTIFACT"],
}
# A value other than the default for options whose type alone does not give a valid one.
VALUES = {
    "--method": "entropy",
    "--percentile": "99.9",
    "--weight-bits": "7",
    "--peg-groups": "4",
    "--smoothquant": "0.5",
    "--precision": "fp8",
    "--accuracy-budget": "cosine>=0.99",
    "--name": "other-name",
    "--learning-rate": "0.001",
    "--cc-engine": "8.6=engines/a10",
    "--preferred-batch": "2,4",
    "--max-length": "64",
    "--limit": "5",
    "--kind": "gpu",
    "--backend": "onnxruntime",
}
QUANTIZING = ("convert", "qat", "analyze")
# Options handled by the command itself before the API is called, with the reason.
NOT_FORWARDED = {"--engine": "checks for TensorRT, then calls build_engine after convert"}


class Called(Exception):
    """Raised by the stand-in API function to stop the command once the arguments are recorded."""


def options(command: str) -> list[Any]:
    """The optional options of ``command`` (typer's click parameters)."""
    group = typer.main.get_command(app)
    params = group.commands[command].params  # type: ignore[attr-defined]
    return [p for p in params if p.param_type_name == "option" and not p.required]


def received(monkeypatch: pytest.MonkeyPatch, command: str, extra: list[str]) -> dict[str, Any]:
    """The arguments the command passes to its API function when run with the required options + ``extra``."""
    module, attribute = API[command]
    calls: list[dict[str, Any]] = []

    def record(*args: Any, **kwargs: Any) -> None:
        calls.append({**{f"#{i}": value for i, value in enumerate(args)}, **kwargs})
        raise Called

    monkeypatch.setattr(f"{module}.{attribute}", record)
    monkeypatch.setattr(sys, "argv", ["trt-quant", command, *REQUIRED[command], *extra])
    with pytest.raises(Called):
        main()
    return calls[0]


def non_default(option: Any) -> list[str]:
    flag = option.opts[0]
    if option.is_flag:
        return [flag] if not option.default else [option.secondary_opts[0]]
    if flag in VALUES:
        return [flag, VALUES[flag]]
    if isinstance(option.default, int):
        return [flag, str((option.default or 0) + 3)]
    if isinstance(option.default, float):
        return [flag, str((option.default or 0) / 2 or 0.5)]
    return [flag, "other.txt" if "data" in flag or "calib" in flag else "other"]


@pytest.mark.parametrize(
    ("command", "flag"),
    [(command, option.opts[0]) for command in API for option in options(command)],
)
def test_every_option_changes_what_the_api_receives(
    command: str, flag: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if flag in NOT_FORWARDED:
        pytest.skip(NOT_FORWARDED[flag])
    monkeypatch.chdir(tmp_path)
    option = next(o for o in options(command) if o.opts[0] == flag)
    baseline = received(monkeypatch, command, [])
    changed = received(monkeypatch, command, non_default(option))
    assert changed != baseline, f"{command} {flag} does not reach the API"


def test_quantization_options_are_shared_by_convert_qat_and_analyze() -> None:
    """One declaration: the three commands offer the same quantization options with the same defaults."""
    shared = [
        "--precision",
        "--method",
        "--percentile",
        "--calib-samples",
        "--batch-size",
        "--max-length",
        "--smoothquant",
        "--weight-bits",
        "--peg-groups",
        "--keep-float",
        "--quantize-attention",
        "--quantize-residual",
        "--gptq",
    ]
    for command in QUANTIZING:
        found = {o.opts[0]: o.default for o in options(command)}
        assert {flag: found.get(flag, "missing") for flag in shared} == {
            flag: next(o.default for o in options("convert") if o.opts[0] == flag) for flag in shared
        }, command


def test_data_options_are_declared_once() -> None:
    """--text-column and --pair-column mean the same on every command that reads data, and --eval-data on
    every command that measures a quantized model against float: same help, same default."""
    for flags, commands in (
        (("--text-column", "--pair-column"), ("convert", "qat", "analyze", "evaluate")),
        (("--eval-data",), ("convert", "qat", "analyze")),
    ):
        declared = {
            command: {o.opts[0]: (o.help, o.default) for o in options(command) if o.opts[0] in flags}
            for command in commands
        }
        assert all(len(found) == len(flags) for found in declared.values()), declared
        assert len({tuple(sorted(found.items())) for found in declared.values()}) == 1, declared


def test_peg_groups_reach_the_quant_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for command in QUANTIZING:
        config = received(monkeypatch, command, ["--peg-groups", "4"])
        quant_config = config.get("quant_config", config.get("#4"))
        assert quant_config.peg_groups == 4, command


def test_triton_and_serve_share_the_repository_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    extra = ["--max-batch", "4", "--preferred-batch", "2,4", "--max-queue-delay", "500", "--max-length", "64"]
    expected = {"max_batch": 4, "preferred_batch_sizes": (2, 4), "max_queue_delay_us": 500, "max_length": 64}
    for command in ("triton", "serve"):
        got = received(monkeypatch, command, extra)
        assert {key: got[key] for key in expected} == expected, command
