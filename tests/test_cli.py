"""The command line: each user mistake gives one sentence, exit code 2, no traceback, no partial output."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from trt_quant.cli.main import main


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    """Run ``trt-quant ARGS`` in-process; return the exit code and everything printed."""
    monkeypatch.setattr(sys, "argv", ["trt-quant", *map(str, args)])
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    code = exited.value.code if isinstance(exited.value.code, int) else 1
    return code, captured.out + captured.err


@pytest.fixture
def convert_args(tiny_model: Callable[[str, str], Path], calib_file: Path, tmp_path: Path) -> list[str]:
    return [
        str(tiny_model("bert", "text-classification")),
        "--task",
        "text-classification",
        "--calib",
        str(calib_file),
        "--output",
        str(tmp_path / "out"),
        "--calib-samples",
        "32",
        "--max-length",
        "32",
    ]


def with_option(arguments: list[str], option: str, value: str) -> list[str]:
    arguments = list(arguments)
    arguments[arguments.index(option) + 1] = value
    return arguments


def not_a_model(tmp_path: Path) -> str:
    (tmp_path / "empty-dir").mkdir()
    return str(tmp_path / "empty-dir")


def gpt2_dir(tmp_path: Path) -> str:
    directory = tmp_path / "gpt2"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": "gpt2"}), encoding="utf-8")
    return str(directory)


def empty_file(tmp_path: Path) -> str:
    (tmp_path / "empty.txt").write_text("\n", encoding="utf-8")
    return str(tmp_path / "empty.txt")


def calib_under(tmp_path: Path) -> Path:
    (tmp_path / "calib.txt").write_text("a sentence\n", encoding="utf-8")
    return tmp_path / "calib.txt"


def csv_without_text(tmp_path: Path) -> str:
    (tmp_path / "data.csv").write_text("a,b\nx,y\n", encoding="utf-8")
    return str(tmp_path / "data.csv")


MISTAKES = {
    "model path missing": (
        lambda a, t, m: [str(t / "nope/model"), *a[1:]],
        r"Model path .*nope/model does not exist",
    ),
    "not a model dir": (lambda a, t, m: [not_a_model(t), *a[1:]], r"is not a Hugging Face model directory"),
    "unsupported family": (
        lambda a, t, m: [gpt2_dir(t), *a[1:]],
        r"Model family 'gpt2' is not supported: use a model of type albert, bert, .*xlm-roberta",
    ),
    "unknown task": (
        lambda a, t, m: with_option(a, "--task", "summarization"),
        r"Unknown task 'summarization': use one of feature-extraction",
    ),
    "head does not fit": (
        lambda a, t, m: [str(m("bert", "feature-extraction")), *a[1:]],
        r"has no trained text-classification head",
    ),
    "calib missing": (
        lambda a, t, m: with_option(a, "--calib", str(t / "none.txt")),
        r"none.txt does not exist",
    ),
    "calib empty": (
        lambda a, t, m: with_option(a, "--calib", empty_file(t)),
        r"is empty: add at least one example",
    ),
    "column missing": (
        lambda a, t, m: [*with_option(a, "--calib", csv_without_text(t)), "--text-column", "text"],
        r"Column 'text' is not in .*use one of a, b",
    ),
    "zero samples": (
        lambda a, t, m: with_option(a, "--calib-samples", "0"),
        r"calibration samples must be at least 1",
    ),
    "max length too long": (
        lambda a, t, m: with_option(a, "--max-length", "4096"),
        r"--max-length 4096 is above the model's maximum of 64 positions",
    ),
    "bad method": (lambda a, t, m: [*a, "--method", "minmax"], r"Unknown calibration method 'minmax'"),
    "output under a file": (
        lambda a, t, m: with_option(a, "--output", str(calib_under(t) / "sub" / "out")),
        r"Output path .*/sub/out lies under the file .*calib.txt: choose a path under a directory",
    ),
    "output cannot be created": (
        lambda a, t, m: with_option(a, "--output", "/proc/no-such-dir/out"),
        r"Cannot create /proc/no-such-dir/out \(No such file or directory\): choose an --output path in a "
        r"writable directory",
    ),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_convert_mistakes_exit_2_with_one_sentence(
    mistake: str, convert_args: list[str], tmp_path: Path, tiny_model, monkeypatch, capsys
) -> None:
    make_arguments, message = MISTAKES[mistake]
    code, printed = run_cli(
        monkeypatch, capsys, "convert", *make_arguments(convert_args, tmp_path, tiny_model)
    )
    assert code == 2
    assert "Traceback" not in printed
    error_lines = [line for line in printed.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, printed

    assert re.search(message, printed.replace("\n", " ")), printed
    assert not (tmp_path / "out").exists()
    assert not any(p.name.startswith(".out.") for p in tmp_path.iterdir())


def test_existing_output_is_refused_without_overwrite(convert_args, tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("previous", encoding="utf-8")
    code, printed = run_cli(monkeypatch, capsys, "convert", *convert_args)
    assert code == 2 and "already exists: pass --overwrite" in printed
    assert (tmp_path / "out" / "keep.txt").read_text(encoding="utf-8") == "previous"


def test_fewer_samples_than_asked_warns_and_converts(convert_args, tmp_path, monkeypatch, capsys) -> None:
    code, printed = run_cli(
        monkeypatch, capsys, "convert", *with_option(convert_args, "--calib-samples", "500"), "--overwrite"
    )
    assert code == 0, printed
    assert "Only 96 calibration samples available, fewer than the 500 asked for" in printed
    assert "trt-quant convert: out" in printed
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["quantization"]["calib_samples"] == 96


def test_check_command_on_a_corrupt_file(tmp_path, monkeypatch, capsys) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    code, printed = run_cli(monkeypatch, capsys, "check", bad)
    assert code == 2 and "Traceback" not in printed and "is not a valid ONNX model" in printed


def test_check_command_on_a_clean_graph(tiny_artifact, monkeypatch, capsys) -> None:
    code, printed = run_cli(monkeypatch, capsys, "check", tiny_artifact / "model_int8.onnx")
    assert code == 0 and "No findings" in printed


def test_real_process_exit_code_and_stderr(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trt_quant.cli.main",
            "convert",
            str(tmp_path / "missing"),
            "--task",
            "feature-extraction",
            "--calib",
            str(tmp_path / "c.txt"),
            "--output",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: Model path") and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()
