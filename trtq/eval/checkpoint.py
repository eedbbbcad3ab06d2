"""Rebuild a float model from a checkpoint `trtq quantize` exported, to score the artifact itself.

transformers cannot load ModelOpt's unified HF checkpoint as a float model (packed INT4,
FP8 and INT8 weights with their scales) and the export writes no modelopt_state, so this
module reads `hf/*.safetensors` (safetensors only, never pickle) and `hf_quant_config.json`
itself. The architecture and tokenizer come from the reference model; every tensor of the
result comes from the checkpoint: unquantized tensors (embeddings, norms, bf16 layers) load
as they are, and each quantized Linear becomes a `CheckpointLinear` that computes what the
deployed kernel computes from the exported tensors: x * pre_quant_scale (where kept),
activations quantized with the exported static input_scale, x @ dequantized(W)^T.

What ModelOpt 0.47 writes for each format (modelopt/torch/export/quant_utils.py, unified_export_hf.py),
and how it is read back, lives with the format: trtq/formats/<name>.py (`checkpoint_tensors`,
`dequantize_checkpoint`, `quantize_checkpoint_input`). Across formats:
  * Before packing, layers that share an input (q/k/v, gate/up) in a format other than FP8
    get one pre_quant_scale, the mean of theirs (weights re-scaled by old/new and their
    weight amax re-collected), and one input amax, the max of theirs; in AWQ formats that
    pre_quant_scale is then multiplied into the preceding RMSNorm's weight and not written.
    The checkpoint's norms carry it, so loading them as exported is all it takes.

Activation quantization is ModelOpt's fake quantization with the exported static scale,
computed in float32 and returned in the compute dtype, as ModelOpt does.
"""

from __future__ import annotations

import copy
import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trtq.errors import ArtifactError, InputError, UnsupportedError
from trtq.formats import FORMATS, format_for_checkpoint_algo
from trtq.formats.base import Format

# ModelOpt's packings read back (re-exported: tests and callers import them from here).
from trtq.formats.numerics import unpack_e2m1, unpack_int4  # noqa: F401

QUANT_CONFIG = "hf_quant_config.json"


def readable_algos() -> list[str]:
    """The quant_algo names eval rebuilds: the one ModelOpt writes for each format that can be rebuilt."""
    return [f.checkpoint_algo for f in FORMATS.values() if f.rebuilds_checkpoint and f.checkpoint_algo]


# Config entries that fix the shapes: a checkpoint of another model disagrees on one.
from trtq.model.families import SHAPE_KEYS as _ARCHITECTURE_KEYS  # noqa: E402  (from the family adapters)


@dataclass(frozen=True)
class LayerQuant:
    algo: str
    group_size: int | None = None

    @property
    def fmt(self) -> Format:
        found = format_for_checkpoint_algo(self.algo)
        if found is None:
            raise UnsupportedError(f"quant_algo {self.algo!r} is not one trtq eval can reproduce")
        return found

    @property
    def format(self) -> str:
        return self.fmt.name


@dataclass
class Checkpoint:
    """What the checkpoint's JSON says; read without torch, before any model loads."""

    root: Path  # the directory the user named
    hf: Path  # the directory holding the safetensors
    quant_algo: str | None  # MIXED_PRECISION, one algorithm, or None
    layers: dict[str, LayerQuant]  # MIXED_PRECISION: layer -> how it is quantized
    default: LayerQuant | None  # one algorithm: every Linear not excluded
    exclude: list[str]  # its exclude_modules wildcards
    config: dict[str, Any]  # hf/config.json
    weight_files: list[Path]
    model_name: str | None = None  # from plan.yaml / quantize_summary.json
    plan_path: Path | None = None
    calibration_sha256: str | None = None

    def layer_quant(self, name: str) -> LayerQuant | None:
        if self.quant_algo == "MIXED_PRECISION":
            # An entry names a module and covers what is under it: ModelOpt names a layer's routed experts once
            # (model.layers.0.block_sparse_moe.experts) where they share a format, not per expert GEMM.
            parts = name.split(".")
            for end in range(len(parts), 0, -1):
                found = self.layers.get(".".join(parts[:end]))
                if found is not None:
                    return found
            return None
        if self.default is None or any(fnmatch.fnmatchcase(name, p) for p in self.exclude):
            return None
        return self.default

    def input_files(self) -> dict[str, Path]:
        """Files that define the checkpoint, keyed by their path under the root (for metadata)."""
        files = [self.hf / QUANT_CONFIG, self.hf / "config.json", *self.weight_files]
        if self.plan_path is not None:
            files.append(self.plan_path)
        return {str(f.relative_to(self.root)): f for f in files}


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise ArtifactError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from None


