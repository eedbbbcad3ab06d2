"""Weight sensitivity: Omega(layer, format) = ||Q_f(W) - W||^2 (no data needed).

An MoE layer is a fused expert parameter [experts, out, in] (transformers 5): each expert is
quantized on its own (TensorRT-LLM's MoE kernels keep one scale set per expert), and the
layer's Omega is the sum over its experts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from trtq.artifacts.layers import LayerGraph
from trtq.artifacts.sensitivity import SensitivityRow
from trtq.registry.formats import Format
from trtq.sensitivity.quantizers import weight_error

if TYPE_CHECKING:
    import torch


def linear_weights(model, graph: LayerGraph) -> dict[str, torch.Tensor]:
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    missing = [
        layer.name
        for layer in graph.layers
        if (layer.name not in params if layer.experts else layer.name not in modules)
    ]
    if missing:
        from trtq.errors import InputError

        raise InputError(f"{graph.model}: the loaded model lacks layers of its config, e.g. {missing[0]}")
    return {layer.name: params[layer.name] if layer.experts else modules[layer.name].weight for layer in graph.layers}


def weight_rows(model, graph: LayerGraph, formats: list[Format]) -> list[SensitivityRow]:
    return layer_weight_rows(graph, formats, linear_weights(model, graph).__getitem__)


def layer_weight_rows(
    graph: LayerGraph, formats: list[Format], weight_of: Callable[[str], torch.Tensor]
) -> list[SensitivityRow]:
    """The rows of every layer, its weight fetched by `weight_of(layer name)` when its turn comes (so a
    caller may read one tensor at a time from disk)."""
    rows = []
    for layer in graph.layers:
        w = weight_of(layer.name)
        for fmt in formats:
            if not fmt.available_for(layer.in_features):
                continue
            group_size = fmt.group_size_for(layer.in_features)
            if layer.experts:
                err = float(sum(weight_error(expert, fmt, group_size) for expert in w))
            else:
                err = weight_error(w, fmt, group_size)
            rows.append(
                SensitivityRow(layer=layer.name, format=fmt.name, group_size=group_size, weight_error=err, omega=err)
            )
    return rows
