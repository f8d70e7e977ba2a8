"""The package layout's rules: no import cycles between trt_quant's modules, and Model Optimizer imported
and its quantizer objects touched only inside the quantize stage (``trt_quant/quantize/``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "trt_quant"
QUANTIZE_STAGE = PACKAGE / "quantize"
# Model Optimizer's quantizer objects, as code outside the quantize stage would reach them.
QUANTIZER_ATTRIBUTES = frozenset(
    {"input_quantizer", "weight_quantizer", "output_quantizer", "_amax", "amax", "TensorQuantizer"}
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported_modules(path: Path) -> set[str]:
    """trt_quant modules ``path`` imports, anywhere in the file (lazy imports count: a cycle is a cycle)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in MODULES and name != "trt_quant")
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in ``graph`` as the list of its modules, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_reports_a_cycle_and_accepts_a_tree() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_trt_quant_has_no_import_cycles() -> None:
    graph = {name: imported_modules(path) for name, path in MODULES.items()}
    # A package's __init__ importing its own submodules is how packages expose them, not a cycle.
    graph = {name: {t for t in targets if not t.startswith(name + ".")} for name, targets in graph.items()}
    assert find_cycle(graph) is None


@pytest.mark.parametrize(
    "path", sorted(p for p in PACKAGE.rglob("*.py") if QUANTIZE_STAGE not in p.parents), ids=module_name
)
def test_only_the_quantize_stage_imports_model_optimizer_or_touches_its_quantizers(path: Path) -> None:
    tree = ast.parse(path.read_text())
    imports = [
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    ] + [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [name for name in imports if name.split(".")[0] == "modelopt"]
    touched = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    touched |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert not touched & QUANTIZER_ATTRIBUTES


def test_the_command_line_starts_without_the_heavy_libraries() -> None:
    """``trt-quant --help``, ``check`` and ``serve`` start in a fraction of a second: the command's module
    imports torch, transformers, ONNX Runtime and SciPy only inside the commands that need them."""
    import subprocess
    import sys

    heavy = ("torch", "transformers", "onnxruntime", "scipy", "modelopt")
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys, trt_quant.cli.main; print([m for m in {heavy} if m in sys.modules])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert loaded == "[]", loaded
