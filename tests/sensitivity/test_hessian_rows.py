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

    def floor(per_layer):
        return 1e-3 * min(s.mean_trace for s in per_layer.values() if s.mean_trace > 0)

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
    w_curvature = traces.weights[name].channel_mean_traces.clamp(min=floor(traces.weights))
    x_curvature = traces.inputs[name].channel_mean_traces.clamp(min=floor(traces.inputs))
    for f in formats:
        s = smooth if f.name == "int8_sq" else torch.ones(())
        dw = (quantize_dequantize(w * s, f) / s - w).double().pow(2).sum(dim=0)
        dx = sum((kernel_inputs(x, f, smooth) * s - x).double().pow(2).sum(dim=0) for x in inputs) / len(inputs)
        row = rows[name, f.name]
        assert row.weight_error == pytest.approx(float(dw.sum()), rel=1e-6), f.name
        assert row.input_error == pytest.approx(float(dx.sum()), rel=1e-6), f.name
        assert row.omega == pytest.approx(float(w_curvature @ dw + x_curvature @ dx), rel=1e-6), f.name
        assert row.hessian_trace == pytest.approx(traces.weights[name].mean_trace)
        assert row.input_hessian_trace == pytest.approx(traces.inputs[name].mean_trace)
    # Every input seen by every probe's batch: the trace of a layer's input has one element per token x channel.
    assert traces.inputs[name].numel == batches.shape[1] * module.in_features
    assert all(rows[layer.name, "bf16"].omega < rows[layer.name, "int4_awq"].omega for layer in graph.layers)
