"""Hessian sensitivity (HAWQ-V2/V3): Omega(layer, f) = mean tr(H_layer) x ||Q_f(W) - W||^2.

tr(H_l), the trace of the Hessian of the language-model loss with respect to one
layer's weights, is estimated by Hutchinson's method: for a Rademacher probe v,
E[v^T H v] = tr(H). Every layer shares each probe: one forward pass, one gradient
with create_graph, and one second backward of g . v give H v for all weights at
once, and v_l . (H v)_l is an unbiased sample of tr(H_ll) (the cross-layer terms
have zero mean because the probes of different layers are independent). That is
the block-diagonal estimate HAWQ uses, for the price of one Hessian-vector
product per probe instead of one per layer.

Iteration k draws a fresh probe and uses calibration batch k mod n, so the running
mean estimates the trace of the Hessian averaged over the calibration batches. A
layer stops once it has seen `min_iterations` probes and the relative change of its
running mean drops below `tolerance`; stopped layers leave the probe, and the loop
ends when every layer has stopped or after `max_iterations`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from trtq.artifacts.layers import LayerGraph
from trtq.artifacts.sensitivity import SensitivityRow, TraceEstimate
from trtq.registry.formats import Format
from trtq.sensitivity.quantizers import weight_error

DEFAULT_TOLERANCE = 0.05
DEFAULT_MAX_ITERATIONS = 12  # ~ the time of ModelOpt AutoQuantize scoring 32 x 512 tokens


@dataclass
class LayerTrace:
    """Running Hutchinson statistics of one parameter's Hessian trace."""

    numel: int
    samples: list[float] = field(default_factory=list)
    relative_change: float = float("inf")
    converged: bool = False

    @property
    def iterations(self) -> int:
        return len(self.samples)

    @property
    def trace(self) -> float:
        return sum(self.samples) / len(self.samples) if self.samples else float("nan")

    @property
    def mean_trace(self) -> float:
        """tr(H) / numel(W): HAWQ-V3's average Hessian trace, the factor in Omega."""
        return self.trace / self.numel

    def add(self, sample: float) -> None:
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


def rademacher_like(tensor: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    # randint is about twice as fast as bernoulli_ on CPU; a probe covers every weight.
    return torch.randint(0, 2, tensor.shape, generator=generator, dtype=tensor.dtype).mul_(2.0).sub_(1.0)


def hutchinson_traces(
    loss_fn: Callable[[Any], torch.Tensor],
    params: Mapping[str, torch.Tensor],
    batches: Sequence[Any],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    min_iterations: int | None = None,
    seed: int = 0,
    progress: Callable[[int, int, int], None] | None = None,
) -> HutchinsonRun:
    """Per-parameter Hutchinson estimates of tr(d^2 loss / d param^2), all from shared probes.

    `loss_fn(batch)` must compute a scalar from the tensors in `params`, which need
    requires_grad. `min_iterations` defaults to the number of batches (capped by
    `max_iterations`), so every layer sees every batch once before it may stop.
    `progress(iteration, active_layers, total_layers)` is called after each probe.
    """
    if not batches:
        raise ValueError("hutchinson_traces needs at least one batch")
    if max_iterations < 2:
        raise ValueError("max_iterations must be at least 2 (a relative change needs two estimates)")
    minimum = min(max(len(batches) if min_iterations is None else min_iterations, 2), max_iterations)
    generator = torch.Generator().manual_seed(seed)
    traces = {name: LayerTrace(numel=p.numel()) for name, p in params.items()}
    active = list(params)
    start = time.perf_counter()
    iteration = 0
    while active and iteration < max_iterations:
        batch = batches[iteration % len(batches)]
        weights = [params[name] for name in active]
        loss = loss_fn(batch)
        grads = torch.autograd.grad(loss, weights, create_graph=True)
        probes = [rademacher_like(w, generator) for w in weights]
        grad_dot_probe = torch.stack([(g * v).sum() for g, v in zip(grads, probes)]).sum()
        hessian_probes = torch.autograd.grad(grad_dot_probe, weights)
        del loss, grads, grad_dot_probe
        iteration += 1
        still_active = []
        for name, v, hv in zip(active, probes, hessian_probes):
            stats = traces[name]
            stats.add(float(torch.dot(v.flatten(), hv.flatten())))
            if stats.iterations >= minimum and stats.relative_change < tolerance:
                stats.converged = True
            else:
                still_active.append(name)
        active = still_active
        if progress is not None:
            progress(iteration, len(active), len(traces))
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


def model_traces(
    model: torch.nn.Module,
    graph: LayerGraph,
    batches: torch.Tensor,
    **options: Any,
) -> HutchinsonRun:
    """Hutchinson traces of every layer of `graph` in `model` over `batches` ([n, seq_len])."""
    names = [f"{layer.name}.weight" for layer in graph.layers]
    missing = [name for name in names if name not in dict(model.named_parameters())]
    if missing:
        from trtq.errors import InputError

        raise InputError(f"{graph.model}: the loaded model lacks layers of its config, e.g. {missing[0]}")
    with differentiable_wrt(model, names) as params:
        run = hutchinson_traces(language_model_loss(model), params, list(batches), **options)
    # Key by layer name, as the sensitivity table does.
    run.traces = {name.removesuffix(".weight"): stats for name, stats in run.traces.items()}
    return run


def trace_estimates(run: HutchinsonRun) -> list[TraceEstimate]:
    return [
        TraceEstimate(layer=layer, trace=stats.trace, iterations=stats.iterations,
                      relative_change=stats.relative_change,
                      converged=stats.converged)
        for layer, stats in run.traces.items()
    ]


def hessian_rows(model: torch.nn.Module, graph: LayerGraph, formats: list[Format],
                 run: HutchinsonRun) -> list[SensitivityRow]:
    """One row per (layer, format that fits it): omega = max(mean trace, floor) x ||Q_f(W) - W||^2.

    A mean trace at or below zero (the loss locally flat or concave along that layer, or
    estimator noise around zero) is raised to a floor, 1e-3 of the smallest positive mean
    trace: such a layer is nearly free to quantize, but its formats stay ordered by their
    weight error, so the planner never picks a coarser format there for nothing.
    """
    positive = [stats.mean_trace for stats in run.traces.values() if stats.mean_trace > 0]
    floor = 1e-3 * min(positive) if positive else 1.0
    modules = dict(model.named_modules())
    rows = []
    with torch.no_grad():
        for layer in graph.layers:
            stats = run.traces[layer.name]
            weight = modules[layer.name].weight
            for fmt in formats:
                if not fmt.available_for(layer.in_features):
                    continue
                group_size = fmt.group_size_for(layer.in_features)
                error = weight_error(weight, fmt, group_size)
                rows.append(SensitivityRow(
                    layer=layer.name, format=fmt.name, group_size=group_size, weight_error=error,
                    omega=max(stats.mean_trace, floor) * error, hessian_trace=stats.mean_trace,
                ))
    return rows
