"""Tensor-parallel profiles: one GPU's GEMM shapes (TensorRT-LLM's column/row split), planned and predicted at that TP."""

from __future__ import annotations

import pytest

from tests.helpers.serving import TOKENS, WORKLOAD, llama_serving_inputs
from trtq.artifacts import input_ref, load_artifact, save_artifact
from trtq.artifacts.profile import Profile
from trtq.errors import InputError, UnsupportedError
from trtq.model.families import config_layer_graph
from trtq.model.zoo import resolve_model
from trtq.plan.api import PlanRequest, solve_plan
from trtq.profile.api import build_profile
from trtq.registry import get_gpu


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TRTQ_CACHE", str(tmp_path_factory.getbasetemp() / "trtq-cache"))


def test_sharded_graph_splits_columns_and_rows():
    graph = config_layer_graph(resolve_model("llama-3.1-8b"), include_lm_head=True)
    two = graph.sharded(2)
    shapes = {g.kind: (g.out_features, g.in_features) for g in two.groups if g.block in (0, None)}
    # q/k/v and gate/up split N; o_proj and down_proj split K; lm_head splits the vocabulary.
    assert shapes == {"qkv": (3072, 4096), "o_proj": (4096, 2048), "gate_up": (14336, 4096),
                      "down_proj": (4096, 7168), "lm_head": (64128, 4096)}
    assert [g.name for g in two.groups] == [g.name for g in graph.groups] and graph.sharded(1) is graph
    moe = config_layer_graph(resolve_model("mixtral-8x7b"), include_lm_head=False).sharded(4)
    experts = {layer.kind: (layer.out_features, layer.in_features) for layer in moe.layers if layer.block == 0}
    assert experts["experts_gate_up"] == (28672 // 4, 4096) and experts["experts_down"] == (4096, 14336 // 4)
    with pytest.raises(InputError, match="q_proj has 576 outputs, which tensor parallelism 7 does not divide"):
        config_layer_graph(resolve_model("smollm2-135m"), include_lm_head=False).sharded(7)
    odd = graph.model_copy(update={"layers": [graph.layers[0].model_copy(update={"kind": "c_attn"})]})
    with pytest.raises(UnsupportedError, match="how TensorRT-LLM shards c_attn layers"):
        odd.sharded(2)


def test_tp2_profile_plans_and_predicts_at_tp2_and_refuses_tp1(tmp_path):
    from trtq.predict.api import PredictRequest, predict

    graph, profiles, sens = llama_serving_inputs(tmp_path)
    tp2 = build_profile(graph, "roofline", "H100-SXM", TOKENS, launch_cost_ns=0, tp=2)
    path = save_artifact(tp2, tmp_path / "tp2.json")
    again = load_artifact(path, Profile)
    assert again.tp == 2 and again == tp2
    assert {(r.out_features, r.in_features) for r in tp2.rows} == set(graph.sharded(2).unique_shapes())
    tp1 = load_artifact(profiles["H100-SXM"], Profile)
    # Budgets at TP 2 are one GPU's GEMM time: about half of TP 1's for the same plan.
    budget = dict(budgets=["decode@16=0.7"])
    half = solve_plan(graph, tp2, sens, get_gpu("h100"), PlanRequest(**budget))
    whole = solve_plan(graph, tp1, sens, get_gpu("h100"), PlanRequest(**budget))
    ratio = half.totals.bf16_latency_ns["decode@16"] / whole.totals.bf16_latency_ns["decode@16"]
    assert 0.4 < ratio < 0.6 and any("tensor parallelism 2" in n for n in half.notes)
    assert half.totals.bf16_weight_bytes == whole.totals.bf16_weight_bytes
    # SLO plans at --tp 2 on the TP-2 profile; predict reproduces them; a TP-1 profile is refused in one line.
    serving = dict(budgets=[], workload=WORKLOAD, slos=["tpot=8ms"], tp=2)
    plan = solve_plan(graph, tp2, sens, get_gpu("h100"), PlanRequest(**serving), {"profile": input_ref(path)})
    assert plan.serving.tp == 2 and plan.serving.tpot_ms <= 8
    plan_path = save_artifact(plan, tmp_path / "plan.yaml")
    predicted = predict(PredictRequest(target=str(plan_path), workload=WORKLOAD, tp=2, profile=str(path)))
    assert predicted["tpot_ms"] == pytest.approx(plan.serving.tpot_ms, rel=1e-9)
    with pytest.raises(InputError, match=r"tensor parallelism 1, not 2: `trtq profile \.\.\. --tp 2`"):
        solve_plan(graph, tp1, sens, get_gpu("h100"), PlanRequest(**serving),
                   {"profile": input_ref(profiles["H100-SXM"])})
