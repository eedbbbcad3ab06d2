"""trtq build: formats read from the checkpoint's own files, runtime x GPU refusals, engine commands (legacy).

The PyTorch-backend path (LLM API options, serve/bench commands, checkpoint validation) is in test_llm_api.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.gating import requires_ngc
from trtq.build.checkpoint import read_checkpoint
from trtq.build.trtllm import BuildOptions, plan_build
from trtq.cli import main
from trtq.errors import ArtifactError, InputError, UnsupportedError
from trtq.registry import get_gpu
from trtq.registry.runtimes import get_runtime

CHECKPOINTS = Path(__file__).parent / "checkpoints"


def _plan(name: str, gpu: str, tmp_path: Path, **kw):
    return plan_build(read_checkpoint(CHECKPOINTS / name), BuildOptions(gpu=get_gpu(gpu), **kw), tmp_path / "out")


def _flag(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


@pytest.mark.parametrize("name, formats", [
    ("fp8_int4awq", ["bf16", "fp8", "int4_awq"]),
    ("int8sq_int4awq", ["bf16", "int4_awq", "int8_sq"]),
    ("fp8_w4a8awq_kvfp8", ["bf16", "fp8", "w4a8_awq"]),
    ("fp8_nvfp4", ["bf16", "fp8", "nvfp4"]),
    ("int4awq_tp2", ["bf16", "int4_awq"]),
    ("fp8_only", ["bf16", "fp8"]),
])
def test_formats_come_from_the_checkpoint_files(name, formats):
    checkpoint = read_checkpoint(CHECKPOINTS / name)
    assert checkpoint.format_names == formats
    summary = checkpoint.summary()
    if name != "fp8_only":
        assert summary.quant_algo == "MIXED_PRECISION" and summary.layers


@pytest.mark.parametrize("name, gpu, refused, why", [
    ("fp8_int4awq", "A100", "fp8", "not ampere"),
    ("fp8_nvfp4", "H100", "nvfp4", "Blackwell's FP4"),
    ("fp8_nvfp4", "A100", "fp8", "not ampere"),
    ("int8sq_int4awq", "A100", "int8_sq", "INT8 SmoothQuant is not in TensorRT-LLM's PyTorch backend"),
    ("fp8_int4awq", "B200", "int4_awq", "not Blackwell"),
])
def test_format_the_runtime_lacks_on_the_gpu_is_refused_before_anything_runs(name, gpu, refused, why, tmp_path,
                                                                               capsys):
    with pytest.raises(UnsupportedError, match=f"format {refused} is not supported on .* by trtllm@1.2: .*{why}"):
        _plan(name, gpu, tmp_path)
    # Through the CLI: one line, exit 2, nothing written.
    assert main(["build", str(CHECKPOINTS / name), "--gpu", gpu, "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"format {refused} is not supported" in err[0]
    assert not (tmp_path / "o").exists()


def test_l40s_runs_w4a8_and_an_fp8_kv_cache_under_the_pytorch_backend(tmp_path):
    plan = _plan("fp8_w4a8awq_kvfp8", "L40S", tmp_path)
    assert plan.backend == "pytorch" and plan.runtime == "trtllm@1.2"
    assert plan.llm_api_options.kv_cache_config.dtype == "fp8"


def test_engine_backend_h100_mixed_fp8_int4_command(tmp_path):
    plan = _plan("fp8_int4awq", "H100", tmp_path, backend="engine", max_batch_size=64, max_seq_len=4096,
                 max_num_tokens=8192)
    assert plan.backend == "engine" and plan.runtime == "trtllm-engine@1.2"
    c = plan.command
    assert c[0] == "trtllm-build"
    assert _flag(c, "--checkpoint_dir") == str(CHECKPOINTS / "fp8_int4awq" / "trtllm")
    assert _flag(c, "--output_dir") == str(tmp_path / "out" / "engine")
    assert _flag(c, "--kv_cache_type") == "paged"
    assert _flag(c, "--gemm_plugin") == "auto"
    assert _flag(c, "--use_fp8_context_fmha") == "enable"     # FP8 attention projections
    assert (_flag(c, "--max_batch_size"), _flag(c, "--max_seq_len"), _flag(c, "--max_num_tokens")) == ("64", "4096", "8192")
    assert "--max_input_len" not in c                          # not given: trtllm-build's default
    assert _flag(c, "--workers") == "1"
    assert plan.serve_command[:4] == ["trtllm-serve", str(tmp_path / "out" / "engine"), "--backend", "tensorrt"]
    assert all(isinstance(a, str) for a in c)


def test_a100_gets_int8_sq_only_through_the_legacy_engine_runtime(tmp_path):
    plan = _plan("int8sq_int4awq", "A100", tmp_path, backend="engine")
    assert _flag(plan.command, "--use_fp8_context_fmha") == "disable"
    assert "sm80" in plan.flags_why["--use_fp8_context_fmha"] or "no FP8" in plan.flags_why["--use_fp8_context_fmha"]
    legacy = _plan("int8sq_int4awq", "A100", tmp_path, backend="engine", runtime=get_runtime("trtllm-engine@1.2"))
    assert legacy.command == plan.command
    # Through the CLI the legacy runtime builds an engine without --backend.
    assert main(["build", str(CHECKPOINTS / "int8sq_int4awq"), "--gpu", "A100", "--runtime", "trtllm-engine@1.2",
                 "-o", str(tmp_path / "o"), "--dry-run"]) == 0
    # The legacy runtime is an engine path: asking it for the PyTorch backend is refused with the reason.
    with pytest.raises(UnsupportedError, match="trtllm-engine@1.2 is the legacy TensorRT engine path"):
        _plan("int8sq_int4awq", "A100", tmp_path, runtime=get_runtime("trtllm-engine@1.2"))


def test_engine_backend_is_refused_where_the_runtime_has_no_trtllm_build(tmp_path, capsys):
    with pytest.raises(UnsupportedError, match=r"trtllm@main has no TensorRT engine path: .*#15763"):
        _plan("fp8_int4awq", "H100", tmp_path, backend="engine", runtime=get_runtime("trtllm@main"))
    assert main(["build", str(CHECKPOINTS / "fp8_int4awq"), "--gpu", "H100", "--runtime", "trtllm@main",
                 "--backend", "engine", "-o", str(tmp_path / "o"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no trtllm-build" in err[0]


def test_fp8_kv_cache_turns_on_fp8_attention_and_the_llm_api_kv_dtype(tmp_path):
    assert _flag(_plan("fp8_w4a8awq_kvfp8", "H200", tmp_path, backend="engine").command,
                 "--use_fp8_context_fmha") == "enable"
    plan = _plan("fp8_w4a8awq_kvfp8", "H200", tmp_path, tp=2)
    assert plan.command is None and plan.engine_dir is None
    assert plan.llm_api_options.kv_cache_config.dtype == "fp8"
    s = plan.serve_command
    assert s[:4] == ["trtllm-serve", str(CHECKPOINTS / "fp8_w4a8awq_kvfp8" / "hf"), "--backend", "pytorch"]
    assert _flag(s, "--tp_size") == "2" and _flag(s, "--pp_size") == "1"
    assert _flag(s, "--extra_llm_api_options") == str(tmp_path / "out" / "extra_llm_api_options.yaml")


def test_b200_engine_builds_nvfp4(tmp_path):
    plan = _plan("fp8_nvfp4", "B200", tmp_path, backend="engine")
    assert _flag(plan.command, "--gemm_plugin") == "auto"
    assert "NVFP4" in plan.flags_why["--gemm_plugin auto"]


def test_tp_pp_follow_the_exported_mapping_for_engines(tmp_path):
    plan = _plan("int4awq_tp2", "A100", tmp_path, backend="engine")
    assert (plan.tp, plan.pp) == (2, 1)
    assert _flag(plan.command, "--workers") == "2"
    assert _flag(plan.serve_command, "--tp_size") == "2"
    assert any("0 rank*.safetensors" in w for w in plan.warnings)
    with pytest.raises(InputError, match="exported for tp=2 pp=1, not tp=4 pp=1"):
        _plan("int4awq_tp2", "A100", tmp_path, backend="engine", tp=4)
    with pytest.raises(InputError, match="exported for tp=1 pp=1, not tp=1 pp=2"):
        _plan("fp8_int4awq", "H100", tmp_path, backend="engine", pp=2)
    with pytest.raises(InputError, match="positive"):
        _plan("fp8_int4awq", "H100", tmp_path, max_batch_size=0)
    # The PyTorch backend loads the HF checkpoint at any tensor parallelism.
    assert _plan("int4awq_tp2", "A100", tmp_path, tp=4).tp == 4


def _copy(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(CHECKPOINTS / name, target)
    return target


def test_unknown_quant_algo_is_refused(tmp_path):
    ckpt = _copy(tmp_path, "fp8_only")
    for path in (ckpt / "trtllm" / "config.json", ckpt / "hf" / "hf_quant_config.json"):
        data = json.loads(path.read_text())
        (data.get("quantization") or data)["quant_algo"] = "W8A16"
        path.write_text(json.dumps(data))
    with pytest.raises(UnsupportedError, match="W8A16"):
        read_checkpoint(ckpt)


def test_group_size_without_a_kernel_is_refused(tmp_path):
    ckpt = _copy(tmp_path, "int4awq_tp2")
    for path in (ckpt / "trtllm" / "quant_cfg.json", ckpt / "hf" / "hf_quant_config.json"):
        path.write_text(path.read_text().replace('"group_size": 64', '"group_size": 32'))
    with pytest.raises(UnsupportedError, match="int4_awq with group size 32"):
        read_checkpoint(ckpt)


def test_exports_that_disagree_are_refused(tmp_path):
    ckpt = _copy(tmp_path, "fp8_int4awq")
    path = ckpt / "hf" / "hf_quant_config.json"
    path.write_text(path.read_text().replace('"W4A16_AWQ"', '"W8A8_SQ_PER_CHANNEL"'))
    with pytest.raises(ArtifactError, match="disagree"):
        read_checkpoint(ckpt)


def test_malformed_and_missing_files_are_one_line_errors(tmp_path, capsys):
    ckpt = _copy(tmp_path, "fp8_int4awq")
    (ckpt / "trtllm" / "quant_cfg.json").write_text('{"quant_algo": "MIXED_')
    assert main(["build", str(ckpt), "--gpu", "H100", "-o", str(tmp_path / "o"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "quant_cfg.json: not valid JSON" in err
    (ckpt / "trtllm" / "quant_cfg.json").unlink()
    with pytest.raises(ArtifactError, match="quant_cfg.json not found"):
        read_checkpoint(ckpt)
    with pytest.raises(InputError, match="not found"):
        read_checkpoint(tmp_path / "nope")


def test_bare_trtllm_checkpoint_dir_is_accepted(tmp_path):
    checkpoint = read_checkpoint(CHECKPOINTS / "fp8_int4awq" / "trtllm")
    assert checkpoint.hf_dir is None and checkpoint.format_names == ["bf16", "fp8", "int4_awq"]
    with pytest.raises(InputError, match="no Hugging Face checkpoint"):
        plan_build(checkpoint, BuildOptions(gpu=get_gpu("H100")), tmp_path)
    assert plan_build(checkpoint, BuildOptions(gpu=get_gpu("H100"), backend="engine"), tmp_path).command


def test_dry_run_prints_the_options_and_commands_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "engines" / "x"
    assert main(["build", str(CHECKPOINTS / "fp8_int4awq"), "--gpu", "H100", "--max-batch-size", "8",
                 "-o", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "extra_llm_api_options.yaml" in text and "max_batch_size: 8" in text
    assert "trtllm-serve" in text and "--backend pytorch" in text and "trtllm-bench" in text
    assert not out.exists()
    assert main(["build", str(CHECKPOINTS / "fp8_int4awq"), "--gpu", "H100", "--backend", "engine",
                 "-o", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "trtllm-build --checkpoint_dir" in text and "--use_fp8_context_fmha enable" in text
    assert not out.exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_llm") is not None, reason="TensorRT-LLM is installed here")
def test_without_tensorrt_llm_an_engine_build_is_one_line(tmp_path, capsys):
    assert main(["build", str(CHECKPOINTS / "fp8_int4awq"), "--gpu", "H100", "--backend", "engine",
                 "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "trtq: error: TensorRT-LLM is not installed here, run inside the container in docker/"
    assert not (tmp_path / "o").exists()


@requires_ngc
def test_real_engine_build_in_the_container(tmp_path):
    """A real legacy engine build: needs a quantized checkpoint (TRTQ_TEST_CHECKPOINT=engines/NAME) and a GPU."""
    checkpoint = os.environ.get("TRTQ_TEST_CHECKPOINT")
    gpu = os.environ.get("TRTQ_TEST_GPU", "H100")
    if not checkpoint:
        pytest.skip("set TRTQ_TEST_CHECKPOINT to a trtq quantize output directory")
    out = tmp_path / "engine_out"
    assert main(["build", checkpoint, "--gpu", gpu, "--max-batch-size", "8", "--backend", "engine",
                 "-o", str(out)]) == 0
    record = json.loads((out / "build_record.json").read_text())
    assert record["status"] == "built" and (out / "engine" / "config.json").is_file()
    assert "tensorrt-llm" in record["metadata"]["versions"]


def test_build_options_come_from_its_request_and_the_library_writes_what_the_cli_writes(tmp_path, capsys):
    from trtq.artifacts.build import BuildRecord
    from trtq.artifacts.io import load_artifact
    from trtq.build.api import build_checkpoint
    from trtq.build.request import BuildRequest
    from trtq.cli import build_parser

    argv = ["build", str(CHECKPOINTS / "fp8_int4awq"), "--gpu", "H100", "--max-batch-size", "8", "-o", "x"]
    request = BuildRequest.from_args(build_parser().parse_args(argv))
    assert request == BuildRequest(checkpoint=CHECKPOINTS / "fp8_int4awq", gpu="H100", max_batch_size=8)
    assert request.backend is None and request.free_gpu_memory_fraction is None  # the defaults are the model's
    record = build_checkpoint(request, tmp_path / "lib")
    assert main(argv[:-1] + [str(tmp_path / "cli")]) == 0
    from_cli = load_artifact(tmp_path / "cli" / "build_record.json", BuildRecord)
    assert record == load_artifact(tmp_path / "lib" / "build_record.json", BuildRecord)
    assert record.status == from_cli.status == "prepared" and record.backend == from_cli.backend == "pytorch"
    assert record.llm_api_options == from_cli.llm_api_options and record.llm_api_options.max_batch_size == 8
    assert (tmp_path / "lib" / "extra_llm_api_options.yaml").read_text() == \
        (tmp_path / "cli" / "extra_llm_api_options.yaml").read_text()
    with pytest.raises(InputError, match="--tp: input should be greater than or equal to 1"):
        BuildRequest(checkpoint=CHECKPOINTS / "fp8_int4awq", gpu="H100", tp=0)
