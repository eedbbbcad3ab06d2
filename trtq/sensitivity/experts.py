"""Fused MoE experts, expert by expert and differentiably: what the Hessian and Fisher methods need.

transformers 5 holds a block's experts as two fused parameters, gate_up_proj [E, 2I, H] and
down_proj [E, H, I], and its experts module computes every expert inside one forward: there is
no nn.Linear to hook and no autograd node for an expert's own input. While `traced_experts` is
open, each experts module of the graph runs the same math (the forward of MixtralExperts,
Qwen2MoeExperts and Qwen3MoeExperts, which are one function) written so that:

- each fused layer reads its input through its own tensor, [E, tokens, in], expert e's routed
  tokens at [e, tokens_e] and zeros elsewhere (`inputs`): the Hessian method estimates the
  trace of the loss with respect to it, per (expert, input channel), and a position no token
  was routed to has no curvature (nothing reads it);
- each expert's GEMM output is handed to `on_output(layer, expert, x, y)` before it is used
  (the Fisher method hooks its gradient there).

The forward of the real module is restored when the context closes.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch

from trtq.artifacts.layers import LayerGraph

EXPERT_PARAMETERS = ("gate_up_proj", "down_proj")


@dataclass
class ExpertInput:
    """One fused layer's input in one forward: [E, tokens, in], and how many tokens each expert saw."""

    tensor: torch.Tensor
    rows: torch.Tensor  # [E], tokens routed to each expert


OnOutput = Callable[[str, int, torch.Tensor, torch.Tensor], None]


def expert_parents(graph: LayerGraph) -> list[str]:
    """The experts modules of `graph`, by name, in layer order."""
    parents: list[str] = []
    for layer in graph.layers:
        parent = layer.name.rpartition(".")[0]
        if layer.experts and parent not in parents:
            parents.append(parent)
    return parents


def routing(top_k_index: torch.Tensor, experts: int) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """(expert, token indices, top-k positions) for every expert that received a token."""
    routed = []
    for expert in range(experts):
        tokens, positions = torch.where(top_k_index == expert)
        if tokens.numel():
            routed.append((expert, tokens, positions))
    return routed


def _own(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor with its own autograd node (a leaf that requires grad when nothing upstream does)."""
    return tensor.view_as(tensor) if tensor.requires_grad else tensor.detach().requires_grad_(True)


def _forward(
    parent: str,
    inputs: dict[str, ExpertInput] | None,
    on_output: OnOutput | None,
    perturb: Mapping[str, torch.Tensor] | None,
):
    def own(name: str, tensor: torch.Tensor) -> torch.Tensor:
        # perturbed: the input plus the caller's [E, tokens, in] tensor (a function transform's input);
        # else a node of its own for autograd
        if perturb is None:
            return _own(tensor)
        return tensor + perturb[name] if name in perturb else tensor

    def forward(
        module, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        experts = module.gate_up_proj.shape[0]
        routed = routing(top_k_index, experts)
        tokens_total = hidden_states.shape[0]
        rows = torch.zeros(experts, dtype=torch.float64)
        for expert, tokens, _ in routed:
            rows[expert] = tokens.numel()
        tracked = inputs is not None or perturb is not None
        x_all = hidden_states
        if tracked:
            x_all = own(f"{parent}.gate_up_proj", hidden_states.unsqueeze(0).expand(experts, *hidden_states.shape))
            if inputs is not None:
                inputs[f"{parent}.gate_up_proj"] = ExpertInput(x_all, rows)
        intermediate = []
        for expert, tokens, _ in routed:
            x = x_all[expert, tokens] if tracked else hidden_states[tokens]
            gate_up = torch.nn.functional.linear(x, module.gate_up_proj[expert])
            if on_output is not None:
                on_output(f"{parent}.gate_up_proj", expert, x, gate_up)
            gate, up = gate_up.chunk(2, dim=-1)
            intermediate.append(module.act_fn(gate) * up)
        h_all = None
        if tracked and routed:
            index = (torch.cat([torch.full_like(t, e) for e, t, _ in routed]), torch.cat([t for _, t, _ in routed]))
            width = module.down_proj.shape[-1]
            zeros = hidden_states.new_zeros(experts, tokens_total, width)
            h_all = own(f"{parent}.down_proj", zeros.index_put(index, torch.cat(intermediate)))
            if inputs is not None:
                inputs[f"{parent}.down_proj"] = ExpertInput(h_all, rows)
        final = torch.zeros_like(hidden_states)
        for (expert, tokens, positions), h in zip(routed, intermediate):
            h = h_all[expert, tokens] if h_all is not None else h
            y = torch.nn.functional.linear(h, module.down_proj[expert])
            if on_output is not None:
                on_output(f"{parent}.down_proj", expert, h, y)
            y = y * top_k_weights[tokens, positions, None]
            final = final.index_add(0, tokens, y.to(final.dtype))
        return final

    return forward


@contextlib.contextmanager
def traced_experts(
    modules: Mapping[str, torch.nn.Module],
    graph: LayerGraph,
    *,
    inputs: dict[str, ExpertInput] | None = None,
    on_output: OnOutput | None = None,
    perturb: Mapping[str, torch.Tensor] | None = None,
) -> Iterator[None]:
    """While open, the experts modules of `graph` run expert by expert (see the module doc).

    `modules`: by full name (`dict(model.named_modules())`, or one block's with `graph` holding its layers);
    `inputs`: filled on every forward with each fused layer's own input tensor (keyed by layer name);
    `on_output(layer, expert, x, y)`: called with each expert GEMM's input and output;
    `perturb`: layer name -> [E, tokens, in] tensor added to that fused layer's input (read at each forward:
    the caller may replace its entries between forwards)."""
    patched = []
    try:
        for parent in expert_parents(graph):
            module = modules[parent]
            module.forward = types.MethodType(_forward(parent, inputs, on_output, perturb), module)
            patched.append(module)
        yield
    finally:
        for module in patched:
            del module.forward  # the class's forward again
