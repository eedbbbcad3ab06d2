"""Budgets chosen on a profile's own front: met on measured tables where roofline-tuned fractions are not."""

from __future__ import annotations

import pytest

from tests.plan.test_planner import synthetic_sensitivity
from trtq.errors import InfeasibleError, InputError
from trtq.plan.api import PlanRequest, budget_at_fraction, solve_plan
from trtq.profile.api import build_profile
from trtq.registry import get_gpu

pytest.importorskip("aiconfigurator_core")
POINTS = ["decode@16", "prefill@2048"]


@pytest.fixture(scope="module")
def h100_tables(smollm2_graph):
    profile = build_profile(smollm2_graph, "aiconfigurator", "H100-SXM", [16, 2048])
    return smollm2_graph, profile, synthetic_sensitivity(smollm2_graph), get_gpu("H100-SXM")


def _plan(inputs, budgets):
    graph, profile, sensitivity, gpu = inputs
    return solve_plan(graph, profile, sensitivity, gpu, PlanRequest(budgets, pareto=3))


def test_roofline_budgets_are_infeasible_on_the_measured_tables(h100_tables):
    # The demo's old budgets, tuned on the roofline: on the tables no plan meets both (the modelled INT4-AWQ
    # speeds decode up, but prefill then misses).
    with pytest.raises(InfeasibleError, match="decode@16=0.45|prefill@2048=0.9"):
        _plan(h100_tables, ["decode@16=0.45", "prefill@2048=0.9"])


def test_budgets_along_the_front(h100_tables):
    fastest = budget_at_fraction(*h100_tables, POINTS, 0.0)
    t_min = float(fastest[0].split("=")[1])
    assert fastest == [f"{p}={fastest[0].split('=')[1]}" for p in POINTS] and 0.5 < t_min < 1.0
    plan = _plan(h100_tables, fastest)
    # The front's fastest end: the plan is within rounding of t_min at its tightest point, and meets both.
    ratios = [plan.totals.latency_ns[p] / plan.totals.bf16_latency_ns[p] for p in POINTS]
    assert max(ratios) == pytest.approx(t_min, rel=1e-3) and all(r <= t_min for r in ratios)
    middle = budget_at_fraction(*h100_tables, POINTS, 0.3)
    value = float(middle[0].split("=")[1])
    assert value == pytest.approx(t_min + 0.3 * (1 - t_min), rel=1e-3) and value >= t_min + 0.3 * (1 - t_min) - 1e-4
    mixed = _plan(h100_tables, middle)
    assert {g.format for g in mixed.groups} - {"bf16"} and mixed.totals.sensitivity > 0
    assert mixed.totals.sensitivity < plan.totals.sensitivity        # looser budget, less sensitivity spent
    assert budget_at_fraction(*h100_tables, POINTS, 1.0) == [f"{p}=1" for p in POINTS]


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan"), True])
def test_fraction_out_of_range_is_refused(h100_tables, fraction):
    with pytest.raises(InputError, match="budget fraction must be a number from 0"):
        budget_at_fraction(*h100_tables, POINTS, fraction)
