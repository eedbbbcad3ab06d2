"""A report fed by what `make_plan` really writes (not the synthetic plans of synthetic.py).

The planner's inputs are quick stand-ins (a roofline profile, seeded Ω); the plan, its Pareto sweep
and the report are the real code paths, and every number the report shows is checked against the plan.
"""

from __future__ import annotations

import json

import pytest

from trtq.artifacts import load_artifact, save_artifact
from trtq.artifacts.plan import Plan
from trtq.plan.api import PlanRequest, make_plan
from trtq.profile.api import build_profile
from trtq.report.render import write_comparison_report, write_plan_report
from tests.plan.test_planner import synthetic_sensitivity


@pytest.fixture(scope="module")
def real_plans(smollm2_graph, tmp_path_factory):
    directory = tmp_path_factory.mktemp("real-plans")
    sensitivity = save_artifact(synthetic_sensitivity(smollm2_graph), directory / "sensitivity.json")
    paths = {}
    for gpu in ("H100-SXM", "B200"):
        profile = save_artifact(build_profile(smollm2_graph, "roofline", gpu, [16, 2048], launch_cost_ns=0),
                                directory / f"profile-{gpu}.json")
        plan = make_plan("smollm2-135m", profile, sensitivity, gpu,
                         PlanRequest(budgets=["decode@16=0.6", "prefill@2048=0.9"], pareto=4), graph=smollm2_graph)
        paths[gpu] = (save_artifact(plan, directory / f"plan-{gpu}.yaml"), profile)
    return paths, sensitivity


def test_plan_report_shows_exactly_what_make_plan_chose(real_plans, tmp_path):
    paths, sensitivity = real_plans
    plan_path, profile = paths["B200"]
    plan = load_artifact(plan_path, Plan)
    out = write_plan_report(plan_path, tmp_path / "plan.html", profile=profile, sensitivity=sensitivity)
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["gpu"] == "B200" and data["model"] == "smollm2-135m"
    assert [(g["group"], g["format"], g["group_size"]) for g in data["groups"]] == \
        [(g.group, g.format, g.group_size) for g in plan.groups]
    assert data["sensitivity"] == pytest.approx(plan.totals.sensitivity)
    assert data["weight_bytes"] == plan.totals.weight_bytes
    for point in data["points"]:
        assert point["predicted_ns"] == pytest.approx(plan.totals.latency_ns[point["point"]])
        assert point["bf16_ns"] == pytest.approx(plan.totals.bf16_latency_ns[point["point"]])
        budget = next(b for b in plan.budgets if b.point == point["point"])
        assert point["limit_ns"] == pytest.approx(budget.limit_ns) and point["spec"] == budget.spec
        assert point["met"] is True and point["predicted_ns"] <= budget.limit_ns * (1 + 1e-9)
    assert len(data["pareto"]) == len(plan.pareto) >= 2
    shown = sorted((row["fraction"], row["status"], row["chosen"]) for row in data["pareto"])
    assert shown == sorted((point.fraction, point.status, point.chosen) for point in plan.pareto)
    for row in data["pareto"]:
        point = next(p for p in plan.pareto if p.fraction == row["fraction"])
        if point.totals is not None:
            assert row["sensitivity"] == pytest.approx(point.totals.sensitivity)
    # The plan used more than one format, and the page draws each chart.
    assert len({g.format for g in plan.groups}) > 1
    html = out.read_text(encoding="utf-8")
    for figure in ("pareto", "layers", "sensitivity", "latency-share"):
        assert f'data-figure="{figure}"' in html


def test_comparison_report_of_real_plans(real_plans, tmp_path):
    paths, _ = real_plans
    plans = {gpu: load_artifact(path, Plan) for gpu, (path, _) in paths.items()}
    out = write_comparison_report([path for path, _ in paths.values()], tmp_path / "compare.html")
    data = json.loads(out.with_suffix(".json").read_text())
    by_gpu = {g["gpu"]: g for g in data["gpus"]}
    assert set(by_gpu) == set(plans)
    for gpu, plan in plans.items():
        column = by_gpu[gpu]
        # Each GPU's column is its chosen plan or the Pareto point of the plan file the report says it picked.
        if column["selected"].startswith("chosen plan"):
            totals = plan.totals
        else:
            totals = next(p.totals for p in plan.pareto if p.fraction == column["fraction"])
        assert column["weight_bytes"] == totals.weight_bytes
        assert column["sensitivity"] == pytest.approx(totals.sensitivity)
        for point, ns in column["latency_ns"].items():
            assert ns == pytest.approx(totals.latency_ns[point])
