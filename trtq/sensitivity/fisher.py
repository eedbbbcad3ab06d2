"""Fisher sensitivity: the loss cost of quantizing a layer's weights *and* its inputs.

HAWQ's Omega = mean tr(H_W) x ||Q_f(W) - W||^2 sees only the weights. It cannot tell FP8
(per-tensor FP8 activations) from INT8-SmoothQuant (per-tensor INT8 activations after
SmoothQuant moves every input channel's range into the weights), yet on real models the
second costs far more. This method measures, per layer and format, the change of the
layer's output when the kernel's quantized operands replace the exact ones,

    dY_f = Q_a(X') Q_w(W')^T - X W^T        (X', W': SmoothQuant-migrated for int8_sq)

and weights it element by element with the empirical Fisher of the loss with respect to
that output, Omega = 1/2 sum (dL/dY)^2 dY_f^2: the second-order change of the loss,
with the Fisher standing in for the Hessian of the output. One forward and one backward
per calibration batch serve every layer and format; quantized weights are made once.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import torch

from trtq.artifacts.layers import LayerGraph
from trtq.artifacts.sensitivity import SensitivityRow
from trtq.registry.formats import Format
from trtq.sensitivity.experts import traced_experts
from trtq.sensitivity.operands import (
    OperandKey,
    calibrated_smoothing,
    effective_weight,
    kernel_inputs_by_format,
    kernel_weight,
    scored_rows,
    smoothing_for,
    squared_norm,
)


class FisherScores:
    """Hooks that keep each layer's input on the forward pass and score every format on the backward.

    `modules`: the modules of `graph`'s layers by full name (the whole model's, or one block's with
    `graph` holding that block's layers: trtq.sensitivity.sequential); `smoothing`: the calibrated
    SmoothQuant scales (operands.calibrated_smoothing). A fused expert layer is scored expert by expert
    (trtq.sensitivity.experts): each expert's GEMM output on its routed tokens gets a gradient hook,
    with that expert's own SmoothQuant scales; the layer's Omega is the sum over its experts."""

    def __init__(
        self,
        modules: Mapping[str, torch.nn.Module],
        graph: LayerGraph,
        formats: list[Format],
        smoothing: dict[OperandKey, torch.Tensor],
    ):
        self.modules = modules
        self.graph = graph
        self.layers = {layer.name: layer for layer in graph.layers}
        self.formats = {
            layer.name: [f for f in formats if f.available_for(layer.in_features)] for layer in graph.layers
        }
        self.scores: dict[tuple[str, str], float] = defaultdict(float)
        self.smooth = smoothing
        self.weights: dict[tuple[str, str], torch.Tensor] = {}
        self.weight_errors: dict[tuple[str, str], float] = defaultdict(float)
        with torch.no_grad():
            for layer in graph.layers:
                if layer.experts:
                    parent, _, leaf = layer.name.rpartition(".")
                    experts = [(e, w) for e, w in enumerate(getattr(self.modules[parent], leaf))]
                else:
                    experts = [(None, self.modules[layer.name].weight)]
                for expert, weight in experts:
                    w = weight.detach().float()
                    smooth = smoothing_for(self.smooth, layer.name, expert, w)
                    for fmt in self.formats[layer.name]:
                        quantized = kernel_weight(w, fmt, smooth)
                        self.weight_errors[layer.name, fmt.name] += squared_norm(
                            effective_weight(quantized, fmt, smooth) - w
                        )
                        if expert is None:  # experts' quantized copies are made per use, not kept
                            self.weights[layer.name, fmt.name] = quantized.t().contiguous()
        self._inputs: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []
        self._experts = contextlib.ExitStack()

    def rows(self) -> list[SensitivityRow]:
        return scored_rows(self.layers, self.formats, self.scores, self.weight_errors, self.layers)

    def __enter__(self) -> FisherScores:
        for layer in self.graph.layers:
            if layer.experts:
                continue
            module = self.modules[layer.name]
            self._handles.append(module.register_forward_hook(self._keep_input(layer.name)))
            self._handles.append(module.register_full_backward_hook(self._score(layer.name)))
        self._experts.enter_context(traced_experts(self.modules, self.graph, on_output=self._hook_expert))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._inputs.clear()
        self._experts.close()

    def _keep_input(self, name: str):
        def hook(module, inputs, output):
            self._inputs[name] = inputs[0].detach().reshape(-1, module.in_features)

        return hook

    def _score(self, name: str):
        def hook(module, grad_input, grad_output):
            x = self._inputs.pop(name)
            self._add(name, None, x, module.weight, grad_output[0])

        return hook

    def _hook_expert(self, name: str, expert: int, x: torch.Tensor, y: torch.Tensor) -> None:
        if not y.requires_grad:
            return
        parent, _, leaf = name.rpartition(".")
        weight = getattr(self.modules[parent], leaf)[expert]
        x = x.detach()
        y.register_hook(lambda grad: self._add(name, expert, x, weight, grad))

    def _add(self, name: str, expert: int | None, x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor) -> None:
        with torch.no_grad():
            x = x.float()
            w = weight.detach().float()
            grad = grad.detach().reshape(x.shape[0], -1).float().pow(2)
            exact = x @ w.t()
            smooth = smoothing_for(self.smooth, name, expert, w)
            quantized = kernel_inputs_by_format(x, self.formats[name], smooth)
            for fmt in self.formats[name]:
                qw = self.weights.get((name, fmt.name)) if expert is None else None
                qw = kernel_weight(w, fmt, smooth).t() if qw is None else qw
                delta = quantized[fmt.name] @ qw - exact
                self.scores[name, fmt.name] += 0.5 * float((grad * delta.pow(2)).sum(dtype=torch.float64))


def fisher_scores(
    model: torch.nn.Module, graph: LayerGraph, formats: list[Format], batches: torch.Tensor
) -> FisherScores:
    """The scores over `batches` ([n, seq_len] token ids), the whole model loaded: `.scores` (Omega per
    (layer, format), summed over batches), `.weight_errors` (||Q_w(W') / s - W||^2 of the same quantized
    weight the scores used) and `.rows()`."""
    parameters = list(model.parameters())
    saved = [p.requires_grad for p in parameters]
    scorer = FisherScores(dict(model.named_modules()), graph, formats, calibrated_smoothing(model, graph, batches))
    try:
        for p in parameters:
            p.requires_grad_(False)
        with scorer:
            for ids in batches:
                ids = ids.reshape(1, -1)
                embeddings = model.get_input_embeddings()(ids).detach().requires_grad_(True)
                loss = model(inputs_embeds=embeddings, labels=ids, use_cache=False).loss
                loss.backward()
    finally:
        for p, flag in zip(parameters, saved):
            p.requires_grad_(flag)
    return scorer
