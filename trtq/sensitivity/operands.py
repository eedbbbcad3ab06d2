"""What a format's kernel multiplies: the quantized weight and input operands of one layer.

INT8-SmoothQuant migrates each input channel's range into the weights before it
quantizes either (X' = X / s, W' = W * s); the kernel then multiplies Q_a(X') by
Q_w(W')^T. The other formats quantize X and W as they are. Both sensitivity methods
that look at activations (`fisher`, `hessian`) take their operands from here, and the
perturbations they score are the kernel's operands mapped back to the layer's own
space (Q_w(W') / s - W and Q_a(X') * s - X), so a SmoothQuant layer is charged for
the weight error its migration causes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping

import torch

from trtq.artifacts.layers import LayerGraph, LayerInfo
from trtq.artifacts.sensitivity import SensitivityRow
from trtq.formats.base import Format
from trtq.sensitivity.quantizers import quantize_dequantize

SMOOTHQUANT_ALPHA = 1.0  # ModelOpt's SmoothQuant default
_MIN_SCALE = 1e-5


def smoothquant_scales(channel_amax: torch.Tensor) -> torch.Tensor:
    """SmoothQuant scales max|X_j|^alpha from per-input-channel maxima (alpha = 1: all range to the weights)."""
    return channel_amax.clamp(min=_MIN_SCALE).pow(SMOOTHQUANT_ALPHA)


# A layer's operands are keyed (layer, expert): expert None for a dense layer, e for expert e of a fused one.
OperandKey = tuple[str, "int | None"]


# visit(layer, expert or None, x [tokens, in] float32, exact weight [out, in])
Visit = Callable[[str, "int | None", torch.Tensor, torch.Tensor], None]


def install_hooks(
    modules: Mapping[str, torch.nn.Module], graph: LayerGraph, visit: Visit, layers: Iterable[str] | None = None
) -> list:
    """Forward hooks that call `visit` with every (expert's) layer input; `modules` by full name."""
    wanted = set(layers) if layers is not None else {layer.name for layer in graph.layers}
    handles = []
    experts: dict[str, list[str]] = defaultdict(list)
    for layer in graph.layers:
        if layer.name not in wanted:
            continue
        if layer.experts:
            parent, _, _ = layer.name.rpartition(".")
            experts[parent].append(layer.name)
            continue
        handles.append(modules[layer.name].register_forward_hook(_dense_hook(layer.name, visit)))
    for parent in experts:
        handles.append(modules[parent].register_forward_hook(_experts_hook(parent, visit)))
    return handles


def _dense_hook(name: str, visit: Visit):
    def hook(module, inputs, output):
        visit(name, None, inputs[0].detach().reshape(-1, module.in_features).float(), module.weight.detach())

    return hook


def _experts_hook(parent: str, visit: Visit):
    """transformers 5's fused experts: forward(hidden_states [tokens, H], top_k_index [tokens, k], top_k_weights)."""

    def hook(module, inputs, output):
        hidden, top_k_index = inputs[0].detach(), inputs[1]
        hidden = hidden.reshape(-1, hidden.shape[-1]).float()
        with torch.no_grad():
            for expert in range(module.gate_up_proj.shape[0]):
                tokens = (top_k_index == expert).any(dim=-1).nonzero().flatten()
                if tokens.numel() == 0:
                    continue
                x = hidden[tokens]
                gate_up = module.gate_up_proj[expert].detach()
                visit(f"{parent}.gate_up_proj", expert, x, gate_up)
                gate, up = (x @ gate_up.float().t()).chunk(2, dim=-1)
                visit(f"{parent}.down_proj", expert, module.act_fn(gate) * up, module.down_proj[expert].detach())

    return hook


def visit_layer_inputs(
    model: torch.nn.Module, graph: LayerGraph, batches: Iterable[torch.Tensor], visit: Visit
) -> None:
    """One no-grad pass over `batches`; `visit(layer, expert, x, w)` sees each (expert's) layer input as
    [tokens, in] float32 (an expert: the tokens routed to it) and the weight it multiplies."""
    handles = install_hooks(dict(model.named_modules()), graph, visit)
    try:
        with torch.no_grad():
            for ids in batches:
                model(input_ids=ids.reshape(1, -1), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()


class ChannelMaxima:
    """Per (layer, expert): the largest |input| of each input channel seen so far; `observe` is a Visit."""

    def __init__(self) -> None:
        self.amax: dict[OperandKey, torch.Tensor] = {}

    def observe(self, name: str, expert: int | None, x: torch.Tensor, weight: torch.Tensor) -> None:
        channel_amax = x.abs().amax(dim=0)
        key = name, expert
        self.amax[key] = torch.maximum(self.amax[key], channel_amax) if key in self.amax else channel_amax

    def scales(self) -> dict[OperandKey, torch.Tensor]:
        """SmoothQuant's scales from the maxima (an expert no token reached has none: `smoothing_for`)."""
        return {key: smoothquant_scales(a) for key, a in self.amax.items()}


def calibrated_smoothing(
    model: torch.nn.Module, graph: LayerGraph, batches: Iterable[torch.Tensor]
) -> dict[OperandKey, torch.Tensor]:
    """SmoothQuant scales per (layer, expert) from the calibration set's per-channel input maxima, as ModelOpt
    calibrates (an expert from the tokens routed to it; `smoothing_for` gives ones to an expert none reached)."""
    maxima = ChannelMaxima()
    visit_layer_inputs(model, graph, batches, maxima.observe)
    return maxima.scales()


def smoothing_for(
    smoothing: Mapping[OperandKey, torch.Tensor], name: str, expert: int | None, weight: torch.Tensor
) -> torch.Tensor:
    """The calibrated scales of (layer, expert), or ones for an expert no calibration token reached."""
    smooth = smoothing.get((name, expert))
    return smooth if smooth is not None else torch.ones(weight.shape[-1], dtype=torch.float32, device=weight.device)


def migrates(fmt: Format) -> bool:
    """SmoothQuant migrates ranges into the weights for the formats that say so (int8_sq)."""
    return fmt.smooths_activations


def kernel_weight(w: torch.Tensor, fmt: Format, smooth: torch.Tensor) -> torch.Tensor:
    """Q_w(W'), [out, in], float32."""
    w = w.detach().float()
    return quantize_dequantize(w * smooth if migrates(fmt) else w, fmt)


def kernel_inputs(x: torch.Tensor, fmt: Format, smooth: torch.Tensor) -> torch.Tensor:
    """Q_a(X') as format f's kernel multiplies it; x is [tokens, in]."""
    return fmt.quantize_activations(x, smooth)


def effective_weight(quantized_kernel_weight: torch.Tensor, fmt: Format, smooth: torch.Tensor) -> torch.Tensor:
    """The kernel's weight operand in the layer's own space: Q_w(W') / s."""
    return quantized_kernel_weight / smooth if migrates(fmt) else quantized_kernel_weight


def kernel_inputs_by_format(
    x: torch.Tensor, formats: Iterable[Format], smooth: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Q_a(X') for each format; formats that quantize their inputs alike share one tensor."""
    by_activation: dict[tuple[str, int | None], torch.Tensor] = {}
    for fmt in formats:
        key = (fmt.act_dtype, fmt.act_block_size)
        if key not in by_activation:
            by_activation[key] = kernel_inputs(x, fmt, smooth)
    return {fmt.name: by_activation[(fmt.act_dtype, fmt.act_block_size)] for fmt in formats}


def effective_inputs(quantized_kernel_inputs: torch.Tensor, fmt: Format, smooth: torch.Tensor) -> torch.Tensor:
    """The kernel's input operand in the layer's own space: Q_a(X') * s."""
    return quantized_kernel_inputs * smooth if migrates(fmt) else quantized_kernel_inputs


def squared_norm(t: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(t, dtype=torch.float64) ** 2)


def scored_rows(
    layers: Mapping[str, LayerInfo],
    formats: Mapping[str, list[Format]],
    scores: Mapping[tuple[str, str], float],
    weight_errors: Mapping[tuple[str, str], float],
    names: Iterable[str],
) -> list[SensitivityRow]:
    """The table rows of the layers `names`, one per format each can take, in that order."""
    return [
        SensitivityRow(
            layer=name,
            format=fmt.name,
            group_size=fmt.group_size_for(layers[name].in_features),
            weight_error=weight_errors[name, fmt.name],
            omega=scores[name, fmt.name],
        )
        for name in names
        for fmt in formats[name]
    ]
