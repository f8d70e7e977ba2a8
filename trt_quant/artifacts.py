"""The on-disk layout of one converted model and its ``manifest.json``.

An artifact directory holds the float ONNX, the INT8 ONNX, the tokenizer files, optionally a TensorRT
engine, and ``manifest.json`` with library versions, shapes, calibration settings, sha256 checksums of
every file and measured accuracy and size. Directories are written atomically: the new content is
staged in a hidden sibling directory and renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trt_quant.errors import ArtifactError, TrtQuantError

FORMAT_VERSION = 2  # 2: typed manifest sections (quantized_* names instead of int8_*/fp8_* keys)
MANIFEST = "manifest.json"
FLOAT_ONNX = "model_fp32.onnx"
INT8_ONNX = "model_int8.onnx"
TRT_ONNX = "model_trt.onnx"  # the TensorRT-ready graph an engine build parses
FP8_ONNX = "model_fp8.onnx"
QUANTIZED_ONNX = {"int8": INT8_ONNX, "fp8": FP8_ONNX}
"""The quantized graph's file by ``manifest.quantization.precision``."""
ENGINE = "model.plan"
TOKENIZER_DIR = "tokenizer"
MODEL_CONFIG = "config.json"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass
class TensorSpec:
    """A graph input or output: name, numpy dtype name and shape (ints, or names for dynamic axes)."""

    name: str
    dtype: str
    shape: list[int | str]


@dataclass
class MixedPrecisionRecord:
    """What an accuracy budget kept float: the budget, its metric, the scores and the INT8 FLOP share."""

    budget: str
    metric: str
    float_layers: list[str]
    score: float
    float_score: float
    int8_flop_share: float


@dataclass
class QuantizationRecord:
    """How the model was quantized and what its quantized graph holds."""

    precision: str = "int8"
    """"int8" or "fp8" (E4M3)."""
    method: str = "max"
    percentile: float | None = None
    library: str = "nvidia-modelopt"
    calib_file: str = ""
    calib_samples: int = 0
    calib_samples_requested: int = 0
    batch_size: int = 0
    max_length: int = 0
    quantize_residual: bool = False
    weights: str = ""
    activations: str = ""
    quantized_linears: int = 0
    float_linears: list[str] = field(default_factory=list)
    quantized_weight_initializers: int = 0
    """Weights stored in the quantized type (INT8 or FP8) in the graph."""
    int8_embedding_tables: int = 0
    merged_duplicate_nodes: int = 0
    smoothquant_alpha: float | None = None
    gptq: bool = False
    """Weights rounded with GPTQ (the FP8 default) rather than to nearest."""
    weight_bits: int = 8
    quantize_attention: bool = False
    peg_groups: int = 0
    quantize_linear_nodes: int = 0
    dequantize_linear_nodes: int = 0
    opset: int = 0
    check: list[dict[str, Any]] = field(default_factory=list)
    """The TensorRT rules check's findings on the quantized graph."""
    mixed_precision: MixedPrecisionRecord | None = None
    qat: dict[str, Any] | None = None
    """How quantization-aware training ran (``trt-quant qat`` only)."""


@dataclass
class SizesRecord:
    """Sizes of the float and the quantized ONNX files."""

    float_onnx_bytes: int
    quantized_onnx_bytes: int

    @property
    def ratio(self) -> float:
        """Quantized size over float size."""
        return self.quantized_onnx_bytes / self.float_onnx_bytes


@dataclass
class AccuracyRecord:
    """The quantized graph against the float graph on held-out examples, or why it was not measured."""

    data: str
    """Where the held-out examples came from (or why there were none)."""
    backend: str | None = None
    examples: int | None = None
    mean_cosine: float | None = None
    min_cosine: float | None = None
    max_abs_diff: float | None = None
    top1_agreement: float | None = None


@dataclass
class TensorrtOnnxRecord:
    """How ``model_trt.onnx`` was written from the quantized graph."""

    file: str
    source: str
    precision: str
    fp32_islands: bool
    sha256: str
    bytes: int
    edits: dict[str, int] = field(default_factory=dict)
    """What each TensorRT-ready rewrite changed (counts)."""


