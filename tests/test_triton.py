"""Triton repository: configs parsed with Triton's ModelConfig, validation, bad input, and the Python-backend
tokenizer run against a stand-in for triton_python_backend_utils (tests/triton_stub)."""

from __future__ import annotations

import ast
import importlib.util
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
import pytest
from tiny_models import sentences

from trt_quant.artifacts import ENGINE, INT8_ONNX, load_manifest, write_manifest
from trt_quant.errors import ArtifactError, TrtQuantError
from trt_quant.runtime import load_runtime
from trt_quant.runtime.ort import create_session, dequantize_after_lookup
from trt_quant.triton import validate_repository, write_triton_repository
from trt_quant.triton.repository import tokenizer_source

text_format = pytest.importorskip("google.protobuf.text_format")
json_format = pytest.importorskip("google.protobuf.json_format")
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")

TESTS = Path(__file__).resolve().parent
STUB = TESTS / "triton_stub" / "triton_python_backend_utils.py"
CLIENT = TESTS.parent / "scripts" / "triton_client.py"
NAME = "tiny"
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
TWO_PROFILES = [
    {"min": [1, 1], "opt": [4, 32], "max": [8, 64]},
    {"min": [1, 1], "opt": [16, 16], "max": [32, 16]},
]


def load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse(path: Path) -> Any:
    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def dtype(value: int) -> str:
    return model_config_pb2.DataType.Name(value)


def tensors(config_tensors: Any) -> list[tuple[str, str, list[int], bool]]:
    return [(t.name, dtype(t.data_type), list(t.dims), getattr(t, "optional", False)) for t in config_tensors]


def with_engine(
    source: Path, target: Path, plan: bytes, profiles: list[dict[str, Any]], **record: str
) -> Path:
    """A copy of an artifact with a fake engine file; its manifest records ``profiles`` and ``record``."""
    shutil.copytree(source, target)
    (target / ENGINE).write_bytes(plan)
    manifest = load_manifest(target, verify=False)
    manifest.engine = {"profiles": profiles, **record}
    write_manifest(target, manifest)
    return target


