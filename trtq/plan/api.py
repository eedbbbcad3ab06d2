"""Library entry point of the plan stage: artifacts in, plan.yaml out."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np

from trtq.artifacts import input_ref, load_artifact, make_metadata
from trtq.artifacts.layers import LayerGraph
from trtq.artifacts.plan import Budget, FormatCost, GroupChoice, ParetoPoint, Plan, PointStatus, SolverInfo
from trtq.artifacts.profile import Profile
from trtq.artifacts.sensitivity import Sensitivity
from trtq.console import fmt_bytes
from trtq.errors import InfeasibleError, InputError, SolverStoppedError
from trtq.plan.budgets import BudgetSpec, fraction_text, parse_budgets, parse_memory_gb, round_up, time_text
from trtq.plan.costs import CostModel, build_cost_model
from trtq.plan.ilp import (
    Constraint,
    IlpProblem,
    IlpSolution,
    ParametricIlp,
    exact_sum,
    min_common_scale,
    minimum_of,
    solve,
)
from trtq.plan.request import DEFAULT_NODE_LIMIT, PlanRequest
from trtq.registry import GpuSpec, get_gpu
from trtq.registry.runtimes import Runtime, family_advisories, get_runtime, plannable_formats, unexported_formats

_TOL = 1e-9


def candidate_formats(gpu: GpuSpec, spec: str | None, runtime: Runtime | None = None):
    # One gate for every format decision: what the runtime runs on this GPU (profiles/runtimes.yaml). By default a
    # plan is one trtq can ship, so formats trtq cannot export are candidates only when named in `spec`.
    formats = plannable_formats(gpu, runtime or get_runtime(None), spec)
    return formats if spec else [f for f in formats if not f.export_refusal]


def problem_for(
    costs: CostModel, budgets: list[BudgetSpec], memory_bytes: int | None, scale: float | None = None
) -> tuple[IlpProblem, list[Budget]]:
    """The ILP for these budgets; `scale` replaces every latency limit by scale x all-bf16."""
    bf16 = costs.bf16_index()
    constraints, resolved = [], []
    for b in budgets:
        lat = costs.latency[b.point]
        # Exact, as the solver's check of a plan is: all-bf16 is within a budget of 1 (not one rounding over).
        bf16_ns = exact_sum(lat, np.full(len(lat), bf16))
        limit = scale * bf16_ns if scale is not None else b.limit_ns(bf16_ns)
        constraints.append(Constraint(b.spec, np.where(costs.allowed, lat, np.inf), limit))
        resolved.append(
            Budget(
                point=b.point,
                phase=b.phase,
                tokens=b.tokens,
                spec=b.spec,
                fraction=b.fraction,
                limit_ns=limit,
                bf16_ns=bf16_ns,
            )
        )
    if memory_bytes is not None:
        constraints.append(
            Constraint("memory", np.where(costs.allowed, costs.weight_bytes, np.inf), memory_bytes - costs.fixed_bytes)
        )
    objective = np.where(costs.allowed, costs.omega, np.inf)
    return IlpProblem(objective, constraints), resolved


def _limits_text(request: PlanRequest) -> str:
    parts = [f"{request.node_limit} nodes"] if request.node_limit is not None else []
    if request.time_limit_s is not None:
        parts.append(f"{request.time_limit_s:g} s")
    return " / ".join(parts) or "no limit"


def stopped_without_plan(sol: IlpSolution, request: PlanRequest) -> SolverStoppedError:
    """A limit stopped the solver before it found any plan: nothing is known about feasibility."""
    if sol.status == "time_limit":
        return SolverStoppedError(
            f"the solver reached the {request.time_limit_s:g} s time limit before it found "
            "any plan (feasibility unknown): raise --time-limit or leave it out"
        )
    if sol.status == "node_limit":
        return SolverStoppedError(
            f"the solver reached the {request.node_limit} node limit before it found any "
            "plan (feasibility unknown): raise --node-limit"
        )
    if sol.status == "tolerance":
        return SolverStoppedError(
            "the solver's answers stayed over a budget by its feasibility tolerance after "
            "tightening: loosen a budget by 0.01%"
        )
    return SolverStoppedError(f"the solver failed: {sol.status}")


def explain_infeasible(
    problem: IlpProblem, budgets: list[Budget], costs: CostModel, gpu: GpuSpec, request: PlanRequest
) -> InfeasibleError | SolverStoppedError:
    """Called only when the solver proved the budgets infeasible together: for each budget,
    the smallest value it could take with the others met, printed as a budget that parses."""
    reasons, unknown = [], []
    for i, c in enumerate(problem.constraints):
        least = minimum_of(problem, i, request.solver, request.time_limit_s, request.node_limit)
        if least.limit_hit_without_plan or (not least.feasible and least.status != "infeasible"):
            unknown.append(c.name)
            continue
        smallest = least.objective
        if smallest is None or smallest <= c.limit * (1 + 1e-9) + _TOL:
            continue
        if c.name == "memory":
            gb = round_up((smallest + costs.fixed_bytes) / 1e9)
            reasons.append(
                f"memory budget {fmt_bytes(c.limit + costs.fixed_bytes)} cannot be met: the smallest "
                f"feasible weight memory is {gb:.4g} GB (--memory-gb {gb:.4g})"
            )
        elif smallest >= budgets[i].bf16_ns * (1 - 1e-9):
            # Nothing beats all-bf16 here (on measured tables a format often does not pay): a budget of exactly
            # 1 is met (the sums are exact), where the rounded-up fraction would read 1.001.
            b = budgets[i]
            reasons.append(
                f"budget {b.spec} cannot be met on {gpu.name}: no plan is faster than all-bf16 at {b.point} "
                f"({time_text(b.bf16_ns)}) with the other budgets met (--budget {b.point}=1)"
            )
        else:
            b = budgets[i]
            fraction, duration = fraction_text(smallest / b.bf16_ns), time_text(smallest)
            reasons.append(
                f"budget {b.spec} cannot be met on {gpu.name}: the smallest feasible is {fraction} "
                f"of all-bf16 ({duration}) at {b.point} (--budget {b.point}={fraction} or "
                f"{b.point}={duration})"
            )
    if not reasons and unknown:
        return SolverStoppedError(
            f"no plan meets all budgets, and the solver reached its limit ({_limits_text(request)}) before it "
            f"could tell which budget is too tight ({', '.join(unknown)})"
        )
    if not reasons:
        reasons.append(
            "each budget can be met alone but not all together: loosen one of "
            + ", ".join(c.name for c in problem.constraints)
        )
    return InfeasibleError("; ".join(reasons))


def group_choices(costs: CostModel, choice: np.ndarray) -> list[GroupChoice]:
    out = []
    allowed = costs.allowed
    for g, group in enumerate(costs.groups):
        per_format = {
            name: FormatCost(
                omega=float(costs.omega[g, f]),
                weight_bytes=int(costs.weight_bytes[g, f]),
                latency_ns={p: float(m[g, f]) for p, m in costs.latency.items()},
            )
            for f, name in enumerate(costs.formats)
            if allowed[g, f]
        }
        f = int(choice[g])
        out.append(
            GroupChoice(
                group=group.name,
                kind=group.kind,
                block=group.block,
                members=list(group.members),
                in_features=group.in_features,
                out_features=group.out_features,
                format=costs.formats[f],
                group_size=costs.group_sizes[g][f],
                costs=per_format,
            )
        )
    return out


def pareto_front(
    costs: CostModel,
    budgets: list[BudgetSpec],
    memory_bytes: int | None,
    points: int,
    solver: str,
    mip_rel_gap: float,
    time_limit_s: float | None = None,
    node_limit: int | None = DEFAULT_NODE_LIMIT,
) -> list[ParetoPoint]:
    """Sweep one common fraction of all-bf16 over every latency budget, fastest feasible to 1.0
    (bisect_sweep). Every point is its own fresh, verified solve (see ilp.ParametricIlp)."""
    problem, resolved = problem_for(costs, budgets, memory_bytes, scale=1.0)
    t_min = min_common_scale(problem, list(range(len(budgets))), solver, time_limit_s, node_limit)
    if t_min is None:
        return []
    fractions = [float(t) for t in np.linspace(t_min, 1.0, points)] if points > 1 else [t_min]
    fixed_limits = [c.limit for c in problem.constraints[len(resolved) :]]
    sweep = ParametricIlp(problem, solver, mip_rel_gap, time_limit_s, node_limit)

    def solve_at(i: int) -> tuple[np.ndarray | None, PointStatus]:
        sol = sweep.solve([fractions[i] * (1 + 1e-12) * b.bf16_ns for b in resolved] + fixed_limits)
        # A feasible solution stopped at optimal, time_limit or node_limit (ilp.FEASIBLE_STATUSES).
        return (sol.choice, cast(PointStatus, sol.status)) if sol.feasible else (None, "infeasible")

    front = []
    for t, (choice, status) in zip(fractions, bisect_sweep(len(fractions), solve_at)):
        if choice is None:
            front.append(ParetoPoint(fraction=t, status="infeasible"))
        else:
            front.append(
                ParetoPoint(
                    fraction=t, status=status, totals=costs.totals(choice), formats=[costs.formats[f] for f in choice]
                )
            )
    return monotone(front)


def bisect_sweep(points: int, solve_at: Callable[[int], tuple[Any, PointStatus]]) -> list[tuple[Any, PointStatus]]:
    """Answers at `points` ever looser limits, solving only where the front changes.

    The feasible set only grows with the limit, so when the solutions at two limits are the
    same answer, each proven within the gap, that answer is feasible at every limit between
    them and within the gap there too (the optimum between them lies between theirs): the
    sweep solves both ends, then bisects. `solve_at(i)` returns (answer or None, status);
    answers are compared with numpy's array_equal.
    """
    answers: dict[int, tuple[Any, PointStatus]] = {}

    def fill(lo: int, hi: int) -> None:
        if hi - lo <= 1:
            return
        (a, a_status), (b, b_status) = answers[lo], answers[hi]
        if a is not None and b is not None and np.array_equal(a, b) and a_status == b_status == "optimal":
            for i in range(lo + 1, hi):
                answers[i] = (a, "optimal")
            return
        mid = (lo + hi) // 2
        answers[mid] = solve_at(mid)
        fill(lo, mid)
        fill(mid, hi)

    if points < 1:
        return []
    answers[0] = solve_at(0)
    if points > 1:
        answers[points - 1] = solve_at(points - 1)
        fill(0, points - 1)
    return [answers[i] for i in range(points)]


def monotone(front: list[ParetoPoint]) -> list[ParetoPoint]:
    """A plan feasible at a tighter fraction is feasible at every looser one: where a looser
    point's answer (within the gap) is worse than a tighter point's, it takes the better plan.
    Quality is the groups' Omega plus, on a serving front, the KV-cache format's."""

    def omega(p: ParetoPoint) -> float:
        return p.totals.sensitivity + (p.kv_omega or 0.0)

    best: ParetoPoint | None = None
    for point in sorted(front, key=lambda p: p.fraction):
        if point.totals is None:
            continue
        if best is not None and omega(best) < omega(point):
            point.status, point.totals, point.formats, point.chosen = (
                best.status,
                best.totals,
                best.formats,
                best.chosen,
            )
            point.kv_format, point.kv_omega = best.kv_format, best.kv_omega
            point.output_tokens_per_s_per_gpu = best.output_tokens_per_s_per_gpu
            point.ttft_ms, point.tpot_ms = best.ttft_ms, best.tpot_ms
        else:
            best = point
    return front


def solve_plan(
    graph: LayerGraph,
    profile: Profile,
    sensitivity: Sensitivity,
    gpu: GpuSpec,
    request: PlanRequest,
    inputs: dict | None = None,
) -> Plan:
    if profile.backend != "cpu" and profile.gpu != gpu.name:
        raise InputError(
            f"profile was measured for {profile.gpu}, the plan targets {gpu.name}: profile {gpu.name} first"
        )
    budgets = parse_budgets(request.budgets)
    memory_bytes = parse_memory_gb(request.memory_gb)
    runtime = get_runtime(request.runtime)
    formats = candidate_formats(gpu, request.formats, runtime)
    costs = build_cost_model(graph, profile, sensitivity, formats, {b.point: b.tokens for b in budgets})
    problem, resolved = problem_for(costs, budgets, memory_bytes)
    notes = list(costs.notes) + family_advisories(runtime, graph.architecture, costs.formats)
    if not request.formats:
        notes += [
            f"{f.name} left out (name it in --formats to plan it anyway): trtq quantize cannot export it: "
            f"{f.export_refusal}"
            for f in unexported_formats(gpu, runtime)
        ]
    if profile.model != graph.model:
        notes.append(f"latencies from a profile of {profile.model} (same GEMM shapes)")
    if profile.tp > 1:
        notes.append(
            f"latencies are one GPU's GEMMs under tensor parallelism {profile.tp} (the profile's); "
            "weights are the whole model's"
        )
    for c, b in zip(problem.constraints, resolved):
        worst = math.fsum(np.nanmax(np.where(costs.allowed, costs.latency[b.point], np.nan), axis=1).tolist())
        if worst <= c.limit:
            notes.append(
                f"budget {b.spec} is met by every assignment (slowest possible: {worst / b.bf16_ns:.3g} of all-bf16)"
            )
    serving, front = None, []
    if request.workload:
        from trtq.plan.slo import solve_serving

        profile_ref = (inputs or {}).get("profile")
        sol, problem, serving, front = solve_serving(
            problem=problem,
            costs=costs,
            gpu=gpu,
            request=request,
            runtime=runtime,
            profile=profile,
            profile_path=str(getattr(profile_ref, "path", "the profile")),
            sensitivity=sensitivity,
            model=graph.model,
        )
        from trtq.plan.slo import kv_scale_note

        if kv_scale_note(sensitivity, serving):
            notes.append(kv_scale_note(sensitivity, serving))
    else:
        sol = solve(problem, request.solver, request.mip_rel_gap, request.time_limit_s, request.node_limit)
    if not sol.feasible:
        if sol.status == "infeasible":
            raise explain_infeasible(problem, resolved, costs, gpu, request)
        raise stopped_without_plan(sol, request)
    proven = (
        "a plan but no bound on its distance from the optimum"
        if sol.gap is None
        else f"a plan proven within {sol.gap:.2%} of the optimum"
    )
    if sol.status == "time_limit":
        notes.append(
            f"the solver stopped at the {request.time_limit_s:g} s time limit with {proven}: a time limit makes the "
            "plan depend on the machine's speed (leave --time-limit out for a deterministic plan)"
        )
    elif sol.status == "node_limit":
        notes.append(
            f"the solver stopped at the {request.node_limit} node limit with {proven} (--node-limit raises it)"
        )
    for i, share in sol.tightened.items():
        notes.append(
            f"{problem.constraints[i].name}: the solver's answer was over the limit by its feasibility "
            f"tolerance; re-solved with the limit tightened by {share:.2g} of it (the plan meets the "
            "raw limit, and is optimal for the tightened one)"
        )
    for i, b in enumerate(resolved):
        b.slack_ns = sol.slack[i]
    memory_slack = sol.slack[len(resolved)] if memory_bytes is not None else None
    totals = costs.totals(sol.choice)
    chosen = [costs.formats[f] for f in sol.choice]
    if request.pareto and not request.workload:  # a plan with a workload has its serving front already
        front = pareto_front(
            costs,
            budgets,
            memory_bytes,
            request.pareto,
            request.solver,
            request.pareto_mip_rel_gap,
            request.pareto_time_limit,
            request.node_limit,
        )
        for point in front:
            point.chosen = point.formats == chosen
        if front and not any(p.chosen for p in front):
            fraction = max(totals.latency_ns[b.point] / totals.bf16_latency_ns[b.point] for b in budgets)
            front.append(ParetoPoint(fraction=fraction, status=sol.status, totals=totals, formats=chosen, chosen=True))
            front.sort(key=lambda p: p.fraction)
            monotone(front)
    return Plan.create(
        metadata=make_metadata(inputs=inputs or {}, notes=[]),
        model=graph.model,
        gpu=gpu.name,
        runtime=runtime.name,
        profile_backend=profile.backend,
        launch_cost_ns=profile.launch_cost_ns,
        sensitivity_method=sensitivity.method,
        budgets=resolved,
        memory_budget_bytes=memory_bytes,
        memory_slack_bytes=memory_slack,
        candidate_formats=costs.formats,
        fixed_parameter_bytes=costs.fixed_bytes,
        solver=SolverInfo(
            name=sol.solver,
            version=sol.solver_version,
            status=sol.status,
            solve_time_s=sol.solve_time_s,
            objective=sol.objective,
            mip_rel_gap=request.mip_rel_gap,
            proven_gap=sol.gap,
            time_limit_s=request.time_limit_s,
            pareto_mip_rel_gap=request.pareto_mip_rel_gap if front else None,
            stopped_by=sol.stopped_by,
            node_limit=request.node_limit,
            nodes=sol.nodes,
            tightened={problem.constraints[i].name: share for i, share in sol.tightened.items()},
        ),
        groups=group_choices(costs, sol.choice),
        totals=totals,
        pareto=front,
        notes=notes,
        kv_format=serving.kv_format if serving else None,
        serving=serving,
        gpu_facts=gpu.facts(),
    )


def make_plan(
    model: str,
    profile_path: str | Path,
    sensitivity_path: str | Path,
    gpu_name: str,
    request: PlanRequest,
    graph: LayerGraph | None = None,
) -> Plan:
    from trtq.model.families import config_layer_graph
    from trtq.model.zoo import resolve_model

    profile = load_artifact(profile_path, Profile)
    sensitivity = load_artifact(sensitivity_path, Sensitivity)
    gpu = get_gpu(gpu_name)
    if graph is None:
        include_lm_head = bool(sensitivity.settings.get("include_lm_head", False))
        resolved = resolve_model(model)
        # Known families from config.json in pure Python; only others pay for torch + transformers.
        graph = config_layer_graph(resolved, include_lm_head=include_lm_head)
        if graph is None:
            from trtq.model.layers import build_layer_graph

            graph = build_layer_graph(resolved, include_lm_head=include_lm_head)
    inputs = {"profile": input_ref(profile_path), "sensitivity": input_ref(sensitivity_path)}
    return solve_plan(graph, profile, sensitivity, gpu, request, inputs)


def budget_at_fraction(
    graph: LayerGraph,
    profile: Profile,
    sensitivity: Sensitivity,
    gpu: GpuSpec,
    points: list[str],
    fraction: float,
    *,
    formats: str | None = None,
    runtime: str | None = None,
    solver: str = "highs",
    node_limit: int | None = DEFAULT_NODE_LIMIT,
) -> list[str]:
    """Latency budgets `POINT=VALUE` for `points` (e.g. ["decode@16", "prefill@2048"]) placed `fraction` of
    the way along this profile's front: 0 is the fastest plan the candidate formats allow at all points
    together (the Pareto front's fastest end, one common fraction of all-bf16), 1 is all-bf16.

    Fixed fractions tuned on a roofline ("decode@16=0.45") are infeasible on measured tables where no format
    halves a small GEMM; a budget chosen on the profile's own front is met on any GPU and table. Every point
    gets the same fraction of its all-bf16 time, rounded up so that the printed budget is feasible.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
        raise InputError(f"the budget fraction must be a number from 0 (fastest plan) to 1 (all-bf16), got {fraction}")
    budgets = parse_budgets([f"{p}=1" for p in points])
    formats_ = candidate_formats(gpu, formats, get_runtime(runtime))
    costs = build_cost_model(graph, profile, sensitivity, formats_, {b.point: b.tokens for b in budgets})
    problem, _ = problem_for(costs, budgets, None, scale=1.0)
    fastest = min_common_scale(problem, list(range(len(budgets))), solver, None, node_limit)
    if fastest is None:
        raise InfeasibleError(f"no plan of {', '.join(costs.formats)} is feasible at {', '.join(points)} on {gpu.name}")
    target = fastest + fraction * (1.0 - fastest)
    # All-bf16 meets a budget of exactly 1; below it, round up so that the printed budget stays feasible.
    value = "1" if target >= 1.0 else fraction_text(target)
    return [f"{b.point}={value}" for b in budgets]
