"""Every TensorRT name trt-quant uses exists, exactly, in TensorRT 10 and in TensorRT 11, and none of the
APIs TensorRT 10/11 removed is used.

The names each release defines are committed in tests/data/tensorrt_api_10.txt and _11.txt, written by
scripts/tensorrt_api_names.py from the ``tensorrt-cu12-bindings`` wheels (the string literals the
compiled module's code registers with pybind11, read exactly, plus its ``__init__.py``); this test
downloads nothing. A used name passes only when it is an entry of both lists, never a part of one.

The uses are collected with ``ast``: chains on the module (``trt.X.Y``, ``self._trt.X``) in every project
file, and in trt_quant/engine/build.py and trt_quant/runtime/trt.py the attributes and methods of TensorRT
objects (the explicit ``TENSORRT_ATTRIBUTES``, cross-checked against the source together with
``NOT_TENSORRT`` so neither list can go stale), keyword arguments of those calls, overridden virtual
methods and ``DataType`` member names.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trt_quant.runtime.trt import TORCH_DTYPES

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
RELEASES = ("10", "11")
TENSORRT_SOURCES = (ROOT / "trt_quant" / "engine" / "build.py", ROOT / "trt_quant" / "runtime" / "trt.py")
MODULE_NAME = "trt"  # the local name of the tensorrt module (also ``self._trt``)

# Methods and attributes trt-quant calls on TensorRT objects (builder, network, parser, configs, engine...).
TENSORRT_ATTRIBUTES = frozenset({
    "add_optimization_profile", "build_serialized_network", "builder_optimization_level", "combine",
    "create_builder_config", "create_engine_inspector", "create_execution_context", "create_network",
    "create_optimization_profile", "create_timing_cache", "desc", "deserialize_cuda_engine",
    "device_memory_size_v2", "execute_async_v3", "get_engine_information", "get_error", "get_input",
    "get_tensor_dtype", "get_tensor_mode", "get_tensor_name", "get_tensor_profile_shape", "get_tensor_shape",
    "name", "node_name", "num_errors", "num_inputs", "num_io_tensors", "num_optimization_profiles", "parse",
    "profiling_verbosity", "progress_monitor", "serialize", "set_device_memory", "set_input_shape",
    "set_memory_pool_limit", "set_optimization_profile_async", "set_shape", "set_tensor_address",
    "set_timing_cache",
})  # fmt: skip
# Attributes used in those files on other objects (torch, numpy, paths, trt-quant's own classes).
NOT_TENSORRT = frozenset({
    "SerializeToString", "__class__", "__name__", "addresses", "capture_failed", "close", "context",
    "compute_capability", "copy_", "cpu", "cuda_stream", "data", "data_ptr", "describe", "encode", "engine", "execute",
    "fp32_islands", "get", "gpu", "graph", "inputs", "is_dir", "is_file", "isdigit", "items", "join", "layers",
    "max_length", "mkdir", "model", "move_to_end", "n", "numel", "numpy", "optimization_level", "outputs",
    "pad_token_id", "parent", "per_token", "plan", "pop", "popitem", "precision", "profile", "quantization",
    "read_bytes", "record", "replay", "resolved_profiles", "seconds", "select_profile", "sequence",
    "set_addresses", "set_input_shapes", "sha256", "shape", "split", "strip", "tensorrt", "tensorrt_version",
    "timing_cache", "to_dict", "update", "values", "weight_bits", "with_name", "workspace_mib",
})  # fmt: skip
# Removed in TensorRT 10 or 11 (each is also checked to be absent from the 11 list).
REMOVED_ATTRIBUTES = frozenset({
    "execute_async_v2", "get_binding_index", "get_binding_shape", "set_binding_shape", "binding_is_input",
    "get_binding_name", "get_binding_dtype", "num_bindings", "get_profile_shape", "build_engine",
    "int8_calibrator", "set_dynamic_range", "max_workspace_size", "device_memory_size",
    "platform_has_fast_fp16", "platform_has_fast_int8",
})  # fmt: skip
REMOVED_NAMES_IN_BINARY = REMOVED_ATTRIBUTES | {"EXPLICIT_BATCH", "FP16", "IInt8EntropyCalibrator2"}
REMOVED_PATTERNS = (
    r"BuilderFlag\.(INT8|FP16|BF16|FP8|INT4)\b",
    r"\bEXPLICIT_BATCH\b",
    r"\bIInt8\w*Calibrator\w*",
    *(rf"\b{name}\b" for name in sorted(REMOVED_ATTRIBUTES - {"build_engine", "device_memory_size"})),
)
PROJECT_FILES = sorted([*(ROOT / "trt_quant").rglob("*.py"), *(ROOT / "scripts").glob("*.py")])


def release_names(major: str) -> frozenset[str]:
    """The names TensorRT ``major`` defines, from the committed data file (comment lines skipped)."""
    lines = (DATA / f"tensorrt_api_{major}.txt").read_text(encoding="utf-8").splitlines()
    return frozenset(line for line in lines if line and not line.startswith("#"))


@pytest.fixture(scope="module", params=RELEASES)
def release(request: pytest.FixtureRequest) -> tuple[str, frozenset[str]]:
    return request.param, release_names(request.param)


def module_chain(node: ast.Attribute) -> list[str] | None:
    """``["Logger", "WARNING"]`` for ``trt.Logger.WARNING`` or ``self._trt.Logger.WARNING``, else None."""
    chain: list[str] = []
    current: ast.expr = node
    while isinstance(current, ast.Attribute):
        if current.attr == f"_{MODULE_NAME}" and ast.unparse(current.value) == "self":
            return chain[::-1]
        chain.append(current.attr)
        current = current.value
    return chain[::-1] if isinstance(current, ast.Name) and current.id == MODULE_NAME else None


def imported_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def object_attributes(tree: ast.AST) -> Iterator[ast.Attribute]:
    """Attributes of objects: not module chains, not ``self.x``, not on imported modules or ``super()``."""
    modules = imported_names(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or module_chain(node) is not None:
            continue
        root, depth = node.value, 1
        while isinstance(root, ast.Attribute):
            root, depth = root.value, depth + 1
        if isinstance(root, ast.Name) and (root.id in modules or (root.id == "self" and depth == 1)):
            continue
        if isinstance(root, ast.Call) and isinstance(root.func, ast.Name) and root.func.id == "super":
            continue
        yield node


class TensorRTUses:
    """What trt_quant/engine/build.py and trt_quant/runtime/trt.py use of TensorRT."""

    def __init__(self, paths: tuple[Path, ...]) -> None:
        self.module_names: set[str] = set()
        self.attributes: set[str] = set()
        self.keywords: set[str] = set()
        self.overrides: set[str] = set()
        for path in paths:
            self.add(ast.parse(path.read_text(encoding="utf-8")))

    def add(self, tree: ast.AST) -> None:
        for node in ast.walk(tree):
            chain = module_chain(node) if isinstance(node, ast.Attribute) else None
            self.module_names.update(chain or [])
            if isinstance(node, ast.ClassDef) and any(
                isinstance(base, ast.Attribute) and module_chain(base) for base in node.bases
            ):
                methods = {item.name for item in node.body if isinstance(item, ast.FunctionDef)}
                self.overrides |= methods - {"__init__"}
            function = node.func if isinstance(node, ast.Call) else None
            if isinstance(function, ast.Attribute) and function.attr in TENSORRT_ATTRIBUTES:
                self.keywords |= {keyword.arg for keyword in node.keywords if keyword.arg}
        self.attributes |= {node.attr for node in object_attributes(tree)}


@pytest.fixture(scope="module")
def uses() -> TensorRTUses:
    return TensorRTUses(TENSORRT_SOURCES)


def test_attribute_lists_match_the_source(uses: TensorRTUses) -> None:
    assert not TENSORRT_ATTRIBUTES & NOT_TENSORRT
    unclassified = uses.attributes - TENSORRT_ATTRIBUTES - NOT_TENSORRT
    assert not unclassified, f"classify as TENSORRT_ATTRIBUTES or NOT_TENSORRT: {sorted(unclassified)}"
    stale = (TENSORRT_ATTRIBUTES | NOT_TENSORRT) - uses.attributes
    assert not stale, f"no longer used, remove from the lists: {sorted(stale)}"


def test_tensorrt_enters_only_through_require_tensorrt(uses: TensorRTUses) -> None:
    """The module is bound to ``trt`` / ``self._trt`` only, so ``module_chain`` sees every use of it."""
    for path in TENSORRT_SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                aliases = [alias.asname for alias in node.names if alias.name == "tensorrt"]
                assert set(aliases) <= {None, MODULE_NAME}, path
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                function = node.value.func
                if isinstance(function, ast.Name) and function.id == "require_tensorrt":
                    assert ast.unparse(node.targets[0]) in (MODULE_NAME, f"self._{MODULE_NAME}"), path
    assert {"STRONGLY_TYPED", "NetworkDefinitionCreationFlag", "execute_async_v3"} <= (
        uses.module_names | uses.attributes
    )


def module_uses(paths: list[Path]) -> set[str]:
    """Every name in a chain on the tensorrt module (``trt.X.Y``, ``self._trt.X``) in ``paths``."""
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute):
                names.update(module_chain(node) or [])
    return names


def test_every_used_tensorrt_name_exists_exactly(
    release: tuple[str, frozenset[str]], uses: TensorRTUses
) -> None:
    major, names = release
    used = {
        "module": uses.module_names | module_uses(PROJECT_FILES),
        "object attribute": set(TENSORRT_ATTRIBUTES),
        "keyword argument": uses.keywords,
        "overridden method": uses.overrides,
        "DataType member": set(TORCH_DTYPES),
    }
    missing = {kind: sorted(name for name in group if name not in names) for kind, group in used.items()}
    assert not any(missing.values()), f"not in the TensorRT {major} bindings: {missing}"
    assert uses.keywords == {"ignore_mismatch"}
    assert uses.overrides == {"phase_start", "step_complete", "phase_finish"}


def test_the_lists_hold_whole_names_only() -> None:
    """Parts of names (what a suffix match accepted) are not entries; whole names are."""
    for major in RELEASES:
        names = release_names(major)
        assert {"IExecutionContext", "set_input_shape", "execute_async_v3", "BuilderFlag", "STRONGLY_TYPED",
                "NetworkDefinitionCreationFlag", "serialize", "deserialize_cuda_engine", "combine",
                "__version__"} <= names, major  # fmt: skip
        assert not {"e", "execute_async_v", "hape", "erialize", "TRONGLY_TYPED", "xecutionContext"} & names


def test_removed_apis_are_gone_and_the_extraction_sees_them_in_10() -> None:
    """Removed in 10: absent from both lists. Deprecated in 10 and removed in 11: in the 10 list only,
    which shows the extraction finds them where they exist."""
    ten, eleven = release_names("10"), release_names("11")
    assert sorted(name for name in REMOVED_NAMES_IN_BINARY if name in eleven) == []
    removed_in_10 = {"execute_async_v2", "get_binding_index", "num_bindings", "build_engine",
                     "max_workspace_size", "set_binding_shape"}  # fmt: skip
    assert removed_in_10 <= REMOVED_NAMES_IN_BINARY and not removed_in_10 & ten
    removed_in_11 = {"EXPLICIT_BATCH", "FP16", "IInt8EntropyCalibrator2", "int8_calibrator",
                     "set_dynamic_range", "platform_has_fast_fp16"}  # fmt: skip
    assert removed_in_11 <= REMOVED_NAMES_IN_BINARY and removed_in_11 <= ten
    assert {"execute_v2", "STRONGLY_TYPED"} <= ten & eleven  # still there in 10 and 11


def test_no_removed_api_in_the_project() -> None:
    for path in PROJECT_FILES:
        source = path.read_text(encoding="utf-8")
        for pattern in REMOVED_PATTERNS:
            match = re.search(pattern, source)
            where = path.relative_to(ROOT)
            assert match is None, f"{where} uses {match.group(0)!r}, removed in TensorRT 10/11"
        tree = ast.parse(source)
        modules = imported_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in REMOVED_ATTRIBUTES:
                receiver = node.value
                assert isinstance(receiver, ast.Name) and receiver.id in modules, (
                    f"{path.relative_to(ROOT)}:{node.lineno} uses .{node.attr}, removed in TensorRT 10/11"
                )


def top_level_imports(tree: ast.Module) -> Iterator[str]:
    """Modules imported when the file is imported (outside function bodies)."""
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        stack.extend(ast.iter_child_nodes(node))


def test_tensorrt_is_imported_only_inside_functions() -> None:
    for path in PROJECT_FILES:
        imports = list(top_level_imports(ast.parse(path.read_text(encoding="utf-8"))))
        assert not [name for name in imports if name.split(".")[0] == "tensorrt"], path


def load_names_script() -> Any:
    path = ROOT / "scripts" / "tensorrt_api_names.py"
    spec = importlib.util.spec_from_file_location("tensorrt_api_names", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def tiny_elf(code: bytes, rodata: bytes, relocations: list[int]) -> bytes:
    """An ELF64 file with .text at 0x1000, .rodata at 0x2000, a .rela.dyn and a section-name table."""
    names = b"\x00.text\x00.rodata\x00.rela.dyn\x00.shstrtab\x00"
    rela = b"".join(struct.pack("<QQq", 0x3000, 8, addend) for addend in relocations)  # R_X86_64_RELATIVE
    body = [code, rodata, rela, names]
    offsets = [64 + sum(len(part) for part in body[:index]) for index in range(len(body))]
    headers = [bytes(64)]
    specs = [(1, 1, 0x6, 0x1000), (7, 1, 0x2, 0x2000), (15, 4, 0x2, 0), (25, 3, 0, 0)]
    for (name, kind, flags, address), offset, part in zip(specs, offsets, body, strict=True):
        headers.append(struct.pack("<IIQQQQIIQQ", name, kind, flags, address, offset, len(part), 0, 0, 1, 0))
    section_offset = 64 + sum(len(part) for part in body)
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x28, section_offset)
    struct.pack_into("<HHH", header, 0x3A, 64, len(headers), 4)
    return bytes(header) + b"".join(body) + b"".join(headers)


def test_extraction_reads_tail_merged_literals_exactly() -> None:
    """``serialize`` stored inside ``deserialize`` is found where the code points, and only there."""
    script = load_names_script()
    rodata = b"deserialize\x00two words\x00combine\x00"

    def lea(position: int, target: int) -> bytes:  # lea rdi, [rip + target - next instruction]
        return b"\x48\x8d\x3d" + struct.pack("<i", 0x2000 + target - (0x1000 + position + 7))

    code = lea(0, 2) + lea(7, 0) + lea(14, 12)  # "serialize", "deserialize", "two words"
    names = script.registered_names(tiny_elf(code, rodata, relocations=[0x2000 + 22]))
    assert names == {"serialize", "deserialize", "combine"}
