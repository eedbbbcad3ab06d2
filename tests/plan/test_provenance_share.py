"""A plan records how much of each point's predicted time comes from measured, interpolated, extrapolated or
modelled profile rows; `trtq plan` prints it and the plan report shows it."""

from __future__ import annotations

import pytest

from tests.plan.test_planner import synthetic_sensitivity
from trtq.artifacts import load_artifact, save_artifact
from trtq.artifacts.plan import Plan
from trtq.plan.api import PlanRequest, solve_plan
from trtq.plan.summary import provenance_line
from trtq.profile.api import build_profile
from trtq.registry import get_gpu

pytest.importorskip("aiconfigurator_core")


@pytest.fixture(scope="module")
def measured_plan(smollm2_graph) -> tuple[Plan, object]:
    # H100 tables: bf16, fp8 and fp8_block are read from them (measured or interpolated at SmolLM2's widths);
    # int4_awq has no table, so its rows are modelled (the roofline calibrated on the measured formats).
    profile = build_profile(smollm2_graph, "aiconfigurator", "H100-SXM", [16, 2048], formats="bf16,fp8,int4_awq")
    plan = solve_plan(smollm2_graph, profile, synthetic_sensitivity(smollm2_graph), get_gpu("H100-SXM"),
                      PlanRequest(["decode@16=0.98"], pareto=4))
    return plan, profile


def _expected_ns(plan: Plan, profile, point: str, tokens: int) -> dict[str, float]:
    """The plan's chosen groups' rows in the profile, summed by their provenance: computed here, apart."""
    rows = {(r.out_features, r.in_features, r.tokens, r.format): r for r in profile.rows if r.latency_ns}
    expected: dict[str, float] = {}
    for group in plan.groups:
        row = rows[(group.out_features, group.in_features, tokens, group.format)]
        expected[row.provenance] = expected.get(row.provenance, 0.0) + row.latency_ns
    return expected


def test_plan_records_the_provenance_of_its_predicted_time(measured_plan, tmp_path):
    plan, profile = measured_plan
    used = {g.format for g in plan.groups}
    assert "int4_awq" in used and used & {"bf16", "fp8"}, used   # a mixed plan: modelled and table rows
    for point, tokens in (("decode@16", 16), ("prefill@2048", 2048)):
        recorded = plan.totals.provenance_ns[point]
        assert recorded == pytest.approx(_expected_ns(plan, profile, point, tokens), rel=1e-12)
        assert sum(recorded.values()) == pytest.approx(plan.totals.latency_ns[point], rel=1e-12)
        shares = plan.totals.provenance_shares(point)
        assert sum(shares.values()) == pytest.approx(1.0) and 0 < shares["modelled"] < 1
    # Every Pareto point carries its own split.
    for point in plan.pareto:
        if point.totals is not None:
            assert sum(point.totals.provenance_ns["decode@16"].values()) == pytest.approx(
                point.totals.latency_ns["decode@16"], rel=1e-12)
    again = load_artifact(save_artifact(plan, tmp_path / "plan.yaml"), Plan)
    assert again == plan
    line = provenance_line(plan)
    assert line.startswith("decode@16 ") and f"modelled {plan.totals.provenance_shares('decode@16')['modelled']:.0%}" in line


def test_plan_report_shows_the_shares_escaped(measured_plan, tmp_path):
    from trtq.report.model import build_plan_report
    from trtq.report.render import render_plan_report

    plan, _ = measured_plan
    path = save_artifact(plan, tmp_path / "plan.yaml")
    report = build_plan_report(path)
    decode = next(p for p in report.points if p.point == "decode@16")
    assert decode.provenance_ns == plan.totals.provenance_ns["decode@16"]
    html = render_plan_report(report, tmp_path / "plan.html").read_text(encoding="utf-8")
    share = plan.totals.provenance_shares("decode@16")["modelled"]
    assert f"modelled {100 * share:.0f}%" in html
    # A label from a hand-edited report model reaches the page as text, never markup.
    hostile = report.model_copy(update={"points": [decode.model_copy(
        update={"provenance_ns": {"measured": 1.0, "<script>alert(1)</script>": 1.0}})]})
    html = render_plan_report(hostile, tmp_path / "hostile.html").read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; 50%" in html


def test_plans_without_the_split_still_read(measured_plan, tmp_path):
    import yaml

    plan, _ = measured_plan
    data = yaml.safe_load(save_artifact(plan, tmp_path / "plan.yaml").read_text())
    del data["totals"]["provenance_ns"]
    for point in data["pareto"]:
        if point.get("totals"):
            point["totals"].pop("provenance_ns", None)
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(data))
    old = load_artifact(tmp_path / "old.yaml", Plan)
    assert old.totals.provenance_ns == {} and provenance_line(old) == ""
