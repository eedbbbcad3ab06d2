"""An MoE model planned end to end on the roofline: `trtq profile` then `trtq plan` (issue 17)."""

from __future__ import annotations

import pytest

from trtq.artifacts import load_artifact, save_artifact
from trtq.artifacts.plan import Plan
from trtq.artifacts.profile import Profile
from trtq.cli import main
from trtq.model.families import config_layer_graph
from trtq.model.zoo import resolve_model
from trtq.profile.harness import GemmCase
from trtq.profile.roofline import RooflineParams, moe_active_experts, roofline_row
from trtq.registry import get_gpu

from tests.plan.test_planner import synthetic_sensitivity


def test_grouped_gemm_roofline_counts_active_tokens_and_touched_experts():
    gpu = get_gpu("H100-SXM")
    params = RooflineParams.for_gpu(gpu, launch_cost_ns=0)
    dense = roofline_row(gpu, GemmCase(28672, 4096, 2048, "bf16"), params)
    moe = roofline_row(gpu, GemmCase(28672, 4096, 2048, "bf16", experts=8, experts_per_token=2), params)
    # 2048 tokens x top-2 of 8: twice the rows of one dense GEMM, every expert touched
    assert moe.details["flops"] == 2 * dense.details["flops"]
    assert moe.details["tokens_per_expert"] == 512 and moe.details["active_experts"] == pytest.approx(8)
    assert (moe.experts, moe.experts_per_token, moe.method) == (8, 2, "roofline_grouped_gemm")
    # one token reads the weights of exactly its top-k experts, not all E
    one = GemmCase(28672, 4096, 1, "bf16", experts=8, experts_per_token=2)
    assert moe_active_experts(one) == pytest.approx(2)
    decode = roofline_row(gpu, one, params)
    single = roofline_row(gpu, GemmCase(28672, 4096, 1, "bf16"), params)
    assert decode.details["bound"] == "memory"
    assert decode.latency_ns == pytest.approx(2 * single.latency_ns, rel=0.01)


@pytest.fixture(scope="module")
def mixtral_artifacts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mixtral")
    assert main(["profile", "mixtral-8x7b", "--backend", "roofline", "--gpu", "H100-SXM", "--tokens", "1,16,2048",
                 "-o", str(tmp / "profile.json")]) == 0
    graph = config_layer_graph(resolve_model("mixtral-8x7b"))
    save_artifact(synthetic_sensitivity(graph), tmp / "sens.json")
    return tmp, graph


def test_mixtral_profile_has_grouped_gemm_rows(mixtral_artifacts):
    tmp, _ = mixtral_artifacts
    profile = load_artifact(tmp / "profile.json", Profile)
    moe = {(r.out_features, r.in_features, r.experts, r.experts_per_token) for r in profile.rows if r.experts}
    assert moe == {(2 * 14336, 4096, 8, 2), (4096, 14336, 8, 2)}
    assert not any(r.experts for r in profile.rows if (r.out_features, r.in_features) == (6144, 4096))


def test_mixtral_plan_end_to_end_prices_experts_as_one_group(mixtral_artifacts):
    tmp, graph = mixtral_artifacts
    assert main(["plan", "mixtral-8x7b", "--profile", str(tmp / "profile.json"), "--sensitivity",
                 str(tmp / "sens.json"), "--gpu", "H100-SXM", "--budget", "decode@16=0.6", "--memory-gb", "60",
                 "-o", str(tmp / "plan.yaml")]) == 0
    plan = load_artifact(tmp / "plan.yaml", Plan)
    profile = load_artifact(tmp / "profile.json", Profile)
    moe = [g for g in plan.groups if g.kind == "moe"]
    assert len(moe) == 32 and len(plan.groups) == 32 * 3
    assert all(g.members == [f"{g.group}.gate_up_proj", f"{g.group}.down_proj"] for g in moe)
    # memory counts all 8 experts of both GEMMs
    first = moe[0]
    assert first.costs["bf16"].weight_bytes == 8 * (2 * 14336 * 4096 + 4096 * 14336) * 2
    # latency: the two grouped GEMMs of the profile at the budget's 16 tokens, summed
    rows = profile.moe_latency_map()
    for fmt, cost in first.costs.items():
        expected = rows[(28672, 4096, 16, fmt, 8, 2)] + rows[(4096, 14336, 16, fmt, 8, 2)]
        assert cost.latency_ns["decode@16"] == pytest.approx(expected)
    # the plan met its budgets and accounts for every parameter: router and norms stay bf16 as fixed bytes
    assert plan.totals.latency_ns["decode@16"] <= 0.6 * plan.totals.bf16_latency_ns["decode@16"] * (1 + 1e-9)
    assert plan.totals.weight_bytes <= 60e9
    assert plan.totals.bf16_weight_bytes == 2 * graph.total_parameters
    assert any(g.format != "bf16" for g in moe)


