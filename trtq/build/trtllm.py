"""Turn a mixed-precision checkpoint into what TensorRT-LLM serves.

Backend `tensorrt`: one `trtllm-build` argument list (tensorrt_llm/commands/build.py; plugin
flags from tensorrt_llm/plugin/plugin.py `cli_plugin_args`), flags chosen from the formats in
the checkpoint:

  --kv_cache_type paged        always: trtllm-serve's in-flight batching needs the paged KV cache
  --gemm_plugin auto           always: cuBLASLt for the GEMMs left in the model dtype (lm_head and
                               every bf16 layer); quantized GEMMs take their own kernels, and NVFP4
                               GEMMs need the plugin left on
  --use_fp8_context_fmha       enable when attention runs in FP8 (FP8 KV cache, or an FP8-activation
                               format on the attention projections) on sm89+, else disable
  --use_paged_context_fmha enable, --context_fmha enable, --remove_input_padding enable
  --workers tp*pp              one build process per rank
  --max_batch_size / --max_input_len / --max_seq_len / --max_num_tokens   only when given

Tensor/pipeline parallelism is fixed when the TensorRT-LLM checkpoint is exported (its
`mapping`); trtllm-build cannot reshard, so `--tp/--pp` must match it.

Backend `pytorch`: no engine. trtllm-serve loads the unified HF checkpoint (hf_quant_config.json)
with `--backend pytorch --tp_size N --pp_size N`; trtq writes extra_llm_api_options.yaml beside it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from trtq.build.checkpoint import Checkpoint
from trtq.errors import ExternalToolError, InputError, MissingToolError
from trtq.registry import GpuSpec, get_format

NOT_INSTALLED = "TensorRT-LLM is not installed here, run inside the container in docker/"
# Formats whose activations are FP8 (or finer): attention in these layers can use FP8 context FMHA.
FP8_ACTIVATION_FORMATS = frozenset({"fp8", "fp8_block", "w4a8_awq", "nvfp4"})
# TensorRT-LLM attention-projection layer names (checkpoint) and HF names (unified export).
_ATTENTION_MARKERS = (".attention.qkv", ".attention.dense", "self_attn.q_proj", "self_attn.k_proj",
                      "self_attn.v_proj", "self_attn.o_proj")


@dataclass(frozen=True)
class BuildOptions:
    gpu: GpuSpec
    backend: str = "tensorrt"
    tp: int | None = None
    pp: int | None = None
    max_batch_size: int | None = None
    max_input_len: int | None = None
    max_seq_len: int | None = None
    max_num_tokens: int | None = None
    log_level: str = "info"


@dataclass
class BuildPlan:
    backend: str
    output_dir: Path
    engine_dir: Path | None
    model_dir: Path
    tokenizer_dir: Path | None
    tp: int
    pp: int
    command: list[str] | None
    flags_why: dict[str, str] = field(default_factory=dict)
    serve_command: list[str] = field(default_factory=list)
    extra_llm_api_options: dict | None = None
    warnings: list[str] = field(default_factory=list)


def require_gpu_formats(checkpoint: Checkpoint, gpu: GpuSpec) -> None:
    """Refuse, before anything runs, a checkpoint holding a format the GPU's architecture lacks."""
    for name in checkpoint.format_names:
        gpu.require(get_format(name))


def attention_in_fp8(checkpoint: Checkpoint) -> bool:
    if (checkpoint.kv_cache_quant_algo or "").upper() == "FP8":
        return True
    section = checkpoint.primary
    if section is None or section.quant_algo is None:
        return False
    if section.quant_algo != "MIXED_PRECISION":
        from trtq.build.checkpoint import QUANT_ALGO_TO_FORMAT

        return QUANT_ALGO_TO_FORMAT[section.quant_algo] in FP8_ACTIVATION_FORMATS
    from trtq.build.checkpoint import QUANT_ALGO_TO_FORMAT

    return any(
        QUANT_ALGO_TO_FORMAT[cfg["quant_algo"]] in FP8_ACTIVATION_FORMATS
        for name, cfg in section.layers.items()
        if any(marker in name for marker in _ATTENTION_MARKERS)
    )