@pytest.fixture(scope="module")
def onnx_repo(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_triton_repository(
        tiny_artifact,
        tmp_path_factory.mktemp("triton") / "repo",
        name=NAME,
        max_batch=4,
        preferred_batch_sizes=(2, 4),
    )


@pytest.fixture(scope="module")
def engine_artifact(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("engine") / "tiny-bert"
    return with_engine(
        tiny_artifact, directory, b"plan-a", TWO_PROFILES, tensorrt="10.13.3", compute_capability="8.9"
    )


@pytest.fixture
def pb_utils(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The stand-in for triton_python_backend_utils, importable by model.py for this test only."""
    module = load_module(STUB, "triton_python_backend_utils")
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", module)
    return module


@pytest.fixture(scope="module")
def runtime(tiny_artifact: Path) -> Any:
    return load_runtime(tiny_artifact, backend="onnxruntime")


def load_tokenizer_model(repo: Path, name: str = NAME) -> Any:
    """Load and initialize ``<name>_tokenizer/1/model.py`` with the args Triton passes to initialize()."""
    model_dir = repo / f"{name}_tokenizer"
    module = load_module(model_dir / "1" / "model.py", f"{name}_tokenizer_model")
    config = parse(model_dir / "config.pbtxt")
    model = module.TritonPythonModel()
    model.initialize(
        {
            "model_config": json_format.MessageToJson(config, preserving_proto_field_name=True),
            "model_instance_kind": "CPU",
            "model_instance_device_id": "0",
            "model_repository": str(model_dir),
            "model_version": "1",
            "model_name": model_dir.name,
        }
    )
    return model


def text_request(pb_utils: ModuleType, texts: list[Any], pairs: list[Any] | None = None) -> Any:
    def column(values: list[Any]) -> np.ndarray:
        array = np.empty((len(values), 1), dtype=np.object_)
        array[:, 0] = values
        return array

    inputs = [pb_utils.Tensor("TEXT", column(texts))]
    if pairs is not None:
        inputs.append(pb_utils.Tensor("TEXT_PAIR", column(pairs)))
    return pb_utils.InferenceRequest(
        inputs=inputs, requested_output_names=INPUTS, model_name=f"{NAME}_tokenizer"
    )


def arrays(response: Any) -> dict[str, np.ndarray]:
    assert not response.has_error(), response.error().message()
    return {tensor.name(): tensor.as_numpy() for tensor in response.output_tensors()}


def assert_same_encoding(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(actual) == sorted(expected)
    for name, array in expected.items():
        assert actual[name].dtype == array.dtype, name
        np.testing.assert_array_equal(actual[name], array, err_msg=name)


# --- repository layout and configs -------------------------------------------------------------------------


def test_onnxruntime_repository_configs(onnx_repo: Path, tiny_artifact: Path) -> None:
    assert sorted(p.name for p in onnx_repo.iterdir()) == [
        "README.md",
        NAME,
        f"{NAME}_model",
        f"{NAME}_tokenizer",
    ]
    model = parse(onnx_repo / f"{NAME}_model" / "config.pbtxt")
    assert (model.name, model.platform, model.max_batch_size) == (f"{NAME}_model", "onnxruntime_onnx", 4)
    assert model.default_model_filename == "model.onnx"
    assert tensors(model.input) == [(name, "TYPE_INT64", [-1], False) for name in INPUTS]
    assert tensors(model.output) == [("logits", "TYPE_FP32", [3], False)]
    assert list(model.dynamic_batching.preferred_batch_size) == [2, 4]
    assert model.dynamic_batching.max_queue_delay_microseconds == 100
    [group] = model.instance_group
    assert (group.count, group.kind, list(group.profile)) == (
        1,
        model_config_pb2.ModelInstanceGroup.KIND_CPU,
        [],
    )
    served = onnx.load(str(onnx_repo / f"{NAME}_model" / "1" / "model.onnx"))
    original = onnx.load(str(tiny_artifact / INT8_ONNX))
    moved = dequantize_after_lookup(original)
    assert moved > 0 and served.graph == original.graph  # tables dequantized after the lookup, nothing else

    tokenizer = parse(onnx_repo / f"{NAME}_tokenizer" / "config.pbtxt")
    assert (tokenizer.backend, tokenizer.platform, tokenizer.max_batch_size) == ("python", "", 4)
    assert tensors(tokenizer.input) == [
        ("TEXT", "TYPE_STRING", [1], False),
        ("TEXT_PAIR", "TYPE_STRING", [1], True),
    ]
    assert tensors(tokenizer.output) == tensors(model.input)
    parameters = {key: value.string_value for key, value in tokenizer.parameters.items()}
    assert parameters == {"max_length": "64", "text_input": "TEXT", "pair_input": "TEXT_PAIR"}
    assert tokenizer.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    version = onnx_repo / f"{NAME}_tokenizer" / "1"
    assert (version / "model.py").read_text(encoding="utf-8") == tokenizer_source()
    assert (version / "tokenizer" / "tokenizer.json").read_bytes() == (
        tiny_artifact / "tokenizer" / "tokenizer.json"
    ).read_bytes()

    ensemble = parse(onnx_repo / NAME / "config.pbtxt")
    assert (ensemble.platform, ensemble.max_batch_size, len(ensemble.instance_group)) == ("ensemble", 4, 0)
    assert tensors(ensemble.input) == tensors(tokenizer.input)
    assert tensors(ensemble.output) == tensors(model.output)
    first, second = ensemble.ensemble_scheduling.step
    assert (first.model_name, second.model_name) == (f"{NAME}_tokenizer", f"{NAME}_model")
    assert dict(first.input_map) == {"TEXT": "TEXT", "TEXT_PAIR": "TEXT_PAIR"}
    assert dict(first.output_map) == dict(second.input_map) == {name: name for name in INPUTS}
    assert dict(second.output_map) == {"logits": "logits"}
    assert (onnx_repo / NAME / "1").is_dir()
    assert validate_repository(onnx_repo) == []

    readme = (onnx_repo / "README.md").read_text(encoding="utf-8")
    assert f'-v "{onnx_repo.resolve()}":/models:ro' in readme
    assert "tritonserver --model-repository=/models" in readme
    assert f"scripts/triton_client.py --model {NAME}" in readme
    assert "--gpus all" not in readme and "without AVX-VNNI" in readme


def test_tensorrt_repository_follows_engine_profiles(engine_artifact: Path, tmp_path: Path) -> None:
    repo = write_triton_repository(engine_artifact, tmp_path / "repo", name=NAME)
    model = parse(repo / f"{NAME}_model" / "config.pbtxt")
    assert (model.platform, model.default_model_filename, model.max_batch_size) == (
        "tensorrt_plan",
        "model.plan",
        8,
    )
    [group] = model.instance_group
    assert (group.kind, list(group.profile)) == (model_config_pb2.ModelInstanceGroup.KIND_GPU, ["0", "1"])
    assert (repo / f"{NAME}_model" / "1" / "model.plan").read_bytes() == b"plan-a"
    assert tensors(model.input) == [(name, "TYPE_INT64", [-1], False) for name in INPUTS]
    assert validate_repository(repo) == []
    readme = (repo / "README.md").read_text(encoding="utf-8")
    assert "--gpus all" in readme and "built with TensorRT 10.13.3, compute capability 8.9." in readme

    # batch 16 fits only the second profile (max [32, 16]): the tokenizer truncates at 16 tokens
    repo = write_triton_repository(engine_artifact, tmp_path / "repo16", name=NAME, max_batch=16)
    tokenizer = parse(repo / f"{NAME}_tokenizer" / "config.pbtxt")
    assert tokenizer.parameters["max_length"].string_value == "16"
    assert parse(repo / NAME / "config.pbtxt").max_batch_size == 16

    repo = write_triton_repository(engine_artifact, tmp_path / "repo32", name=NAME, max_length=32)
    assert parse(repo / f"{NAME}_tokenizer" / "config.pbtxt").parameters["max_length"].string_value == "32"

    with pytest.raises(
        TrtQuantError, match=r"--max-batch 64 is above the largest batch .*\(32, .*pass --max-batch 32"
    ):
        write_triton_repository(engine_artifact, tmp_path / "big", max_batch=64)
    with pytest.raises(TrtQuantError, match=r"--max-length 65 is outside 1\.\.64"):
        write_triton_repository(engine_artifact, tmp_path / "long", max_length=65)
    with pytest.raises(TrtQuantError, match="TensorRT engines run only on GPUs: pass --kind gpu"):
        write_triton_repository(engine_artifact, tmp_path / "cpu", kind="cpu")
    assert not any(path.name in {"big", "long", "cpu"} for path in tmp_path.iterdir())

    repo = write_triton_repository(engine_artifact, tmp_path / "ort", name=NAME, backend="onnxruntime")
    model = parse(repo / f"{NAME}_model" / "config.pbtxt")
    assert (model.platform, model.instance_group[0].kind) == (
        "onnxruntime_onnx",
        model_config_pb2.ModelInstanceGroup.KIND_CPU,
    )


def test_engines_for_other_gpu_architectures(
    engine_artifact: Path, tiny_artifact: Path, tmp_path: Path
) -> None:
    other = with_engine(
        tiny_artifact,
        tmp_path / "sm86",
        b"plan-sm86",
        [TWO_PROFILES[0]],
        tensorrt="10.13.3",
        compute_capability="8.6",
    )
    repo = write_triton_repository(engine_artifact, tmp_path / "repo", name=NAME, cc_engines={"8.6": other})
    model = parse(repo / f"{NAME}_model" / "config.pbtxt")
    assert dict(model.cc_model_filenames) == {"8.6": "model_sm86.plan"}
    assert (repo / f"{NAME}_model" / "1" / "model_sm86.plan").read_bytes() == b"plan-sm86"
    assert list(model.instance_group[0].profile) == []  # only profile 0 is common to both engines
    assert validate_repository(repo) == []

    with pytest.raises(TrtQuantError, match=r"--max-batch 16 is above the largest batch .*\(8, "):
        write_triton_repository(engine_artifact, tmp_path / "r2", max_batch=16, cc_engines={"8.6": other})
    with pytest.raises(TrtQuantError, match=r"'sm86' is not of the form MAJOR\.MINOR"):
        write_triton_repository(engine_artifact, tmp_path / "r3", cc_engines={"sm86": other})
    with pytest.raises(TrtQuantError, match=r"built for compute capability 8\.6, not 9\.0: key it by 8\.6"):
        write_triton_repository(engine_artifact, tmp_path / "r5", cc_engines={"9.0": other})
    older = with_engine(tiny_artifact, tmp_path / "old", b"plan-old", TWO_PROFILES, tensorrt="10.9.0")
    with pytest.raises(TrtQuantError, match=r"built with TensorRT 10\.9\.0, the served one with 10\.13\.3"):
        write_triton_repository(engine_artifact, tmp_path / "r6", cc_engines={"7.5": older})
    with pytest.raises(TrtQuantError, match="need the tensorrt backend"):
        write_triton_repository(
            engine_artifact, tmp_path / "r4", backend="onnxruntime", cc_engines={"8.6": other}
        )


# --- bad input ---------------------------------------------------------------------------------------------


def test_missing_model_file_for_backend(tiny_artifact: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ArtifactError, match=r"has no model\.plan, which the tensorrt backend serves: build a TensorRT"
    ):
        write_triton_repository(tiny_artifact, tmp_path / "repo", backend="tensorrt")
    broken = tmp_path / "no-int8"
    shutil.copytree(tiny_artifact, broken)
    (broken / INT8_ONNX).unlink()
    with pytest.raises(ArtifactError, match=r"has no model_int8\.onnx, which the onnxruntime backend serves"):
        write_triton_repository(broken, tmp_path / "repo")
    unrecorded = with_engine(tiny_artifact, tmp_path / "no-profiles", b"plan", [])
    with pytest.raises(ArtifactError, match="records no optimization profiles"):
        write_triton_repository(unrecorded, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_existing_repository_needs_overwrite(tiny_artifact: Path, tmp_path: Path) -> None:
    repo = write_triton_repository(tiny_artifact, tmp_path / "repo", name=NAME)
    (repo / "marker").write_text("kept", encoding="utf-8")
    with pytest.raises(TrtQuantError, match="already exists: pass --overwrite"):
        write_triton_repository(tiny_artifact, repo, name="other")
    assert (repo / "marker").is_file() and (repo / NAME).is_dir()
    write_triton_repository(tiny_artifact, repo, name="other", overwrite=True)
    assert sorted(p.name for p in repo.iterdir()) == ["README.md", "other", "other_model", "other_tokenizer"]
    with pytest.raises(TrtQuantError, match="holds the artifact itself"):
        write_triton_repository(tiny_artifact, tiny_artifact.parent, overwrite=True)


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".hidden", "a b", "x\n", "", "-x"])
def test_model_names_triton_rejects(tiny_artifact: Path, tmp_path: Path, name: str) -> None:
    with pytest.raises(TrtQuantError, match="cannot be a Triton model directory: pass --name"):
        write_triton_repository(tiny_artifact, tmp_path / "repo", name=name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"preferred_batch_sizes": (4, 16)}, "Preferred batch size 16 is outside 1..8"),
        ({"max_batch": 0}, "--max-batch 0 is below 1"),
        ({"instances": 0}, "--instances 0 is below 1"),
        ({"max_queue_delay_us": -1}, "queue delay is negative"),
        ({"backend": "tensorflow"}, "Unknown Triton backend 'tensorflow'"),
        ({"kind": "tpu"}, "Unknown instance kind 'tpu'"),
    ],
)
def test_bad_options(tiny_artifact: Path, tmp_path: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(TrtQuantError, match=message):
        write_triton_repository(tiny_artifact, tmp_path / "repo", **options)
    assert not (tmp_path / "repo").exists()


# --- validation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "old", "new", "expected"),
    [
        (
            NAME,
            "data_type: TYPE_FP32",
            "data_type: TYPE_FP16",
            f"{NAME}: tensor 'logits' is TYPE_FP16 at the ensemble output but TYPE_FP32 at output 'logits' "
            f"of '{NAME}_model'.",
        ),
        (
            NAME,
            'key: "token_type_ids"',
            'key: "token_typeids"',
            f"{NAME}: input 'token_type_ids' of '{NAME}_model' is not mapped to any ensemble tensor.",
        ),
        (
            NAME,
            'key: "token_type_ids"',
            'key: "token_typeids"',
            f"{NAME}: tensor 'token_type_ids' is mapped to 'token_typeids', not an input of '{NAME}_model'.",
        ),
        (
            NAME,
            f'model_name: "{NAME}_model"',
            'model_name: "missing"',
            f"{NAME}: step model 'missing' is not in the repository.",
        ),
        (
            NAME,
            "max_batch_size: 4",
            "max_batch_size: 8",
            f"{NAME}: max_batch_size 8 is above the 4 of step model '{NAME}_tokenizer'.",
        ),
        (
            f"{NAME}_model",
            "dims: [ 3 ]",
            "dims: [ 4 ]",
            f"{NAME}_model: output 'logits' has dims [-1, 4] (with batch) in config.pbtxt but [-1, 3] in the "
            "ONNX graph.",
        ),
        (
            f"{NAME}_model",
            "TYPE_INT64",
            "TYPE_INT32",
            f"{NAME}_model: input 'token_type_ids' is TYPE_INT32 in config.pbtxt but TYPE_INT64 in the "
            "ONNX graph.",
        ),
        (
            f"{NAME}_model",
            'default_model_filename: "model.onnx"',
            'default_model_filename: "other.onnx"',
            f"{NAME}_model: model file 1/other.onnx is missing.",
        ),
        (f"{NAME}_model", "kind: KIND_CPU", "kind: KIND_CPUS", "is not a valid Triton ModelConfig"),
        (
            f"{NAME}_tokenizer",
            f'name: "{NAME}_tokenizer"',
            'name: "renamed"',
            f"{NAME}_tokenizer: config.pbtxt names the model 'renamed'; it must equal its directory name.",
        ),
    ],
)
def test_validate_reports_errors(
    onnx_repo: Path, tmp_path: Path, model: str, old: str, new: str, expected: str
) -> None:
    repo = Path(shutil.copytree(onnx_repo, tmp_path / "repo"))
    config = repo / model / "config.pbtxt"
    text = config.read_text(encoding="utf-8")
    assert old in text
    head, _, tail = text.rpartition(old)  # the last occurrence: in the ensemble, the encoder's step
    config.write_text(head + new + tail, encoding="utf-8")
    errors = validate_repository(repo)
    assert any(expected in error for error in errors), errors


def test_validate_missing_directory(tmp_path: Path) -> None:
    assert validate_repository(tmp_path / "none") == [
        f"{tmp_path / 'none'} is not a directory: pass the repository written by 'trt-quant triton'."
    ]
    assert validate_repository(tmp_path) == [f"{tmp_path} holds no model directories with a config.pbtxt."]


# --- the Python-backend tokenizer model --------------------------------------------------------------------


def test_tokenizer_model_imports_only_what_the_server_has() -> None:
    tree = ast.parse(tokenizer_source())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported == {"json", "numpy", "transformers", "triton_python_backend_utils"}


def test_tokenizer_model_matches_runtime_tokenizer(
    onnx_repo: Path, runtime: Any, pb_utils: ModuleType
) -> None:
    model = load_tokenizer_model(onnx_repo)
    texts = [*sentences(4), " ".join(["word"] * 100)]
    [single] = model.execute([text_request(pb_utils, texts)])
    encoded = arrays(single)
    assert_same_encoding(encoded, runtime.tokenize(texts))
    assert encoded["input_ids"].shape == (5, 64)  # the 100-word text is truncated at max_length

    pairs = sentences(5, seed=1)
    [paired] = model.execute([text_request(pb_utils, texts, pairs)])
    encoded = arrays(paired)
    assert_same_encoding(encoded, runtime.tokenize(texts, pairs))
    assert encoded["token_type_ids"].max() == 1

    # requests batched into one execute() share one padding length and keep their order
    first, second, third = model.execute(
        [
            text_request(pb_utils, texts[:2]),
            text_request(pb_utils, texts[2:3], pairs[2:3]),
            text_request(pb_utils, texts[3:]),
        ]
    )
    expected = runtime.tokenize(texts[:2] + texts[3:])
    merged = {name: np.concatenate([arrays(first)[name], arrays(third)[name]]) for name in INPUTS}
    assert_same_encoding(merged, expected)
    assert_same_encoding(arrays(second), runtime.tokenize(texts[2:3], pairs[2:3]))


def test_tokenizer_model_error_responses(onnx_repo: Path, runtime: Any, pb_utils: ModuleType) -> None:
    model = load_tokenizer_model(onnx_repo)
    responses = model.execute(
        [
            text_request(pb_utils, ["a valid text"]),
            text_request(pb_utils, ["fine", b""]),
            text_request(pb_utils, ["   "]),
            text_request(pb_utils, [b"\xffabc"]),
            text_request(pb_utils, ["one"], ["two", "three"]),
        ]
    )
    assert len(responses) == 5
    assert_same_encoding(arrays(responses[0]), runtime.tokenize(["a valid text"]))
    messages = [
        "TEXT[1] is empty: send at least one non-space character.",
        "TEXT[0] is empty: send at least one non-space character.",
        "TEXT[0] is not valid UTF-8 (invalid start byte): send UTF-8 encoded text.",
        "TEXT_PAIR has 2 texts and TEXT has 1: send one TEXT_PAIR per TEXT.",
    ]
    for response, message in zip(responses[1:], messages, strict=True):
        assert response.has_error() and response.output_tensors() == []
        assert (response.error().message(), response.error().code()) == (
            message,
            pb_utils.TritonError.INVALID_ARG,
        )


def test_tokenizer_model_refuses_a_tokenizer_without_the_model_inputs(
    onnx_repo: Path, tmp_path: Path, pb_utils: ModuleType
) -> None:
    repo = Path(shutil.copytree(onnx_repo, tmp_path / "repo"))
    config = repo / f"{NAME}_tokenizer" / "config.pbtxt"
    config.write_text(
        config.read_text(encoding="utf-8").replace('"attention_mask"', '"position_ids"'), encoding="utf-8"
    )
    with pytest.raises(pb_utils.TritonModelException, match="does not produce position_ids"):
        load_tokenizer_model(repo)


def test_tokenizer_pads_short_texts_up_to_the_engine_profile_minimum(
    tiny_artifact: Path, runtime: Any, tmp_path: Path, pb_utils: ModuleType
) -> None:
    """An engine whose profiles start at 16 tokens gets at least 16 columns, the padding masked; the
    padded encoding gives the logits of the unpadded one (ONNX Runtime runs the same INT8 graph)."""
    profiles = [{"min": [1, 16], "opt": [4, 32], "max": [8, 64]}]
    artifact = with_engine(tiny_artifact, tmp_path / "engine16", b"plan", profiles, tensorrt="10.13.3")
    repo = write_triton_repository(artifact, tmp_path / "repo", name=NAME)
    tokenizer = parse(repo / f"{NAME}_tokenizer" / "config.pbtxt")
    assert tokenizer.parameters["sequence_ranges"].string_value == "[[16, 64]]"
    model = load_tokenizer_model(repo)
    texts = ["a model.", "the new model is fast."]
    [response] = model.execute([text_request(pb_utils, texts)])
    padded = arrays(response)
    unpadded = runtime.tokenize(texts)
    length = unpadded["input_ids"].shape[1]
    assert length < 16 and padded["input_ids"].shape == (2, 16)
    for name, array in unpadded.items():
        np.testing.assert_array_equal(padded[name][:, :length], array, err_msg=name)
    np.testing.assert_array_equal(padded["attention_mask"][:, length:], 0)
    np.testing.assert_array_equal(padded["input_ids"][:, length:], runtime.tokenizer.pad_token_id)
    np.testing.assert_allclose(runtime.run(padded)["logits"], runtime.run(unpadded)["logits"], atol=1e-5)

    long_texts = [" ".join(["model"] * 20)]  # 22 tokens: inside the profile, not padded further
    [response] = model.execute([text_request(pb_utils, long_texts)])
    assert_same_encoding(arrays(response), runtime.tokenize(long_texts))


def run_ensemble(
    repo: Path, name: str, pb_utils: ModuleType, texts: list[str], pairs: list[str] | None = None
) -> dict[str, np.ndarray]:
    """Follow the ensemble's maps without a server: TEXT (+ TEXT_PAIR) -> the tokenizer's model.py ->
    the repository's model.onnx -> the ensemble's outputs."""
    ensemble = parse(repo / name / "config.pbtxt")
    tokenizer_step, model_step = ensemble.ensemble_scheduling.step
    [response] = load_tokenizer_model(repo, name).execute([text_request(pb_utils, texts, pairs)])
    values = {tokenizer_step.output_map[key]: array for key, array in arrays(response).items()}
    session = create_session(repo / model_step.model_name / "1" / "model.onnx")
    feeds = {key: values[tensor] for key, tensor in model_step.input_map.items()}
    names = [output.name for output in session.get_outputs()]
    results = dict(zip(names, session.run(names, feeds), strict=True))
    for key, tensor in model_step.output_map.items():
        values[tensor] = results[key]
    return {tensor.name: values[tensor.name] for tensor in ensemble.output}


def test_ensemble_data_path_gives_the_runtime_logits(
    onnx_repo: Path, runtime: Any, pb_utils: ModuleType
) -> None:
    texts = sentences(6, seed=2)
    outputs = run_ensemble(onnx_repo, NAME, pb_utils, texts)
    assert list(outputs) == ["logits"]
    assert outputs["logits"].shape == (6, 3) and outputs["logits"].dtype == np.float32
    np.testing.assert_allclose(outputs["logits"], runtime.run_text(texts)["logits"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("family", "task", "outputs"),
    [
        ("bert", "question-answering", [("start_logits", [-1]), ("end_logits", [-1])]),
        ("distilbert", "sentence-embedding", [("sentence_embedding", [32])]),
    ],
)
def test_each_task_serves_its_outputs(
    family: str,
    task: str,
    outputs: list[tuple[str, list[int]]],
    tiny_model: Any,
    calib_file: Path,
    tmp_path: Path,
    pb_utils: ModuleType,
) -> None:
    from trt_quant.config import QuantConfig
    from trt_quant.convert import convert

    artifact = tmp_path / task
    convert(
        tiny_model(family, task),
        task,
        calib_file,
        artifact,
        QuantConfig(calib_samples=64, batch_size=16, max_length=32),
    )
    repo = write_triton_repository(artifact, tmp_path / "repo", name="m")
    assert validate_repository(repo) == []
    ensemble = parse(repo / "m" / "config.pbtxt")
    assert tensors(ensemble.output) == [(name, "TYPE_FP32", dims, False) for name, dims in outputs]
    runtime = load_runtime(artifact, backend="onnxruntime")
    model_inputs = [tensor.name for tensor in parse(repo / "m_model" / "config.pbtxt").input]
    assert model_inputs == runtime.input_names
    texts, pairs = sentences(3, seed=3), sentences(3, seed=4)
    served = run_ensemble(repo, "m", pb_utils, texts, pairs)
    expected = runtime.run_text(texts, pairs)
    assert list(served) == list(expected)
    for name, array in expected.items():
        np.testing.assert_allclose(served[name], array, rtol=1e-5, atol=1e-6, err_msg=name)


def test_stub_passes_strings_as_bytes_like_triton(pb_utils: ModuleType) -> None:
    tensor = pb_utils.Tensor("TEXT", np.array([["é"], [b"x"]], dtype=np.object_))
    assert tensor.as_numpy().tolist() == [["é".encode()], [b"x"]] and tensor.triton_dtype() == 13
    with pytest.raises(pb_utils.TritonModelException, match=r"np\.object_"):
        pb_utils.Tensor("TEXT", np.array(["text"]))
    with pytest.raises(TypeError):
        pb_utils.InferenceResponse(output_tensors=[np.zeros(1)])


# --- client script ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_client_builds_the_ensemble_inputs(protocol: str) -> None:
    client = load_module(CLIENT, "triton_client")
    module = client.client_module(protocol)
    text, pair = client.build_inputs(module, ["a question", "another"], ["context", "more"])
    assert [(t.name(), t.shape(), t.datatype()) for t in (text, pair)] == [
        ("TEXT", [2, 1], "BYTES"),
        ("TEXT_PAIR", [2, 1], "BYTES"),
    ]
    assert len(client.build_inputs(module, ["only"])) == 1
    with pytest.raises(SystemExit):
        client.parse_args(["--model", "m", "--text", "a", "--pair", "b", "--pair", "c"])
    assert client.parse_args(["--model", "m", "--text", "a"]).protocol == "http"


def test_client_sends_texts_and_prints_outputs_and_latency(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import tritonclient.http as http

    client = load_module(CLIENT, "triton_client")
    sent: list[tuple[str, list[str]]] = []

    class Result:
        def as_numpy(self, name: str) -> np.ndarray:
            return np.array([[0.5, -0.5]], dtype=np.float32)

    class FakeServer:
        def __init__(self, url: str) -> None:
            assert url == "localhost:8000"

        def get_model_metadata(self, model: str) -> dict[str, Any]:
            return {"outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 2]}]}

        def infer(self, model: str, inputs: list[Any], outputs: list[Any]) -> Result:
            sent.append((model, [tensor.name() for tensor in inputs]))
            assert [output.name() for output in outputs] == ["logits"]
            return Result()

    monkeypatch.setattr(http, "InferenceServerClient", FakeServer)
    client.main(["--model", "m", "--text", "héllo", "--repeat", "4", "--warmup", "1"])
    assert sent == [("m", ["TEXT"])] * 5
    printed = capsys.readouterr().out
    assert "logits float32 [1, 2]" in printed
    assert re.search(
        r"latency over 4 requests of 1 texts \(http\): p50 [\d.]+ ms, p90 [\d.]+ ms, mean", printed
    )
