"""The PyTorch backend: checkpoint validation against the LLM API's loader rules, the LLM API options file,
and the exact trtllm-serve / trtllm-bench argument lists, for FP8, NVFP4 and mixed checkpoints."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.gating import requires_ngc
from trtq.artifacts.build import BuildRecord, LlmApiOptions
from trtq.artifacts.io import load_artifact
from trtq.build.checkpoint import read_checkpoint
from trtq.build.llm_api import check_with_tensorrt_llm, cuda_graph_batch_sizes
from trtq.build.trtllm import BuildOptions, plan_build
from trtq.cli import main
from trtq.errors import ArtifactError, UnsupportedError
from trtq.registry import get_gpu

CHECKPOINTS = Path(__file__).parent / "checkpoints"


def _plan(name: str, gpu: str, out: Path, root: Path = CHECKPOINTS, **kw):
    return plan_build(read_checkpoint(root / name), BuildOptions(gpu=get_gpu(gpu), **kw), out)


def _flag(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


@pytest.mark.parametrize("name, gpu, kv_dtype", [
    ("fp8_only", "H100", "auto"),             # FP8, single format, lm_head excluded
    ("fp8_nvfp4", "B200", "auto"),            # NVFP4 mixed with FP8
    ("fp8_w4a8awq_kvfp8", "H100", "fp8"),     # mixed, FP8 KV cache
    ("fp8_int4awq", "H100", "auto"),          # mixed FP8 + W4A16 AWQ group 64
])
def test_options_file_and_commands(name, gpu, kv_dtype, tmp_path):
    out = tmp_path / "out"
    plan = _plan(name, gpu, out, max_batch_size=48, max_num_tokens=4096)
    hf = CHECKPOINTS / name / "hf"
    options = plan.llm_api_options
    assert options.kv_cache_config.dtype == kv_dtype
    assert options.kv_cache_config.free_gpu_memory_fraction == 0.9
    assert options.cuda_graph_config.batch_sizes == [1, 2, 4, 8, 16, 32, 48]
    assert (options.max_batch_size, options.max_num_tokens) == (48, 4096)
    # The YAML is exactly the LLM API keys, and reads back into the same validated model.
    text = options.yaml_text()
    loaded = yaml.safe_load(text)
    assert set(loaded) == {"kv_cache_config", "cuda_graph_config", "max_batch_size", "max_num_tokens"}
    assert LlmApiOptions.model_validate(loaded) == options
    options_file = str(out / "extra_llm_api_options.yaml")
    assert plan.serve_command == ["trtllm-serve", str(hf), "--backend", "pytorch", "--tp_size", "1", "--pp_size", "1",
                                  "--extra_llm_api_options", options_file]
    prepare, throughput, latency = (plan.bench_commands[k] for k in ("prepare-dataset", "throughput", "latency"))
    # No plan.yaml in these fixtures: no Hugging Face id to take the tokenizer from, said, and a placeholder.
    assert prepare[:6] == ["trtllm-bench", "--model", "MODEL_ID", "--model_path", str(hf), "prepare-dataset"]
    assert any("no Hugging Face id" in w for w in plan.warnings)
    assert prepare[prepare.index("token-norm-dist"):] == [
        "token-norm-dist", "--num-requests", "512", "--input-mean", "128", "--output-mean", "128",
        "--input-stdev", "0", "--output-stdev", "0"]
    for command, mode in ((throughput, "throughput"), (latency, "latency")):
        assert command[5] == mode and _flag(command, "--backend") == "pytorch"
        assert _flag(command, "--extra_llm_api_options") == options_file
        assert _flag(command, "--dataset") == _flag(prepare, "--output")
        assert _flag(command, "--report_json").endswith(f"report-{mode}.json")
    assert "--streaming" in throughput


def test_cuda_graph_batch_sizes():
    assert cuda_graph_batch_sizes(1) == [1]
    assert cuda_graph_batch_sizes(64) == [1, 2, 4, 8, 16, 32, 64]
    assert cuda_graph_batch_sizes(100) == [1, 2, 4, 8, 16, 32, 64, 100]


def test_nvfp4_kv_cache_needs_blackwell_and_fp8_attention(tmp_path):
    ckpt = _copy(tmp_path, "fp8_nvfp4")
    _edit(ckpt, lambda q: q.update(kv_cache_quant_algo="NVFP4"))
    assert _plan("fp8_nvfp4", "B200", tmp_path / "o", root=tmp_path).llm_api_options.kv_cache_config.dtype == "nvfp4"
    ckpt = _copy(tmp_path, "fp8_w4a8awq_kvfp8", "h")
    _edit(ckpt, lambda q: q.update(kv_cache_quant_algo="NVFP4"))
    with pytest.raises(UnsupportedError, match="nvfp4 KV cache is not supported on H100-SXM .* Blackwell only"):
        _plan("h", "H100", tmp_path / "o", root=tmp_path)


def test_prepared_build_writes_the_options_file_and_a_record_that_round_trips(tmp_path, capsys):
    out = tmp_path / "engines" / "x"
    assert main(["build", str(CHECKPOINTS / "fp8_w4a8awq_kvfp8"), "--gpu", "H100", "--max-batch-size", "16",
                 "-o", str(out)]) == 0
    record = load_artifact(out / "build_record.json", BuildRecord)
    assert record.backend == "pytorch" and record.runtime == "trtllm@1.2" and record.status == "prepared"
    assert LlmApiOptions.model_validate(yaml.safe_load((out / "extra_llm_api_options.yaml").read_text())) \
        == record.llm_api_options
    assert record.llm_api_options.kv_cache_config.dtype == "fp8" and record.llm_api_options.max_batch_size == 16
    assert record.model_dir == str((CHECKPOINTS / "fp8_w4a8awq_kvfp8" / "hf").resolve())
    assert any("MIXED_PRECISION" in line for line in record.checked)
    assert set(record.bench_commands) == {"prepare-dataset", "throughput", "latency"}
    again = BuildRecord.model_validate_json(record.model_dump_json())
    assert again == record


def _copy(tmp_path: Path, name: str, as_name: str | None = None) -> Path:
    target = tmp_path / (as_name or name)
    shutil.copytree(CHECKPOINTS / name, target)
    return target


def _edit(ckpt: Path, change) -> None:
    """Apply `change(quantization dict)` to both exports so they keep agreeing; the HF one is what the LLM API reads."""
    path = ckpt / "hf" / "hf_quant_config.json"
    data = json.loads(path.read_text())
    change(data["quantization"])
    path.write_text(json.dumps(data))
    trtllm = ckpt / "trtllm"
    if trtllm.is_dir():
        shutil.rmtree(trtllm)  # the TensorRT-LLM export is the engine path's; these cases are about hf/


def _set_layer(name: str, **cfg):
    return lambda q: q["quantized_layers"].__setitem__(name, cfg)


def _drop_layer(name: str):
    return lambda q: q["quantized_layers"].pop(name)


BAD_CHECKPOINTS = [
    # The first three are caught as the checkpoint is read (trtq/build/checkpoint.py), before the LLM API rules.
    ("quant_algo not a QuantAlgo", lambda q: q.update(quant_algo="MIXED"), UnsupportedError,
     "checkpoint uses quant_algo 'MIXED', which trtq does not build"),
    ("mixed without layers", lambda q: q.pop("quantized_layers"), ArtifactError,
     "quant_algo MIXED_PRECISION but no quantized_layers"),
    ("layer algo unknown", _set_layer("model.layers.0.mlp.down_proj", quant_algo="INT3"), UnsupportedError,
     "model.layers.0.mlp.down_proj uses quant_algo 'INT3', which trtq does not build"),
    ("TensorRT-LLM layer names", _set_layer("transformer.layers.0.mlp.proj", quant_algo="FP8"), ArtifactError,
     "not a Hugging Face module path"),
    ("block past the model", _set_layer("model.layers.30.mlp.down_proj", quant_algo="FP8"), ArtifactError,
     "is block 30, the model has 30"),
    ("AWQ group without kernel", _set_layer("model.layers.0.mlp.down_proj", quant_algo="W4A16_AWQ", group_size=32),
     UnsupportedError, "int4_awq with group size 32 has no TensorRT-LLM kernel"),
    ("AWQ without group size", _set_layer("model.layers.0.mlp.down_proj", quant_algo="W4A16_AWQ"),
     UnsupportedError, "W4A16_AWQ with group_size None"),
    ("KV cache algo", lambda q: q.update(kv_cache_quant_algo="INT4"), ArtifactError,
     "kv_cache_quant_algo 'INT4' is not one"),
    ("q/k/v split", _set_layer("model.layers.2.self_attn.k_proj", quant_algo="W4A16_AWQ", group_size=64),
     UnsupportedError, "block 2 qkv mixes q_proj FP8, k_proj W4A16_AWQ, v_proj FP8: the PyTorch backend fuses"),
    ("gate/up half quantized", _drop_layer("model.layers.3.mlp.up_proj"), UnsupportedError,
     "block 3 gate_up mixes gate_proj W4A16_AWQ, up_proj unquantized"),
]


@pytest.mark.parametrize("case, change, error, message", BAD_CHECKPOINTS, ids=[c[0] for c in BAD_CHECKPOINTS])
def test_checkpoint_the_llm_api_would_not_load_is_refused_in_one_line(case, change, error, message, tmp_path,
                                                                        capsys):
    ckpt = _copy(tmp_path, "fp8_int4awq")
    _edit(ckpt, change)
    with pytest.raises(error, match=message):
        _plan("fp8_int4awq", "H100", tmp_path / "o", root=tmp_path)
    assert main(["build", str(ckpt), "--gpu", "H100", "-o", str(tmp_path / "o"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("trtq: error: ")


def test_quant_cfg_overlay_must_agree_on_the_kv_cache(tmp_path):
    ckpt = _copy(tmp_path, "fp8_w4a8awq_kvfp8")
    _edit(ckpt, lambda q: None)
    (ckpt / "hf" / "quant_cfg.json").write_text(json.dumps({"kv_cache_quant_algo": "NVFP4"}))
    with pytest.raises(ArtifactError, match="quant_cfg.json's KV cache NVFP4 differs from hf_quant_config.json's FP8"):
        _plan("fp8_w4a8awq_kvfp8", "H100", tmp_path / "o", root=tmp_path)


def test_hf_config_without_architectures_is_refused(tmp_path):
    ckpt = _copy(tmp_path, "fp8_only")
    config = ckpt / "hf" / "config.json"
    data = json.loads(config.read_text())
    data["architectures"] = None
    config.write_text(json.dumps(data))
    shutil.rmtree(ckpt / "trtllm")
    with pytest.raises(ArtifactError, match="no architectures"):
        _plan("fp8_only", "H100", tmp_path / "o", root=tmp_path)


def test_plan_made_for_another_runtime_is_refused_in_one_line(tmp_path, capsys):
    from tests.helpers.plans import group, plan_of
    from trtq.artifacts import save_artifact

    ckpt = _copy(tmp_path, "fp8_int4awq")
    plan = plan_of([group("a", ["model.layers.0.self_attn.q_proj"], "fp8"),
                    group("b", ["model.layers.0.mlp.down_proj"], "int4_awq", 64)], runtime="trtllm-engine@1.2")
    save_artifact(plan, ckpt / "plan.yaml")
    assert main(["build", str(ckpt), "--gpu", "H100", "--runtime", "trtllm@1.2", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"trtq: error: {ckpt}/plan.yaml was planned for runtime trtllm-engine@1.2, not trtllm@1.2: "
                   "re-plan with --runtime trtllm@1.2, or pass --runtime trtllm-engine@1.2"]
    # Without --runtime the plan's own runtime is used: the legacy engine path.
    assert main(["build", str(ckpt), "--gpu", "H100", "--backend", "engine", "-o", str(tmp_path / "o"),
                 "--dry-run"]) == 0
    capsys.readouterr()
    # A plan for the PyTorch runtime: trtllm-bench takes the tokenizer from the plan model's Hugging Face id.
    save_artifact(plan.model_copy(update={"runtime": "trtllm@1.2"}), ckpt / "plan.yaml")
    built = _plan(ckpt.name, "H100", tmp_path / "o2", root=tmp_path)
    assert built.bench_commands["throughput"][:3] == ["trtllm-bench", "--model", "HuggingFaceTB/SmolLM2-135M-Instruct"]
    assert built.warnings == []


@requires_ngc
@pytest.mark.parametrize("name", ["fp8_only", "fp8_int4awq", "fp8_w4a8awq_kvfp8", "fp8_nvfp4"])
def test_tensorrt_llm_loader_reads_the_fixture_checkpoints(name):
    """In the NGC container: TensorRT-LLM's own ModelConfig.load_modelopt_quant_config accepts each fixture."""
    assert importlib.util.find_spec("tensorrt_llm") is not None
    line = check_with_tensorrt_llm(CHECKPOINTS / name / "hf")
    assert line and "load_modelopt_quant_config" in line