def test_measuring_backends_do_not_pass_off_a_dense_gemm_as_moe():
    """The cpu backend times dense kernels only: its MoE cases are unsupported rows with the reason."""
    from tests.plan.test_layer_graph import tiny
    from trtq.profile.api import build_profile

    graph = config_layer_graph(tiny("mixtral"))
    profile = build_profile(graph, "cpu", None, [4], "bf16", harness={"min_repeats": 3, "warmup": 0,
                                                                       "max_repeats": 3})
    moe = [r for r in profile.rows if r.experts is not None]
    dense = [r for r in profile.rows if r.experts is None]
    assert {(r.out_features, r.in_features, r.experts_per_token) for r in moe} == {(192, 64, 2), (64, 96, 2)}
    assert all(r.status == "unsupported" and r.latency_ns is None and "MoE grouped GEMM" in r.reason for r in moe)
    assert dense and all(r.latency_ns is not None for r in dense)
    assert profile.moe_latency_map() == {}


def test_tiny_mixtral_weight_sensitivity_to_plan(tmp_path):
    """Real (seeded random) expert weights: Omega per expert summed, then profile and plan on the roofline."""
    import json

    import torch
    from transformers import AutoModelForCausalLM

    from tests.plan.test_layer_graph import tiny
    from trtq.model.zoo import hf_config
    from trtq.plan.api import PlanRequest, solve_plan
    from trtq.profile.api import build_profile
    from trtq.registry import FORMATS
    from trtq.sensitivity.api import weight_sensitivity
    from trtq.sensitivity.quantizers import weight_error

    resolved = tiny("mixtral")
    (tmp_path / "config.json").write_text(json.dumps(resolved.config))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(hf_config(resolved)).eval()
    table = weight_sensitivity(str(tmp_path), formats="bf16,fp8,int4_awq", model=model)
    omega = table.omega_map()
    name = "model.layers.0.mlp.experts.down_proj"
    w = model.model.layers[0].mlp.experts.down_proj.detach()
    expected = sum(weight_error(w[e], FORMATS["fp8"]) for e in range(4))
    assert omega[(name, "fp8")] == pytest.approx(expected)
    assert omega[(name, "bf16")] < omega[(name, "fp8")]
    assert (name, "int4_awq") not in omega   # no INT4 block size divides the experts' width 96
    gate_up = "model.layers.0.mlp.experts.gate_up_proj"
    assert omega[(gate_up, "fp8")] < omega[(gate_up, "int4_awq")]

    graph = config_layer_graph(resolve_model(str(tmp_path)))
    profile = build_profile(graph, "roofline", "H100-SXM", [16, 2048], formats="bf16,fp8,int4_awq", launch_cost_ns=0)
    plan = solve_plan(graph, profile, table, get_gpu("H100-SXM"), PlanRequest(budgets=["decode@16=0.9"]))
    moe = {g.group: g.format for g in plan.groups if g.kind == "moe"}
    assert set(moe) == {f"model.layers.{b}.mlp.experts" for b in range(3)}
    # one format for both expert GEMMs: INT4 fits gate_up (in 64) but not down (in 96), so not the group
    assert all(set(g.costs) == {"bf16", "fp8"} for g in plan.groups if g.kind == "moe")
    assert "int4_awq" in next(g for g in plan.groups if g.kind == "qkv").costs
    assert plan.totals.latency_ns["decode@16"] <= 0.9 * plan.totals.bf16_latency_ns["decode@16"] * (1 + 1e-9)
