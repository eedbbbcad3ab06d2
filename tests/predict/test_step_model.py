"""The step model against hand-computed cases, the transition term and the memory model."""

from __future__ import annotations

import math

import pytest

from trtq.errors import InputError, UnsupportedError
from trtq.predict.architecture import DecoderArchitecture, GemmGroup, decoder_architecture
from trtq.predict.kernels import Answer
from trtq.predict.step import StepModel, Workload, parse_workload
from trtq.registry import get_gpu

# A one-block decoder: hidden 128, 2 heads + 1 KV head of 64, intermediate 256, vocab 1024.
ONE_BLOCK = DecoderArchitecture(
    name="toy", num_layers=1, hidden_size=128, num_heads=2, num_kv_heads=1, head_dim=64,
    intermediate_size=256, vocab_size=1024, tie_word_embeddings=False,
    groups=(GemmGroup("model.layers.0.self_attn.qkv", "qkv", 0, 256, 128),
            GemmGroup("model.layers.0.self_attn.o_proj", "o_proj", 0, 128, 128),
            GemmGroup("model.layers.0.mlp.gate_up", "gate_up", 0, 512, 128),
            GemmGroup("model.layers.0.mlp.down_proj", "down_proj", 0, 128, 256)),
)
# Known tables: GEMM ms = base + 0.001 per token; attention linear in batch x sequence.
GEMM_BASE_MS = {
    (256, 128, "bf16"): 0.010, (256, 128, "fp8"): 0.006, (256, 128, "nvfp4"): 0.004, (256, 128, "int8_sq"): 0.006,
    (128, 128, "bf16"): 0.004, (128, 128, "fp8"): 0.003, (128, 128, "nvfp4"): 0.002, (128, 128, "int8_sq"): 0.003,
    (512, 128, "bf16"): 0.020, (512, 128, "fp8"): 0.011, (512, 128, "nvfp4"): 0.008, (512, 128, "int8_sq"): 0.011,
    (128, 256, "bf16"): 0.012, (128, 256, "fp8"): 0.007, (128, 256, "nvfp4"): 0.005, (128, 256, "int8_sq"): 0.007,
    (1024, 128, "bf16"): 0.050,   # lm_head
}


class TableKernels:
    """A kernel source with known tables (stands in for aiconfigurator's engine)."""

    system_spec = {"gpu": {"mem_capacity": 1 << 30}, "misc": {"nccl_mem": {1: 0, 2: 1000}, "other_mem": 1 << 20}}

    def has_gemm(self, fmt):
        return any(key[2] == fmt for key in GEMM_BASE_MS)

    def gemm(self, n, k, fmt, tokens):
        return Answer(GEMM_BASE_MS[(n, k, fmt)] + 0.001 * tokens, "measured")

    def elementwise(self, dim_in, dim_out, tokens):
        return Answer(0.001, "modelled")

    def embedding(self, vocab, hidden, tokens):
        return Answer(0.002, "modelled")

    def allreduce(self, hidden, tp, tokens):
        return Answer(0.003, "interpolated")

    def context_attention(self, batch, seq, heads, kv_heads, head_dim, kv_format):
        return Answer(0.1 * batch * seq / 1000, "interpolated")

    def generation_attention(self, batch, seq, heads, kv_heads, head_dim, kv_format):
        return Answer(0.01 * batch * seq / 1000, "interpolated")

    def fp8_quantize(self, tokens, k, dynamic):
        return Answer(0.0005 * (2 if dynamic else 1), "measured")

    def describe(self):
        return {"package": "tables", "system": "toy", "framework": "trtllm", "framework_version": "0"}

    def save(self):
        pass


def toy_model(fmt="bf16", gpu="H100-SXM", **formats):
    kernels = TableKernels()
    return StepModel(ONE_BLOCK, {g.name: formats.get(g.kind, fmt) for g in ONE_BLOCK.groups}, "bf16", 1,
                     kernels, get_gpu(gpu))