@dataclass
class EngineRecord:
    """The TensorRT engine: how it was built, for which TensorRT and GPU, from which graph."""

    tensorrt: str
    gpu: str
    compute_capability: str
    file: str = ENGINE
    source: str = TRT_ONNX
    source_sha256: str = ""
    layers_report: str = ""
    precision: str = ""
    profiles: list[dict[str, Any]] = field(default_factory=list)
    workspace_mib: int | None = None
    optimization_level: int | None = None
    timing_cache: str | None = None
    bytes: int = 0
    build_seconds: float = 0.0


def _section(cls: type[Any], data: dict[str, Any] | None) -> Any:
    return None if data is None else cls(**data)


@dataclass
class Manifest:
    """Everything a later stage needs to know about a converted model; read and written only here."""

    name: str
    source_model: str
    family: str
    model_type: str
    task: str
    max_length: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    quantization: QuantizationRecord
    sizes: SizesRecord
    accuracy: AccuracyRecord
    versions: dict[str, str] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    engine: EngineRecord | None = None
    tensorrt_onnx: TensorrtOnnxRecord | None = None
    """How ``model_trt.onnx`` was written, or None before it is."""
    format_version: int = FORMAT_VERSION
    vocab_size: int = 0
    """Size of the token-id vocabulary."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        data = dict(data)
        data["inputs"] = [TensorSpec(**spec) for spec in data["inputs"]]
        data["outputs"] = [TensorSpec(**spec) for spec in data["outputs"]]
        quantization = dict(data["quantization"])
        quantization["mixed_precision"] = _section(MixedPrecisionRecord, quantization.get("mixed_precision"))
        data["quantization"] = QuantizationRecord(**quantization)
        data["sizes"] = SizesRecord(**data["sizes"])
        data["accuracy"] = AccuracyRecord(**data["accuracy"])
        data["engine"] = _section(EngineRecord, data.get("engine"))
        data["tensorrt_onnx"] = _section(TensorrtOnnxRecord, data.get("tensorrt_onnx"))
        return cls(**data)

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]

    @property
    def per_token(self) -> dict[str, bool]:
        """Which outputs have a sequence axis (per-token outputs)."""
        return {spec.name: len(spec.shape) > 1 and spec.shape[1] == "sequence" for spec in self.outputs}


def sha256_of(path: Path) -> str:
    """Return the hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_records(directory: Path) -> dict[str, dict[str, Any]]:
    """Checksum and size of every file under ``directory`` except the manifest, keyed by relative path."""
    records: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = path.relative_to(directory).as_posix()
        if relative != MANIFEST:
            records[relative] = {"sha256": sha256_of(path), "bytes": path.stat().st_size}
    return records


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Record checksums of every file in ``directory`` into ``manifest`` and write it atomically."""
    manifest.files = file_records(directory)
    temporary = directory / f".{MANIFEST}.{uuid.uuid4().hex}"
    temporary.write_text(manifest.to_json(), encoding="utf-8")
    os.replace(temporary, directory / MANIFEST)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a hidden temporary file renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.{uuid.uuid4().hex}"
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def check_output_dir(output: Path, overwrite: bool) -> None:
    """Refuse an existing output path unless ``overwrite`` is set."""
    if output.exists() and not overwrite:
        raise TrtQuantError(
            f"Output directory {output} already exists: pass --overwrite or choose another path."
        )
    if output.exists() and not output.is_dir():
        raise TrtQuantError(f"Output path {output} is a file: choose a directory path for the artifact.")
    ancestor = output.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise TrtQuantError(
            f"Output path {output} lies under the file {ancestor}: choose a path under a directory."
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise TrtQuantError(
            f"Cannot write under {ancestor}: choose an --output path in a writable directory."
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(output: Path) -> list[Path]:
    """Delete staging directories next to ``output`` left by processes that no longer run (killed runs)."""
    removed = []
    for candidate in output.parent.glob(f".{output.name}.staging-*"):
        pid = candidate.name.rsplit("-", 2)[-2]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


@contextlib.contextmanager
def staged_directory(output: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty hidden staging directory that replaces ``output`` only if the block succeeds.

    A failure (or a killed process) leaves ``output`` as it was: the previous artifact survives intact
    until the new one is complete, and no half-written directory ever sits at ``output``. Staging
    directories of killed runs are removed by the next run for the same output.
    """
    check_output_dir(output, overwrite)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    staging = output.parent / f".{output.name}.staging-{token}"
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(output)
        staging.mkdir()
    except OSError as error:
        raise TrtQuantError(
            f"Cannot create {output} ({error.strerror}): choose an --output path in a writable directory."
        ) from None
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    retired = output.parent / f".{output.name}.retired-{token}"
    if output.exists():
        os.replace(output, retired)
    os.replace(staging, output)
    shutil.rmtree(retired, ignore_errors=True)


