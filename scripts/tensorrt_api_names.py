"""Write the names the TensorRT Python bindings define, for tests/test_tensorrt_api.py (no GPU needed).

    python scripts/tensorrt_api_names.py [--release 10=10.13.3.9] [--release 11=11.4.0.106] [--output tests/data]

For each release, ``pip download``s the ``tensorrt-cu12-bindings`` wheel (``tensorrt-cu13-bindings`` when
there is no CUDA 12 build) from the package index and writes ``OUTPUT/tensorrt_api_<major>.txt``: one
name a line, every class, method, attribute and enum member the compiled module registers, plus the
module-level names of its ``__init__.py``.

The names are read from the x86-64 ``tensorrt.so`` exactly: pybind11 passes each name to Python as a
C string literal, and the linker stores a literal that ends another one (``serialize`` in
``deserialize``) inside the longer one, so the strings section alone gives neither. Instead this reads
the address of every literal the code loads (``lea reg, [rip+disp32]``) or a table holds (relative
relocations) and takes the C string starting exactly there; only strings that are Python identifiers
are kept. The data files are committed; the test downloads nothing.
"""

from __future__ import annotations

import argparse
import ast
import re
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("tensorrt-cu12-bindings", "tensorrt-cu13-bindings")
DEFAULT_RELEASES = ("10=10.13.3.9", "11=11.4.0.106")
IDENTIFIER = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")
# lea r64, [rip + disp32]: REX.W (+R) prefix, opcode 8D, ModRM with mod 00 and r/m 101
RIP_LEA = re.compile(rb"[\x48\x4c]\x8d[\x05\x0d\x15\x1d\x25\x2d\x35\x3d]", re.DOTALL)
R_X86_64_RELATIVE = 8
SHF_EXECINSTR = 0x4
SHT_RELA = 4


@dataclass(frozen=True)
class Section:
    name: str
    kind: int
    flags: int
    address: int
    offset: int
    size: int


def sections(binary: bytes) -> list[Section]:
    """The section headers of a little-endian ELF64 file."""
    if binary[:6] != b"\x7fELF\x02\x01":
        raise SystemExit("not a little-endian ELF64 file: this script reads the x86-64 Linux wheel")
    (header_offset,) = struct.unpack_from("<Q", binary, 0x28)
    entry_size, count, names_index = struct.unpack_from("<HHH", binary, 0x3A)
    raw = [struct.unpack_from("<IIQQQQ", binary, header_offset + i * entry_size) for i in range(count)]
    names_offset = raw[names_index][4]

    def name(start: int) -> str:
        end = binary.index(b"\x00", names_offset + start)
        return binary[names_offset + start : end].decode()

    return [Section(name(n), kind, flags, addr, off, size) for n, kind, flags, addr, off, size in raw]


def referenced_addresses(binary: bytes, table: list[Section]) -> Iterator[int]:
    """Addresses the code loads with a RIP-relative ``lea`` and addresses relative relocations store."""
    for section in table:
        if section.flags & SHF_EXECINSTR:
            code = binary[section.offset : section.offset + section.size]
            for match in RIP_LEA.finditer(code):
                (displacement,) = struct.unpack_from("<i", code, match.end())
                yield section.address + match.start() + 7 + displacement
        if section.kind == SHT_RELA:
            for start in range(section.offset, section.offset + section.size, 24):
                _, info, addend = struct.unpack_from("<QQq", binary, start)
                if info & 0xFFFFFFFF == R_X86_64_RELATIVE:
                    yield addend


def registered_names(binary: bytes) -> set[str]:
    """Identifiers among the C strings the module's code references in its read-only data."""
    table = sections(binary)
    rodata = [section for section in table if section.name.startswith(".rodata")]
    names = set()
    for address in referenced_addresses(binary, table):
        for section in rodata:
            if section.address <= address < section.address + section.size:
                start = section.offset + address - section.address
                end = binary.find(b"\x00", start, section.offset + section.size)
                if IDENTIFIER.fullmatch(binary[start:end]):
                    names.add(binary[start:end].decode())
                break
    return names


def python_names(source: str) -> set[str]:
    """Module-level functions, classes and assigned names (``__version__``) of a Python module."""
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        for target in node.targets if isinstance(node, ast.Assign) else []:
            if isinstance(target, ast.Name):
                names.add(target.id)
    return names


def download(version: str, directory: Path) -> Path:
    """The bindings wheel of ``version`` for this Python, from the package index."""
    errors = []
    for package in PACKAGES:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "--quiet", f"{package}=={version}", "-d", str(directory)]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = sorted(directory.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
        if wheels:
            return wheels[0]
        errors.append(f"{package}: {(result.stderr.strip().splitlines() or ['not found'])[-1]}")
    raise SystemExit(f"cannot download the TensorRT {version} bindings: {'; '.join(errors)}")


def wheel_names(wheel: Path) -> set[str]:
    """Names the compiled module registers and its package ``__init__.py`` defines."""
    with zipfile.ZipFile(wheel) as archive:
        members = archive.namelist()
        module = next(name for name in members if re.fullmatch(r"tensorrt[^/]*/tensorrt[^/]*\.so", name))
        init = f"{module.rsplit('/', 1)[0]}/__init__.py"
        names = registered_names(archive.read(module))
        if init in members:
            names |= python_names(archive.read(init).decode())
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--release", action="append", help="MAJOR=VERSION, e.g. 11=11.4.0.106 (repeatable)")
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "data")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as temporary:
        for release in args.release or DEFAULT_RELEASES:
            major, _, version = release.partition("=")
            wheel = download(version, Path(temporary))
            names = wheel_names(wheel)
            path = args.output / f"tensorrt_api_{major}.txt"
            header = (f"# {wheel.name}: names the compiled module registers (code-referenced C strings that "
                      f"are identifiers) and its __init__.py defines; written by scripts/{Path(__file__).name}")  # fmt: skip
            path.write_text("\n".join([header, *sorted(names)]) + "\n", encoding="utf-8")
            print(f"{path}: {len(names)} names from {wheel.name}")


if __name__ == "__main__":
    main()
