"""Hessian Omega on a tiny random Llama: the table's formula recomputed by hand from the traces."""

import pytest
import torch

from trtq.registry import FORMATS
from trtq.sensitivity.hessian import hessian_rows, model_traces
from trtq.sensitivity.operands import kernel_inputs
from trtq.sensitivity.quantizers import quantize_dequantize

FORMAT_NAMES = ("bf16", "fp8", "int8_sq", "int4_awq", "w4a8_awq", "nvfp4")


def test_omega_is_channel_curvature_times_kernel_operand_errors(tiny):
    model, graph, batches = tiny
    formats = [FORMATS[f] for f in FORMAT_NAMES]
    traces = model_traces(model, graph, batches, max_iterations=4, seed=0)
    rows = {(r.layer, r.format): r for r in hessian_rows(model, graph, formats, traces, batches)}
    assert len(rows) == len(graph.layers) * len(formats)
    assert all(p.requires_grad for p in model.parameters())  # flags restored after the traces

    def flattest(per_layer):
        """The smallest positive layer mean trace of the model: the scale "nearly free" is measured against."""
        return min(s.mean_trace for s in per_layer.values() if s.mean_trace > 0)

    name = "model.layers.1.mlp.down_proj"
    module = dict(model.named_modules())[name]
    inputs = []
    handle = module.register_forward_hook(lambda m, i, o: inputs.append(i[0].detach().reshape(-1, m.in_features)))
    with torch.no_grad():
        for ids in batches:
            model(input_ids=ids.reshape(1, -1))
    handle.remove()
    smooth = torch.stack([x.abs().amax(dim=0) for x in inputs]).amax(dim=0).clamp(min=1e-5)
    w = module.weight.detach()
    # Channels whose estimate is at or below zero are "nearly free" (hessian_rows' docstring): they add at
    # least nothing and at most 1% of the flattest layer's curvature per unit of error. Not the implementation's
    # constant, a bound it must stay within.
    w_curvature = traces.weights[name].channel_mean_traces.clamp(min=0)
    x_curvature = traces.inputs[name].channel_mean_traces.clamp(min=0)
    w_free, x_free = 0.01 * flattest(traces.weights), 0.01 * flattest(traces.inputs)
    for f in formats:
        s = smooth if f.name == "int8_sq" else torch.ones(())
        dw = (quantize_dequantize(w * s, f) / s - w).double().pow(2).sum(dim=0)
        dx = sum((kernel_inputs(x, f, smooth) * s - x).double().pow(2).sum(dim=0) for x in inputs) / len(inputs)
        row = rows[name, f.name]
        assert row.weight_error == pytest.approx(float(dw.sum()), rel=1e-6), f.name
        assert row.input_error == pytest.approx(float(dx.sum()), rel=1e-6), f.name
        exact_part = float(w_curvature @ dw + x_curvature @ dx)
        assert row.omega >= exact_part * (1 - 1e-9), f.name
        assert row.omega <= exact_part + w_free * float(dw.sum()) + x_free * float(dx.sum()) + 1e-12, f.name
        assert row.hessian_trace == pytest.approx(traces.weights[name].mean_trace)
        assert row.input_hessian_trace == pytest.approx(traces.inputs[name].mean_trace)
    # Every input seen by every probe's batch: the trace of a layer's input has one element per token x channel.
    assert traces.inputs[name].numel == batches.shape[1] * module.in_features
    assert all(rows[layer.name, "bf16"].omega < rows[layer.name, "int4_awq"].omega for layer in graph.layers)


def test_a_layer_with_no_positive_curvature_still_orders_formats_by_their_errors(tiny):
    """The floor's purpose: where the Hessian estimate is zero (or negative), a coarser format must still cost
    more than a finer one, so the planner never picks it for nothing."""
    model, graph, batches = tiny
    formats = [FORMATS[f] for f in ("bf16", "fp8", "int8_sq", "int4_awq", "w4a8_awq")]
    traces = model_traces(model, graph, batches, max_iterations=4, seed=0)
    name = "model.layers.0.self_attn.q_proj"
    for per_layer in (traces.weights, traces.inputs):
        flat = per_layer[name]
        flat.channel_sums = torch.zeros_like(flat.channel_sums)
        flat.samples = [0.0] * len(flat.samples)
    rows = {r.format: r for r in hessian_rows(model, graph, formats, traces, batches) if r.layer == name}
    # Pairs with the same activations (the same input error): the larger weight error costs more.
    for finer, coarser in (("bf16", "int4_awq"), ("fp8", "w4a8_awq")):
        assert rows[finer].input_error == pytest.approx(rows[coarser].input_error)
        assert rows[finer].weight_error < rows[coarser].weight_error
        assert rows[finer].omega < rows[coarser].omega, (finer, coarser)
    for fmt in ("fp8", "int8_sq", "int4_awq", "w4a8_awq"):
        assert rows[fmt].omega > 0, fmt
    # ... and it stays nearly free next to the most curved layer, per unit of weight error.
    curved = max(traces.weights, key=lambda layer: traces.weights[layer].mean_trace)
    assert traces.weights[curved].mean_trace > 0
    other = {r.format: r for r in hessian_rows(model, graph, formats, traces, batches) if r.layer == curved}
    assert rows["int4_awq"].omega / rows["int4_awq"].weight_error < \
        0.05 * other["int4_awq"].omega / other["int4_awq"].weight_error
