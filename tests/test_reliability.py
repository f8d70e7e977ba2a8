"""Reliability: mistakes on every command, malformed inputs never crash, atomic artifacts, integrity,
versions, concurrency."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli import run_cli
from tiny_models import sentences

from trt_quant.artifacts import MANIFEST, Manifest, QuantizationRecord, load_manifest
from trt_quant.data import read_texts
from trt_quant.errors import ArtifactError, TrtQuantError
from trt_quant.runtime import load_runtime


def edited_manifest(artifact: Path, target: Path, **changes: object) -> Path:
    shutil.copytree(artifact, target)
    data = json.loads((target / MANIFEST).read_text(encoding="utf-8"))
    for dotted, value in changes.items():
        node = data
        *path, last = dotted.split("__")
        for key in path:
            node = node[key]
        node[last] = value
    (target / MANIFEST).write_text(json.dumps(data), encoding="utf-8")
    return target


COMMAND_MISTAKES = {
    "evaluate: artifact missing": (
        lambda a, t: ["evaluate", t / "none", "--data", t / "d.txt"],
        "does not exist: run 'trt-quant convert' first",
    ),
    "evaluate: data missing": (
        lambda a, t: ["evaluate", a, "--data", t / "none.csv", "--no-write"],
        "none.csv does not exist",
    ),
    "evaluate: label column missing": (
        lambda a, t: ["evaluate", a, "--data", t / "d.csv", "--label-column", "gold", "--no-write"],
        "Column 'gold' is not in",
    ),
    "evaluate: unknown backend": (
        lambda a, t: ["evaluate", a, "--data", t / "d.csv", "--backend", "cuda", "--no-write"],
        "Unknown backend 'cuda'",
    ),
    "build: no GPU": (lambda a, t: ["build", a], "pip install 'trt-quant[gpu]'"),
    "build: bad profile": (lambda a, t: ["build", a, "--batch", "8,1,32"], "--batch"),
    "build: sequence above maximum": (lambda a, t: ["build", a, "--seq", "16,128,4096"], "64"),
    "check: missing file": (lambda a, t: ["check", t / "none.onnx"], "There is no ONNX file"),
    "check: not ONNX": (lambda a, t: ["check", t / "d.csv"], "is not a valid ONNX model"),
    "triton: repo exists": (lambda a, t: ["triton", a, "--repo", t], "already exists: pass --overwrite"),
    "triton: escaping name": (
        lambda a, t: ["triton", a, "--repo", t / "repo", "--name", "../evil"],
        "cannot be a Triton model directory",
    ),
    "triton: no engine for tensorrt": (
        lambda a, t: ["triton", a, "--repo", t / "repo", "--backend", "tensorrt"],
        "engine",
    ),
    "triton: malformed --cc-engine": (
        lambda a, t: ["triton", a, "--repo", t / "repo", "--cc-engine", "8.6"],
        "is not CC=ARTIFACT_DIR",
    ),
    "bench: bad batch list": (lambda a, t: ["bench", a, "--batch", "eight"], "not a comma-separated list"),
    "bench: unknown variant": (
        lambda a, t: ["bench", a, "--variants", "tvm", "--batch", "1", "--seq", "8"],
        "Unknown benchmark variant 'tvm'",
    ),
    "bench: sequence too long": (lambda a, t: ["bench", a, "--seq", "512"], "above the model's maximum"),
    "bench: negative padding batch": (
        lambda a, t: ["bench", a, "--padding-batch", "-1"],
        "--padding-batch -1 is negative: pass 0 (no table) or a batch size.",
    ),
    "analyze: unknown task": (
        lambda a, t: ["analyze", t / "none", "--task", "x", "--calib", t / "d.csv", "--output", t / "an"],
        "Unknown task 'x'",
    ),
    "qat: training file missing": (
        lambda a, t: [
            "qat",
            t / "none",
            "--task",
            "text-classification",
            "--train",
            t / "train.csv",
            "--output",
            t / "q",
        ],
        "does not exist",
    ),
    "convert: artifact name escapes": (
        lambda a, t: [
            "convert",
            t / "m",
            "--task",
            "feature-extraction",
            "--calib",
            t / "d.csv",
            "--output",
            t / "out",
            "--name",
            "../evil",
        ],
        "Name '../evil' is not allowed",
    ),
}


@pytest.mark.parametrize("mistake", list(COMMAND_MISTAKES))
def test_every_command_refuses_mistakes_with_one_sentence(
    mistake, tiny_artifact, tmp_path, monkeypatch, capsys
) -> None:
    (tmp_path / "d.csv").write_text("text,label\nthe model,1\n", encoding="utf-8")
    (tmp_path / "d.txt").write_text("the model\n", encoding="utf-8")
    before = sorted(p.name for p in tmp_path.iterdir())
    make_arguments, message = COMMAND_MISTAKES[mistake]
    code, printed = run_cli(monkeypatch, capsys, *make_arguments(tiny_artifact, tmp_path))
    assert code == 2, printed
    assert "Traceback" not in printed
    assert message in printed.replace("\n", " "), printed
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no partial output


# --- malformed inputs never crash -------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    content=st.binary(max_size=400), suffix=st.sampled_from([".txt", ".csv", ".tsv", ".jsonl", ".parquet"])
)
def test_data_readers_refuse_or_read_arbitrary_bytes(tmp_path_factory, content: bytes, suffix: str) -> None:
    path = tmp_path_factory.mktemp("bytes") / f"data{suffix}"
    path.write_bytes(content)
    try:
        data = read_texts(path)
    except TrtQuantError:
        return
    assert len(data) >= 1 and all(isinstance(text, str) for text in data.texts)


ROW_VALUES = st.one_of(
    st.text(max_size=30),
    st.integers(),
    st.floats(allow_nan=True),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.booleans(),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.dictionaries(st.sampled_from(["text", "sentence", "x", "label"]), ROW_VALUES, max_size=3),
        max_size=6,
    ),
    blank_lines=st.integers(0, 3),
    huge=st.booleans(),
)
def test_jsonl_with_mixed_types_missing_columns_and_huge_lines(
    tmp_path_factory, rows, blank_lines, huge
) -> None:
    path = tmp_path_factory.mktemp("jsonl") / "data.jsonl"
    lines = [json.dumps(row) for row in rows] + [""] * blank_lines
    if huge:
        lines.append(json.dumps({"text": "word " * 200_000}))
    path.write_text("\n".join(lines), encoding="utf-8")
    try:
        data = read_texts(path, label_column="label" if rows and "label" in rows[0] else None)
    except TrtQuantError:
        return
    assert all(isinstance(text, str) for text in data.texts)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0.0, 0.999), flips=st.lists(st.integers(0, 10**9), max_size=8))
def test_runtime_loader_refuses_damaged_onnx(
    tiny_artifact, tmp_path_factory, cut: float, flips: list[int]
) -> None:
    artifact = tmp_path_factory.mktemp("damaged") / "a"
    shutil.copytree(tiny_artifact, artifact)
    model = artifact / "model_int8.onnx"
    payload = bytearray(model.read_bytes()[: int(model.stat().st_size * cut)])
    for position in flips:
        if payload:
            payload[position % len(payload)] ^= 0xFF
    model.write_bytes(bytes(payload))
    try:  # refusing is right; a flip inside weight bytes can leave a valid graph that runs
        outputs = load_runtime(artifact, verify=False).run_text(["the model"])
    except ArtifactError:
        return
    assert outputs["logits"].shape == (1, 3)


# --- atomic artifacts -------------------------------------------------------------------------------


def test_killed_conversion_leaves_previous_artifact_intact(tiny_model, calib_file, tmp_path) -> None:
    """A ``trt-quant convert --overwrite`` process killed mid-way leaves the previous artifact as it was; the
    conversions before and after the killed one run in-process (the same API the command calls)."""
    from trt_quant.config import QuantConfig
    from trt_quant.convert import convert

    output = tmp_path / "artifact"
    model = tiny_model("bert", "feature-extraction")
    config = QuantConfig(max_length=32, calib_samples=64)
    convert(model, "feature-extraction", calib_file, output, config)
    original = {p.name: p.read_bytes() for p in output.iterdir() if p.is_file()}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trt_quant.cli.main",
            "convert",
            str(model),
            "--task",
            "feature-extraction",
            "--calib",
            str(calib_file),
            "--output",
            str(output),
            "--max-length",
            "32",
            "--calib-samples",
            "64",
            "--overwrite",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(tmp_path.glob(".artifact.staging-*/model_fp32.onnx")):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert {p.name: p.read_bytes() for p in output.iterdir() if p.is_file()} == original
    load_manifest(output)  # the previous artifact still verifies
    stale = list(tmp_path.glob(".artifact.staging-*"))
    assert stale, "the kill should have happened mid-conversion"
    with pytest.raises(ArtifactError):
        load_manifest(stale[0])  # a half-written staging directory is never accepted as an artifact
    convert(model, "feature-extraction", calib_file, output, config, overwrite=True)
    assert not list(tmp_path.glob(".artifact.staging-*"))  # the next run cleans up after the killed one


# --- integrity and versions -------------------------------------------------------------------------


def test_modified_file_is_named_and_no_verify_opts_out(tiny_artifact, tmp_path) -> None:
    artifact = tmp_path / "a"
    shutil.copytree(tiny_artifact, artifact)
    config = artifact / "tokenizer" / "tokenizer_config.json"
    config.write_text(config.read_text(encoding="utf-8") + " ", encoding="utf-8")
    with pytest.raises(ArtifactError, match=r"tokenizer_config.json was modified since conversion"):
        load_runtime(artifact)
    assert load_runtime(artifact, verify=False).run_text(["the model"])["logits"].shape == (1, 3)


def test_artifact_from_a_newer_trt_quant_is_refused(tiny_artifact, tmp_path) -> None:
    artifact = edited_manifest(tiny_artifact, tmp_path / "a", **{"versions__trt-quant": "99.0.0"})
    with pytest.raises(ArtifactError, match=r"written by trt-quant 99.0.0, newer than this trt-quant"):
        load_manifest(artifact, verify=False)


def test_artifact_from_a_newer_onnx_is_refused(tiny_artifact, tmp_path) -> None:
    artifact = edited_manifest(tiny_artifact, tmp_path / "a", versions__onnx="9.1.0")
    with pytest.raises(ArtifactError, match=r"exported with onnx 9.1.0, newer than the installed onnx"):
        load_manifest(artifact, verify=False)


def test_other_artifact_format_version_is_refused(tiny_artifact, tmp_path) -> None:
    artifact = edited_manifest(tiny_artifact, tmp_path / "a", format_version=1)
    with pytest.raises(ArtifactError, match=r"artifact format version 1, this trt-quant reads version 2"):
        load_manifest(artifact, verify=False)


def test_manifest_sections_are_typed_and_round_trip(tiny_artifact, tmp_path) -> None:
    manifest = load_manifest(tiny_artifact)
    assert isinstance(manifest.quantization, QuantizationRecord) and manifest.quantization.precision == "int8"
    assert manifest.sizes.quantized_onnx_bytes == (tiny_artifact / "model_int8.onnx").stat().st_size
    assert manifest.accuracy.examples is not None and manifest.accuracy.mean_cosine is not None
    assert Manifest.from_dict(json.loads(manifest.to_json())) == manifest


def test_manifest_with_an_unknown_section_field_is_refused(tiny_artifact, tmp_path) -> None:
    artifact = edited_manifest(tiny_artifact, tmp_path / "a", quantization__int8_weight_initializers=14)
    with pytest.raises(
        ArtifactError, match=r"manifest.json does not match the manifest .*int8_weight_initializers.*convert"
    ):
        load_manifest(artifact, verify=False)


# --- concurrency ------------------------------------------------------------------------------------


def test_eight_threads_by_200_mixed_calls_equal_sequential_calls(tiny_artifact) -> None:
    runtime = load_runtime(tiny_artifact)
    texts = sentences(64, seed=11)
    jobs = [texts[i % 60 : i % 60 + 1 + i % 5] for i in range(200)]  # batch 1..5, many lengths
    expected = [runtime.run_text(job)["logits"] for job in jobs]

    def worker(offset: int) -> list[np.ndarray]:
        return [runtime.run_text(jobs[(offset + i) % 200])["logits"] for i in range(200)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(worker, range(0, 200, 25)))
    for offset, outputs in zip(range(0, 200, 25), results, strict=True):
        for i, output in enumerate(outputs):
            np.testing.assert_array_equal(output, expected[(offset + i) % 200])


def test_trust_remote_code_is_off_unless_asked(tiny_model, tmp_path) -> None:
    from trt_quant.models import load_model

    directory = tmp_path / "remote"
    shutil.copytree(tiny_model("bert", "feature-extraction"), directory)
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (directory / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n", encoding="utf-8")
    loaded = load_model(directory, "feature-extraction")  # the built-in BERT class, never modeling_evil.py
    assert type(loaded.model.model).__name__ == "BertModel"
    assert os.environ.get("TRUST_REMOTE_CODE") is None
