"""Hessian sensitivity (HAWQ-V2/V3) of a layer's weights and of its inputs.

    Omega(layer, f) = sum_j t_W[j] ||dW_f[:, j]||^2 + t_X[j] mean_batches ||dX_f[:, j]||^2

HAWQ-V3's Omega is mean tr(H_W) x ||dW||^2: the average Hessian trace of the language-model
loss with respect to the layer's weights times the squared weight perturbation. HAWQ-V2
extends the same second-order argument to activations (the t_X term). Both are resolved
here per input channel j, t[j] being channel j's share of the trace per element: with
every t[j] equal to the layer's mean this is HAWQ's Omega. The two refinements are what
tell FP8 (per-tensor FP8 inputs) from INT8-SmoothQuant (per-tensor INT8 inputs after
SmoothQuant moved every channel's range into the weights, which makes the weight error
largest on the channels whose inputs, and so whose curvature, are smallest); the
weight-only layer-mean Omega ranks the two the wrong way round on real models.
dW_f and dX_f are the kernel's quantized operands mapped back to the layer's space
(trtq.sensitivity.operands): Q_w(W') / s - W and Q_a(X') * s - X, s the SmoothQuant
scales (1 for the other formats).

Every trace is estimated by Hutchinson's method: for a Rademacher probe v,
E[v^T H v] = tr(H). All tensors share each probe: one forward pass, one gradient with
create_graph, and one second backward of g . v give H v for every weight and every
layer input at once, and v_t . (H v)_t is an unbiased sample of tr(H_tt) (the cross
terms have zero mean because the probes of different tensors are independent). That
is the block-diagonal estimate HAWQ uses, for the price of one Hessian-vector product
per probe instead of one per tensor. Each layer sees its own node for its input (q, k
and v read the same hidden state), so its input trace is that layer's alone.

Iteration k draws a fresh probe and uses calibration batch k mod n, so the running
mean estimates the trace of the Hessian averaged over the calibration batches. A
tensor stops once it has seen `min_iterations` probes and the relative change of its
running mean drops below `tolerance`; stopped tensors leave the probe, and the loop
ends when every tensor has stopped or after `max_iterations`.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from trtq.artifacts.layers import LayerGraph
from trtq.artifacts.sensitivity import SensitivityRow, TraceEstimate
from trtq.registry.formats import Format
from trtq.sensitivity.experts import ExpertInput
from trtq.sensitivity.operands import (
    calibrated_smoothing,
    effective_inputs,
    effective_weight,
    kernel_inputs_by_format,
    kernel_weight,
    smoothing_for,
    visit_layer_inputs,
)
from trtq.sensitivity.request import DEFAULT_MAX_ITERATIONS, DEFAULT_TOLERANCE


@dataclass
class LayerTrace:
    """Running Hutchinson statistics of one tensor's Hessian trace, in total and per channel.

    A channel is an index of the tensor's last dimension: an input channel of a
    (out, in) weight or of a (..., in) layer input. v * Hv is an unbiased estimate of
    diag(H), so summing it per channel estimates each channel's share of the trace
    from the same probes. For a fused expert tensor ([experts, ..., in], `experts` set) a
    channel is an (expert, input channel) pair, flattened expert-major. `rows` counts the
    elements behind each channel's sum: (numel / channels) per probe, or, for an expert
    input, the tokens routed to that expert in the probe's batch.
    """

    numel: int
    samples: list[float] = field(default_factory=list)
    relative_change: float = float("inf")
    converged: bool = False
    channel_sums: torch.Tensor | None = None  # float64, one running sum per channel
    experts: int | None = None
    channel_rows: torch.Tensor | None = None  # float64, elements summed into each channel so far

    @property
    def iterations(self) -> int:
        return len(self.samples)

    @property
    def trace(self) -> float:
        return sum(self.samples) / len(self.samples) if self.samples else float("nan")

    @property
    def mean_trace(self) -> float:
        """tr(H) / numel(W): HAWQ-V3's average Hessian trace, the factor in Omega (per routed element for experts)."""
        if self.channel_rows is None:
            return self.trace / self.numel
        rows = float(self.channel_rows.sum())
        return float(self.channel_sums.sum()) / rows if rows else 0.0

    @property
    def channel_mean_traces(self) -> torch.Tensor:
        """Per channel: its share of tr(H) / its number of elements (float64; 0 where no element was seen)."""
        rows = self.channel_rows
        return torch.where(rows > 0, self.channel_sums / rows.clamp(min=1), torch.zeros_like(rows))

    def add_probe(self, probe: torch.Tensor, hessian_probe: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """One Hutchinson sample from a probe v and H v; `rows` [experts]: an expert input's routed tokens."""
        diagonal = probe * hessian_probe
        if self.experts is not None:
            channels = diagonal.reshape(self.experts, -1, diagonal.shape[-1]).sum(dim=1, dtype=torch.float64)
            width = channels.shape[-1]
            channels = channels.flatten()
        else:
            channels = diagonal.reshape(-1, probe.shape[-1] if probe.dim() else 1).sum(dim=0, dtype=torch.float64)
            width = channels.numel()
        if rows is None:
            per_channel = torch.full_like(channels, diagonal.numel() / channels.numel())
        else:
            per_channel = rows.to(device=channels.device, dtype=torch.float64).repeat_interleave(width)
        self.channel_sums = channels if self.channel_sums is None else self.channel_sums + channels
        self.channel_rows = per_channel if self.channel_rows is None else self.channel_rows + per_channel
        self._add_sample(float(channels.sum()))

    def _add_sample(self, sample: float) -> None:
        previous = self.trace if self.samples else None
        self.samples.append(sample)
        if previous is not None:
            current = self.trace
            scale = max(abs(current), abs(previous))
            self.relative_change = abs(current - previous) / scale if scale > 0 else 0.0


@dataclass
class HutchinsonRun:
    traces: dict[str, LayerTrace]
    iterations: int
    seconds: float


def probe_for(name: str, iteration: int, seed: int, like: torch.Tensor) -> torch.Tensor:
    """The Rademacher probe of tensor `name` at `iteration`, drawn from (seed, iteration, name) alone: the
    same whatever else is probed, in whichever order, and on CPU or CUDA (drawn on the CPU generator); the
    block-sequential method (trtq.sensitivity.sequential_hessian) draws exactly the probes of this one."""
    digest = hashlib.sha256(f"{seed}/{iteration}/{name}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    # randint is about twice as fast as bernoulli_ on CPU
    probe = torch.randint(0, 2, like.shape, generator=generator, dtype=like.dtype).mul_(2.0).sub_(1.0)
    return probe.to(like.device)


LossFn = Callable[[Any], "torch.Tensor | tuple[torch.Tensor, Mapping[str, torch.Tensor]]"]


def hutchinson_traces(
    loss_fn: LossFn,
    params: Mapping[str, torch.Tensor],
    batches: Sequence[Any],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    min_iterations: int | None = None,
    seed: int = 0,
    progress: Callable[[int, int, int], None] | None = None,
    experts: Mapping[str, int] | None = None,
) -> HutchinsonRun:
    """Per-tensor Hutchinson estimates of tr(d^2 loss / d t^2), all from shared probes.

    `loss_fn(batch)` returns a scalar computed from the tensors in `params` (which need
    requires_grad), or (scalar, intermediates): named tensors computed on the way, such as
    a layer's input, whose traces are estimated too; an intermediate may be an ExpertInput (a
    fused expert layer's input and its routed token counts). `experts` names the tensors
    laid out [experts, ..., in] (fused expert parameters and inputs) and their expert counts:
    their channels are (expert, input channel) pairs. `min_iterations` defaults to the
    number of batches (capped by `max_iterations`), so every tensor sees every batch once
    before it may stop. `progress(iteration, active, total)` is called after each probe.
    """
    if not batches:
        raise ValueError("hutchinson_traces needs at least one batch")
    if max_iterations < 2:
        raise ValueError("max_iterations must be at least 2 (a relative change needs two estimates)")
    minimum = min(max(len(batches) if min_iterations is None else min_iterations, 2), max_iterations)
    experts = dict(experts or {})
    traces = {name: LayerTrace(numel=p.numel(), experts=experts.get(name)) for name, p in params.items()}
    start = time.perf_counter()
    iteration = 0
    while iteration < max_iterations:
        result = loss_fn(batches[iteration % len(batches)])
        loss, intermediates = result if isinstance(result, tuple) else (result, {})
        rows = {name: value.rows for name, value in intermediates.items() if isinstance(value, ExpertInput)}
        intermediates = {
            name: value.tensor if isinstance(value, ExpertInput) else value for name, value in intermediates.items()
        }
        for name, tensor in intermediates.items():
            traces.setdefault(name, LayerTrace(numel=tensor.numel(), experts=experts.get(name)))
        tensors = {**params, **intermediates}
        active = [name for name, stats in traces.items() if not stats.converged and name in tensors]
        if not active:
            break
        inputs = [tensors[name] for name in active]
        # allow_unused: an expert layer no token of this batch reached has a zero gradient, not an error
        grads = torch.autograd.grad(loss, inputs, create_graph=True, allow_unused=True, materialize_grads=True)
        probes = [probe_for(name, iteration, seed, t) for name, t in zip(active, inputs)]
        grad_dot_probe = torch.stack([(g * v).sum() for g, v in zip(grads, probes)]).sum()
        hessian_probes = torch.autograd.grad(grad_dot_probe, inputs, allow_unused=True, materialize_grads=True)
        del loss, grads, grad_dot_probe, result, intermediates, tensors, inputs
        iteration += 1
        for name, v, hv in zip(active, probes, hessian_probes):
            stats = traces[name]
            stats.add_probe(v, hv, rows.get(name))
            stats.converged = stats.iterations >= minimum and stats.relative_change < tolerance
        remaining = sum(not stats.converged for stats in traces.values())
        if progress is not None:
            progress(iteration, remaining, len(traces))
        if not remaining:
            break
    return HutchinsonRun(traces=traces, iterations=iteration, seconds=time.perf_counter() - start)


@contextlib.contextmanager
def differentiable_wrt(model: torch.nn.Module, names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Only `names` require grad, attention is twice differentiable; both restored afterwards.

    PyTorch's fused CPU attention kernels have no double-backward formula, so the
    second backward needs the eager (matmul + softmax) attention.
    """
    parameters = dict(model.named_parameters())
    saved_flags = {name: p.requires_grad for name, p in parameters.items()}
    config = getattr(model, "config", None)
    saved_attention = getattr(config, "_attn_implementation", None)
    was_training = model.training
    try:
        for p in parameters.values():
            p.requires_grad_(False)
        for name in names:
            parameters[name].requires_grad_(True)
        if saved_attention not in (None, "eager") and hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation("eager")
        model.eval()
        yield {name: parameters[name] for name in names}
    finally:
        for name, flag in saved_flags.items():
            parameters[name].requires_grad_(flag)
        if saved_attention not in (None, "eager") and hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation(saved_attention)
        model.train(was_training)


def language_model_loss(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Next-token cross-entropy of a causal LM on one [seq_len] or [batch, seq_len] id tensor."""

    def loss(ids: torch.Tensor) -> torch.Tensor:
        ids = ids if ids.dim() == 2 else ids.unsqueeze(0)
        return model(input_ids=ids, labels=ids, use_cache=False).loss

    return loss


@contextlib.contextmanager
def own_inputs(model: torch.nn.Module, layers: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """While open, each of `layers` multiplies its own autograd node for its input, kept by name.

    q, k and v (and gate and up) read one hidden state; a view per layer makes the
    derivative with respect to it that layer's alone. An input that does not require grad
    (the first block's, whose upstream weights are all frozen) becomes a leaf that does.
    """
    modules = dict(model.named_modules())
    captured: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def pre_hook(module, args):
            x = args[0]
            own = x.view_as(x) if x.requires_grad else x.detach().requires_grad_(True)
            captured[name] = own
            return (own, *args[1:])

        return pre_hook

    handles = [modules[name].register_forward_pre_hook(keep(name)) for name in layers]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()
        captured.clear()


@dataclass
class ModelTraces:
    """Hutchinson statistics per layer: of its weight's Hessian and of its input's."""

    weights: dict[str, LayerTrace]
    inputs: dict[str, LayerTrace]
    iterations: int
    seconds: float


INPUT_SUFFIX = ":input"  # a layer's input's trace is named after the layer and this


def weight_trace_name(layer) -> str:
    """The name a layer's weight trace (and its probes) go by: the parameter's name in the model."""
    return layer.name if layer.experts else f"{layer.name}.weight"


def model_traces(
    model: torch.nn.Module,
    graph: LayerGraph,
    batches: torch.Tensor,
    **options: Any,
) -> ModelTraces:
    """Hutchinson traces of every layer of `graph` in `model` over `batches` ([n, seq_len]): weights and inputs.

    A fused expert layer's weight is its [experts, out, in] parameter and its input the [experts, tokens,
    in] tensor of trtq.sensitivity.experts: their channels are (expert, input channel) pairs."""
    from trtq.sensitivity.experts import traced_experts

    layers = [layer.name for layer in graph.layers]
    dense = [layer.name for layer in graph.layers if not layer.experts]
    experts = {layer.name: layer.experts for layer in graph.layers if layer.experts}
    weight_names = {layer.name: weight_trace_name(layer) for layer in graph.layers}
    parameters = dict(model.named_parameters())
    missing = [name for name in weight_names.values() if name not in parameters]
    if missing:
        from trtq.errors import InputError

        raise InputError(f"{graph.model}: the loaded model lacks layers of its config, e.g. {missing[0]}")
    lm_loss = language_model_loss(model)
    expert_inputs: dict[str, ExpertInput] = {}
    per_expert = {
        **{weight_names[layer]: n for layer, n in experts.items()},
        **{f"{layer}{INPUT_SUFFIX}": n for layer, n in experts.items()},
    }
    with (
        differentiable_wrt(model, list(weight_names.values())) as params,
        own_inputs(model, dense) as captured,
        traced_experts(dict(model.named_modules()), graph, inputs=expert_inputs),
    ):

        def loss_and_inputs(ids: torch.Tensor):
            captured.clear()
            expert_inputs.clear()
            loss = lm_loss(ids)
            return loss, {f"{layer}{INPUT_SUFFIX}": x for layer, x in (*captured.items(), *expert_inputs.items())}

        run = hutchinson_traces(loss_and_inputs, params, list(batches), experts=per_expert, **options)
    return ModelTraces(
        weights={layer: run.traces[weight_names[layer]] for layer in layers},
        inputs={layer: run.traces[f"{layer}{INPUT_SUFFIX}"] for layer in layers},
        iterations=run.iterations,
        seconds=run.seconds,
    )


def trace_estimates(traces: ModelTraces) -> list[TraceEstimate]:
    operands: tuple[tuple[Literal["weight", "input"], dict[str, LayerTrace]], ...] = (
        ("weight", traces.weights),
        ("input", traces.inputs),
    )
    return [
        TraceEstimate(
            layer=layer,
            operand=operand,
            trace=stats.trace,
            numel=stats.numel,
            iterations=stats.iterations,
            relative_change=stats.relative_change,
            converged=stats.converged,
        )
        for operand, per_layer in operands
        for layer, stats in per_layer.items()
    ]


class InputErrors:
    """(layer, format) -> per input channel, ||Q_a(X') * s - X||^2 summed over the inputs `record` sees
    (`record` is a Visit). A fused expert layer's channels are (expert, input channel) pairs, flattened
    expert-major, each summed over the tokens routed to that expert (zero for an expert none reached)."""

    def __init__(self, graph: LayerGraph, formats: Mapping[str, list[Format]], smoothing: Mapping):
        self.layers = {layer.name: layer for layer in graph.layers}
        self.formats = formats
        self.smoothing = smoothing
        self.totals: dict[tuple[str, str], torch.Tensor] = {}

    def record(self, name: str, expert: int | None, x: torch.Tensor, weight: torch.Tensor) -> None:
        smooth = self.smoothing[name, expert]
        quantized = kernel_inputs_by_format(x, self.formats[name], smooth)
        for fmt in self.formats[name]:
            error = channel_squared_norms(effective_inputs(quantized[fmt.name], fmt, smooth) - x)
            if expert is not None:
                placed = error.new_zeros(self.layers[name].experts, error.numel())
                placed[expert] = error
                error = placed.flatten()
            key = name, fmt.name
            self.totals[key] = self.totals[key] + error if key in self.totals else error


def input_errors(
    model: torch.nn.Module,
    graph: LayerGraph,
    formats: Mapping[str, list[Format]],
    batches: torch.Tensor,
    smoothing: Mapping,
) -> dict[tuple[str, str], torch.Tensor]:
    """(layer, format) -> per input channel, ||Q_a(X') * s - X||^2 averaged over the calibration batches
    (InputErrors over one pass of the whole model)."""
    errors = InputErrors(graph, formats, smoothing)
    visit_layer_inputs(model, graph, batches, errors.record)
    return {key: total / len(batches) for key, total in errors.totals.items()}


def channel_squared_norms(t: torch.Tensor) -> torch.Tensor:
    """Sum of squares per index of the last dimension, in float64."""
    return t.reshape(-1, t.shape[-1]).to(torch.float64).pow(2).sum(dim=0)


def _floor(traces: Mapping[str, LayerTrace]) -> float:
    positive = [stats.mean_trace for stats in traces.values() if stats.mean_trace > 0]
    return 1e-3 * min(positive) if positive else 1.0


def _expert_weights(modules: Mapping[str, torch.nn.Module], layer) -> list[tuple[int, torch.Tensor]]:
    parent, _, leaf = layer.name.rpartition(".")
    fused = getattr(modules[parent], leaf)
    return [(expert, fused[expert]) for expert in range(layer.experts)]


def _weight_error(weight: torch.Tensor, fmt: Format, smooth: torch.Tensor) -> torch.Tensor:
    """||Q_w(W') / s - W||^2 per input channel."""
    return channel_squared_norms(effective_weight(kernel_weight(weight, fmt, smooth), fmt, smooth) - weight)


@dataclass
class OperandErrors:
    """Per (layer, format): the weight's and the input's squared quantization error per input channel."""

    weight: torch.Tensor
    input: torch.Tensor


def operand_errors(
    modules: Mapping[str, torch.nn.Module],
    graph: LayerGraph,
    fitting: Mapping[str, list[Format]],
    smoothing: Mapping,
    activation_errors: Mapping[tuple[str, str], torch.Tensor],
) -> dict[tuple[str, str], OperandErrors]:
    """Each layer of `graph` (its module in `modules`, by full name) with each format that fits it."""
    errors = {}
    with torch.no_grad():
        for layer in graph.layers:
            weights = _expert_weights(modules, layer) if layer.experts else [(None, modules[layer.name].weight)]
            for fmt in fitting[layer.name]:
                weight_error = torch.cat(
                    [
                        _weight_error(
                            weight.detach().float(), fmt, smoothing_for(smoothing, layer.name, expert, weight)
                        )
                        for expert, weight in weights
                    ]
                )
                input_error = activation_errors.get((layer.name, fmt.name))
                if input_error is None:  # experts no calibration token reached
                    input_error = torch.zeros_like(weight_error)
                errors[layer.name, fmt.name] = OperandErrors(weight_error, input_error)
    return errors


def hessian_rows(
    model: torch.nn.Module, graph: LayerGraph, formats: list[Format], traces: ModelTraces, batches: torch.Tensor
) -> list[SensitivityRow]:
    """The rows (`rows_from_traces`) of the whole model loaded: errors from one calibration pass over `batches`."""
    fitting = fitting_formats(graph, formats)
    smoothing = calibrated_smoothing(model, graph, batches)
    activation_errors = input_errors(model, graph, fitting, batches, smoothing)
    errors = operand_errors(dict(model.named_modules()), graph, fitting, smoothing, activation_errors)
    return rows_from_traces(graph, fitting, traces, errors)


def fitting_formats(graph: LayerGraph, formats: list[Format]) -> dict[str, list[Format]]:
    return {layer.name: [f for f in formats if f.available_for(layer.in_features)] for layer in graph.layers}


def rows_from_traces(
    graph: LayerGraph,
    fitting: Mapping[str, list[Format]],
    traces: ModelTraces,
    errors: Mapping[tuple[str, str], OperandErrors],
) -> list[SensitivityRow]:
    """One row per (layer, format that fits it), summed over input channels j:

        omega = sum_j max(t_W[j], floor_W) x ||dW[:, j]||^2 + max(t_X[j], floor_X) x mean ||dX[:, j]||^2

    t[j] is channel j's mean Hessian trace (its share of tr(H) per element). With every
    t[j] equal to the layer's mean trace this is HAWQ's Omega; per channel it also sees
    where the error lands, which matters for SmoothQuant: migration makes the weight
    error largest on the channels whose inputs, and so whose Hessian, are smallest.
    An estimate at or below zero (the loss locally flat or concave there, or estimator
    noise) is raised to a floor, 1e-3 of the smallest positive layer mean trace of its
    kind: such a channel is nearly free to quantize, but formats stay ordered by their
    errors, so the planner never picks a coarser format there for nothing. A fused expert layer
    sums over its (expert, input channel) pairs, each expert quantized with its own SmoothQuant
    scales: its Omega is its experts' Omegas summed, one row for the layer (the plan gives the
    block's experts one format).
    """
    weight_floor, input_floor = _floor(traces.weights), _floor(traces.inputs)
    rows = []
    for layer in graph.layers:
        weight_stats, input_stats = traces.weights[layer.name], traces.inputs[layer.name]
        weight_curvature = weight_stats.channel_mean_traces.clamp(min=weight_floor)
        input_curvature = input_stats.channel_mean_traces.clamp(min=input_floor)
        for fmt in fitting[layer.name]:
            error = errors[layer.name, fmt.name]
            weight_error, input_error = error.weight.to(weight_curvature.device), error.input.to(input_curvature.device)
            omega = float(weight_curvature @ weight_error + input_curvature @ input_error)
            rows.append(
                SensitivityRow(
                    layer=layer.name,
                    format=fmt.name,
                    group_size=fmt.group_size_for(layer.in_features),
                    weight_error=float(weight_error.sum()),
                    omega=omega,
                    hessian_trace=weight_stats.mean_trace,
                    input_error=float(input_error.sum()),
                    input_hessian_trace=input_stats.mean_trace,
                )
            )
    return rows
