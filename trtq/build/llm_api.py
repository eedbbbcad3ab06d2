"""TensorRT-LLM's PyTorch backend: is the checkpoint one the LLM API loads, and how to serve and bench it.

The LLM API reads ModelOpt's unified HF checkpoint through `ModelConfig.load_modelopt_quant_config`
(tensorrt_llm/_torch/model_config.py): `hf_quant_config.json`'s `quantization` object gives
`quant_algo` (a `QuantAlgo` value), `kv_cache_quant_algo`, `group_size`, `exclude_modules`; with
`MIXED_PRECISION` it reads the per-layer `quantized_layers` map (each entry `quant_algo`, optional
`group_size`, `has_zero_point`, `pre_quant_scale`), overlaid by a `quant_cfg.json` in the same
directory whose KV-cache algorithm must agree. `validate_for_llm_api` checks those rules here,
without TensorRT-LLM, and additionally that every format and the KV cache run on the GPU under
the runtime (profiles/runtimes.yaml), that group sizes have kernels and that the layers the PyTorch
backend fuses (q/k/v, gate/up) share one algorithm. Where `tensorrt_llm` is importable, its own
loader reads the file too.

`extra_llm_api_options.yaml` keys are `TorchLlmArgs` fields (tensorrt_llm/llmapi/llm_args.py):
`kv_cache_config` (`dtype`, `free_gpu_memory_fraction`), `cuda_graph_config` (`batch_sizes`,
`enable_padding`), `max_batch_size`, `max_num_tokens`, `max_seq_len`. The commands are argument
lists for `trtllm-serve MODEL --backend pytorch --tp_size --pp_size --extra_llm_api_options FILE`
and `trtllm-bench --model NAME --model_path DIR {prepare-dataset|throughput|latency}`
(docs/source/commands/trtllm-serve and trtllm-bench; TensorRT-LLM 1.2 spells the YAML flag
`--extra_llm_api_options`, later releases accept `--config` as an alias).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any, Literal, cast

from trtq.artifacts.build import (
    DEFAULT_FREE_GPU_MEMORY_FRACTION,
    CudaGraphConfig,
    KvCacheConfig,
    LlmApiOptions,
)
from trtq.errors import ArtifactError, InputError, UnsupportedError

# tensorrt_llm/quantization/mode.py QuantAlgo (1.2): the names its loader accepts.
QUANT_ALGOS = frozenset(
    {
        "W8A16",
        "W4A16",
        "W4A16_AWQ",
        "W4A8_AWQ",
        "W8A16_GPTQ",
        "W4A16_GPTQ",
        "W8A8_SQ_PER_CHANNEL",
        "W8A8_SQ_PER_TENSOR_PLUGIN",
        "W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN",
        "W8A8_SQ_PER_CHANNEL_PER_TENSOR_PLUGIN",
        "W8A8_SQ_PER_TENSOR_PER_TOKEN_PLUGIN",
        "W4A8_QSERVE_PER_GROUP",
        "W4A8_QSERVE_PER_CHANNEL",
        "FP8",
        "FP8_PER_CHANNEL_PER_TOKEN",
        "FP8_BLOCK_SCALES",
        "INT8",
        "MIXED_PRECISION",
        "NVFP4",
        "W4A8_NVFP4_FP8",
        "W4A8_MXFP4_FP8",
        "W4A8_MXFP4_MXFP8",
        "W4A16_MXFP4",
        "NO_QUANT",
    }
)
# mode.py KV_CACHE_QUANT_ALGO_LIST, and the trtq KV format / LLM API kv_cache_config.dtype for each.
KV_CACHE_ALGOS = {"FP8": "fp8", "NVFP4": "nvfp4", "INT8": "int8"}
# Layers the PyTorch backend fuses into one GEMM: their members must share an algorithm.
FUSED_MEMBERS = {
    "qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "gate_up": ("mlp.gate_proj", "mlp.up_proj"),
}

# trtllm-serve's defaults for these (docs/source/commands/trtllm-serve): used when not given.
DEFAULT_MAX_BATCH_SIZE = 256
DEFAULT_MAX_NUM_TOKENS = 8192
OPTIONS_FILE = "extra_llm_api_options.yaml"


def cuda_graph_batch_sizes(max_batch_size: int) -> list[int]:
    """Powers of two up to max_batch_size, and max_batch_size itself: a decode step of any batch pads to one."""
    sizes, b = [], 1
    while b < max_batch_size:
        sizes.append(b)
        b *= 2
    sizes.append(max_batch_size)
    return sizes


def llm_api_options(
    kv_cache_quant_algo: str | None,
    max_batch_size: int | None = None,
    max_num_tokens: int | None = None,
    max_seq_len: int | None = None,
    free_gpu_memory_fraction: float | None = None,
) -> LlmApiOptions:
    batch = max_batch_size or DEFAULT_MAX_BATCH_SIZE
    kv = KV_CACHE_ALGOS.get((kv_cache_quant_algo or "").upper(), "auto")
    if kv == "int8":
        raise UnsupportedError("an INT8 KV cache is not one the PyTorch backend's kv_cache_config takes (fp8, nvfp4)")
    return LlmApiOptions(
        kv_cache_config=KvCacheConfig(
            dtype=cast(Any, kv),
            free_gpu_memory_fraction=(
                free_gpu_memory_fraction if free_gpu_memory_fraction is not None else DEFAULT_FREE_GPU_MEMORY_FRACTION
            ),
        ),
        cuda_graph_config=CudaGraphConfig(batch_sizes=cuda_graph_batch_sizes(batch)),
        max_batch_size=batch,
        max_num_tokens=max_num_tokens or DEFAULT_MAX_NUM_TOKENS,
        max_seq_len=max_seq_len,
    )


# ---------------------------------------------------------------------------------------------------------
# Checkpoint validation


def _block_and_member(name: str) -> tuple[int | None, str]:
    m = re.match(r"^model\.layers\.(\d+)\.(.+)$", name)
    return (int(m.group(1)), m.group(2)) if m else (None, name)


def validate_quantization(
    quantization: dict, source: Path, num_layers: int | None, overlay: dict | None = None
) -> dict:
    """The checks TensorRT-LLM's modelopt loader makes (and the ones it makes later, at load), one line each.

    Returns {"quant_algo", "kv_cache_quant_algo", "layers": {name: (algo, group_size)}}.
    """
    if not isinstance(quantization, dict):
        raise ArtifactError(f"{source}: 'quantization' must be an object")
    algo = quantization.get("quant_algo")
    if algo is not None and algo not in QUANT_ALGOS:
        raise ArtifactError(f"{source}: quant_algo {algo!r} is not a TensorRT-LLM QuantAlgo")
    kv = quantization.get("kv_cache_quant_algo")
    if kv is not None and kv not in KV_CACHE_ALGOS:
        raise ArtifactError(
            f"{source}: kv_cache_quant_algo {kv!r} is not one TensorRT-LLM quantizes a KV cache "
            f"to ({', '.join(KV_CACHE_ALGOS)})"
        )
    layers: dict[str, tuple[str, int | None]] = {}
    if algo == "MIXED_PRECISION":
        merged = dict(quantization)
        if overlay is not None:
            overlay_kv = overlay.get("kv_cache_quant_algo")
            if overlay_kv is not None and kv is not None and overlay_kv != kv:
                raise ArtifactError(
                    f"{source}: quant_cfg.json's KV cache {overlay_kv} differs from "
                    f"hf_quant_config.json's {kv}: TensorRT-LLM's loader refuses that"
                )
            merged.update(overlay)
        quantized = merged.get("quantized_layers")
        if not isinstance(quantized, dict) or not quantized:
            raise ArtifactError(f"{source}: quant_algo MIXED_PRECISION needs a non-empty quantized_layers object")
        for name, cfg in quantized.items():
            if not isinstance(cfg, dict) or cfg.get("quant_algo") not in QUANT_ALGOS - {"MIXED_PRECISION", "NO_QUANT"}:
                got = cfg.get("quant_algo") if isinstance(cfg, dict) else cfg
                raise ArtifactError(
                    f"{source}: quantized_layers[{name!r}] has quant_algo {got!r}, not a per-layer "
                    "TensorRT-LLM QuantAlgo"
                )
            block, _ = _block_and_member(name)
            if block is None and name != "lm_head":
                raise ArtifactError(
                    f"{source}: quantized_layers[{name!r}] is not a Hugging Face module path "
                    "(model.layers.N.… or lm_head): the LLM API would not find it"
                )
            if block is not None and num_layers is not None and block >= num_layers:
                raise ArtifactError(
                    f"{source}: quantized_layers[{name!r}] is block {block}, the model has "
                    f"{num_layers} (num_hidden_layers)"
                )
            layers[name] = (cfg["quant_algo"], _group_size(cfg, cfg["quant_algo"], source, name))
        kv = merged.get("kv_cache_quant_algo", kv)
    elif algo is not None:
        _group_size(quantization, algo, source, "checkpoint")
    _check_fused(layers, source)
    return {"quant_algo": algo, "kv_cache_quant_algo": kv, "layers": layers}


def _group_size(cfg: dict, algo: str, source: Path, where: str) -> int | None:
    from trtq.formats import format_for_checkpoint_algo

    value = cfg.get("group_size")
    # Algorithms whose weights are grouped along the input width (the format's runtime_group_sizes):
    # group_size is required.
    fmt = format_for_checkpoint_algo(algo)
    allowed = tuple(sorted(fmt.runtime_group_sizes)) if fmt is not None else ()
    if not allowed:
        return value if isinstance(value, int) else None
    if value is None and len(allowed) == 1:
        return allowed[0]  # the loader's default (NVFP4: 16)
    if isinstance(value, bool) or not isinstance(value, int) or value not in allowed:
        raise UnsupportedError(
            f"{source}: {where}: {algo} with group_size {value!r} has no TensorRT-LLM kernel "
            f"(group sizes {'/'.join(map(str, allowed))})"
        )
    return value


def _check_fused(layers: dict[str, tuple[str, int | None]], source: Path) -> None:
    by_block: dict[tuple[int, str], dict[str, tuple[str, int | None]]] = {}
    for name, choice in layers.items():
        block, member = _block_and_member(name)
        for fused, members in FUSED_MEMBERS.items():
            if block is not None and member in members:
                by_block.setdefault((block, fused), {})[member] = choice
    for (block, fused), seen in sorted(by_block.items()):
        members = FUSED_MEMBERS[fused]
        choices = {seen.get(m, ("unquantized", None)) for m in members}
        if len(choices) > 1:
            detail = ", ".join(f"{m.split('.')[-1]} {seen.get(m, ('unquantized',))[0]}" for m in members)
            raise UnsupportedError(
                f"{source}: block {block} {fused} mixes {detail}: the PyTorch backend fuses "
                "these into one GEMM, one format"
            )


def validate_for_llm_api(checkpoint, gpu, runtime) -> list[str]:
    """Refuse (one line) a checkpoint the LLM API would not load or the GPU/runtime would not run.

    Returns what was checked, for the build record.
    """
    from trtq.build.checkpoint import _read_json
    from trtq.formats import checkpoint_algo_formats
    from trtq.registry.runtimes import require_format, require_kv_cache

    hf_dir = checkpoint.hf_dir
    if hf_dir is None:
        raise InputError(
            f"{checkpoint.path}: no Hugging Face checkpoint (hf/ with config.json) for the PyTorch "
            "backend; `trtq quantize` writes one"
        )
    config = _read_json(hf_dir / "config.json", "Hugging Face config")
    if not (config.get("architectures") or []):
        raise ArtifactError(f"{hf_dir / 'config.json'}: no architectures: the LLM API cannot pick a model class")
    num_layers = config.get("num_hidden_layers")
    num_layers = num_layers if isinstance(num_layers, int) and num_layers > 0 else None
    checked = [f"{hf_dir / 'config.json'}: architecture {config['architectures'][0]}"]
    quant_file = hf_dir / "hf_quant_config.json"
    parsed: dict[str, Any] = {"quant_algo": None, "kv_cache_quant_algo": None, "layers": {}}
    if quant_file.is_file():
        data = _read_json(quant_file, "hf_quant_config.json")
        overlay = (
            _read_json(hf_dir / "quant_cfg.json", "quant_cfg.json") if (hf_dir / "quant_cfg.json").is_file() else None
        )
        parsed = validate_quantization(data.get("quantization"), quant_file, num_layers, overlay)
        checked.append(
            f"{quant_file}: quant_algo {parsed['quant_algo']}, "
            f"{len(parsed['layers'])} per-layer entries, KV cache {parsed['kv_cache_quant_algo'] or 'auto'}"
        )
    algos = {a for a, _ in parsed["layers"].values()} or ({parsed["quant_algo"]} if parsed["quant_algo"] else set())
    formats = set()
    for algo in sorted(algos):
        known = checkpoint_algo_formats()
        fmt = known[algo].name if algo in known else None
        if fmt is None:
            raise UnsupportedError(
                f"{quant_file}: quant_algo {algo} has no trtq format to gate it by (known: {', '.join(sorted(known))})"
            )
        require_format(gpu, fmt, runtime)
        formats.add(fmt)
    kv = KV_CACHE_ALGOS.get(parsed["kv_cache_quant_algo"] or "")
    if kv is not None:
        require_kv_cache(gpu, kv, runtime, formats)
    checked.append(
        f"formats {', '.join(sorted(formats)) or 'bf16 only'}"
        f"{f' and {kv} KV cache' if kv else ''} run on {gpu.name} under {runtime.name}"
    )
    checked.append(
        check_with_tensorrt_llm(hf_dir)
        or "TensorRT-LLM is not importable here: checked against its loader's documented rules only"
    )
    return checked


def check_with_tensorrt_llm(hf_dir: Path) -> str | None:
    """TensorRT-LLM's own loader on the file, where it is importable (the NGC container); None elsewhere."""
    if importlib.util.find_spec("tensorrt_llm") is None or not (hf_dir / "hf_quant_config.json").is_file():
        return None
    try:
        from tensorrt_llm._torch.model_config import ModelConfig

        quant_config, layers = ModelConfig.load_modelopt_quant_config(
            str(hf_dir / "hf_quant_config.json"), str(hf_dir), "CUTLASS"
        )
    except Exception as exc:  # noqa: BLE001 - any refusal of TensorRT-LLM's loader is the user's one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ArtifactError(f"{hf_dir}: TensorRT-LLM's loader refused hf_quant_config.json: {first}") from None
    return (
        f"tensorrt_llm ModelConfig.load_modelopt_quant_config: {quant_config.quant_algo}, "
        f"{len(layers or {})} per-layer configs"
    )


