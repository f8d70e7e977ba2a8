"""Quantization-aware training recovers the accuracy that a deliberately poor PTQ calibration lost.

The task is learnable by a tiny BERT in seconds: the topic (0, 1 or 2) of a sentence of filler words with
one to three words from that topic's disjoint word set. The float model learns it; INT8 with ranges
calibrated at the 10th percentile (nearly every activation clipped) falls to chance; QAT, with and without
distillation, brings it back, in the PyTorch fake-quantized model and in the exported INT8 ONNX alike.
"""

from __future__ import annotations

import collections
import copy
import csv
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from tiny_models import WORDS, make_tiny_model

from trt_quant.config import QuantConfig
from trt_quant.convert import ConvertReport, convert
from trt_quant.data import TextData, tokenize
from trt_quant.errors import TrtQuantError
from trt_quant.models import load_model
from trt_quant.qat import CHECKPOINT_NAME, QatConfig, load_checkpoint, qat, train_qat
from trt_quant.quantize.model import quantize
from trt_quant.runtime import load_runtime
from trt_quant.tasks.base import TaskModel

TOPICS = (
    ("model", "data", "text", "token", "tensor", "graph", "engine", "quantize", "calibrate", "export"),
    ("city", "river", "water", "light", "house", "school", "market", "world", "day", "people"),
    ("music", "food", "game", "team", "player", "song", "film", "book", "price", "year"),
)
FILLER = [word for word in WORDS if not any(word in topic for topic in TOPICS)]
MAX_LENGTH = 32
# Deliberately poor: ranges at the 10th percentile of |x| clip nearly every activation.
POOR_PTQ = QuantConfig(
    method="percentile",
    percentile=10.0,
    smoothquant=None,
    calib_samples=64,
    batch_size=16,
    max_length=MAX_LENGTH,
)
QAT_SETTINGS = {"epochs": 3, "learning_rate": 3e-3, "batch_size": 32, "max_length": MAX_LENGTH}


def topic_data(count: int, seed: int) -> TextData:
    """``count`` sentences: 4-10 filler words and 1-3 words of the labelled topic, shuffled."""
    generator = random.Random(seed)
    texts, labels = [], []
    for _ in range(count):
        topic = generator.randrange(len(TOPICS))
        words = generator.choices(FILLER, k=generator.randint(4, 10))
        words += generator.choices(TOPICS[topic], k=generator.randint(1, 3))
        generator.shuffle(words)
        texts.append(" ".join(words))
        labels.append(topic)
    return TextData(texts, labels=labels)


def write_csv(path: Path, data: TextData) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(zip(data.texts, data.labels or [], strict=True))
    return path


def torch_accuracy(model: TaskModel, tokenizer: object, data: TextData) -> float:
    model.eval()
    feeds = tokenize(tokenizer, data, model.input_names, MAX_LENGTH)
    with torch.no_grad():
        predictions = model.run(feeds)[0].argmax(-1)
    return float((predictions == torch.tensor(data.labels)).float().mean())


def onnx_accuracy(artifact: Path, data: TextData, precision: str = "int8") -> float:
    """Accuracy of the artifact's graph on ONNX Runtime, as deployed."""
    runtime = load_runtime(artifact, backend="onnxruntime", precision=precision)
    logits = runtime.run_text(data.texts, max_length=MAX_LENGTH)["logits"]
    return float(np.mean(logits.argmax(-1) == np.asarray(data.labels)))


@dataclass
class LearnedTask:
    """A tiny BERT trained in float on the topic task, its data files and held-out examples."""

    model_dir: Path
    train_file: Path
    eval_file: Path
    held_out: TextData
    float_accuracy: float


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models train fastest (and steadiest on a busy machine) on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> LearnedTask:
    directory = tmp_path_factory.mktemp("qat")
    model_dir = make_tiny_model(directory / "float-model", "bert", "text-classification")
    train, held_out = topic_data(384, seed=0), topic_data(192, seed=1)
    loaded = load_model(model_dir, "text-classification")
    model = loaded.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model.train()
        for _ in range(8):
            for start in range(0, len(train), 32):
                part = train.slice(start, start + 32)
                logits = model.run(tokenize(loaded.tokenizer, part, model.input_names, MAX_LENGTH))[0]
                loss = torch.nn.functional.cross_entropy(logits, torch.tensor(part.labels))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    model.model.save_pretrained(model_dir)
    return LearnedTask(
        model_dir,
        write_csv(directory / "train.csv", train),
        write_csv(directory / "eval.csv", held_out),
        held_out,
        torch_accuracy(model, loaded.tokenizer, held_out),
    )