def read_manifest(directory: Path) -> Manifest:
    """Read ``manifest.json`` of an artifact directory without verifying checksums."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"Artifact directory {directory} does not exist: run 'trt-quant convert' first.")
    path = directory / MANIFEST
    if not path.is_file():
        raise ArtifactError(
            f"{directory} has no {MANIFEST}, so it is not a trt-quant artifact: run 'trt-quant convert' into it."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(
            f"{path} is not valid JSON ({exc.__class__.__name__}): convert the model again."
        ) from exc
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        found = data.get("format_version") if isinstance(data, dict) else None
        raise ArtifactError(
            f"{path} has artifact format version {found}, this trt-quant reads version {FORMAT_VERSION}: "
            "convert the model again with this version."
        )
    try:
        return Manifest.from_dict(data)
    except (TypeError, KeyError) as exc:
        raise ArtifactError(
            f"{path} does not match the manifest this trt-quant reads ({exc}): convert the model again."
        ) from exc


def verify_files(directory: Path, manifest: Manifest) -> None:
    """Check every file listed in the manifest against its recorded sha256; name the first mismatch."""
    for relative, record in manifest.files.items():
        path = directory / relative
        if not path.is_file():
            raise ArtifactError(
                f"Artifact file {path} is missing: convert the model again "
                "(or pass --no-verify if you removed it on purpose)."
            )
        if sha256_of(path) != record["sha256"]:
            raise ArtifactError(
                f"Artifact file {path} was modified since conversion (sha256 mismatch): convert the model again "
                "(or pass --no-verify if you edited it on purpose)."
            )


def check_versions(directory: Path, manifest: Manifest) -> None:
    """Refuse an artifact written by a newer trt-quant or with a newer ONNX IR than this one reads (the
    ONNX check only where onnx is installed: Triton's Python-backend environment has only onnxruntime)."""
    from trt_quant import __version__

    made_by = manifest.versions.get("trt-quant", "0")
    if _release(made_by)[:2] > _release(__version__)[:2]:
        raise ArtifactError(
            f"{directory} was written by trt-quant {made_by}, newer than this trt-quant {__version__}: "
            "upgrade trt-quant or convert the model again with this version."
        )
    try:
        import onnx
    except ImportError:
        return
    made_with = manifest.versions.get("onnx", "0")
    if _release(made_with)[:2] > _release(onnx.__version__)[:2]:
        raise ArtifactError(
            f"{directory} was exported with onnx {made_with}, newer than the installed onnx {onnx.__version__}: "
            "upgrade onnx and onnxruntime or convert the model again here."
        )


def _release(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split("+")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def quantized_precision(manifest: Manifest) -> str:
    """The precision of an artifact's quantized graph: "int8" or "fp8"."""
    return manifest.quantization.precision


def quantized_onnx(manifest: Manifest) -> str:
    """The file name of an artifact's quantized graph (model_int8.onnx or model_fp8.onnx)."""
    return QUANTIZED_ONNX[quantized_precision(manifest)]


def check_name(name: str) -> str:
    """An artifact or model name: letters, digits, '_', '.', '-'; no path separators, not '.' or '..'."""
    if not NAME_PATTERN.fullmatch(name) or name in (".", ".."):
        raise TrtQuantError(
            f"Name '{name}' is not allowed: use letters, digits, '_', '.' and '-' only, starting with a letter "
            "or digit."
        )
    return name


def load_manifest(directory: Path, verify: bool = True) -> Manifest:
    """Read an artifact's manifest, check library versions and, unless ``verify`` is False, every checksum."""
    manifest = read_manifest(Path(directory))
    check_versions(Path(directory), manifest)
    if verify:
        verify_files(Path(directory), manifest)
    return manifest
