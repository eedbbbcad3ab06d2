"""The runtime capability table: what each TensorRT-LLM runtime plans on each GPU, and why not the rest."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from trtq.cli import main
from trtq.errors import UnknownNameError, UnsupportedError
from trtq.registry import FORMATS, get_gpu, list_gpus
from trtq.registry.runtimes import (
    architecture_of, default_runtime_name, format_refusal, get_runtime, kv_cache_refusal, list_runtimes,
    plannable_formats, require_format,
)

ROOT = Path(__file__).resolve().parents[2]


def _names(gpu: str, runtime: str | None = None) -> list[str]:
    return [f.name for f in plannable_formats(get_gpu(gpu), get_runtime(runtime))]


def test_b200_never_gets_int8_sq_or_awq_under_the_default_runtime():
    assert default_runtime_name() == "trtllm@1.2"
    b200 = _names("B200")
    assert "nvfp4" in b200 and "fp8" in b200
    assert not {"int8_sq", "int4_awq", "w4a8_awq"} & set(b200)
    for fmt in ("int8_sq", "int4_awq", "w4a8_awq"):
        with pytest.raises(UnsupportedError, match=f"format {fmt} is not supported on B200 .* by trtllm@1.2"):
            require_format(get_gpu("B200"), fmt, get_runtime(None))


def test_l40s_gets_w4a8():
    assert _names("L40S") == ["bf16", "fp8", "int4_awq", "w4a8_awq"]
    assert architecture_of(get_gpu("L40S")) == "ada"


def test_a100_gets_int8_sq_only_with_the_legacy_engine_runtime():
    assert "int8_sq" not in _names("A100") and _names("A100") == ["bf16", "int4_awq"]
    assert _names("A100", "trtllm-engine@1.2") == ["bf16", "int8_sq", "int4_awq"]
    assert "int8_sq" not in _names("A100", "trtllm@main")
    reason = format_refusal(get_gpu("A100"), "int8_sq", get_runtime(None))
    assert "not in TensorRT-LLM's PyTorch backend" in reason and "trtllm-engine@1.2" in reason


def test_hopper_and_blackwell_under_each_runtime():
    assert _names("H100") == ["bf16", "fp8", "int4_awq", "w4a8_awq", "fp8_block"]
    assert _names("H100", "trtllm-engine@1.2") == ["bf16", "fp8", "int8_sq", "int4_awq", "w4a8_awq"]
    assert _names("B200", "trtllm-engine@1.2") == ["bf16", "fp8", "int8_sq", "int4_awq", "w4a8_awq", "nvfp4"]


def test_every_runtime_has_an_entry_for_every_registered_format_and_each_entry_a_source():
    for runtime in list_runtimes():
        assert set(FORMATS) <= set(runtime.formats), runtime.name
        assert all(s.source for s in runtime.formats.values()) and all(s.source for s in runtime.kv_cache.values())
        # fp8_block is named (Hopper, Blackwell) even before the format registry has it.
        block = runtime.formats["fp8_block"]
        assert set(block.archs) == ({"hopper", "blackwell"} if runtime.backend == "pytorch" else set())
    for gpu in list_gpus():
        assert architecture_of(gpu) is not None, gpu.name


def test_kv_cache_formats_and_the_nvfp4_coupling():
    runtime = get_runtime(None)
    assert kv_cache_refusal(get_gpu("A100"), "fp8", runtime, {"int4_awq"}) is None
    assert kv_cache_refusal(get_gpu("B200"), "nvfp4", runtime, {"fp8"}) is None
    assert "needs a layer in fp8" in kv_cache_refusal(get_gpu("B200"), "nvfp4", runtime, {"bf16"})
    assert "Blackwell only" in kv_cache_refusal(get_gpu("H100"), "nvfp4", runtime, {"fp8"})
    assert "sm89+" in kv_cache_refusal(get_gpu("A100"), "fp8", get_runtime("trtllm-engine@1.2"), {"int8_sq"})


def test_unknown_runtime_is_one_line(capsys):
    with pytest.raises(UnknownNameError, match="unknown runtime 'trtllm@0.9'; known runtimes: trtllm@1.2, "):
        get_runtime("trtllm@0.9")
    assert main(["formats", "--gpu", "B200", "--runtime", "trtllm@0.9"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_formats_command_shows_what_is_plannable_and_why_not(capsys):
    assert main(["formats", "--gpu", "B200", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {r["format"]: r for r in data["runtimes"]["trtllm@1.2"]}
    assert data["architecture"] == "blackwell"
    assert rows["nvfp4"]["plannable"] and rows["fp8"]["plannable"]
    assert not rows["int8_sq"]["plannable"] and "SmoothQuant" in rows["int8_sq"]["why"]
    assert not rows["int4_awq"]["plannable"] and "not Blackwell" in rows["int4_awq"]["why"]
    assert rows["kv:fp8"]["plannable"]
    assert main(["formats", "--gpu", "A100", "--runtime", "all", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["runtimes"]) == {r.name for r in list_runtimes()}
    engine = {r["format"]: r["plannable"] for r in data["runtimes"]["trtllm-engine@1.2"]}
    assert engine["int8_sq"] and not engine["fp8"]
    assert main(["formats", "--gpu", "H100", "--model", "mistral-7b", "--json"]) == 0
    rows = {r["format"]: r for r in json.loads(capsys.readouterr().out)["runtimes"]["trtllm@1.2"]}
    assert "not in the model matrix for Mistral" in rows["w4a8_awq"]["why"] and rows["w4a8_awq"]["plannable"]
    assert main(["formats", "--gpu", "L40S"]) == 0
    assert "w4a8_awq" in capsys.readouterr().out


def test_default_runtime_is_the_release_docker_pins():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    tag = re.search(r"^ARG TRTLLM_IMAGE=nvcr\.io/nvidia/tensorrt-llm/release:(\S+)$", dockerfile, re.M).group(1)
    runtime = get_runtime(None)
    assert runtime.release == tag and runtime.backend == "pytorch"
    assert tag.startswith(runtime.version + ".")
