"""What the families of issue 14 need beyond the shared parity tests (tests/test_parity.py):

- XLM-RoBERTa runs end to end with its SentencePiece (Unigram) tokenizer, saved in the artifact;
- every family's INT8 file is at most 30 % of the float file (on models wide enough for weights to
  dominate the file, ALBERT's three uses of one shared layer included);
- ModernBERT's sliding-window mask and rotary positions follow the sequence length at run time;
- ALBERT's shared Linears: calibration sees every use, the graph stores each shared weight once and
  gives every use its own QuantizeLinear/DequantizeLinear pair.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import transformers
from onnx import numpy_helper
from pipeline_steps import SteppedConversion, convert_step_by_step
from tiny_models import make_tiny_model, sentences

from trt_quant.config import QuantConfig
from trt_quant.convert import convert
from trt_quant.data import TextData, tokenize_batches
from trt_quant.models import load_model
from trt_quant.onnx.export import export_onnx
from trt_quant.quantize.quantizers import INPUT_QUANTIZER, calibrate, quantized_linears, summarize
from trt_quant.runtime import load_runtime

NEW_FAMILIES = ("xlm-roberta", "mpnet", "modernbert", "albert")
CONFIG = QuantConfig(calib_samples=48, batch_size=16, max_length=32)


def run_float_onnx(path: Path, feeds: dict[str, torch.Tensor]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {name: value.numpy() for name, value in feeds.items()})[0]


def test_xlm_roberta_runs_with_its_sentencepiece_tokenizer(
    tiny_model: Callable[[str, str], Path], calib_file: Path, tmp_path: Path
) -> None:
    source = tiny_model("xlm-roberta", "sentence-embedding")
    artifact = tmp_path / "xlmr"
    convert(source, "sentence-embedding", calib_file, artifact, QuantConfig(calib_samples=64, max_length=32))
    runtime = load_runtime(artifact, precision="float")
    tokenizer = runtime.tokenizer
    backend = tokenizer.backend_tokenizer.model
    assert type(backend).__name__ == "Unigram"
    text = "the model runs fast on the river."
    encoded = tokenizer(text)["input_ids"]
    pieces = tokenizer.convert_ids_to_tokens(encoded)
    assert (encoded[0], encoded[-1], tokenizer.pad_token_id) == (0, 2, 1)  # <s> ... </s>, <pad> = 1
    assert pieces[1].startswith("▁") and "<unk>" not in pieces
    texts = [text, "a small house."]
    got = runtime.run_text(texts)["sentence_embedding"]
    loaded = load_model(source, "sentence-embedding")
    feeds = loaded.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        (want,) = loaded.model.run(dict(feeds))
    assert np.abs(got - want.numpy()).max() <= 1e-4


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_int8_file_is_at_most_30_percent_of_float(family: str, tmp_path: Path) -> None:
    model = make_tiny_model(tmp_path / "model", family, "feature-extraction", hidden=384)
    (tmp_path / "out").mkdir()
    stepped = convert_step_by_step(
        model, "feature-extraction", sentences(16, seed=2), tmp_path / "out", QuantConfig(calib_samples=16)
    )
    ratio = stepped.int8_onnx.stat().st_size / stepped.float_onnx.stat().st_size
    assert ratio <= 0.30, ratio


def test_modernbert_local_window_and_rotary_positions_follow_the_sequence_length(
    tiny_model: Callable[[str, str], Path], tmp_path: Path
) -> None:
    """Exported at 12 tokens, run at 60 (the 8-token window then masks most pairs; positions go past
    those seen at export): the float ONNX equals PyTorch, and differs from global attention everywhere."""
    source = tiny_model("modernbert", "feature-extraction")
    loaded = load_model(source, "feature-extraction")
    assert loaded.config.layer_types == ["full_attention", "sliding_attention"]
    generator = torch.Generator().manual_seed(0)

    def feeds(length: int) -> dict[str, torch.Tensor]:
        ids = torch.randint(5, loaded.config.vocab_size, (2, length), generator=generator)
        mask = torch.ones_like(ids)
        mask[1, length // 2 :] = 0  # the second row is half padding
        return {"input_ids": ids, "attention_mask": mask}

    export_onnx(loaded.model, feeds(12), tmp_path / "modernbert.onnx", 17)
    long = feeds(60)
    got = run_float_onnx(tmp_path / "modernbert.onnx", long)
    with torch.no_grad():
        (want,) = loaded.model.run(long)
    assert np.abs(got - want.numpy()).max() <= 1e-4

    global_config = transformers.AutoConfig.from_pretrained(source)
    global_config.layer_types = ["full_attention", "full_attention"]
    everywhere = transformers.AutoModel.from_pretrained(
        source, config=global_config, attn_implementation="eager"
    )
    with torch.no_grad():
        global_output = everywhere.eval()(**long).last_hidden_state.numpy()
    # the window changes the result, by 10x the tolerance above at least
    assert np.abs(global_output - want.numpy()).max() > 1e-3


@pytest.fixture(scope="module")
def albert(
    tiny_model: Callable[[str, str], Path], tmp_path_factory: pytest.TempPathFactory
) -> SteppedConversion:
    return convert_step_by_step(
        tiny_model("albert", "feature-extraction"),
        "feature-extraction",
        sentences(64, seed=1),
        tmp_path_factory.mktemp("albert"),
        CONFIG,
    )


def constant(graph: onnx.GraphProto, name: str) -> np.ndarray:
    """An initializer's or a Constant node's value."""
    for tensor in graph.initializer:
        if tensor.name == name:
            return numpy_helper.to_array(tensor)
    node = next(node for node in graph.node if node.op_type == "Constant" and name in node.output)
    return numpy_helper.to_array(node.attribute[0].t)


SHARED = "model.encoder.albert_layer_groups.0.albert_layers.0."


def test_albert_calibration_sees_every_use_of_the_shared_layer(albert: SteppedConversion) -> None:
    """Each shared Linear runs once per layer (3 uses); its activation range is the maximum over all uses,
    as hooks on every call measure it, and later uses raise at least some ranges above the first's."""
    model = albert.quantized_model
    shared = {name: module for name, module in quantized_linears(model).items() if name.startswith(SHARED)}
    assert len(shared) == 6
    calls: dict[str, list[float]] = defaultdict(list)

    def record(name: str, module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        quantizer = getattr(module, INPUT_QUANTIZER)
        value = inputs[0] * quantizer.pre_quant_scale if quantizer.pre_quant_scale is not None else inputs[0]
        calls[name].append(float(value.abs().max()))

    hooks = [
        module.register_forward_pre_hook(lambda m, inputs, name=name: record(name, m, inputs))
        for name, module in shared.items()
    ]
    try:
        ranges = calibrate(model, albert.batches, CONFIG)
    finally:
        for hook in hooks:
            hook.remove()
    raised_by_later_uses = 0
    for name in shared:
        per_use = np.array(calls[name]).reshape(len(albert.batches), 3).max(axis=0)
        assert ranges[f"{name}.{INPUT_QUANTIZER}"] == pytest.approx(per_use.max(), rel=1e-6)
        raised_by_later_uses += per_use[1:].max() > per_use[0]
    assert raised_by_later_uses > 0


def test_albert_graph_stores_shared_weights_once_with_qdq_on_every_use(albert: SteppedConversion) -> None:
    graph = albert.int8_graph.graph
    producer = {output: node for node in graph.node for output in node.output}
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2]
    tables = [t for t in int8_weights if "embeddings" in t.name]
    # one INT8 tensor per quantized Linear module: the embedding projection and the 6 shared Linears
    assert len(int8_weights) - len(tables) == summarize(albert.quantized_model).quantized_linears == 7
    quantized = [
        node
        for node in graph.node
        if node.op_type == "MatMul" and producer.get(node.input[1], node).op_type == "DequantizeLinear"
    ]
    assert len(quantized) == 1 + 6 * 3  # the projection, then 6 Linears in each of 3 layers
    activation_quantizers = {producer[producer[node.input[0]].input[0]].name for node in quantized}
    assert len(activation_quantizers) == len(quantized)  # every use has its own Q/DQ pair
    stored = {producer[node.input[1]].input[0] for node in quantized}
    assert len(stored) == 7
    scales = defaultdict(set)  # the 3 uses of one Linear share its one calibrated scale
    for node in quantized:
        quantize = producer[producer[node.input[0]].input[0]]
        scales[producer[node.input[1]].input[0]].add(float(constant(graph, quantize.input[1])))
    assert sorted(len(values) for values in scales.values()) == [1] * 7


def test_unsupported_family_error_lists_the_new_families(tmp_path: Path) -> None:
    from trt_quant.errors import TrtQuantError

    transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(TrtQuantError) as raised:
        load_model(tmp_path, "feature-extraction")
    message = str(raised.value)
    assert message.startswith("Model family 'gpt2' is not supported: use a model of type ")
    for family in NEW_FAMILIES:
        assert family in message


def test_batches_of_every_new_family_drop_token_type_ids_where_the_model_has_none(
    tiny_model: Callable[[str, str], Path],
) -> None:
    for family, names in {
        "xlm-roberta": ["input_ids", "attention_mask"],
        "mpnet": ["input_ids", "attention_mask"],
        "modernbert": ["input_ids", "attention_mask"],
        "albert": ["input_ids", "attention_mask", "token_type_ids"],
    }.items():
        loaded = load_model(tiny_model(family, "feature-extraction"), "feature-extraction")
        assert loaded.input_names == names
        (batch,) = tokenize_batches(loaded.tokenizer, TextData(["the river."]), loaded.input_names, 4, 16)
        assert sorted(batch) == sorted(names)
