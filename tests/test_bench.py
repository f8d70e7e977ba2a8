"""The benchmark suite's report and sequence-length bucketing (correctness only, never wall-clock time)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from trt_quant.bench.variants import VARIANTS
from trt_quant.cli.main import app
from trt_quant.cpuinfo import cpu_info
from trt_quant.errors import TrtQuantError
from trt_quant.runtime import load_runtime
from trt_quant.runtime.batching import batch_indices, computed_tokens

UNEVEN = [
    "short",
    "a somewhat longer sentence with several more words in it than the others",
    "mid length text here",
    "x",
    "another fairly long sentence, which keeps going for a while before it stops",
    "two words",
]


def test_batches_group_examples_of_similar_length_longest_first() -> None:
    counts = [3, 9, 5, 9, 1, 5, 2]
    assert batch_indices(counts, 3, sort_by_length=True) == [[1, 3, 2], [5, 0, 6], [4]]
    assert batch_indices(counts, 3, sort_by_length=False) == [[0, 1, 2], [3, 4, 5], [6]]


def test_computed_tokens_counts_padding_of_each_strategy() -> None:
    counts = [3, 9, 5, 9, 1, 5, 2]
    assert computed_tokens(counts, 3, "bucketed", 16) == 9 * 3 + 5 * 3 + 1
    assert computed_tokens(counts, 3, "longest", 16) == 9 * 3 + 9 * 3 + 2
    assert computed_tokens(counts, 3, "max-length", 16) == 16 * 7


@pytest.mark.parametrize("padding", ["bucketed", "longest", "max-length"])
def test_run_texts_matches_each_text_run_alone_in_the_given_order(tiny_artifact: Path, padding: str) -> None:
    runtime = load_runtime(tiny_artifact, precision="float")
    results = runtime.run_texts(UNEVEN, batch_size=4, padding=padding)
    assert len(results) == len(UNEVEN)
    for text, result in zip(UNEVEN, results, strict=True):
        alone = runtime.run_text([text])
        assert result.keys() == alone.keys()
        for name, value in alone.items():
            np.testing.assert_allclose(result[name], value[0], rtol=1e-4, atol=1e-4)


def test_run_texts_cuts_per_token_outputs_to_each_texts_tokens(
    tiny_model, calib_file, tmp_path: Path
) -> None:
    from trt_quant.config import QuantConfig
    from trt_quant.convert import convert

    output = tmp_path / "ner"
    convert(
        tiny_model("bert", "token-classification"),
        "token-classification",
        calib_file,
        output,
        QuantConfig(calib_samples=32, max_length=32),
    )
    runtime = load_runtime(output)
    counts = runtime.token_counts(UNEVEN)
    results = runtime.run_texts(UNEVEN, batch_size=4)
    for text, count, result in zip(UNEVEN, counts, results, strict=True):
        (name,) = result
        assert result[name].shape[0] == count
        np.testing.assert_allclose(result[name], runtime.run_text([text])[name][0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("padding", "batch", "message"),
    [
        ("sorted", 4, "Unknown padding 'sorted': use one of bucketed, longest, max-length."),
        ("bucketed", 0, "Batch size 0 is not positive: pass a batch size of 1 or more."),
    ],
)
def test_run_texts_refuses_bad_options(tiny_artifact: Path, padding: str, batch: int, message: str) -> None:
    runtime = load_runtime(tiny_artifact)
    with pytest.raises(TrtQuantError) as error:
        runtime.run_texts(UNEVEN, batch_size=batch, padding=padding)
    assert str(error.value) == message


def test_bench_writes_tables_json_and_plots(tiny_artifact: Path, tmp_path: Path) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(UNEVEN * 4) + "\n", encoding="utf-8")
    report = tmp_path / "report"
    arguments = ["bench", str(tiny_artifact), "--batch", "1,2", "--seq", "8,16", "--iterations", "2"]
    arguments += ["--texts", str(texts), "--padding-batch", "4", "--output", str(report)]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    header = "| variant | batch | seq | p50 ms | p90 ms | p99 ms | seq/s | cosine mean | cosine min |"
    assert header in result.output.splitlines()  # printed as Markdown, not wrapped at the terminal width
    payload = json.loads((report / "bench.json").read_text(encoding="utf-8"))
    rows = payload["rows"]
    cpu = cpu_info()
    assert payload["cpu"]["model"] == cpu.model and payload["cpu"]["flags"]["AVX2"] == cpu.flags["AVX2"]
    assert set(payload["cpu"]["flags"]) == {
        "AVX2",
        "AVX-512",
        "AVX-512 VNNI",
        "AVX-VNNI",
        "AVX512-BF16",
        "AMX",
    }
    assert f"cpu: {cpu.summary()}" in result.output.splitlines()
    assert [(row["variant"], row["batch"], row["sequence"]) for row in rows] == [
        (variant, batch, sequence) for variant in VARIANTS for sequence in (8, 16) for batch in (1, 2)
    ]
    by_variant = {row["variant"]: row for row in rows}
    assert by_variant["pytorch-fp32"]["mean_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert by_variant["ort-fp32"]["mean_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert by_variant["openvino-fp32"]["mean_cosine"] == pytest.approx(1.0, abs=1e-4)
    assert by_variant["trt-quant-int8-openvino"]["mean_cosine"] == pytest.approx(
        by_variant["trt-quant-int8"]["mean_cosine"], abs=0.02
    )
    for row in rows:
        assert 0.9 < row["min_cosine"] <= row["mean_cosine"] <= 1.0 + 1e-6
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
        assert row["throughput"] == pytest.approx(row["batch"] * 1000 / row["mean_ms"], rel=1e-6)
    markdown = (report / "bench.md").read_text(encoding="utf-8")
    assert markdown.splitlines()[1] == f"cpu: {cpu.summary()}"
    assert markdown.count("| trt-quant-int8 |") == 4
    for plot in ("latency_vs_batch.png", "throughput_vs_sequence.png"):
        assert (report / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    padding = json.loads((report / "padding.json").read_text(encoding="utf-8"))["rows"]
    assert [(row["precision"], row["padding"]) for row in padding] == [
        (precision, strategy)
        for precision in ("float", "int8")
        for strategy in ("bucketed", "longest", "max-length")
    ]
    runtime = load_runtime(tiny_artifact)
    counts = runtime.token_counts(UNEVEN * 4, max_length=16)
    for row in padding:
        assert row["texts"] == len(UNEVEN) * 4 and row["real_tokens"] == sum(counts)
        assert row["computed_tokens"] == computed_tokens(counts, 4, row["padding"], 16)
    assert "| int8 | bucketed | 24 | 4 |" in (report / "padding.md").read_text(encoding="utf-8")


def test_cpu_info_reads_model_name_and_int8_flags(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
        "flags\t\t: fpu sse avx2 avx512f avx512_vnni avx512_bf16 amx_tile amx_int8\n\n"
        "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n",
        encoding="utf-8",
    )
    info = cpu_info(cpuinfo)
    assert info.model == "Intel(R) Xeon(R) Platinum 8480+" and info.vnni
    assert info.flags == {
        "AVX2": True,
        "AVX-512": True,
        "AVX-512 VNNI": True,
        "AVX-VNNI": False,
        "AVX512-BF16": True,
        "AMX": True,
    }
    assert info.summary().startswith("Intel(R) Xeon(R) Platinum 8480+, ")
    assert "AVX-512 VNNI yes, AVX-VNNI no, AVX512-BF16 yes, AMX yes" in info.summary()
