"""Block-sequential Hessian sensitivity: the whole model's Hutchinson traces with one decoder block in memory.

The whole-model method (trtq.sensitivity.hessian) gets each probe's Hessian-vector product H v by
double back-propagation through the loaded model. Here the same product comes from Pearlmutter's
R-operator, one block at a time (trtq.sensitivity.sequential.BlockStream reads each block from the
safetensors when its turn comes):

- forward sweep: each block maps (its probed weights W, the perturbations D of its layers' inputs,
  its input x) to its output y; torch.func.jvp carries the tangent x' = dx/de of the model perturbed
  along the probe (W + e v_W, D + e v_D) to y' at the same time. Each block's (x, x') is kept.
- head: the model's own final norm, lm_head and loss give g = dL/dy and g' = (d^2L/dy^2) y'.
- backward sweep, from the last block: the block's vector-Jacobian product (W, D, x, g) -> (dL/dW,
  dL/dD, dL/dx) differentiated forward along (v_W, v_D, x', g') gives (H v)_W, (H v)_D and the g' of
  the block before.

(H v) is exactly what double back-propagation gives (the tests hold the two to float rounding);
only the probes differ, drawn per (iteration, tensor) from the seed so that the backward sweep
redraws the forward sweep's without keeping them. What the traces are then used for, the
convergence rule and the rows are the whole-model method's (`LayerTrace`, `rows_from_traces`).
Each probe reads every block twice; the calibration pass (SmoothQuant scales, input and weight
errors) reads each once more. Peak memory: one block, the embeddings or the head, and the
per-block (x, x') of one window.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from trtq.artifacts.layers import LayerGraph
from trtq.artifacts.sensitivity import SensitivityRow
from trtq.registry.formats import Format
from trtq.sensitivity.experts import ExpertInput, traced_experts
from trtq.sensitivity.hessian import (
    INPUT_SUFFIX,
    InputErrors,
    LayerTrace,
    ModelTraces,
    fitting_formats,
    operand_errors,
    probe_for,
    rows_from_traces,
    weight_trace_name,
)
from trtq.sensitivity.operands import ChannelMaxima
from trtq.sensitivity.sequential import BlockStream, Checkpoint, block_output, visit_block


class _BlockFunction:
    """Block b as a function of (probed weights, input perturbations, hidden state) for torch.func.

    Dense layers' inputs get their perturbation through a forward pre-hook, fused experts' through
    traced_experts(perturb=...); `rows` collects each fused layer's routed-token counts."""

    def __init__(
        self,
        block: torch.nn.Module,
        modules: dict[str, torch.nn.Module],
        layers: LayerGraph,
        prefix: str,
        kwargs: dict[str, Any],
    ):
        self.block = block
        self.prefix = prefix
        self.kwargs = kwargs  # the block's keyword inputs for this window
        self.layers = layers
        self.current: dict[str, torch.Tensor] = {}
        self.rows: dict[str, ExpertInput] = {}
        self.handles = [
            modules[layer.name].register_forward_pre_hook(self._perturb(layer.name))
            for layer in layers.layers
            if not layer.experts
        ]
        self.experts = traced_experts(modules, layers, inputs=self.rows, perturb=self.current)
        self.experts.__enter__()

    def _perturb(self, name: str):
        def pre_hook(module, args):
            delta = self.current.get(name)
            return None if delta is None else (args[0] + delta, *args[1:])

        return pre_hook

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.experts.__exit__(None, None, None)

    def weight_key(self, layer) -> str:
        relative = layer.name[len(self.prefix) :]
        return relative if layer.experts else f"{relative}.weight"

    def __call__(self, weights, deltas, x) -> torch.Tensor:
        from torch.func import functional_call

        self.current.clear()
        self.current.update(deltas)
        try:
            return block_output(functional_call(self.block, weights, (x,), self.kwargs))
        finally:
            self.current.clear()

    def pullback(self, weights, deltas, x, gradient):
        """(dL/dW, dL/dD, dL/dx) from dL/dy = `gradient`."""
        from torch.func import vjp

        _, pull = vjp(self, weights, deltas, x)
        return pull(gradient)