def _layer_quant(where: str, entry: Any) -> LayerQuant:
    if not isinstance(entry, dict):
        raise ArtifactError(f"{where}: expected a mapping with quant_algo, got {entry!r}")
    algo = entry.get("quant_algo")
    fmt = format_for_checkpoint_algo(algo)
    if fmt is None or not fmt.rebuilds_checkpoint or algo != fmt.checkpoint_algo:
        raise UnsupportedError(
            f"{where}: quant_algo {algo!r} is not one trtq eval can reproduce (it reads {', '.join(readable_algos())})"
        )
    group_size = entry.get("group_size")
    if fmt.block_sizes:
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0:
            raise ArtifactError(f"{where}: {algo} needs a positive integer group_size, got {group_size!r}")
        refusal = fmt.checkpoint_group_refusal(group_size)
        if refusal:
            raise UnsupportedError(f"{where}: {refusal}")
        return LayerQuant(algo, group_size)
    return LayerQuant(algo)


def open_checkpoint(directory: str | Path) -> Checkpoint:
    """Read and check the checkpoint's JSON: one-line errors, no torch, no weights read."""
    root = Path(directory)
    if not root.exists():
        raise InputError(f"checkpoint directory not found: {root}")
    if not root.is_dir():
        raise InputError(f"checkpoint {root} is not a directory")
    hf = root / "hf" if (root / "hf").is_dir() else root
    if not (hf / QUANT_CONFIG).is_file():
        raise InputError(f"{root} is not a trtq/ModelOpt checkpoint (no {QUANT_CONFIG})")
    where = hf / QUANT_CONFIG
    data = _read_json(where, "checkpoint quantization config")
    quantization = data.get("quantization") if isinstance(data, dict) else None
    if not isinstance(quantization, dict):
        raise ArtifactError(f"{where}: no 'quantization' mapping (not a ModelOpt unified HF checkpoint)")
    kv_cache = quantization.get("kv_cache_quant_algo")
    if kv_cache is not None:
        raise UnsupportedError(
            f"{where}: the KV cache is quantized ({kv_cache}); trtq eval --checkpoint "
            "scores checkpoints with an unquantized KV cache only"
        )
    quant_algo = quantization.get("quant_algo")
    layers: dict[str, LayerQuant] = {}
    default = None
    exclude: list[str] = []
    if quant_algo == "MIXED_PRECISION":
        entries = quantization.get("quantized_layers")
        if not isinstance(entries, dict):
            raise ArtifactError(f"{where}: MIXED_PRECISION without a quantized_layers mapping")
        layers = {name: _layer_quant(f"{where}: layer {name}", entry) for name, entry in entries.items()}
    elif quant_algo is not None:
        default = _layer_quant(f"{where}", quantization)
        exclude = quantization.get("exclude_modules") or []
        if not isinstance(exclude, list) or not all(isinstance(p, str) for p in exclude):
            raise ArtifactError(f"{where}: exclude_modules must be a list of names")
    config = _read_json(hf / "config.json", "checkpoint config.json")
    if not isinstance(config, dict):
        raise ArtifactError(f"{hf / 'config.json'}: not a Hugging Face model config")
    weight_files = sorted(hf.glob("*.safetensors"))
    if not weight_files:
        raise ArtifactError(f"checkpoint {hf} has no *.safetensors weights")
    checkpoint = Checkpoint(
        root=root,
        hf=hf,
        quant_algo=quant_algo,
        layers=layers,
        default=default,
        exclude=exclude,
        config=config,
        weight_files=weight_files,
    )
    _read_provenance(checkpoint)
    return checkpoint


