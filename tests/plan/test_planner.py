import numpy as np
import pytest

from trtq.artifacts import load_artifact, make_metadata, save_artifact
from trtq.artifacts.plan import Plan
from trtq.artifacts.sensitivity import Sensitivity, SensitivityRow
from trtq.errors import InfeasibleError, InputError, UnsupportedError
from trtq.plan.api import PlanRequest, solve_plan
from trtq.plan.budgets import parse_budget
from trtq.profile.api import build_profile
from trtq.registry import FORMATS, get_gpu


def synthetic_sensitivity(graph, seed=0) -> Sensitivity:
    """Seeded Omega with the real ordering of formats (bf16 < fp8/int8 < 4-bit)."""
    rng = np.random.default_rng(seed)
    scale = {"bf16": 1e-6, "fp8": 1e-2, "int8_sq": 5e-3, "int4_awq": 0.2, "w4a8_awq": 0.25, "nvfp4": 0.15,
             "fp8_block": 6e-3}
    rows = []
    for layer in graph.layers:
        weight = rng.lognormal(0, 1)
        for fmt in FORMATS.values():
            if fmt.available_for(layer.in_features):
                rows.append(SensitivityRow(layer=layer.name, format=fmt.name,
                                           group_size=fmt.group_size_for(layer.in_features),
                                           weight_error=scale[fmt.name], omega=scale[fmt.name] * weight))
    return Sensitivity.create(metadata=make_metadata(seed=seed),
                       model=graph.model, method="weight", formats=list(FORMATS), rows=rows)


@pytest.fixture(scope="module")
def inputs(smollm2_graph):
    profiles = {gpu: build_profile(smollm2_graph, "roofline", gpu, [1, 16, 2048], launch_cost_ns=0)
                for gpu in ("H100-SXM", "A100-SXM-80GB", "B200")}
    return smollm2_graph, profiles, synthetic_sensitivity(smollm2_graph)


def plan_for(inputs, gpu="H100-SXM", **request):
    graph, profiles, sens = inputs
    return solve_plan(graph, profiles[gpu], sens, get_gpu(gpu), PlanRequest(**request))


def test_budget_parsing():
    b = parse_budget("decode@16=0.6")
    assert (b.phase, b.tokens, b.fraction, b.absolute_ns, b.point) == ("decode", 16, 0.6, None, "decode@16")
    assert parse_budget("prefill@2048=12ms").absolute_ns == 12e6
    assert parse_budget("decode@1 = 850us").absolute_ns == 850e3
    for bad in ("decode16=0.6", "train@16=0.5", "decode@16=", "decode@16=-1", "decode@0=0.5", "decode@16=1h"):
        with pytest.raises(InputError, match="bad budget"):
            parse_budget(bad)


def test_plan_meets_every_budget_and_fused_groups_share_a_format(inputs):
    plan = plan_for(inputs, budgets=["decode@16=0.5", "prefill@2048=0.8"], memory_gb=0.2)
    assert plan.solver.status == "optimal" and plan.solver.name == "HiGHS"
    for b in plan.budgets:
        assert plan.totals.latency_ns[b.point] <= b.limit_ns * (1 + 1e-9)
        assert b.limit_ns == pytest.approx(b.fraction * b.bf16_ns)
    assert plan.totals.weight_bytes <= 0.2e9
    layer_formats = plan.layer_formats()
    graph = inputs[0]
    assert set(layer_formats) == {layer.name for layer in graph.layers}
    for group in graph.groups:
        assert len({layer_formats[m] for m in group.members}) == 1, group.name
    # the chosen costs are consistent with the totals
    assert sum(g.costs[g.format].omega for g in plan.groups) == pytest.approx(plan.totals.sensitivity)
    int4 = [g for g in plan.groups if g.format in ("int4_awq", "w4a8_awq")]
    assert int4 and all(g.group_size == 64 for g in int4 if g.in_features == 576)


def test_hardware_gating(inputs):
    a100 = plan_for(inputs, "A100-SXM-80GB", budgets=["decode@16=0.4"])
    assert "fp8" not in a100.candidate_formats and "w4a8_awq" not in a100.candidate_formats
    assert {g.format for g in a100.groups} <= {"bf16", "int8_sq", "int4_awq"}
    b200 = plan_for(inputs, "B200", budgets=["decode@16=0.35"])
    assert "nvfp4" in {g.format for g in b200.groups}
    with pytest.raises(UnsupportedError, match="fp8 is not supported on A100-SXM-80GB"):
        plan_for(inputs, "A100-SXM-80GB", budgets=["decode@16=0.5"], formats="fp8")


