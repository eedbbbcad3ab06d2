"""Weight sensitivity: Omega(layer, format) = ||Q_f(W) - W||^2 (no data needed)."""

from __future__ import annotations

from trtq.artifacts.layers import LayerGraph
from trtq.artifacts.sensitivity import SensitivityRow
from trtq.registry.formats import Format
from trtq.sensitivity.quantizers import weight_error


def linear_weights(model, graph: LayerGraph) -> dict[str, "torch.Tensor"]:  # noqa: F821
    modules = dict(model.named_modules())
    missing = [layer.name for layer in graph.layers if layer.name not in modules]
    if missing:
        from trtq.errors import InputError

        raise InputError(f"{graph.model}: the loaded model lacks layers of its config, e.g. {missing[0]}")
    return {layer.name: modules[layer.name].weight for layer in graph.layers}


def weight_rows(model, graph: LayerGraph, formats: list[Format]) -> list[SensitivityRow]:
    weights = linear_weights(model, graph)
    rows = []
    for layer in graph.layers:
        w = weights[layer.name]
        for fmt in formats:
            if not fmt.available_for(layer.in_features):
                continue
            group_size = fmt.group_size_for(layer.in_features)
            err = weight_error(w, fmt, group_size)
            rows.append(SensitivityRow(layer=layer.name, format=fmt.name, group_size=group_size,
                                       weight_error=err, omega=err))
    return rows