def test_decode_step_by_hand():
    step = toy_model()
    cost = step.decode_step(4, 1000, 10)
    # GEMMs at M=4: (0.010+0.004)+(0.004+0.004)+(0.020+0.004)+(0.012+0.004) = 0.062; two norms 0.002,
    # SiLU gate 0.001, embedding 0.002, lm_head 0.050+0.004; attention 0.01 x 4 x 1006 / 1000.
    assert cost.ms == pytest.approx(0.062 + 0.002 + 0.001 + 0.002 + 0.054 + 0.04024, abs=1e-12)
    assert cost.by_category["generation_attention"] == pytest.approx(0.04024)
    assert cost.by_provenance["measured"] == pytest.approx(0.062 + 0.054)


def test_in_flight_batching_point_by_hand():
    step = toy_model()
    p = step.agg(4, 1000, Workload(isl=1000, osl=10))
    # ceil(1000*4/1000) = 4 mixed steps of one prompt + 3 decoding requests, then 6 decode steps of 4.
    mix = (0.046 + 4 * 1.003) + 0.002 + 0.001 + 0.002 + (0.050 + 0.004) + 0.1 + 0.01 * 3 * 1.006
    decode = 0.16124
    assert p.mix_step_ms == pytest.approx(mix) and p.decode_step_ms == pytest.approx(decode)
    assert (p.mix_steps, p.decode_steps, p.mix_steps_for_tpot) == (4, 6, 1)
    assert p.ttft_ms == pytest.approx(mix * 1 * (2 + (4 - 3) / 20))
    assert p.tpot_ms == pytest.approx((mix * 1 + decode * 6) / 7)
    assert p.output_tokens_per_s == pytest.approx(1000 / (4 * mix + 6 * decode) * 4 * 9)
    assert p.cost.ms == pytest.approx(4 * mix + 6 * decode)


def test_ttft_and_tpot_are_linear_in_group_costs_at_fixed_concurrency():
    w = Workload(1000, 10, 4)
    base, faster = toy_model(), toy_model(down_proj="fp8")
    pb, pf = base.at_concurrency(4, w), faster.at_concurrency(4, w)
    assert (pb.batch, pb.ctx_tokens) == (pf.batch, pf.ctx_tokens)
    d_mix = (faster.group_costs(pb.mix_tokens)["model.layers.0.mlp.down_proj"]["fp8"]
             - base.group_costs(pb.mix_tokens)["model.layers.0.mlp.down_proj"]["bf16"])
    d_dec = (faster.group_costs(pb.decode_tokens)["model.layers.0.mlp.down_proj"]["fp8"]
             - base.group_costs(pb.decode_tokens)["model.layers.0.mlp.down_proj"]["bf16"])
    assert d_mix == pytest.approx(0.007 - 0.012) and d_dec == pytest.approx(0.007 - 0.012)
    assert pf.ttft_ms - pb.ttft_ms == pytest.approx(pb.ttft_factor * d_mix)
    weights_sum = pb.mix_steps_for_tpot + pb.decode_steps
    assert pf.tpot_ms - pb.tpot_ms == pytest.approx(
        (pb.mix_steps_for_tpot * d_mix + pb.decode_steps * d_dec) / weights_sum)