def _tokenizer_dir(checkpoint: Checkpoint) -> Path | None:
    for candidate in (checkpoint.hf_dir, checkpoint.path, checkpoint.trtllm_dir):
        if candidate is not None and ((candidate / "tokenizer.json").is_file()
                                      or (candidate / "tokenizer_config.json").is_file()):
            return candidate
    return checkpoint.hf_dir


def plan_build(checkpoint: Checkpoint, options: BuildOptions, output_dir: str | Path) -> BuildPlan:
    """The exact commands and config for this checkpoint, GPU and parallelism. Runs nothing."""
    require_gpu_formats(checkpoint, options.gpu)
    out = Path(output_dir)
    for flag, value in (("--tp", options.tp), ("--pp", options.pp), ("--max-batch-size", options.max_batch_size),
                        ("--max-input-len", options.max_input_len), ("--max-seq-len", options.max_seq_len),
                        ("--max-num-tokens", options.max_num_tokens)):
        if value is not None and value < 1:
            raise InputError(f"{flag} must be a positive integer, got {value}")
    if options.backend == "pytorch":
        return _plan_pytorch(checkpoint, options, out)
    if options.backend != "tensorrt":
        raise InputError(f"unknown backend {options.backend!r}; choose tensorrt or pytorch")
    return _plan_tensorrt(checkpoint, options, out)


def _plan_tensorrt(checkpoint: Checkpoint, options: BuildOptions, out: Path) -> BuildPlan:
    if checkpoint.trtllm_dir is None:
        raise InputError(
            f"{checkpoint.path}: no TensorRT-LLM checkpoint (trtllm/ with config.json) to build an engine from; "
            "use --backend pytorch to serve the Hugging Face checkpoint instead"
        )
    tp = options.tp if options.tp is not None else checkpoint.tp_size
    pp = options.pp if options.pp is not None else checkpoint.pp_size
    if (tp, pp) != (checkpoint.tp_size, checkpoint.pp_size):
        raise InputError(
            f"{checkpoint.trtllm_dir} was exported for tp={checkpoint.tp_size} pp={checkpoint.pp_size}, not "
            f"tp={tp} pp={pp}: trtllm-build cannot reshard; re-export the checkpoint with that parallelism "
            "or use --backend pytorch"
        )
    engine_dir = out / "engine"
    fp8_fmha = attention_in_fp8(checkpoint) and options.gpu.sm >= 89
    command = [
        "trtllm-build",
        "--checkpoint_dir", str(checkpoint.trtllm_dir),
        "--output_dir", str(engine_dir),
        "--kv_cache_type", "paged",
        "--gemm_plugin", "auto",
        "--context_fmha", "enable",
        "--use_paged_context_fmha", "enable",
        "--use_fp8_context_fmha", "enable" if fp8_fmha else "disable",
        "--remove_input_padding", "enable",
        "--workers", str(tp * pp),
        "--log_level", options.log_level,
    ]
    for flag, value in (("--max_batch_size", options.max_batch_size), ("--max_input_len", options.max_input_len),
                        ("--max_seq_len", options.max_seq_len), ("--max_num_tokens", options.max_num_tokens)):
        if value is not None:
            command += [flag, str(value)]
    why = {
        "--kv_cache_type paged": "trtllm-serve schedules requests in flight, which needs the paged KV cache",
        "--gemm_plugin auto": (
            f"GEMMs left in {checkpoint.dtype or 'the model dtype'} (formats: {', '.join(checkpoint.format_names)}) "
            "run through cuBLASLt; quantized GEMMs keep their own kernels"
            + ("; NVFP4 GEMMs require the plugin" if "nvfp4" in checkpoint.formats else "")
        ),
        "--use_fp8_context_fmha": (
            "attention runs in FP8 (FP8 KV cache or FP8-activation attention projections) on "
            f"sm{options.gpu.sm}" if fp8_fmha else
            "no FP8 attention in this checkpoint" if options.gpu.sm >= 89 else
            f"{options.gpu.name} (sm{options.gpu.sm}) has no FP8 attention kernels"
        ),
        "--workers": f"tp={tp} x pp={pp} ranks, one build process each",
    }
    warnings = []
    ranks = checkpoint.rank_files()
    if len(ranks) != tp * pp:
        warnings.append(
            f"{checkpoint.trtllm_dir} holds {len(ranks)} rank*.safetensors, the mapping needs {tp * pp}"
        )
    tokenizer = _tokenizer_dir(checkpoint)
    serve = ["trtllm-serve", str(engine_dir), "--backend", "tensorrt", "--tp_size", str(tp), "--pp_size", str(pp)]
    if tokenizer is not None:
        serve += ["--tokenizer", str(tokenizer)]
    return BuildPlan("tensorrt", out, engine_dir, engine_dir, tokenizer, tp, pp, command, why, serve, None, warnings)