@pytest.fixture(scope="module")
def poor_ptq(learned: LearnedTask, tmp_path_factory: pytest.TempPathFactory) -> ConvertReport:
    return convert(
        learned.model_dir,
        "text-classification",
        learned.train_file,
        tmp_path_factory.mktemp("ptq") / "artifact",
        POOR_PTQ,
        eval_data=learned.eval_file,
    )


@pytest.fixture(scope="module", params=[False, True], ids=["labels", "labels+distillation"])
def qat_run(
    request: pytest.FixtureRequest, learned: LearnedTask, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ConvertReport, Path]:
    directory = tmp_path_factory.mktemp("qat-run")
    config = QatConfig(**QAT_SETTINGS, distill=request.param, checkpoint_dir=directory / "checkpoints")
    report = qat(
        learned.model_dir,
        "text-classification",
        learned.train_file,
        directory / "artifact",
        quant_config=POOR_PTQ,
        qat_config=config,
        eval_data=learned.eval_file,
    )
    return report, directory / "checkpoints"


def test_float_model_learns_the_task(learned: LearnedTask, poor_ptq: ConvertReport) -> None:
    assert learned.float_accuracy >= 0.95
    assert onnx_accuracy(poor_ptq.output, learned.held_out, precision="float") == pytest.approx(
        learned.float_accuracy, abs=0.01
    )


def test_poor_calibration_loses_accuracy(learned: LearnedTask, poor_ptq: ConvertReport) -> None:
    loaded = load_model(learned.model_dir, "text-classification")
    calibration = tokenize(loaded.tokenizer, topic_data(64, seed=0), loaded.input_names, MAX_LENGTH)
    fake_quantized = quantize(loaded.model, [calibration], POOR_PTQ)
    assert torch_accuracy(fake_quantized, loaded.tokenizer, learned.held_out) <= learned.float_accuracy - 0.3
    assert onnx_accuracy(poor_ptq.output, learned.held_out) <= learned.float_accuracy - 0.3


def test_qat_recovers_the_accuracy(
    learned: LearnedTask, poor_ptq: ConvertReport, qat_run: tuple[ConvertReport, Path]
) -> None:
    report, checkpoints = qat_run
    ptq_accuracy = onnx_accuracy(poor_ptq.output, learned.held_out)
    deployed = onnx_accuracy(report.output, learned.held_out)
    assert deployed >= learned.float_accuracy - 0.03
    assert deployed >= ptq_accuracy + 0.3
    loaded = load_model(learned.model_dir, "text-classification")
    trained, epoch = load_checkpoint(loaded.model, checkpoints / CHECKPOINT_NAME.format(epoch=3))
    assert epoch == 3
    assert torch_accuracy(trained, loaded.tokenizer, learned.held_out) >= learned.float_accuracy - 0.03
    assert report.manifest.accuracy.top1_agreement >= 0.95  # the INT8 graph agrees with the float graph


def test_qat_manifest_records_the_training(learned: LearnedTask, qat_run: tuple[ConvertReport, Path]) -> None:
    report, checkpoints = qat_run
    written = json.loads((report.output / "manifest.json").read_text(encoding="utf-8"))["quantization"]
    block = written["qat"]
    assert block["epochs"] == 3 and block["learning_rate"] == 3e-3 and block["labels"] == "label"
    assert block["examples"] == 384 and len(block["epoch_losses"]) == 3
    assert block["final_train_loss"] == block["epoch_losses"][-1] < block["epoch_losses"][0]
    assert (block["temperature"] is not None) == block["distill"]
    assert written["method"] == "percentile" and written["percentile"] == 10.0
    assert written["calib_file"] == str(learned.train_file) and written["calib_samples"] == 64
    assert report.manifest.accuracy.data == "evaluation file"
    assert sorted(path.name for path in checkpoints.iterdir()) == [f"epoch-00{n}.pt" for n in (1, 2, 3)]
    selection = block["selection"]
    assert selection["metric"] == "accuracy" and len(selection["epochs"]) == 3
    assert (
        max(selection["epochs"]) >= selection["calibrated"] + 30
    )  # points x100: QAT repairs the calibration
    best = 1 + selection["epochs"].index(max(selection["epochs"]))
    assert selection["selected"] == f"epoch {best}"
    assert {"export float", "quantize + calibrate", "qat", "export int8", "total"} <= set(report.timings)


