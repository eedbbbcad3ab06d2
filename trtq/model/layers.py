"""The layer graph: every quantizable weight of a causal LM, its shape, block and fused group.

Built on the meta device from the config alone, so a 70B model costs no memory.
TensorRT-LLM fuses q/k/v into one QKV GEMM and gate/up into one GEMM: those layers
form a group that shares one format and costs one fused GEMM. The family's adapter
(trtq.model.families) says where the MoE experts are (fused [experts, out, in]
parameters in transformers 5, not nn.Linear) and what stays bf16; every parameter is
then accounted for, and a model with more than 1% of its weights neither planned nor
known to stay bf16 is refused rather than planned with those weights silently fixed.
"""

from __future__ import annotations

import re

from trtq.artifacts import make_metadata
from trtq.artifacts.layers import LayerGraph, LayerInfo
from trtq.errors import InputError, UnsupportedError
from trtq.model.families import ADAPTERS, BF16_BYTES, EXPERT_KINDS, FUSED_KINDS, adapter_for, group_layers
from trtq.model.request import LayersRequest
from trtq.model.zoo import ResolvedModel, hf_config, resolve_model

_BLOCK = re.compile(r"\.layers\.(\d+)\.")
# Above this share of its parameters unaccounted for, a model is refused, not planned.
MAX_UNPLANNED_SHARE = 0.01
__all__ = ["BF16_BYTES", "FUSED_KINDS", "MAX_UNPLANNED_SHARE", "build_layer_graph"]


def _meta_model(resolved: ResolvedModel):
    import torch
    from transformers import AutoModelForCausalLM

    config = hf_config(resolved)
    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    except (ValueError, KeyError, TypeError, AssertionError) as exc:  # torch asserts on e.g. padding_idx >= vocab
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"{resolved.name}: cannot build a causal LM from its config: {first}") from None


def _expert_layers(resolved: ResolvedModel, name: str, module, block: int) -> list[LayerInfo]:
    layers = []
    for pname, kind in EXPERT_KINDS.items():
        param = getattr(module, pname, None)
        if param is None or getattr(param, "dim", lambda: 0)() != 3:
            raise UnsupportedError(
                f"{resolved.name}: the experts at {name} are not fused [experts, out, in] parameters "
                f"{', '.join(EXPERT_KINDS)} (the layout of transformers 5): this transformers is not supported"
            )
        experts, out_features, in_features = (int(d) for d in param.shape)
        layers.append(
            LayerInfo(
                name=f"{name}.{pname}",
                block=block,
                kind=kind,
                group=name,
                in_features=in_features,
                out_features=out_features,
                experts=experts,
            )
        )
    return layers


def _check_llama_like(resolved: ResolvedModel, layers: list[LayerInfo], include_lm_head: bool) -> None:
    """An adapter-less model is planned only when its Linear layers are the generic Llama layout's."""
    from trtq.model.families import config_layer_graph, generic_adapter, not_llama_like

    model_type = resolved.config.get("model_type")
    generic = generic_adapter(resolved.config)
    known = ", ".join(ADAPTERS)
    if generic is None:
        raise UnsupportedError(
            f"{resolved.name}: no adapter for model_type {model_type!r} (trtq plans {known}) "
            f"and {not_llama_like(resolved.config)}, so it is not read as Llama-like"
        )
    expected = {
        (layer.name, layer.in_features, layer.out_features)
        for layer in config_layer_graph(resolved, include_lm_head, adapter=generic).layers
    }
    found = {(layer.name, layer.in_features, layer.out_features) for layer in layers}
    if expected != found:
        example = sorted(found - expected) or sorted(expected - found)
        what = "has" if found - expected else "lacks"
        raise UnsupportedError(
            f"{resolved.name}: no adapter for model_type {model_type!r} (trtq plans {known}), and its decoder "
            f"blocks are not the Llama layout (q/k/v/o_proj, gate/up/down_proj): it {what} {example[0][0]} "
            f"[{example[0][1]} -> {example[0][2]}]"
        )