def _read_provenance(checkpoint: Checkpoint) -> None:
    """The model and calibration the checkpoint was made from, where `trtq quantize` wrote them."""
    from trtq.artifacts import load_artifact
    from trtq.artifacts.plan import Plan
    from trtq.artifacts.quantize import QuantizeSummary

    if checkpoint.hf == checkpoint.root:
        return  # an hf/ directory named directly: its parent is not ours to read
    summary_path = checkpoint.root / "quantize_summary.json"
    if summary_path.is_file():
        summary = load_artifact(summary_path, QuantizeSummary)
        checkpoint.model_name = summary.model
        checkpoint.calibration_sha256 = summary.calibration_sha256
    plan_path = checkpoint.root / "plan.yaml"
    if plan_path.is_file():
        plan = load_artifact(plan_path, Plan)
        checkpoint.plan_path = plan_path
        if checkpoint.model_name is not None and checkpoint.model_name != plan.model:
            raise ArtifactError(
                f"{checkpoint.root}: quantize_summary.json names model {checkpoint.model_name!r} "
                f"but plan.yaml {plan.model!r}"
            )
        checkpoint.model_name = plan.model


def check_model_matches(checkpoint: Checkpoint, model_name: str, model_config: dict[str, Any]) -> None:
    """The checkpoint was made for this model: by name where trtq recorded one, and by shape."""
    if checkpoint.model_name is not None and checkpoint.model_name != model_name:
        raise InputError(
            f"checkpoint {checkpoint.root} was made for model {checkpoint.model_name!r}, not {model_name!r}"
        )
    for key in _ARCHITECTURE_KEYS:
        theirs, ours = checkpoint.config.get(key), model_config.get(key)
        if theirs is not None and ours is not None and theirs != ours:
            raise InputError(
                f"checkpoint {checkpoint.root} is for another model: its config.json has "
                f"{key} {theirs!r}, {model_name} has {ours!r}"
            )


# --- arithmetic: each format's own (trtq/formats/<name>.py: dequantize_checkpoint, checkpoint_tensors,
# quantize_checkpoint_input), ModelOpt's packing read back and its fake quantization of activations ---