def graph_structure(artifact: Path) -> collections.Counter[str]:
    """How many nodes of each op type the artifact's INT8 graph has (QuantizeLinear/DequantizeLinear included)."""
    return collections.Counter(node.op_type for node in onnx.load(artifact / "model_int8.onnx").graph.node)


@pytest.mark.parametrize("qat_run", [False], ids=["labels"], indirect=True)
def test_two_processes_train_the_same_graph(
    learned: LearnedTask, poor_ptq: ConvertReport, qat_run: tuple[ConvertReport, Path], tmp_path: Path
) -> None:
    """``torchrun --nproc_per_node 2 -m trt_quant.cli qat`` (DistributedDataParallel over gloo, on the CPU)
    trains each process on half the batches (16 examples each per step: the single run's 32 per step); the
    first process alone prints and writes an artifact whose INT8 graph has the single-process run's
    structure (op types, node counts, Q/DQ pairs) and which repairs the poor calibration as that run does."""
    output = tmp_path / "artifact"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "trt_quant.cli", "qat", str(learned.model_dir), "--task", "text-classification",
        "--train", str(learned.train_file), "--eval-data", str(learned.eval_file), "--output", str(output),
        "--method", "percentile", "--percentile", "10", "--smoothquant", "0", "--calib-samples", "64",
        "--batch-size", "16", "--max-length", str(MAX_LENGTH), "--epochs", "3", "--learning-rate", "3e-3",
        "--train-batch-size", "16",  # per process: the single run's 32 examples per step over both
    ]  # fmt: skip
    environment = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("QAT kept") == 1  # one summary: the second process neither prints nor writes
    assert sorted(path.name for path in tmp_path.iterdir()) == ["artifact"]  # no staging left behind

    single, _ = qat_run
    assert graph_structure(output) == graph_structure(single.output)
    assert graph_structure(output)["QuantizeLinear"] > 0
    block = json.loads((output / "manifest.json").read_text(encoding="utf-8"))["quantization"]["qat"]
    assert block["examples"] == 384 and len(block["epoch_losses"]) == 3
    assert block["epoch_losses"][-1] < block["epoch_losses"][0]
    assert block["selection"]["selected"] != "calibrated model"
    # The same direction as the single-process run: far above the poor calibration.
    ptq_accuracy = onnx_accuracy(poor_ptq.output, learned.held_out)
    assert onnx_accuracy(single.output, learned.held_out) >= ptq_accuracy + 0.3
    deployed = onnx_accuracy(output, learned.held_out)
    assert deployed >= ptq_accuracy + 0.3 and deployed >= learned.float_accuracy - 0.03


@pytest.fixture
def tiny_quantized(tiny_model, one_thread: None) -> tuple[TaskModel, list[dict[str, torch.Tensor]], Path]:
    """A tiny BERT classifier with default PTQ (SmoothQuant on), its calibration batches, its directory."""
    model_dir = tiny_model("bert", "text-classification")
    loaded = load_model(model_dir, "text-classification")
    data = topic_data(48, seed=3)
    batches = [
        tokenize(loaded.tokenizer, data.slice(i, i + 16), loaded.input_names, MAX_LENGTH) for i in (0, 16, 32)
    ]
    return quantize(loaded.model, batches, QuantConfig(max_length=MAX_LENGTH)), batches, model_dir