def layers_of(request: LayersRequest) -> LayerGraph:
    """`trtq layers`' library API: the model's quantizable layers, their shapes and fused groups."""
    return build_layer_graph(resolve_model(request.model), include_lm_head=request.include_lm_head)


def build_layer_graph(resolved: ResolvedModel, include_lm_head: bool = False) -> LayerGraph:
    import torch

    adapter = adapter_for(resolved.config)
    model = _meta_model(resolved)
    fixed_suffixes = tuple(f".{s}" for s in adapter.fixed_bf16_modules()) if adapter else ()
    experts_suffix = f".{adapter.moe.experts_path}" if adapter and adapter.moe else None
    layers: list[LayerInfo] = []
    planned: set[str] = set()  # parameter names whose weights the plan covers
    fixed_modules: set[str] = set()  # module names whose parameters stay bf16 by design
    experts_per_token: dict[int, int | None] = {}
    for name, module in model.named_modules():
        match = _BLOCK.search(f".{name}.")
        block = int(match.group(1)) if match else None
        if isinstance(module, torch.nn.Embedding) or (block is not None and name.endswith(fixed_suffixes)):
            fixed_modules.add(name)
            continue
        if experts_suffix and block is not None and name.endswith(experts_suffix):
            layers += _expert_layers(resolved, name, module, block)
            planned.update(f"{name}.{p}" for p in EXPERT_KINDS)
            experts_per_token[block] = int(model.config.num_experts_per_tok)
            continue
        if not isinstance(module, torch.nn.Linear):
            continue
        kind = name.rsplit(".", 1)[-1]
        if kind == "lm_head" and not include_lm_head:
            fixed_modules.add(name)
            continue
        fused = FUSED_KINDS.get(kind)
        group = f"{name.rsplit('.', 1)[0]}.{fused}" if fused and block is not None else name
        layers.append(
            LayerInfo(
                name=name,
                block=block,
                kind=kind,
                group=group,
                in_features=module.in_features,
                out_features=module.out_features,
            )
        )
        planned.add(f"{name}.weight")

    total, unplanned, example = 0, 0, None
    for pname, param in model.named_parameters():
        total += param.numel()
        module_name = pname.rpartition(".")[0]
        # Norm weights and biases are vectors: bf16 by design, like embeddings, lm_head and routers.
        if pname in planned or module_name in fixed_modules or param.dim() <= 1:
            continue
        unplanned += param.numel()
        example = example or pname
    model_type = resolved.config.get("model_type")
    if total and unplanned / total > MAX_UNPLANNED_SHARE:
        why = (
            f"no adapter for model_type {model_type!r}; trtq plans {', '.join(ADAPTERS)}"
            if adapter is None
            else f"the {model_type} adapter does not cover them"
        )
        raise UnsupportedError(
            f"{resolved.name}: {unplanned / total:.1%} of its parameters ({unplanned:,} of {total:,}, e.g. "
            f"{example}) are in no layer trtq plans and not known to stay bf16 ({why}): refusing to plan it"
        )
    if not layers:
        raise InputError(f"{resolved.name}: no quantizable Linear layers found")
    if adapter is None:
        _check_llama_like(resolved, layers, include_lm_head)
    groups = group_layers(layers, experts_per_token, resolved.name)
    quantizable = sum(layer.weight_count for layer in layers)
    blocks = [layer.block for layer in layers if layer.block is not None]
    notes = [f"config: {resolved.source}"]
    if adapter is None:
        notes.append(
            f"no adapter for model_type {model_type!r}: planned with the generic Llama-like layout "
            "(q/k/v/o_proj, gate/up/down_proj), which its module tree was checked to have"
        )
    return LayerGraph.create(
        metadata=make_metadata(notes=notes),
        model=resolved.name,
        architecture=(resolved.config.get("architectures") or [type(model).__name__])[0],
        num_blocks=max(blocks) + 1 if blocks else 0,
        layers=layers,
        groups=groups,
        fixed_parameter_bytes=(total - quantizable) * BF16_BYTES,
        total_parameters=total,
    )
