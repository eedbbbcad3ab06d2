"""Fisher sensitivity on a tiny random Llama: plumbing checked against autograd by hand."""

import pytest
import torch

from trtq.registry import FORMATS
from trtq.sensitivity.fisher import fisher_scores
from trtq.sensitivity.operands import kernel_inputs, smoothquant_scales
from trtq.sensitivity.quantizers import quantize_dequantize


def test_scores_match_a_direct_computation(tiny):
    model, graph, batches = tiny
    formats = [FORMATS[f] for f in ("bf16", "fp8", "int8_sq", "int4_awq", "w4a8_awq", "nvfp4")]
    scorer = fisher_scores(model, graph, formats, batches)
    scores, weight_errors = scorer.scores, scorer.weight_errors
    name = "model.layers.1.mlp.down_proj"
    module = dict(model.named_modules())[name]

    captured = {}
    handle = module.register_forward_hook(lambda m, i, o: captured.update(x=i[0], y=o))
    smooth = None
    with torch.no_grad():
        for ids in batches:
            model(input_ids=ids.reshape(1, -1))
            amax = captured["x"].reshape(-1, module.in_features).abs().amax(dim=0)
            smooth = amax if smooth is None else torch.maximum(smooth, amax)
    expected = {f.name: 0.0 for f in formats}
    for ids in batches:
        loss = model(input_ids=ids.reshape(1, -1), labels=ids.reshape(1, -1)).loss
        grad = torch.autograd.grad(loss, captured["y"])[0].reshape(-1, module.out_features)
        x = captured["x"].detach().reshape(-1, module.in_features)
        w = module.weight.detach()
        for f in formats:
            kernel_w = w * smooth.clamp(min=1e-5) if f.name == "int8_sq" else w
            dy = kernel_inputs(x, f, smooth.clamp(min=1e-5)) @ quantize_dequantize(kernel_w, f).t() - x @ w.t()
            expected[f.name] += 0.5 * float((grad.pow(2) * dy.pow(2)).sum())
    handle.remove()
    for f in formats:
        assert scores[name, f.name] == pytest.approx(expected[f.name], rel=1e-4), f.name
        # The weight error is the kernel's weight mapped back to the layer's space: Q(W s) / s for SmoothQuant.
        s = smooth.clamp(min=1e-5) if f.name == "int8_sq" else torch.ones(())
        effective = quantize_dequantize(module.weight.detach() * s, f) / s
        assert weight_errors[name, f.name] == pytest.approx(float((effective - module.weight.detach()).pow(2).sum()), rel=1e-5)
    # Migration moves the outlier channels' range into the weights: INT8 per-channel error grows.
    plain = float((quantize_dequantize(module.weight.detach(), FORMATS["int8_sq"]) - module.weight.detach()).pow(2).sum())
    assert weight_errors[name, "int8_sq"] > plain
    assert all(v >= 0 for v in scores.values())
    assert all(scores[layer.name, "bf16"] < scores[layer.name, "int4_awq"] for layer in graph.layers)
    assert not any(p.requires_grad is False for p in model.parameters())   # grads restored


def test_smoothquant_migration_is_exact_before_quantization():
    torch.manual_seed(0)
    x = torch.randn(16, 32) * torch.logspace(-2, 2, 32)
    w = torch.randn(8, 32)
    s = smoothquant_scales(x.abs().amax(dim=0))
    assert torch.allclose((x / s) @ (w * s).t(), x @ w.t(), rtol=1e-4, atol=1e-4)
    assert (x / s).abs().amax() == pytest.approx(1.0)


def test_fisher_method_on_the_real_model_fills_the_shared_table(smollm2_model, tmp_path):
    from trtq.artifacts import load_artifact, save_artifact
    from trtq.artifacts.sensitivity import Sensitivity
    from trtq.sensitivity.api import fisher_sensitivity

    model, tokenizer = smollm2_model
    table = fisher_sensitivity("smollm2-135m", samples=1, seq_len=64, model=model, tokenizer=tokenizer,
                               formats="fp8,int8_sq,int4_awq")
    assert table.method == "fisher" and len(table.rows) == 210 * 4
    assert all(r.omega >= 0 and r.weight_error >= 0 for r in table.rows)
    omega = table.omega_map()
    assert all(omega[layer, "bf16"] <= omega[layer, "int4_awq"] for layer, _ in omega)
    assert load_artifact(save_artifact(table, tmp_path / "fisher.json"), Sensitivity) == table


def test_fp8_block_activations_are_grouped_not_per_tensor():
    """fp8 and fp8_block share an activation dtype but not its scaling: two different kernel inputs."""
    from trtq.registry import get_format
    from trtq.sensitivity.operands import kernel_inputs_by_format
    from trtq.sensitivity.quantizers import fp8_e4m3, fp8_groupwise

    x = torch.randn(8, 256, generator=torch.Generator().manual_seed(0))
    x[0, 0] = 1e5                        # per tensor, the other values fall into e4m3 subnormals
    got = kernel_inputs_by_format(x, [get_format("fp8"), get_format("fp8_block"), get_format("w4a8_awq")],
                                  torch.ones(256))
    assert torch.equal(got["fp8"], fp8_e4m3(x)) and got["w4a8_awq"] is got["fp8"]
    assert torch.equal(got["fp8_block"], fp8_groupwise(x, 128))
    assert (got["fp8_block"] - x).norm() < (got["fp8"] - x).norm()