def _plan_pytorch(checkpoint: Checkpoint, options: BuildOptions, out: Path) -> BuildPlan:
    if checkpoint.hf_dir is None:
        raise InputError(
            f"{checkpoint.path}: no Hugging Face checkpoint (hf/ with hf_quant_config.json) for the PyTorch backend"
        )
    tp = options.tp or 1
    pp = options.pp or 1
    extra: dict = {}
    if (checkpoint.kv_cache_quant_algo or "").upper() == "FP8":
        extra["kv_cache_config"] = {"dtype": "fp8"}
    serve = ["trtllm-serve", str(checkpoint.hf_dir), "--backend", "pytorch",
             "--tp_size", str(tp), "--pp_size", str(pp)]
    for flag, value in (("--max_batch_size", options.max_batch_size), ("--max_seq_len", options.max_seq_len),
                        ("--max_num_tokens", options.max_num_tokens)):
        if value is not None:
            serve += [flag, str(value)]
    if extra:
        serve += ["--extra_llm_api_options", str(out / "extra_llm_api_options.yaml")]
    why = {"--backend pytorch": "no engine build: TensorRT-LLM's PyTorch backend reads hf_quant_config.json "
                                "and runs each layer's format from the unified checkpoint"}
    if extra:
        why["kv_cache_config.dtype fp8"] = "the checkpoint's KV cache is quantized to FP8"
    tokenizer = _tokenizer_dir(checkpoint)
    if tokenizer is not None and tokenizer != checkpoint.hf_dir:
        serve += ["--tokenizer", str(tokenizer)]
    return BuildPlan("pytorch", out, None, checkpoint.hf_dir, tokenizer, tp, pp, None, why, serve, extra or None, [])


def require_tensorrt_llm() -> None:
    if importlib.util.find_spec("tensorrt_llm") is None:
        raise MissingToolError(NOT_INSTALLED)


def tensorrt_llm_versions() -> dict[str, str]:
    versions = {}
    for name in ("tensorrt-llm", "tensorrt", "tensorrt_cu12", "tensorrt_cu13", "nvidia-modelopt"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def run_build(plan: BuildPlan, log_path: Path) -> float:
    """Run trtllm-build into a temporary directory, move the engine into place on success."""
    from trtq.artifacts.io import atomic_path

    assert plan.command is not None and plan.engine_dir is not None
    if shutil.which(plan.command[0]) is None:
        raise MissingToolError(NOT_INSTALLED)
    staging = plan.engine_dir.with_name(f".{plan.engine_dir.name}.building")
    shutil.rmtree(staging, ignore_errors=True)
    command = list(plan.command)
    command[command.index("--output_dir") + 1] = str(staging)
    start = time.monotonic()
    with atomic_path(log_path) as tmp_log:
        with open(tmp_log, "w", encoding="utf-8") as log:
            log.write("$ " + " ".join(command) + "\n")
            log.flush()
            try:
                result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
            except OSError as exc:
                raise ExternalToolError(f"trtllm-build could not start: {exc}") from None
            finally:
                log.flush()
        if result.returncode != 0:
            # Keep the log where the user can read it, then refuse.
            shutil.copyfile(tmp_log, log_path)
            shutil.rmtree(staging, ignore_errors=True)
            raise ExternalToolError(f"trtllm-build exited with status {result.returncode}; log: {log_path}")
    shutil.rmtree(plan.engine_dir, ignore_errors=True)
    os.replace(staging, plan.engine_dir)
    return time.monotonic() - start