def test_transition_term():
    step = toy_model(gpu="B200")
    m = 64
    costs = step.group_costs(m, ["bf16", "fp8", "nvfp4", "int8_sq"])
    o, qkv = costs["model.layers.0.self_attn.o_proj"], costs["model.layers.0.self_attn.qkv"]
    gemm = lambda base: base + 0.001 * m  # noqa: E731
    # FP8 after attention and after a norm: fused into the producer, no extra kernel.
    assert o["fp8"] == pytest.approx(gemm(0.003)) and qkv["fp8"] == pytest.approx(gemm(0.006))
    # NVFP4 after a norm is fused; after attention it is a standalone quantize (bandwidth model).
    assert qkv["nvfp4"] == pytest.approx(gemm(0.004))
    b200 = get_gpu("B200")
    bw = b200.hbm_bandwidth_bytes_per_s * b200.achievable.bandwidth
    assert o["nvfp4"] == pytest.approx(gemm(0.002) + m * 128 * (2 + 0.5) / bw * 1e3 + 0.002)
    # INT8 SmoothQuant is fused nowhere: every group pays a quantize of M x K at 1 byte out.
    down = costs["model.layers.0.mlp.down_proj"]["int8_sq"]
    assert down == pytest.approx(gemm(0.007) + m * 256 * 3 / bw * 1e3 + 0.002)
    # bf16 never pays.
    assert o["bf16"] == pytest.approx(gemm(0.004))
    # The step sees it: o_proj in nvfp4 costs its GEMM plus the quantize.
    mixed = toy_model(gpu="B200", o_proj="nvfp4")
    cost = mixed.non_attention(m, 1)
    assert cost.by_category["format_transitions"] == pytest.approx(m * 128 * 2.5 / bw * 1e3 + 0.002)


def test_fp8_block_transition_uses_the_measured_dynamic_quantize():
    step = toy_model()
    assert step.quantize_cost("fp8_block", 64, 128) == Answer(0.001, "measured")
    assert step.quantize_cost("fp8", 64, 128) == Answer(0.0005, "measured")