def test_checkpoints_round_trip(tiny_quantized, tmp_path: Path) -> None:
    model, batches, model_dir = tiny_quantized
    labels = [torch.tensor(part) for part in (([0, 1, 2] * 6)[:16], ([2, 1, 0] * 6)[:16], [1] * 16)]
    config = QatConfig(epochs=2, learning_rate=1e-3, checkpoint_dir=tmp_path, checkpoint_every_epoch=False)
    random_states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    trained = train_qat(model, None, list(zip(batches, labels, strict=True)), config)
    assert random.getstate() == random_states[0]  # Trainer seeds the global generators; they are restored
    assert np.array_equal(np.random.get_state()[1], random_states[1])
    assert torch.equal(torch.get_rng_state(), random_states[2])
    assert [path.name for path in tmp_path.iterdir()] == ["epoch-002.pt"]
    checkpoint = torch.load(tmp_path / "epoch-002.pt", weights_only=True)
    assert set(checkpoint) == {"state_dict", "epoch", "quantizers"}
    assert any(key.endswith("input_quantizer._pre_quant_scale") for key in checkpoint["state_dict"])
    fresh = load_model(model_dir, "text-classification").model
    restored, epoch = load_checkpoint(fresh, tmp_path / "epoch-002.pt")
    assert epoch == 2
    with torch.no_grad():
        for batch in batches:
            assert torch.equal(trained.run(batch)[0], restored.run(batch)[0])


def test_checkpoint_mistakes(tiny_quantized, tiny_model, tmp_path: Path) -> None:
    model, batches, model_dir = tiny_quantized
    with pytest.raises(TrtQuantError, match="does not exist"):
        load_checkpoint(load_model(model_dir, "text-classification").model, tmp_path / "missing.pt")
    train_qat(
        model,
        None,
        [(batches[0], torch.zeros(16, dtype=torch.long))],
        QatConfig(epochs=1, checkpoint_dir=tmp_path),
    )
    path = tmp_path / "epoch-001.pt"
    with pytest.raises(TrtQuantError, match="already has quantizers"):
        load_checkpoint(model, path)
    other = load_model(tiny_model("distilbert", "text-classification"), "text-classification").model
    with pytest.raises(TrtQuantError, match="does not fit this model"):
        load_checkpoint(other, path)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrtQuantError, match="does not fit this model"):
        load_checkpoint(load_model(model_dir, "text-classification").model, tmp_path / "garbage.pt")


def test_sentence_embeddings_learn_the_float_outputs_without_labels(learned: LearnedTask) -> None:
    """No labels: the loss is 1 - cosine to the float model's embeddings (the trained encoder, mean-pooled),
    which QAT raises on held-out sentences from where the poor calibration left it."""
    loaded = load_model(learned.model_dir, "sentence-embedding")
    teacher = copy.deepcopy(loaded.model)
    data = topic_data(128, seed=4)
    batches = [
        tokenize(loaded.tokenizer, data.slice(i, i + 32), loaded.input_names, MAX_LENGTH)
        for i in range(0, 128, 32)
    ]
    held_out = tokenize(loaded.tokenizer, topic_data(64, seed=9), loaded.input_names, MAX_LENGTH)
    student = quantize(loaded.model, batches[:2], POOR_PTQ)

    def held_out_cosine() -> float:
        with torch.no_grad():
            return float(torch.cosine_similarity(student.run(held_out)[0], teacher.run(held_out)[0]).mean())

    before = held_out_cosine()
    train_qat(student, teacher, [(batch, None) for batch in batches], QatConfig(epochs=3, learning_rate=3e-3))
    assert held_out_cosine() >= before + 0.1


def test_token_classification_trains_on_word_tags(tiny_model, tmp_path: Path, one_thread: None) -> None:
    rows = [
        {"tokens": text.split(), "tags": [int(word in TOPICS[0]) for word in text.split()]}
        for text in topic_data(32, seed=5).texts
    ]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    report = qat(
        tiny_model("bert", "token-classification"),
        "token-classification",
        train,
        tmp_path / "out",
        label_column="tags",
        quant_config=QuantConfig(calib_samples=16, max_length=MAX_LENGTH),
        qat_config=QatConfig(epochs=1, batch_size=16, max_length=MAX_LENGTH, distill=True),
        eval_data=train,
    )
    block = report.manifest.quantization.qat
    assert block["labels"] == "tags" and block["examples"] == 32 and np.isfinite(block["final_train_loss"])
    assert report.manifest.accuracy.examples == 32
    assert load_runtime(report.output).run_text(["the model data"])["logits"].shape == (1, 5, 5)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"epochs": 0}, "at least one epoch"),
        ({"learning_rate": 0}, "Learning rate 0 is not positive"),
        ({"batch_size": 0}, "batch size must be at least 1"),
        ({"max_length": 1}, "at least 2 tokens"),
        ({"temperature": -1}, "Temperature -1 is not positive"),
        ({"kl_weight": -0.5}, "cannot be negative"),
        ({"distill": True, "kl_weight": 0, "hidden_mse_weight": 0}, "does nothing"),
        ({"warmup_ratio": 1.0}, "Warmup ratio 1.0 is out of range"),
    ],
)
def test_config_validation(settings: dict, message: str) -> None:
    with pytest.raises(TrtQuantError, match=message):
        QatConfig(**settings)


