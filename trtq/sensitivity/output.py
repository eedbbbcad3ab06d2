"""Layer-output sensitivity: the layer-wise Hessian objective of GPTQ / OBQ, with the activations quantized too.

    Omega(layer, f) = 1/2 sum over calibration tokens of ||Q_a(X') Q_w(W')^T - X W^T||^2

For a weight-only change dW this is 1/2 tr(dW H dW^T) with H = X^T X, the Hessian of the
layer's output reconstruction error that GPTQ and llm-compressor's sequential pipeline
minimise block by block. It is the Fisher method (trtq.sensitivity.fisher) with the loss
gradient at the layer's output replaced by ones: what is lost is how much the rest of the
network amplifies the layer's error (the Fisher / whole-model Hessian see that); what is won
is that it needs only the layer's own inputs: one forward pass per block, no loss and no
backward (trtq.sensitivity.sequential runs it, and the Fisher, one decoder block at a time).

MoE experts (fused [experts, out, in] parameters) are scored per expert on the tokens the
router sends it, each expert being its own GEMM with its own SmoothQuant scales; the layer's
Omega is the sum over its experts. The down projection's inputs are act(gate) * up of the
exact gate_up projection.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

import torch

from trtq.artifacts.layers import LayerGraph
from trtq.artifacts.sensitivity import SensitivityRow
from trtq.registry.formats import Format
from trtq.sensitivity.operands import (
    ChannelMaxima,
    effective_weight,
    kernel_inputs_by_format,
    kernel_weight,
    scored_rows,
    smoothquant_scales,
    squared_norm,
    visit_layer_inputs,
)


class OutputScores:
    """Two passes over the same inputs: `observe` (per-channel input maxima for SmoothQuant), then `score`."""

    def __init__(self, graph: LayerGraph, formats: list[Format]):
        self.layers = {layer.name: layer for layer in graph.layers}
        self.formats = {
            layer.name: [f for f in formats if f.available_for(layer.in_features)] for layer in graph.layers
        }
        self.maxima = ChannelMaxima()
        self.observe = self.maxima.observe
        self.scores: dict[tuple[str, str], float] = defaultdict(float)
        self._kernel_weights: dict[tuple[str, int | None, str], torch.Tensor] = {}
        self.weight_errors: dict[tuple[str, str], float] = defaultdict(float)
        self._weighed: set[tuple[str, int | None]] = set()

    def _smooth(self, name: str, expert: int | None, x: torch.Tensor) -> torch.Tensor:
        amax = self.maxima.amax.get((name, expert))
        return smoothquant_scales(amax if amax is not None else torch.ones_like(x[0]))

    def score(self, name: str, expert: int | None, x: torch.Tensor, weight: torch.Tensor) -> None:
        smooth = self._smooth(name, expert, x)
        w = weight.float()
        formats = self.formats[name]
        if (name, expert) not in self._weighed:
            self._weighed.add((name, expert))
            for fmt in formats:
                quantized = kernel_weight(w, fmt, smooth)
                self.weight_errors[name, fmt.name] += squared_norm(effective_weight(quantized, fmt, smooth) - w)
                if expert is None:  # an expert's quantized copies would be the experts' weights again
                    self._kernel_weights[name, None, fmt.name] = quantized.t().contiguous()
        exact = x @ w.t()
        quantized_inputs = kernel_inputs_by_format(x, formats, smooth)
        for fmt in formats:
            qw = self._kernel_weights.get((name, expert, fmt.name))
            if qw is None:
                qw = kernel_weight(w, fmt, smooth).t()
            delta = quantized_inputs[fmt.name] @ qw - exact
            self.scores[name, fmt.name] += 0.5 * float(delta.pow(2).sum(dtype=torch.float64))

    def add_unrouted_weight_errors(self, modules: Mapping[str, torch.nn.Module], layers: Iterable[str]) -> None:
        """An expert no calibration token reached still has weights to quantize: its weight error, unsmoothed."""
        for name in layers:
            layer = self.layers[name]
            if not layer.experts:
                continue
            parent, _, leaf = name.rpartition(".")
            param = getattr(modules[parent], leaf).detach()
            for expert in range(layer.experts):
                if (name, expert) in self._weighed:
                    continue
                w = param[expert].float()
                ones = torch.ones(w.shape[-1], dtype=w.dtype, device=w.device)
                for fmt in self.formats[name]:
                    self.weight_errors[name, fmt.name] += squared_norm(
                        effective_weight(kernel_weight(w, fmt, ones), fmt, ones) - w
                    )
                self._weighed.add((name, expert))

    def rows(self, layers: Iterable[str]) -> list[SensitivityRow]:
        return scored_rows(self.layers, self.formats, self.scores, self.weight_errors, layers)


def output_rows(
    model: torch.nn.Module, graph: LayerGraph, formats: list[Format], batches: torch.Tensor
) -> list[SensitivityRow]:
    """The whole model loaded: two no-grad passes over `batches` ([n, seq_len] token ids)."""
    scorer = OutputScores(graph, formats)
    for visit in (scorer.observe, scorer.score):
        visit_layer_inputs(model, graph, batches, visit)
    modules = dict(model.named_modules())
    names = [layer.name for layer in graph.layers]
    scorer.add_unrouted_weight_errors(modules, names)
    return scorer.rows(names)