def test_memory_model_by_hand():
    step = toy_model()
    w = Workload(100, 28)
    weights = (256 * 128 + 128 * 128 + 512 * 128 + 128 * 256) * 2 + 1024 * 128 * 2 * 2 + 3 * 128 * 2
    assert step.weight_bytes() == weights
    activations = 70 * 1024 * 1024       # 2 x 8192 x 128 x 11 is below the 70 MiB floor
    assert step.non_kv_bytes() == weights + activations + 0 + (1 << 20)
    budget = ((1 << 30) - step.non_kv_bytes()) * 0.9 * (1 - 0.015) * (1 - 0.02)
    assert step.kv_budget_bytes() == pytest.approx(budget)
    per_token = 2 * 1 * 64 * 1 * 2
    assert step.kv_bytes_per_token() == per_token
    assert step.max_concurrency(w) == int(budget // (128 * per_token))


def test_memory_cliff_70b_fp8_on_h100_against_h200():
    from trtq.model.zoo import resolve_model
    from trtq.predict.kernels import AicKernels

    resolved = resolve_model("llama-3.1-70b")
    arch = decoder_architecture(resolved.name, resolved.config)
    w = Workload(2048, 256)
    conc = {}
    for gpu in ("H100-SXM", "H200"):
        step = StepModel(arch, {g.name: "fp8" for g in arch.groups}, "fp8", 1, AicKernels(gpu), get_gpu(gpu))
        conc[gpu] = step.max_concurrency(w)
        # Weights of a 70B in FP8 fill most of the 80 GiB H100.
        assert 70e9 < step.weight_bytes() < 75e9
    assert 1 <= conc["H100-SXM"] < 32
    assert conc["H200"] > 5 * conc["H100-SXM"]
    # In bf16 the weights alone exceed the H100: nothing fits.
    step = StepModel(arch, {g.name: "bf16" for g in arch.groups}, "bf16", 1, AicKernels("H100-SXM"), get_gpu("H100-SXM"))
    assert step.max_concurrency(w) == 0 and step.max_throughput(w) is None


def test_workload_parsing_and_refusals():
    assert parse_workload("isl=2048,osl=256,concurrency=32") == Workload(2048, 256, 32)
    assert parse_workload(" isl=8 , osl=4 ") == Workload(8, 4, None)
    for bad, words in (("isl=-1,osl=4", "isl must be >= 1"), ("isl=8,osl=4,concurrency=0", "concurrency must be >= 1"),
                       ("isl=8", "osl= is required"), ("isl=8,osl=x", "must be an integer"),
                       ("isl=8,osl=4,batch=2", "expected isl=N")):
        with pytest.raises(InputError, match=words):
            parse_workload(bad)
    with pytest.raises(UnsupportedError, match="nvfp4 needs Blackwell"):
        StepModel(ONE_BLOCK, {g.name: "bf16" for g in ONE_BLOCK.groups}, "nvfp4", 1, TableKernels(), get_gpu("H100-SXM"))
    with pytest.raises(UnsupportedError, match="no attention table"):
        StepModel(ONE_BLOCK, {g.name: "bf16" for g in ONE_BLOCK.groups}, "nvfp4", 1, TableKernels(), get_gpu("B200"))
    with pytest.raises(UnsupportedError, match="nvfp4 is not supported on H100"):
        StepModel(ONE_BLOCK, {g.name: "nvfp4" for g in ONE_BLOCK.groups}, "bf16", 1, TableKernels(), get_gpu("H100-SXM"))
    with pytest.raises(InputError, match="do not divide by --tp 3"):
        StepModel(ONE_BLOCK, {g.name: "bf16" for g in ONE_BLOCK.groups}, "bf16", 3, TableKernels(), get_gpu("H100-SXM"))


def test_ctx_grid_matches_aiconfigurator():
    from aiconfigurator_core.sdk.backends.trtllm_backend import TRTLLMBackend

    backend = TRTLLMBackend()
    for isl in (128, 1000, 2048, 5000, 16384):
        assert StepModel.ctx_tokens_grid(isl) == backend._get_ctx_tokens_list_for_agg_sweep(isl, 512, False)
    assert math.isclose(StepModel.ctx_tokens_grid(2048)[0], 2048)


# One MoE block: 4 experts, top-2, each expert's intermediate 256 (gate_up 512 x 128, down 128 x 256).
MOE_BLOCK = DecoderArchitecture(
    name="toy-moe", num_layers=1, hidden_size=128, num_heads=2, num_kv_heads=1, head_dim=64,
    intermediate_size=256, vocab_size=1024, tie_word_embeddings=False,
    groups=(GemmGroup("model.layers.0.self_attn.qkv", "qkv", 0, 256, 128),
            GemmGroup("model.layers.0.self_attn.o_proj", "o_proj", 0, 128, 128),
            GemmGroup("model.layers.0.mlp.experts", "moe", 0, 128, 128, experts=4, experts_per_token=2,
                      expert_intermediate=256)),
)
GEMM_BASE_MS[(4, 128, "bf16")] = 0.001   # the router


def moe_model(fmt):
    return StepModel(MOE_BLOCK, {g.name: fmt if g.kind == "moe" else "bf16" for g in MOE_BLOCK.groups}, "bf16", 1,
                     TableKernels(), get_gpu("H100-SXM"))


def test_moe_group_costs_the_routed_experts_by_hand():
    step = moe_model("fp8")
    # One token reaches exactly top-k = 2 experts, one token each: router + 2 x (gate_up + down) at M = 1.
    one = step.group_costs(1)["model.layers.0.mlp.experts"]["fp8"]
    assert one == pytest.approx((0.001 + 0.001) + 2 * ((0.011 + 0.001) + (0.007 + 0.001)))
    # 64 tokens: all 4 experts are (almost surely) hit, 64 x 2 / 4 = 32 tokens each.
    active = 4 * (1 - (1 - 2 / 4) ** 64)
    many = step.group_costs(64)["model.layers.0.mlp.experts"]["fp8"]
    assert many == pytest.approx((0.001 + 0.064) + active * ((0.011 + 0.032) + (0.007 + 0.032)))
    # bf16 experts cost more than fp8 ones on the same tokens; the activation quantization fuses into the norm.
    assert step.group_costs(64, ["bf16", "fp8"])["model.layers.0.mlp.experts"]["bf16"] > many


def test_moe_memory_counts_every_expert():
    bf16, fp8 = moe_model("bf16"), moe_model("fp8")
    experts_bf16 = 4 * (512 * 128 + 128 * 256) * 2
    assert bf16.weight_bytes() - fp8.weight_bytes() == pytest.approx(experts_bf16 / 2, rel=0.05)