def test_checkpoint_dir_must_not_be_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(TrtQuantError, match="is a file"):
        QatConfig(checkpoint_dir=tmp_path / "file")
    assert QatConfig(checkpoint_dir=str(tmp_path)).checkpoint_dir == tmp_path  # type: ignore[arg-type]


def test_training_mistakes(tiny_quantized, tiny_model) -> None:
    model, batches, model_dir = tiny_quantized
    with pytest.raises(TrtQuantError, match="needs the float model"):
        train_qat(model, None, [(batches[0], None)], QatConfig(epochs=1))
    with pytest.raises(TrtQuantError, match="Distillation needs the float model"):
        train_qat(model, None, [(batches[0], torch.zeros(16, dtype=torch.long))], QatConfig(distill=True))
    with pytest.raises(TrtQuantError, match="no training data"):
        train_qat(model, None, [], QatConfig())
    float_model = load_model(model_dir, "text-classification").model
    with pytest.raises(TrtQuantError, match="no quantizers"):
        train_qat(float_model, None, [(batches[0], torch.zeros(16, dtype=torch.long))], QatConfig())


def test_sentence_embedding_pairs_are_embedded_one_text_at_a_time(tiny_model, tmp_path: Path) -> None:
    """As convert does: a pair file gives two texts per row to calibrate, train and measure on."""
    texts = topic_data(24, seed=7).texts
    train = tmp_path / "pairs.tsv"
    train.write_text(
        "sentence1\tsentence2\n"
        + "".join(f"{a}\t{b}\n" for a, b in zip(texts[:12], texts[12:], strict=True)),
        encoding="utf-8",
    )
    report = qat(
        tiny_model("bert", "sentence-embedding"),
        "sentence-embedding",
        train,
        tmp_path / "out",
        label_column=None,
        quant_config=QuantConfig(calib_samples=64, max_length=MAX_LENGTH),
        qat_config=QatConfig(epochs=1, batch_size=8, max_length=MAX_LENGTH),
        eval_data=train,
    )
    assert report.manifest.quantization.qat["examples"] == 24
    assert report.manifest.quantization.calib_samples == 24
    assert report.manifest.accuracy.examples == 24


def test_artifact_name_is_checked_before_any_work(tiny_model, tmp_path: Path) -> None:
    with pytest.raises(TrtQuantError, match=r"Name 'bad name' is not allowed"):
        qat(
            tiny_model("bert", "text-classification"),
            "text-classification",
            tmp_path / "t.txt",
            tmp_path / "o",
            name="bad name",
        )
    assert not (tmp_path / "o").exists()


def test_qat_never_returns_a_model_worse_than_the_calibrated_one(
    learned: LearnedTask, tmp_path: Path
) -> None:
    """A destructive learning rate ruins every epoch: the calibrated model is kept, and the summary says so."""
    calibrated = QuantConfig(calib_samples=64, batch_size=16, max_length=MAX_LENGTH)
    report = qat(
        learned.model_dir,
        "text-classification",
        learned.train_file,
        tmp_path / "out",
        quant_config=calibrated,
        qat_config=QatConfig(epochs=2, learning_rate=0.5, batch_size=32, max_length=MAX_LENGTH),
        eval_data=learned.eval_file,
    )
    selection = report.manifest.quantization.qat["selection"]
    assert selection["selected"] == "calibrated model"
    assert all(score < selection["calibrated"] for score in selection["epochs"]), selection
    assert onnx_accuracy(report.output, learned.held_out) >= learned.float_accuracy - 0.03
