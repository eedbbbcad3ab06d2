"""The layer graph: every quantizable Linear of a causal LM, its shape, block and fused group.

Built on the meta device from the config alone, so a 70B model costs no memory.
TensorRT-LLM fuses q/k/v into one QKV GEMM and gate/up into one GEMM: those layers
form a group that shares one format and costs one fused GEMM.
"""

from __future__ import annotations

import re

from trtq.artifacts import make_metadata
from trtq.artifacts.layers import FUSED_KINDS, GroupInfo, LayerGraph, LayerInfo
from trtq.errors import InputError
from trtq.model.zoo import ResolvedModel, hf_config

_BLOCK = re.compile(r"\.layers\.(\d+)\.")
BF16_BYTES = 2


def _meta_model(resolved: ResolvedModel):
    import torch
    from transformers import AutoModelForCausalLM

    config = hf_config(resolved)
    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    except (ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"{resolved.name}: cannot build a causal LM from its config: {first}") from None


def build_layer_graph(resolved: ResolvedModel, include_lm_head: bool = False) -> LayerGraph:
    import torch

    model = _meta_model(resolved)
    layers: list[LayerInfo] = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        kind = name.rsplit(".", 1)[-1]
        if kind == "lm_head" and not include_lm_head:
            continue
        match = _BLOCK.search(f".{name}.")
        block = int(match.group(1)) if match else None
        fused = FUSED_KINDS.get(kind)
        group = f"{name.rsplit('.', 1)[0]}.{fused}" if fused and block is not None else name
        layers.append(LayerInfo(name=name, block=block, kind=kind, group=group,
                                in_features=module.in_features, out_features=module.out_features))
    if not layers:
        raise InputError(f"{resolved.name}: no quantizable Linear layers found")

    groups: dict[str, GroupInfo] = {}
    for layer in layers:
        g = groups.get(layer.group)
        if g is None:
            groups[layer.group] = GroupInfo(
                name=layer.group, kind=FUSED_KINDS.get(layer.kind, layer.kind) if layer.group != layer.name else layer.kind,
                block=layer.block, members=[layer.name], in_features=layer.in_features,
                out_features=layer.out_features,
            )
        else:
            if g.in_features != layer.in_features:
                raise InputError(f"{resolved.name}: fused group {g.name} mixes input widths")
            g.members.append(layer.name)
            g.out_features += layer.out_features

    total = sum(p.numel() for p in model.parameters())
    quantizable = sum(layer.in_features * layer.out_features for layer in layers)
    blocks = [layer.block for layer in layers if layer.block is not None]
    return LayerGraph(
        artifact=LayerGraph.KIND,
        schema_version=LayerGraph.SCHEMA_VERSION,
        metadata=make_metadata(notes=[f"config: {resolved.source}"]),
        model=resolved.name,
        architecture=(resolved.config.get("architectures") or [type(model).__name__])[0],
        num_blocks=max(blocks) + 1 if blocks else 0,
        layers=layers,
        groups=list(groups.values()),
        fixed_parameter_bytes=(total - quantizable) * BF16_BYTES,
        total_parameters=total,
    )
