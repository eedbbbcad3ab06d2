"""Report sections for serving: the plan page's predicted TTFT/TPOT and KV format (escaped)."""

from __future__ import annotations

import pytest

from trtq.artifacts import load_artifact, save_artifact
from trtq.artifacts.plan import Plan


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TRTQ_CACHE", str(tmp_path_factory.getbasetemp() / "trtq-cache"))


@pytest.fixture(scope="module")
def serving_plan(tmp_path_factory):
    from tests.plan.test_planner import synthetic_sensitivity
    from trtq.artifacts import input_ref
    from trtq.model.families import config_layer_graph
    from trtq.model.zoo import resolve_model
    from trtq.plan.api import PlanRequest, solve_plan
    from trtq.profile.api import build_profile
    from trtq.registry import get_gpu

    d = tmp_path_factory.mktemp("serving")
    graph = config_layer_graph(resolve_model("llama-3.1-8b"), include_lm_head=False)
    profile = build_profile(graph, "roofline", "H100-SXM", [1, 16, 128, 2048, 4096], launch_cost_ns=0)
    save_artifact(profile, d / "profile.json")
    sens = synthetic_sensitivity(graph)
    sens.kv_cache = {"fp8": 0.05}
    plan = solve_plan(graph, profile, sens, get_gpu("H100-SXM"),
                      PlanRequest(budgets=[], workload="isl=2048,osl=256,concurrency=32", slos=["ttft=400ms", "tpot=12ms"]),
                      {"profile": input_ref(d / "profile.json")})
    save_artifact(plan, d / "plan.yaml")
    return d / "plan.yaml"


def test_plan_page_shows_the_serving_prediction_and_kv_format(serving_plan, tmp_path):
    from trtq.report.render import write_plan_report

    plan = load_artifact(serving_plan, Plan)
    html = write_plan_report(serving_plan, tmp_path / "r.html").read_text()
    assert 'id="serving"' in html
    assert f"TTFT {plan.serving.ttft_ms:.1f} ms" in html and f"TPOT {plan.serving.tpot_ms:.2f} ms" in html
    assert f"KV cache <strong>{plan.serving.kv_format}</strong>" in html
    import json

    data = json.loads((tmp_path / "r.json").read_text())
    assert data["serving"]["kv_format"] == plan.serving.kv_format


def test_serving_strings_are_escaped(serving_plan, tmp_path):
    from trtq.report.render import write_plan_report

    plan = load_artifact(serving_plan, Plan)
    plan.serving.gemm_source = "<script>alert(1)</script>"
    evil = tmp_path / "evil.yaml"
    save_artifact(plan, evil)
    html = write_plan_report(evil, tmp_path / "e.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert(1)" not in html


def test_plan_without_serving_has_no_serving_card(plan_paths, tmp_path):
    from trtq.report.render import write_plan_report

    path = next(iter(plan_paths.values()))
    html = write_plan_report(path, tmp_path / "r.html").read_text()
    assert 'id="serving"' not in html