def test_infeasible_budget_names_it_and_the_smallest_feasible(inputs):
    with pytest.raises(InfeasibleError) as err:
        plan_for(inputs, budgets=["decode@16=0.1"])
    message = str(err.value)
    assert message.startswith("budget decode@16=0.1 cannot be met on H100-SXM: the smallest feasible is 0.")
    # both values it prints are budgets that parse back, and are feasible as printed
    suggested = message.split("(--budget ")[1].rstrip(")").split(" or ")
    assert [s.split("=")[0] for s in suggested] == ["decode@16", "decode@16"]
    assert suggested[1].endswith("us")
    for spec in suggested:
        assert plan_for(inputs, budgets=[spec]).solver.status == "optimal"
    with pytest.raises(InfeasibleError, match="memory budget 10 MB cannot be met: the smallest feasible weight memory is"):
        plan_for(inputs, budgets=["decode@16=0.9"], memory_gb=0.01)


def test_budget_met_by_every_assignment_is_said(inputs):
    plan = plan_for(inputs, budgets=["decode@16=1.0"])
    assert any("decode@16=1.0 is met by every assignment" in n for n in plan.notes)
    assert all(g.format == "bf16" for g in plan.groups)   # nothing to gain, nothing lost


@pytest.mark.parametrize("gpu", ["H100-SXM", "A100-SXM-80GB", "B200"])
def test_budgets_of_exactly_all_bf16_are_met(inputs, gpu):
    # All-bf16 is at exactly 1 of itself, summed in any order: within the budgets, never one rounding over (the
    # solver's tolerance then tightened the rows, and HiGHS failed on 2 budgets of 1 on SmolLM2).
    plan = plan_for(inputs, gpu, budgets=["decode@1=1", "decode@16=1", "prefill@2048=1"])
    assert plan.solver.status == "optimal" and not plan.solver.tightened
    assert all(g.format == "bf16" for g in plan.groups)
    assert all(plan.totals.latency_ns[b] == plan.totals.bf16_latency_ns[b] == b_.limit_ns
               for b_ in plan.budgets for b in [b_.point])


def test_a_budget_nothing_beats_bf16_at_says_so(inputs):
    with pytest.raises(InfeasibleError, match=r"no plan is faster than all-bf16 at decode@16 \(.*\) with the other "
                                              r"budgets met \(--budget decode@16=1\)"):
        plan_for(inputs, budgets=["decode@16=0.9"], formats="bf16")
    assert plan_for(inputs, budgets=["decode@16=1"], formats="bf16").solver.status == "optimal"  # as it says


def test_profile_without_the_budget_tokens_is_refused(inputs):
    with pytest.raises(InputError, match="profile has no rows for tokens 128"):
        plan_for(inputs, budgets=["decode@128=0.5"])


def test_pareto_front_is_monotone_and_marks_the_plan(inputs):
    plan = plan_for(inputs, budgets=["decode@16=0.5", "prefill@2048=0.8"], pareto=8)
    front = [p for p in plan.pareto if p.status == "optimal"]
    assert len(front) >= 8
    assert sum(p.chosen for p in plan.pareto) >= 1
    sweep = [p for p in front if not p.chosen] or front
    sens = [p.totals.sensitivity for p in sorted(sweep, key=lambda p: p.fraction)]
    assert all(a >= b - 1e-9 for a, b in zip(sens, sens[1:]))     # looser budget, no worse quality
    assert sens[-1] == pytest.approx(min(sens))


def test_same_inputs_same_plan_and_round_trip(inputs, tmp_path):
    first = plan_for(inputs, budgets=["decode@16=0.45"])
    second = plan_for(inputs, budgets=["decode@16=0.45"])
    assert [g.format for g in first.groups] == [g.format for g in second.groups]
    path = save_artifact(first, tmp_path / "plan.yaml")
    again = load_artifact(path, Plan)
    assert again == first
    assert again.layer_formats()["model.layers.0.mlp.down_proj"] == first.layer_formats()["model.layers.0.mlp.down_proj"]


def test_mismatched_inputs_are_refused(inputs):
    graph, profiles, sens = inputs
    with pytest.raises(InputError, match="profile was measured for A100-SXM-80GB, the plan targets H100-SXM"):
        solve_plan(graph, profiles["A100-SXM-80GB"], sens, get_gpu("h100"), PlanRequest(budgets=["decode@16=0.5"]))
    partial = sens.model_copy(update={"rows": [r for r in sens.rows if "layers.3." not in r.layer]})
    with pytest.raises(InputError, match="sensitivity table has no rows for layer model.layers.3"):
        solve_plan(graph, profiles["H100-SXM"], partial, get_gpu("h100"), PlanRequest(budgets=["decode@16=0.5"]))
