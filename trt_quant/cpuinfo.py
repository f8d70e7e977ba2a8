"""What CPU a benchmark ran on: model name and the instruction sets INT8 and bf16 speed depend on.

INT8 GEMMs are about twice as fast with VNNI (AVX-512 VNNI or AVX-VNNI) as with plain AVX2, bf16 needs
AVX512-BF16 or AMX, so every CPU benchmark table names them.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Label shown in tables -> /proc/cpuinfo flag.
FLAGS = {
    "AVX2": "avx2",
    "AVX-512": "avx512f",
    "AVX-512 VNNI": "avx512_vnni",
    "AVX-VNNI": "avx_vnni",
    "AVX512-BF16": "avx512_bf16",
    "AMX": "amx_tile",
}


@dataclass
class CpuInfo:
    """CPU model name, logical core count, which of ``FLAGS`` it has, and OpenVINO's view of it."""

    model: str
    cores: int
    flags: dict[str, bool]
    openvino_capabilities: list[str] = field(default_factory=list)

    @property
    def vnni(self) -> bool:
        return self.flags.get("AVX-512 VNNI", False) or self.flags.get("AVX-VNNI", False)

    def summary(self) -> str:
        """One line for a report: ``AMD EPYC, 2 cores, AVX2 yes, AVX-512 VNNI no, ...``."""
        parts = [self.model, f"{self.cores} cores"]
        parts += [f"{label} {'yes' if present else 'no'}" for label, present in self.flags.items()]
        if self.openvino_capabilities:
            parts.append("OpenVINO CPU: " + " ".join(self.openvino_capabilities))
        return ", ".join(parts)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def parse_cpuinfo(text: str) -> tuple[str, set[str]]:
    """Model name and flag set of the first processor in /proc/cpuinfo text."""
    model, flags = "", set[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, flags


def openvino_capabilities() -> list[str]:
    """OpenVINO's OPTIMIZATION_CAPABILITIES of its CPU device (FP32, INT8, BF16...); empty without it."""
    try:
        import openvino
    except ImportError:
        return []
    try:
        return [str(item) for item in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
    except RuntimeError:
        return []


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """The CPU this process runs on (model and flags from ``cpuinfo``, else what ``platform`` says)."""
    try:
        model, flags = parse_cpuinfo(cpuinfo.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        model, flags = "", set()
    return CpuInfo(
        model=model or platform.processor() or platform.machine() or "unknown CPU",
        cores=os.cpu_count() or 1,
        flags={label: flag in flags for label, flag in FLAGS.items()},
        openvino_capabilities=openvino_capabilities(),
    )
