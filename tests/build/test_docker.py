"""docker/ agrees with pyproject: the NGC image tag is the [gpu] TensorRT-LLM pin; [bench] pins are documented."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _extras() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_ngc_image_tag_is_the_gpu_extra_pin():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    tag = re.search(r"^ARG TRTLLM_IMAGE=nvcr\.io/nvidia/tensorrt-llm/release:(\S+)$", dockerfile, re.M).group(1)
    pins = [r for r in _extras()["gpu"] if r.replace(" ", "").startswith("tensorrt-llm")]
    assert pins == [f"tensorrt-llm=={tag}"], f"pyproject [gpu] {pins} vs docker image tag {tag}"
    assert f"'{tag}'" in dockerfile  # the build checks the image's TensorRT-LLM is that version
    assert f"release:{tag}" in (ROOT / "docker" / "README.md").read_text()


def test_bench_extra_pins_are_what_the_readme_says():
    readme = (ROOT / "docker" / "README.md").read_text()
    bench = {r.split("==")[0]: r.split("==")[1] for r in _extras()["bench"]}
    assert set(bench) == {"aiperf", "genai-perf"}
    assert f"AIPerf {bench['aiperf']}" in readme and f"GenAI-Perf {bench['genai-perf']}" in readme