def sequential_hessian(
    resolved,
    graph: LayerGraph,
    formats: list[Format],
    batches: torch.Tensor,
    *,
    tolerance: float,
    max_iterations: int,
    seed: int = 0,
    device: str = "cpu",
    dtype: str = "float32",
    progress: Callable[[int, int, int], None] | None = None,
    checkpoint_dir: Path | None = None,
    settings: dict[str, Any] | None = None,
) -> tuple[ModelTraces, list[SensitivityRow], int]:
    """The whole-model Hessian method's traces and rows, one decoder block in memory at a time (module doc),
    and the probe it resumed after (0: a fresh run).

    `checkpoint_dir`: the traces so far are written there after every probe (the commit point: the state file
    last); a killed run resumes after the last finished probe with the same traces as an uninterrupted one."""
    from torch.func import grad, jvp

    stream = BlockStream(resolved, graph, device, dtype)
    checkpoint = None
    if checkpoint_dir is not None:
        fingerprint = {**(settings or {}), "tolerance": tolerance, "max_iterations": max_iterations, "seed": seed}
        checkpoint = Checkpoint(checkpoint_dir, fingerprint, resolved.name, batches)
    if hasattr(stream.model, "set_attn_implementation"):
        stream.model.set_attn_implementation("eager")  # fused attention kernels have no second derivative
    windows, block_kwargs = stream.first_block_inputs(batches)
    fitting = fitting_formats(graph, formats)

    # Calibration: SmoothQuant scales, then the input errors they give, then the weight errors; block by block.
    errors: dict[tuple[str, str], Any] = {}
    hidden = windows
    for b in range(len(stream)):
        with stream.block(b) as (block, modules, layers):
            maxima = ChannelMaxima()
            outputs = visit_block(block, modules, layers, hidden, block_kwargs, maxima.observe)
            smoothing = maxima.scales()
            measured = InputErrors(layers, fitting, smoothing)
            visit_block(block, modules, layers, hidden, block_kwargs, measured.record)
            activation = {key: total / len(batches) for key, total in measured.totals.items()}
            errors.update(operand_errors(modules, layers, fitting, smoothing, activation))
        hidden = outputs
    del hidden

    traces: dict[str, LayerTrace] = {}
    started = time.perf_counter()
    minimum = min(max(len(batches), 2), max_iterations)
    iteration = resumed_from = int(checkpoint.state.get("probes", 0)) if checkpoint else 0
    if iteration:
        traces = _load_traces(checkpoint, iteration)
        if all(stats.converged for stats in traces.values()):
            iteration = max_iterations  # the run had ended: nothing left to probe
    while iteration < max_iterations:
        window = iteration % len(batches)
        x = windows[window]
        tangent = torch.zeros_like(x)
        kwargs = block_kwargs[window]
        kept: list[tuple[torch.Tensor, torch.Tensor]] = []
        for b in range(len(stream)):
            with stream.block(b) as (block, modules, layers):
                function = _BlockFunction(block, modules, layers, f"{stream.adapter.block_path}.{b}.", kwargs)
                try:
                    primals, tangents, _ = _probed(function, block, layers, x, traces, iteration, seed)
                    kept.append((x, tangent))
                    x, tangent = jvp(function, (*primals, x), (*tangents, tangent))
                finally:
                    function.close()
        with stream.head() as loss:
            ids = batches[window]
            gradient, gradient_tangent = jvp(grad(lambda h, ids=ids: loss(h, ids)), (x,), (tangent,))
        del x, tangent
        for b in reversed(range(len(stream))):
            x, tangent = kept.pop()
            with stream.block(b) as (block, modules, layers):
                function = _BlockFunction(block, modules, layers, f"{stream.adapter.block_path}.{b}.", kwargs)
                try:
                    primals, tangents, names = _probed(function, block, layers, x, traces, iteration, seed)

                    (_, _, gradient), (hv_weights, hv_inputs, gradient_tangent) = jvp(
                        function.pullback, (*primals, x, gradient), (*tangents, tangent, gradient_tangent)
                    )
                    routed = {name: value.rows for name, value in function.rows.items()}
                finally:
                    function.close()
            weight_probes, input_probes = tangents
            for key, name in names[0]:
                traces[name].add_probe(weight_probes[key], hv_weights[key].detach())
            for key, name in names[1]:
                traces[name].add_probe(input_probes[key], hv_inputs[key].detach(), routed.get(key))
            del x, tangent, hv_weights, hv_inputs
        iteration += 1
        for stats in traces.values():
            stats.converged = stats.iterations >= minimum and stats.relative_change < tolerance
        remaining = sum(not stats.converged for stats in traces.values())
        if checkpoint is not None:
            _save_traces(checkpoint, iteration, traces)
            checkpoint.commit(probes=iteration)
            checkpoint.remove(*_traces_files(iteration - 1))
        if progress is not None:
            progress(iteration, remaining, len(traces))
        if not remaining:
            break

    model_traces = ModelTraces(
        weights={layer.name: traces[weight_trace_name(layer)] for layer in graph.layers},
        inputs={layer.name: traces[f"{layer.name}{INPUT_SUFFIX}"] for layer in graph.layers},
        iterations=max(stats.iterations for stats in traces.values()),
        seconds=time.perf_counter() - started,
    )
    return model_traces, rows_from_traces(graph, fitting, model_traces, errors), resumed_from


