"""Turn a mixed-precision checkpoint into what TensorRT-LLM serves.

Backend `pytorch` (the default; the only one TensorRT-LLM main still has): no engine. The
checkpoint is checked against what the LLM API loads (trtq/build/llm_api.py), trtq writes
`extra_llm_api_options.yaml` and the exact `trtllm-serve` / `trtllm-bench` argument lists.

Backend `engine` (legacy; only runtimes that still ship `trtllm-build`, i.e. TensorRT-LLM <= 1.2):
one `trtllm-build` argument list (tensorrt_llm/commands/build.py; plugin flags from
tensorrt_llm/plugin/plugin.py `cli_plugin_args`), flags chosen from the formats in the checkpoint:

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
from trtq.build.llm_api import (
    OPTIONS_FILE,
    LlmApiOptions,
    bench_argv,
    llm_api_options,
    prepare_dataset_argv,
    serve_argv,
    validate_for_llm_api,
)
from trtq.errors import ExternalToolError, InputError, MissingToolError, UnsupportedError
from trtq.registry import GpuSpec, get_format
from trtq.registry.runtimes import Runtime, get_runtime, require_format

NOT_INSTALLED = "TensorRT-LLM is not installed here, run inside the container in docker/"
# TensorRT-LLM attention-projection layer names (checkpoint) and HF names (unified export).
_ATTENTION_MARKERS = (
    ".attention.qkv",
    ".attention.dense",
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
)


BACKENDS = ("pytorch", "engine")


@dataclass(frozen=True)
class BuildOptions:
    gpu: GpuSpec
    backend: str = "pytorch"
    runtime: Runtime | None = None  # None: the default runtime (the release docker/ pins)
    tp: int | None = None
    pp: int | None = None
    max_batch_size: int | None = None
    max_input_len: int | None = None
    max_seq_len: int | None = None
    max_num_tokens: int | None = None
    free_gpu_memory_fraction: float | None = None
    log_level: str = "info"


@dataclass
class BuildPlan:
    backend: str
    runtime: str
    output_dir: Path
    engine_dir: Path | None
    model_dir: Path
    tokenizer_dir: Path | None
    tp: int
    pp: int
    command: list[str] | None
    flags_why: dict[str, str] = field(default_factory=dict)
    serve_command: list[str] = field(default_factory=list)
    llm_api_options: LlmApiOptions | None = None
    warnings: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    bench_commands: dict[str, list[str]] = field(default_factory=dict)

    @property
    def options_file(self) -> Path | None:
        return self.output_dir / OPTIONS_FILE if self.llm_api_options is not None else None


def require_gpu_formats(checkpoint: Checkpoint, gpu: GpuSpec, runtime: Runtime) -> None:
    """Refuse, before anything runs, a checkpoint holding a format the runtime does not run on the GPU."""
    for name in checkpoint.format_names:
        require_format(gpu, name, runtime)


def build_runtime(options: BuildOptions) -> Runtime:
    """The runtime the build targets: `--backend engine` needs one that still has trtllm-build."""
    runtime = options.runtime or get_runtime(None)
    if options.backend not in BACKENDS:
        raise InputError(f"unknown backend {options.backend!r}; choose {' or '.join(BACKENDS)}")
    if options.backend == "engine":
        if runtime.engine_runtime is None:
            raise UnsupportedError(
                f"--backend engine: {runtime.name} has no TensorRT engine path: "
                f"{runtime.no_engine_reason or 'no trtllm-build'}"
            )
        return get_runtime(runtime.engine_runtime)
    if runtime.backend != "pytorch":
        raise UnsupportedError(
            f"runtime {runtime.name} is the legacy TensorRT engine path: build it with "
            "--backend engine, or choose a PyTorch-backend runtime"
        )
    return runtime


def attention_in_fp8(checkpoint: Checkpoint) -> bool:
    if (checkpoint.kv_cache_quant_algo or "").upper() == "FP8":
        return True
    section = checkpoint.primary
    if section is None or section.quant_algo is None:
        return False
    # Formats whose activations are FP8 (or finer) say so (Format.enables_fp8_attention): attention in
    # these layers can use FP8 context FMHA.
    from trtq.formats import checkpoint_algo_formats

    formats = checkpoint_algo_formats()
    if section.quant_algo != "MIXED_PRECISION":
        return formats[section.quant_algo].enables_fp8_attention
    return any(
        formats[cfg["quant_algo"]].enables_fp8_attention
        for name, cfg in section.layers.items()
        if any(marker in name for marker in _ATTENTION_MARKERS)
    )


def _tokenizer_dir(checkpoint: Checkpoint) -> Path | None:
    for candidate in (checkpoint.hf_dir, checkpoint.path, checkpoint.trtllm_dir):
        if candidate is not None and (
            (candidate / "tokenizer.json").is_file() or (candidate / "tokenizer_config.json").is_file()
        ):
            return candidate
    return checkpoint.hf_dir


def plan_build(checkpoint: Checkpoint, options: BuildOptions, output_dir: str | Path) -> BuildPlan:
    """The exact commands and config for this checkpoint, GPU, runtime and parallelism. Runs nothing."""
    runtime = build_runtime(options)
    if checkpoint.plan_runtime is not None:
        from trtq.registry.runtimes import check_plan_runtime

        # A checkpoint planned for the PyTorch runtime may still be built as a legacy engine of the same release.
        if not (options.backend == "engine" and get_runtime(checkpoint.plan_runtime).engine_runtime == runtime.name):
            check_plan_runtime(checkpoint.plan_runtime, runtime, f"{checkpoint.path}/plan.yaml")
    require_gpu_formats(checkpoint, options.gpu, runtime)
    out = Path(output_dir)
    for flag, value in (
        ("--tp", options.tp),
        ("--pp", options.pp),
        ("--max-batch-size", options.max_batch_size),
        ("--max-input-len", options.max_input_len),
        ("--max-seq-len", options.max_seq_len),
        ("--max-num-tokens", options.max_num_tokens),
    ):
        if value is not None and value < 1:
            raise InputError(f"{flag} must be a positive integer, got {value}")
    fraction = options.free_gpu_memory_fraction
    if fraction is not None and not (0 < fraction <= 1):
        raise InputError(f"--free-gpu-memory-fraction must be in (0, 1], got {fraction}")
    if options.backend == "pytorch":
        return _plan_pytorch(checkpoint, options, out, runtime)
    return _plan_tensorrt(checkpoint, options, out, runtime)


def _plan_tensorrt(checkpoint: Checkpoint, options: BuildOptions, out: Path, runtime: Runtime) -> BuildPlan:
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
            "or build for the PyTorch backend (the default)"
        )
    engine_dir = out / "engine"
    fp8_fmha = attention_in_fp8(checkpoint) and options.gpu.sm >= 89
    command = [
        "trtllm-build",
        "--checkpoint_dir",
        str(checkpoint.trtllm_dir),
        "--output_dir",
        str(engine_dir),
        "--kv_cache_type",
        "paged",
        "--gemm_plugin",
        "auto",
        "--context_fmha",
        "enable",
        "--use_paged_context_fmha",
        "enable",
        "--use_fp8_context_fmha",
        "enable" if fp8_fmha else "disable",
        "--remove_input_padding",
        "enable",
        "--workers",
        str(tp * pp),
        "--log_level",
        options.log_level,
    ]
    for flag, value in (
        ("--max_batch_size", options.max_batch_size),
        ("--max_input_len", options.max_input_len),
        ("--max_seq_len", options.max_seq_len),
        ("--max_num_tokens", options.max_num_tokens),
    ):
        if value is not None:
            command += [flag, str(value)]
    why = {
        "--kv_cache_type paged": "trtllm-serve schedules requests in flight, which needs the paged KV cache",
        "--gemm_plugin auto": (
            f"GEMMs left in {checkpoint.dtype or 'the model dtype'} (formats: {', '.join(checkpoint.format_names)}) "
            "run through cuBLASLt; quantized GEMMs keep their own kernels"
            + "".join(
                f"; {name.upper()} GEMMs require the plugin"
                for name in checkpoint.format_names
                if get_format(name).needs_gemm_plugin
            )
        ),
        "--use_fp8_context_fmha": (
            f"attention runs in FP8 (FP8 KV cache or FP8-activation attention projections) on sm{options.gpu.sm}"
            if fp8_fmha
            else "no FP8 attention in this checkpoint"
            if options.gpu.sm >= 89
            else f"{options.gpu.name} (sm{options.gpu.sm}) has no FP8 attention kernels"
        ),
        "--workers": f"tp={tp} x pp={pp} ranks, one build process each",
    }
    warnings = []
    ranks = checkpoint.rank_files()
    if len(ranks) != tp * pp:
        warnings.append(f"{checkpoint.trtllm_dir} holds {len(ranks)} rank*.safetensors, the mapping needs {tp * pp}")
    tokenizer = _tokenizer_dir(checkpoint)
    serve = serve_argv(engine_dir, tp, pp, None, tokenizer, backend="tensorrt")
    return BuildPlan(
        "engine", runtime.name, out, engine_dir, engine_dir, tokenizer, tp, pp, command, why, serve, None, warnings
    )


def _plan_pytorch(checkpoint: Checkpoint, options: BuildOptions, out: Path, runtime: Runtime) -> BuildPlan:
    checked = validate_for_llm_api(checkpoint, options.gpu, runtime)
    assert checkpoint.hf_dir is not None  # validate_for_llm_api refused otherwise
    hf_dir = checkpoint.hf_dir.resolve()
    tp = options.tp or 1
    pp = options.pp or 1
    llm_options = llm_api_options(
        checkpoint.hf.kv_cache_quant_algo if checkpoint.hf else None,
        options.max_batch_size,
        options.max_num_tokens,
        options.max_seq_len,
        options.free_gpu_memory_fraction,
    )
    options_file = out / OPTIONS_FILE
    tokenizer = _tokenizer_dir(checkpoint)
    tokenizer = tokenizer.resolve() if tokenizer is not None else None
    serve = serve_argv(hf_dir, tp, pp, options_file, tokenizer)
    kv = llm_options.kv_cache_config.dtype
    why = {
        "--backend pytorch": f"{runtime.name}: no engine build; the LLM API reads hf_quant_config.json and runs each "
        "layer's format from the unified checkpoint",
        "kv_cache_config.dtype": (
            f"the checkpoint's KV cache is quantized to {kv}"
            if kv != "auto"
            else "the checkpoint's KV cache is not quantized: the model dtype"
        ),
        "cuda_graph_config.batch_sizes": "powers of two up to max_batch_size (decode steps pad to the next one)",
        "max_batch_size / max_num_tokens": (
            "as given" if options.max_batch_size or options.max_num_tokens else "trtllm-serve's defaults"
        ),
    }
    model_name = hub_model_name(checkpoint.model_name)
    warnings = (
        []
        if model_name
        else [
            f"no Hugging Face id for plan model {checkpoint.model_name!r}: trtllm-bench takes its tokenizer from "
            "--model; replace MODEL_ID in the commands (trtq bench --tool trtllm-bench --model does)"
        ]
    )
    model_name = model_name or "MODEL_ID"
    dataset, report = out / "bench" / "dataset.jsonl", out / "bench" / "report-{mode}.json"
    bench = {
        "prepare-dataset": prepare_dataset_argv(model_name, hf_dir, dataset, 512, 128, 128),
        "throughput": bench_argv(
            model_name, hf_dir, options_file, tp, pp, dataset, Path(str(report).format(mode="throughput")), "throughput"
        ),
        "latency": bench_argv(
            model_name, hf_dir, options_file, tp, pp, dataset, Path(str(report).format(mode="latency")), "latency"
        ),
    }
    return BuildPlan(
        "pytorch",
        runtime.name,
        out,
        None,
        hf_dir,
        tokenizer,
        tp,
        pp,
        None,
        why,
        serve,
        llm_options,
        warnings,
        checked,
        bench,
    )


def hub_model_name(model: str | None) -> str | None:
    """The Hugging Face id trtllm-bench loads the tokenizer from: a zoo alias's first id, or an id as given."""
    if not model:
        return None
    from trtq.model.zoo import ZOO

    entry = ZOO.get(model.strip().lower())
    if entry is not None:
        return entry.hf_ids[0]
    return model if "/" in model and not model.startswith(("/", ".")) else None


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