def dequantize_weight(
    algo: str,
    tensors: dict[str, torch.Tensor],
    out_features: int,
    in_features: int,
    group_size: int | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    """The weight the kernel multiplies by, in `dtype`, from the exported tensors."""
    fmt = LayerQuant(algo, group_size).fmt
    if not fmt.rebuilds_checkpoint:
        raise UnsupportedError(f"quant_algo {algo!r} is not one trtq eval can reproduce")
    return fmt.dequantize_checkpoint(tensors, out_features, in_features, group_size, dtype)


def _expected_shapes(
    fmt: Format, out_features: int, in_features: int, group_size: int | None
) -> dict[str, tuple[tuple[int, ...], tuple[str, ...]]]:
    """name -> (shape, allowed dtypes) of each tensor a layer of this format carries."""
    scalar: tuple[int, ...] = ()
    shapes: dict[str, tuple[tuple[int, ...], tuple[str, ...]]] = {
        "input_scale": (scalar, ("float32",)),
        "weight_scale_2": (scalar, ("float32",)),
        "pre_quant_scale": ((in_features,), ("bfloat16", "float16", "float32")),
    }
    shapes.update(fmt.checkpoint_tensors(out_features, in_features, group_size))
    return shapes


class CheckpointLinear(torch.nn.Module):
    """A quantized Linear as exported: x * pre_quant_scale, activation quantization, x @ W^T (+ b)."""

    def __init__(
        self,
        name: str,
        quant: LayerQuant,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        pre_quant_scale: torch.Tensor | None,
        input_scale: torch.Tensor | None,
    ) -> None:
        super().__init__()
        self.name = name
        self.quant = quant
        self.out_features, self.in_features = weight.shape
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else torch.nn.Parameter(bias, requires_grad=False)
        self.register_buffer("pre_quant_scale", pre_quant_scale)
        # A plain attribute, not a buffer: the exported scale stays float32 whatever dtype the model moves to.
        self.input_scale = None if input_scale is None else input_scale.to(torch.float32)

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the GEMM reads: the input times pre_quant_scale, quantized as the format's activations are."""
        if self.pre_quant_scale is not None:
            x = x * self.pre_quant_scale
        if self.input_scale is not None and self.input_scale.device != x.device:
            self.input_scale = self.input_scale.to(x.device)  # not a buffer (float32 kept): follows the input once
        return self.quant.fmt.quantize_checkpoint_input(x, self.input_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(self.quantize_input(x), self.weight, self.bias)

    def extra_repr(self) -> str:
        group = f", group_size={self.quant.group_size}" if self.quant.group_size else ""
        pqs = ", pre_quant_scale" if self.pre_quant_scale is not None else ""
        return f"{self.in_features} -> {self.out_features}, {self.quant.algo}{group}{pqs}"


class CheckpointExperts(torch.nn.Module):
    """A layer's routed experts as exported: ModelOpt writes them per expert (gate, up and down Linear
    weights, each with its scales), so each expert's GEMMs are rebuilt on their own (CheckpointLinear
    where quantized: dequantized weight, input quantized with that expert's exported scale) and the
    tokens routed as transformers 5's fused experts module routes them (the same forward signature,
    the same order of accumulation)."""

    def __init__(
        self, act_fn, gate: list[torch.nn.Module], up: list[torch.nn.Module], down: list[torch.nn.Module]
    ) -> None:
        super().__init__()
        self.act_fn = act_fn
        self.gate = torch.nn.ModuleList(gate)
        self.up = torch.nn.ModuleList(up)
        self.down = torch.nn.ModuleList(down)

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor):
        final = torch.zeros_like(hidden_states)
        for e in range(len(self.gate)):
            top_k_pos, token_idx = torch.where((top_k_index == e).T)
            if token_idx.numel() == 0:
                continue
            x = hidden_states[token_idx]
            h = self.down[e](self.act_fn(self.gate[e](x)) * self.up[e](x))
            final.index_add_(0, token_idx, (h * top_k_weights[token_idx, top_k_pos, None]).to(final.dtype))
        return final


@dataclass(frozen=True)
class _ExpertLayers:
    """Where a model's fused experts sit and what the checkpoint calls each expert's Linear layers."""

    modules: dict[str, torch.nn.Module]  # name of a fused experts module (under the module searched) -> it
    layers: dict[str, list[tuple[str, int, int]]]  # that name -> [(checkpoint layer name, out, in)] per GEMM
    aliases: dict[str, str]  # model tensor name -> the checkpoint's (MoE blocks named otherwise on disk)


def _expert_layers(
    module: torch.nn.Module, config: dict[str, Any], store: _TensorStore, prefix: str = ""
) -> _ExpertLayers:
    """The fused experts modules in `module` (named `prefix` + its name in the model)."""
    from trtq.model.families import adapter_for

    adapter = adapter_for(config)
    layout = adapter.moe if adapter is not None else None
    if layout is None:
        return _ExpertLayers({}, {}, {})
    gate, up, down = layout.checkpoint_expert_names
    mlp = layout.experts_path.rsplit(".", 1)[0]
    modules, layers = {}, {}
    for name, child in module.named_modules():
        if not f"{prefix}{name}".endswith(f".{layout.experts_path}") or not hasattr(child, "gate_up_proj"):
            continue
        experts, double_intermediate, hidden = child.gate_up_proj.shape
        intermediate = double_intermediate // 2
        base = f"{prefix}{name[: -len(layout.experts_path)]}{layout.checkpoint_mlp}.experts"
        modules[name] = child
        layers[name] = [
            (f"{base}.{e}.{leaf}", out_features, in_features)
            for e in range(experts)
            for leaf, out_features, in_features in (
                (gate, intermediate, hidden),
                (up, intermediate, hidden),
                (down, hidden, intermediate),
            )
        ]
    aliases = {}
    if layout.checkpoint_mlp != mlp:
        for key in module.state_dict():
            full = f"{prefix}{key}"
            legacy = full.replace(f".{mlp}.", f".{layout.checkpoint_mlp}.", 1)
            if full not in store and legacy in store:
                aliases[full] = legacy
    return _ExpertLayers(modules, layers, aliases)


def _rebuild_experts(
    rebuilt: torch.nn.Module,
    found: _ExpertLayers,
    checkpoint: Checkpoint,
    store: _TensorStore,
    source: Path,
    dtype: torch.dtype,
    counts: dict[str, int],
    prefix: str = "",
) -> set[str]:
    """Each fused experts module of `rebuilt` (named `prefix` + its name in the model) replaced by a
    CheckpointExperts on the module's device; the checkpoint tensor names it consumed."""
    consumed: set[str] = set()
    for name, module in found.modules.items():
        gemms: list[torch.nn.Module] = []
        for layer, out_features, in_features in found.layers[name]:
            quant = checkpoint.layer_quant(layer)
            if quant is None:
                key = f"{layer}.weight"
                if key not in store:
                    raise ArtifactError(f"checkpoint {source} lacks tensor {key}")
                weight = store.get(key)
                if tuple(weight.shape) != (out_features, in_features) or not weight.is_floating_point():
                    raise ArtifactError(
                        f"checkpoint tensor {key} is {_dtype_name(weight)} {list(weight.shape)}; the model's "
                        f"expert needs a float [{out_features}, {in_features}]"
                    )
                linear = torch.nn.Linear(in_features, out_features, bias=False, dtype=dtype)
                with torch.no_grad():
                    linear.weight.copy_(weight.to(dtype))
                linear.requires_grad_(False)
                gemms.append(linear)
                consumed.add(key)
                counts["bf16"] = counts.get("bf16", 0) + 1
            else:
                shape = torch.nn.Linear(in_features, out_features, bias=False, device="meta")
                rebuilt_gemm, used = _quantized_linear(layer, quant, shape, store, source, dtype)
                gemms.append(rebuilt_gemm)
                consumed |= used
                counts[quant.format] = counts.get(quant.format, 0) + 1
        experts = CheckpointExperts(module.act_fn, gemms[0::3], gemms[1::3], gemms[2::3])
        parent, _, child = name.rpartition(".")
        setattr(rebuilt.get_submodule(parent), child, experts.to(_device_of(module)))
        # its own tensor names, so the walk over the model's tensors counts them as loaded
        consumed |= {f"{prefix}{name}.{key}" for key in experts.state_dict()}
    return consumed


@dataclass
class LoadedCheckpoint:
    model: Any
    layer_formats: dict[str, int]  # trtq format -> Linear layers in it (bf16 = unquantized)
    folded_pre_quant_scale: list[str]  # AWQ layers whose pre_quant_scale ModelOpt folded into a norm
    notes: list[str]


class _TensorStore:
    """Every tensor of the checkpoint's safetensors files, read on demand (safetensors, never pickle).

    Each read opens its file and closes it: a file held open keeps every page read through its memory map
    resident, so a block-by-block pass would end holding the whole checkpoint."""

    def __init__(self, files: list[Path]) -> None:
        from safetensors import SafetensorError, safe_open

        self.where: dict[str, Path] = {}
        for path in files:
            try:
                with safe_open(str(path), framework="pt") as handle:
                    keys = list(handle.keys())
            except (SafetensorError, OSError, ValueError) as exc:
                raise ArtifactError(f"{path}: not a readable safetensors file: {exc}") from None
            for key in keys:
                if key in self.where:
                    raise ArtifactError(f"tensor {key} is in both {self.where[key].name} and {path.name}")
                self.where[key] = path

    def __contains__(self, key: str) -> bool:
        return key in self.where

    def get(self, key: str) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(str(self.where[key]), framework="pt") as handle:
            return handle.get_tensor(key)


def _dtype_name(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def _layer_tensors(
    store: _TensorStore, name: str, quant: LayerQuant, out_features: int, in_features: int, has_bias: bool, source: Path
) -> dict[str, torch.Tensor]:
    fmt = quant.fmt
    expected = _expected_shapes(fmt, out_features, in_features, quant.group_size)
    names = ["weight", *fmt.checkpoint_required]
    optional = list(fmt.checkpoint_optional) + (["bias"] if has_bias else [])
    tensors = {}
    for part in names + optional:
        key = f"{name}.{part}"
        if key not in store:
            if part in names:
                raise ArtifactError(f"checkpoint {source} lacks tensor {key}, which a {quant.algo} layer needs")
            continue
        tensor = store.get(key)
        if part in expected:
            shape, dtypes = expected[part]
            if tuple(tensor.shape) != shape or _dtype_name(tensor) not in dtypes:
                raise ArtifactError(
                    f"checkpoint tensor {key} is {_dtype_name(tensor)} {list(tensor.shape)}; a {quant.algo} "
                    f"layer {in_features} -> {out_features} needs {'/'.join(dtypes)} {list(shape)}"
                )
        elif part == "bias" and tuple(tensor.shape) != (out_features,):
            raise ArtifactError(f"checkpoint tensor {key} has shape {list(tensor.shape)}, expected [{out_features}]")
        tensors[part] = tensor
    for part in ("weight_scale", "weight_scale_2", "input_scale", "pre_quant_scale"):
        if part in tensors and not bool((tensors[part].to(torch.float32) > 0).all()):
            raise ArtifactError(f"checkpoint tensor {name}.{part} has values <= 0: not a valid scale")
    return tensors


def _quantized_linear(
    name: str, quant: LayerQuant, module: torch.nn.Linear, store: _TensorStore, source: Path, dtype: torch.dtype
) -> tuple[CheckpointLinear, set[str]]:
    out_features, in_features = module.out_features, module.in_features
    if quant.group_size and in_features % quant.group_size:
        raise ArtifactError(
            f"checkpoint layer {name}: group size {quant.group_size} does not divide its input width {in_features}"
        )
    refusal = quant.fmt.checkpoint_shape_refusal(out_features)
    if refusal:
        raise ArtifactError(f"checkpoint layer {name}: {refusal}")
    tensors = _layer_tensors(store, name, quant, out_features, in_features, module.bias is not None, source)
    if module.bias is not None and "bias" not in tensors:
        raise ArtifactError(f"checkpoint {source} lacks tensor {name}.bias")
    weight = dequantize_weight(quant.algo, tensors, out_features, in_features, quant.group_size, dtype)
    bias = tensors["bias"].to(dtype) if "bias" in tensors else None
    pre_quant_scale = tensors["pre_quant_scale"].to(dtype) if "pre_quant_scale" in tensors else None
    linear = CheckpointLinear(name, quant, weight, bias, pre_quant_scale, tensors.get("input_scale"))
    return linear, {f"{name}.{part}" for part in tensors}


def _device_of(module: torch.nn.Module) -> torch.device:
    return next((p.device for p in module.parameters()), torch.device("cpu"))


def check_layers_exist(checkpoint: Checkpoint, model: torch.nn.Module) -> None:
    """Every layer a MIXED_PRECISION checkpoint quantizes is a Linear (or a routed expert's GEMM) of the model."""
    if checkpoint.quant_algo != "MIXED_PRECISION":
        return
    linears = {name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    experts = _expert_layers(model, checkpoint.config, _TensorStore([]))
    gemms = {layer for layers in experts.layers.values() for layer, _, _ in layers}
    linears |= gemms | {gemm.rsplit(".", 2)[0] for gemm in gemms}  # each expert GEMM, and the experts module
    strangers = [name for name in checkpoint.layers if name not in linears]
    if strangers:
        raise ArtifactError(
            f"checkpoint {checkpoint.hf} quantizes {strangers[0]}, which is not a Linear layer "
            f"of the model ({len(strangers)} such layers)"
        )


@dataclass
class RebuiltPart:
    """What rebuilding a module from the checkpoint consumed and found."""

    consumed: set[str] = field(default_factory=set)  # checkpoint tensor names read into the module
    counts: dict[str, int] = field(default_factory=dict)  # trtq format -> Linear layers (expert GEMMs) in it
    folded: list[str] = field(default_factory=list)  # AWQ layers whose pre_quant_scale ModelOpt folded into a norm
    moe_layers: int = 0  # fused experts modules rebuilt per expert

    def add(self, part: RebuiltPart) -> None:
        """`part`'s findings added to these (a model rebuilt one block at a time)."""
        self.consumed |= part.consumed
        for fmt, n in part.counts.items():
            self.counts[fmt] = self.counts.get(fmt, 0) + n
        self.folded += part.folded
        self.moe_layers += part.moe_layers


def rebuild_from_checkpoint(
    module: torch.nn.Module,
    checkpoint: Checkpoint,
    store: _TensorStore,
    dtype: torch.dtype,
    prefix: str = "",
    head: torch.nn.Module | None = None,
) -> RebuiltPart:
    """`module` (named `prefix` + its name in the model; its parameters materialized, in `dtype`) given every
    tensor from the checkpoint, in place: each quantized Linear becomes a CheckpointLinear and each fused
    experts module a CheckpointExperts, on the device of what they replace; every other tensor is loaded as
    exported. `head`: the model's output embeddings, a Linear counted only when quantized."""
    source = checkpoint.hf
    modules = dict(module.named_modules())
    linears = {name: m for name, m in modules.items() if isinstance(m, torch.nn.Linear)}
    experts = _expert_layers(module, checkpoint.config, store, prefix)
    consumed: set[str] = set()
    counts: dict[str, int] = {}
    folded = []
    for name, linear_module in linears.items():
        quant = checkpoint.layer_quant(f"{prefix}{name}")
        if quant is None:
            # The output head is no plan layer (trtq keeps it bf16): counted only when quantized.
            if linear_module is not head:
                counts["bf16"] = counts.get("bf16", 0) + 1
            continue
        linear, used = _quantized_linear(f"{prefix}{name}", quant, linear_module, store, source, dtype)
        consumed |= used
        parent_name, _, child = name.rpartition(".")
        setattr(modules[parent_name] if parent_name else module, child, linear.to(_device_of(linear_module)))
        counts[quant.format] = counts.get(quant.format, 0) + 1
        if quant.fmt.folds_pre_quant_scale and linear.pre_quant_scale is None:
            folded.append(f"{prefix}{name}")
    consumed |= _rebuild_experts(module, experts, checkpoint, store, source, dtype, counts, prefix)
    _load_unquantized(module, store, consumed, source, experts.aliases, prefix)
    return RebuiltPart(consumed, counts, folded, len(experts.modules))


def check_all_consumed(store: _TensorStore, consumed: set[str]) -> None:
    """No checkpoint tensor left over: one the model has no place for is an error, not ignored."""
    unknown = sorted(set(store.where) - consumed)
    if unknown:
        raise ArtifactError(
            f"checkpoint tensor {unknown[0]} is not a tensor of the model or of a layer the "
            f"config quantizes ({len(unknown)} such tensors)"
        )


def checkpoint_notes(
    checkpoint: Checkpoint, counts: dict[str, int], moe_layers: int, folded: list[str], dtype: torch.dtype
) -> list[str]:
    quantized = sum(n for fmt, n in counts.items() if fmt != "bf16")
    per_expert = f", routed experts counted per expert GEMM ({moe_layers} MoE layers)" if moe_layers else ""
    notes = [
        f"quantized model: the exported checkpoint {checkpoint.root} ({quantized} "
        f"quantized Linear layers rebuilt from their packed weights and scales{per_expert}, every other tensor "
        "as exported); "
        f"computed in {str(dtype).removeprefix('torch.')}, activations fake-quantized with the exported input_scale",
    ]
    if folded:
        notes.append(
            f"{len(folded)} AWQ layers carry no pre_quant_scale: ModelOpt's export averaged it over the "
            "layers sharing an input and folded it into the preceding norm's weight, loaded as exported"
        )
    return notes


def load_checkpoint_model(checkpoint: Checkpoint, model: Any, dtype: torch.dtype | None = None) -> LoadedCheckpoint:
    """A copy of `model` (the reference: architecture only) with every tensor from the checkpoint.

    `dtype` is the compute dtype (default float32, the reference model's: the checkpoint's
    bf16 values are exact in it, so a difference from the reference is the artifact's, not
    CPU bf16 arithmetic's); quantized layers dequantize once, at load, to that dtype.
    """
    dtype = dtype or torch.float32
    store = _TensorStore(checkpoint.weight_files)
    rebuilt = copy.deepcopy(model).to(dtype)
    rebuilt.eval()
    check_layers_exist(checkpoint, rebuilt)
    head = rebuilt.get_output_embeddings() if hasattr(rebuilt, "get_output_embeddings") else None
    part = rebuild_from_checkpoint(rebuilt, checkpoint, store, dtype, head=head)
    check_all_consumed(store, part.consumed)
    notes = checkpoint_notes(checkpoint, part.counts, part.moe_layers, part.folded, dtype)
    return LoadedCheckpoint(rebuilt, part.counts, part.folded, notes)


def _load_unquantized(
    model: torch.nn.Module,
    store: _TensorStore,
    consumed: set[str],
    source: Path,
    aliases: dict[str, str],
    prefix: str = "",
) -> None:
    """Every other tensor of `model` (named `prefix` + its name) from the checkpoint: same name (or its alias
    on disk), same shape, a float dtype; `consumed` gains their names."""
    state = {f"{prefix}{key}": value for key, value in model.state_dict(keep_vars=True).items()}
    loaded_storage = set()
    with torch.no_grad():
        for key, target in state.items():
            stored = aliases.get(key, key)
            if key in consumed or stored not in store:
                continue
            tensor = store.get(stored)
            if tuple(tensor.shape) != tuple(target.shape):
                raise ArtifactError(
                    f"checkpoint tensor {stored} has shape {list(tensor.shape)}, the model's is {list(target.shape)}"
                )
            if not tensor.is_floating_point() or tensor.element_size() < 2:
                raise ArtifactError(
                    f"checkpoint tensor {stored} is {_dtype_name(tensor)}, but the config does not quantize its layer"
                )
            target.copy_(tensor.to(target.dtype))
            consumed |= {key, stored}
            loaded_storage.add(target.data_ptr())
        for key, target in state.items():
            if key in consumed:
                continue
            # A tied weight (lm_head = embed_tokens) is written once; it shares storage with the loaded one.
            if target.data_ptr() in loaded_storage:
                continue
            raise ArtifactError(f"checkpoint {source} lacks tensor {key}")