# ---------------------------------------------------------------------------------------------------------
# Commands (argument lists; nothing here runs them)


def serve_argv(
    model_dir: Path,
    tp: int,
    pp: int,
    options_file: Path | None,
    tokenizer: Path | None,
    backend: Literal["pytorch", "tensorrt"] = "pytorch",
) -> list[str]:
    """trtllm-serve MODEL ... without --host/--port (the caller adds them)."""
    argv = ["trtllm-serve", str(model_dir), "--backend", backend, "--tp_size", str(tp), "--pp_size", str(pp)]
    if options_file is not None:
        argv += ["--extra_llm_api_options", str(options_file)]
    if tokenizer is not None and tokenizer != model_dir:
        argv += ["--tokenizer", str(tokenizer)]
    return argv


def bench_argv(
    model_name: str,
    model_dir: Path,
    options_file: Path,
    tp: int,
    pp: int,
    dataset: Path,
    report: Path,
    mode: Literal["throughput", "latency"],
    concurrency: int | None = None,
    num_requests: int | None = None,
    warmup: int | None = None,
) -> list[str]:
    """trtllm-bench throughput|latency on a prepared dataset, writing its JSON report."""
    argv = [
        "trtllm-bench",
        "--model",
        model_name,
        "--model_path",
        str(model_dir),
        mode,
        "--dataset",
        str(dataset),
        "--backend",
        "pytorch",
        "--extra_llm_api_options",
        str(options_file),
        "--tp",
        str(tp),
        "--pp",
        str(pp),
        "--report_json",
        str(report),
    ]
    if mode == "throughput":
        argv += ["--streaming"]
        if concurrency is not None:
            argv += ["--concurrency", str(concurrency)]
    if num_requests is not None:
        argv += ["--num_requests", str(num_requests)]
    if warmup is not None:
        argv += ["--warmup", str(warmup)]
    return argv


def prepare_dataset_argv(
    model_name: str, model_dir: Path, output: Path, requests: int, isl: int, osl: int, seed: int = 0
) -> list[str]:
    """trtllm-bench prepare-dataset token-norm-dist: `requests` synthetic requests of exactly isl/osl tokens.

    The tokenizer is `--model` (tensorrt_llm/bench/dataset/prepare_dataset.py: ctx.obj.model).
    """
    return [
        "trtllm-bench",
        "--model",
        model_name,
        "--model_path",
        str(model_dir),
        "prepare-dataset",
        "--output",
        str(output),
        "--random-seed",
        str(seed),
        "token-norm-dist",
        "--num-requests",
        str(requests),
        "--input-mean",
        str(isl),
        "--output-mean",
        str(osl),
        "--input-stdev",
        "0",
        "--output-stdev",
        "0",
    ]