def _traces_files(probes: int) -> tuple[str, str]:
    return f"traces-{probes:05d}.json", f"traces-{probes:05d}.safetensors"


def _save_traces(checkpoint: Checkpoint, probes: int, traces: dict[str, LayerTrace]) -> None:
    scalars, tensors = _traces_files(probes)
    checkpoint.save_tensors(
        tensors,
        {
            f"{name}/{part}": getattr(stats, part)
            for name, stats in traces.items()
            for part in ("channel_sums", "channel_rows")
            if getattr(stats, part) is not None
        },
    )
    fields = ("numel", "samples", "relative_change", "converged", "experts")
    checkpoint.save_json(scalars, {name: {f: getattr(stats, f) for f in fields} for name, stats in traces.items()})


def _load_traces(checkpoint: Checkpoint, probes: int) -> dict[str, LayerTrace]:
    scalars, tensors = _traces_files(probes)
    stored = checkpoint.load_tensors(tensors, "cpu")
    return {
        name: LayerTrace(
            **fields,
            channel_sums=stored.get(f"{name}/channel_sums"),
            channel_rows=stored.get(f"{name}/channel_rows"),
        )
        for name, fields in checkpoint.load_json(scalars).items()
    }


def _probed(function: _BlockFunction, block, layers: LayerGraph, x: torch.Tensor, traces, iteration: int, seed: int):
    """(weights, perturbations) of the block's tensors still being estimated, their probes, and their
    ((key, trace name) pairs for the weights, for the inputs); new tensors get their LayerTrace here."""
    parameters = dict(block.named_parameters())
    weights, deltas, weight_probes, delta_probes = {}, {}, {}, {}
    weight_names, input_names = [], []
    tokens = x.shape[:-1]
    for layer in layers.layers:
        key = function.weight_key(layer)
        weight = parameters[key].detach()
        name = weight_trace_name(layer)
        if not traces.setdefault(name, LayerTrace(numel=weight.numel(), experts=layer.experts)).converged:
            weights[key] = weight
            weight_probes[key] = probe_for(name, iteration, seed, weight)
            weight_names.append((key, name))
        shape = (layer.experts, tokens.numel(), layer.in_features) if layer.experts else (*tokens, layer.in_features)
        delta = torch.zeros(shape, dtype=x.dtype, device=x.device)
        name = f"{layer.name}{INPUT_SUFFIX}"
        if not traces.setdefault(name, LayerTrace(numel=delta.numel(), experts=layer.experts)).converged:
            deltas[layer.name] = delta
            delta_probes[layer.name] = probe_for(name, iteration, seed, delta)
            input_names.append((layer.name, name))
    return (weights, deltas), (weight_probes, delta_probes), (weight_names, input_names)
