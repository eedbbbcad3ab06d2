"""The memory and scheduling model against aiconfigurator's own TensorRT-LLM code, so an
upgrade of the pinned package that changes either shows up here."""

from __future__ import annotations

import math

import pytest

from trtq.model.zoo import resolve_model
from trtq.predict import step as step_module
from trtq.predict.architecture import decoder_architecture
from trtq.predict.kernels import AicKernels
from trtq.predict.step import StepModel, Workload
from trtq.registry import get_gpu


def test_runtime_constants_are_aiconfigurators():
    from aiconfigurator_core.sdk.backends import trtllm_backend as t

    assert step_module.KV_CACHE_FREE_GPU_MEM_FRACTION == t.TRTLLM_DEFAULT_FREE_GPU_MEMORY_FRACTION
    assert step_module.KV_CACHE_RESERVED_FRACTION == t.KV_CACHE_MEMORY_RESERVED_FRACTION
    assert step_module.KV_CACHE_TOLERANCE == t.KV_CACHE_MEMORY_TOLERANCE
    assert step_module.MAX_NUM_TOKENS == t.TRTLLM_DEFAULT_MAX_NUM_TOKENS
    assert step_module.ACTIVATION_COEFF == t.TRTLLMBackend.ACTIVATION_COEFFICIENTS["LLAMA"]
    assert step_module.MIN_ACTIVATION_BYTES == t.TRTLLMBackend.MIN_ACTIVATION_BYTES


@pytest.mark.parametrize("model, hf, fmt, aic_fmt", [
    ("llama-3.1-70b", "meta-llama/Meta-Llama-3.1-70B", "fp8", "fp8"),
    ("llama-3.1-8b", "meta-llama/Meta-Llama-3.1-8B", "bf16", "bfloat16"),
])
def test_kv_capacity_matches_estimate_kv_cache(model, hf, fmt, aic_fmt):
    from aiconfigurator_core.sdk.memory import estimate_kv_cache

    kernels = AicKernels("H100-SXM")
    ref = estimate_kv_cache(hf, kernels.system, "trtllm", kernels.version, max_num_tokens=8192, max_batch_size=512,
                            memory_fraction_kind="of_free", memory_fraction_value=0.9, gemm_quant_mode=aic_fmt,
                            kvcache_quant_mode=aic_fmt, fmha_quant_mode="bfloat16")
    arch = decoder_architecture(model, resolve_model(model).config)
    step = StepModel(arch, {g.name: fmt for g in arch.groups}, fmt, 1, kernels, get_gpu("H100-SXM"))
    breakdown = ref["memory_breakdown"]
    # trtq also counts the norms and the per-tensor scales: a few MB on tens of GB.
    assert step.weight_bytes() == pytest.approx(breakdown["weights_bytes"], rel=1e-3)
    assert step.non_kv_bytes() - step.weight_bytes() == pytest.approx(
        breakdown["activations_bytes"] + breakdown["runtime_overhead_bytes"] + breakdown["comm_overhead_bytes"])
    assert step.kv_bytes_per_token() == ref["kv_size_per_token_bytes"]
    # aiconfigurator's batch search admits a batch against the budget less the allocator reserve and tolerance.
    assert step.kv_budget_bytes() == pytest.approx(ref["total_kv_size_bytes"] * (1 - 0.015) * (1 - 0.02), rel=1e-3)


def test_scheduling_rules_are_aiconfigurators():
    from aiconfigurator_core.sdk.backends.trtllm_backend import TRTLLMBackend

    backend = TRTLLMBackend()
    kernels = AicKernels("H100-SXM")
    arch = decoder_architecture("llama-3.1-8b", resolve_model("llama-3.1-8b").config)
    step = StepModel(arch, {g.name: "fp8" for g in arch.groups}, "fp8", 1, kernels, get_gpu("H100-SXM"))
    for isl, osl in ((128, 128), (2048, 256), (8192, 32)):
        w = Workload(isl, osl)
        for b in (2, 16, 100, 512):
            for ctx in StepModel.ctx_tokens_grid(isl):
                if b - math.ceil(ctx / isl) < 1:
                    break
                p = step.agg(b, ctx, w)
                steps = math.ceil(isl * b / ctx)
                assert p.mix_steps == steps
                assert p.ttft_factor == pytest.approx(math.ceil(isl / ctx) * backend._ttft_queuing_factor(b, steps))
                if steps < osl:
                    assert p.mix_steps_for_tpot == backend._tpot_mix_steps(steps)
                    expected_gen = backend._mix_step_gen_tokens(b, ctx, isl, float(osl))
                    assert p.mix_tokens == ctx + expected_gen
