"""KV-cache Omega (trtq/sensitivity/kv_cache.py): what `trtq quantize` applies for a KV format, measured."""

from __future__ import annotations

import pytest

from tests.helpers.plans import group, plan_of
from tests.quantize.test_quant_cfg import tiny_llama
from trtq.errors import InputError, UnsupportedError
from trtq.sensitivity.kv_cache import kv_cache_omega, parse_kv_formats


def all_bf16_plan():
    groups = []
    for block in range(2):
        p = f"model.layers.{block}"
        groups += [group(f"{p}.self_attn.qkv", [f"{p}.self_attn.{x}_proj" for x in "qkv"], "bf16", None, 128, 256, "qkv"),
                   group(f"{p}.self_attn.o_proj", [f"{p}.self_attn.o_proj"], "bf16", None, 128, 128, "o_proj"),
                   group(f"{p}.mlp.gate_up", [f"{p}.mlp.gate_proj", f"{p}.mlp.up_proj"], "bf16", None, 128, 384,
                         "gate_up"),
                   group(f"{p}.mlp.down_proj", [f"{p}.mlp.down_proj"], "bf16", None, 192, 128, "down_proj")]
    return plan_of(groups, model="tiny")


def test_fp8_kv_omega_is_the_kl_of_what_quantize_applies():
    import torch

    from trtq.quantize.apply import quantize_model

    batches = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    model = tiny_llama()
    omega = kv_cache_omega(model, batches, ["bf16", "fp8"])
    assert omega["bf16"] == 0.0 and omega["fp8"] > 0
    assert kv_cache_omega(model, batches, ["fp8"])["fp8"] == omega["fp8"]   # deterministic, model untouched
    # The same KL, computed independently from the model `trtq quantize` makes for a plan whose only
    # quantized part is an FP8 KV cache.
    plan = all_bf16_plan()
    plan.kv_format = "fp8"
    quantized = quantize_model(tiny_llama(), plan, batches)
    with torch.no_grad():
        ref = torch.log_softmax(model(batches).logits.float(), -1)
        q = torch.log_softmax(quantized(batches).logits.float(), -1)
    assert omega["fp8"] == pytest.approx(float((ref.exp() * (ref - q)).sum(-1).mean()), rel=1e-5)


def test_kv_formats_refusals():
    assert parse_kv_formats("fp8, FP8,bf16") == ["fp8", "bf16"]
    with pytest.raises(InputError, match="unknown KV-cache format 'int3'"):
        parse_kv_formats("fp8,int3")
    import torch

    with pytest.raises(UnsupportedError, match="nvfp4 needs a CUDA GPU"):
        kv_cache_omega(tiny_llama(), torch.zeros((1, 4), dtype=torch.long), ["nvfp4"], cuda_available=False)
