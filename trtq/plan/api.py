"""Library entry point of the plan stage: artifacts in, plan.yaml out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trtq.artifacts import input_ref, load_artifact, make_metadata
from trtq.artifacts.layers import LayerGraph
from trtq.artifacts.plan import Budget, FormatCost, GroupChoice, ParetoPoint, Plan, SolverInfo
from trtq.artifacts.profile import Profile
from trtq.artifacts.sensitivity import Sensitivity
from trtq.console import fmt_bytes, fmt_ns
from trtq.errors import InfeasibleError, InputError
from trtq.plan.budgets import BudgetSpec, parse_budgets, parse_memory_gb
from trtq.plan.costs import CostModel, build_cost_model
from trtq.plan.ilp import Constraint, IlpProblem, ParametricIlp, minimum_of, min_common_scale, solve
from trtq.registry import GpuSpec, get_gpu
from trtq.registry.runtimes import Runtime, family_advisories, get_runtime, plannable_formats

_TOL = 1e-9


@dataclass
class PlanRequest:
    budgets: list[str]
    memory_gb: float | None = None
    pareto: int = 0
    formats: str | None = None
    solver: str = "highs"
    # HiGHS stops once the plan's sum of Omega is proven within 0.1% of the optimum: the
    # sensitivity estimates are noisier than that, and proving the last 0.1% on a 70B model
    # costs 4x the time. --mip-gap 0 asks for the exact optimum.
    mip_rel_gap: float = 1e-3
    # A hard instance stops here with its best plan; the plan records the gap it proved.
    time_limit_s: float = 10.0
    # The front is for choosing, and the chosen plan is solved at mip_rel_gap: each Pareto point
    # stops at 0.5% (sum of Omega within 0.3% of the 0.1% solutions on a 70B, at 2.3x the speed).
    pareto_mip_rel_gap: float = 5e-3
    pareto_time_limit_s: float = 2.0
    # NAME@VERSION from profiles/runtimes.yaml; None = the default (the release docker/ pins).
    runtime: str | None = None


def candidate_formats(gpu: GpuSpec, spec: str | None, runtime: Runtime | None = None):
    # One gate for every format decision: what the runtime runs on this GPU (profiles/runtimes.yaml).
    return plannable_formats(gpu, runtime or get_runtime(None), spec)


def problem_for(costs: CostModel, budgets: list[BudgetSpec], memory_bytes: int | None,
                scale: float | None = None) -> tuple[IlpProblem, list[Budget]]:
    """The ILP for these budgets; `scale` replaces every latency limit by scale x all-bf16."""
    bf16 = costs.bf16_index()
    constraints, resolved = [], []
    for b in budgets:
        lat = costs.latency[b.point]
        bf16_ns = float(lat[:, bf16].sum())
        limit = scale * bf16_ns if scale is not None else b.limit_ns(bf16_ns)
        constraints.append(Constraint(b.spec, np.where(costs.allowed, lat, np.inf), limit))
        resolved.append(Budget(point=b.point, phase=b.phase, tokens=b.tokens, spec=b.spec,
                               fraction=b.fraction, limit_ns=limit, bf16_ns=bf16_ns))
    if memory_bytes is not None:
        constraints.append(Constraint("memory", np.where(costs.allowed, costs.weight_bytes, np.inf),
                                      memory_bytes - costs.fixed_bytes))
    objective = np.where(costs.allowed, costs.omega, np.inf)
    return IlpProblem(objective, constraints), resolved


def explain_infeasible(problem: IlpProblem, budgets: list[Budget], costs: CostModel, gpu: GpuSpec,
                       request: PlanRequest) -> InfeasibleError:
    reasons = []
    for i, c in enumerate(problem.constraints):
        smallest = minimum_of(problem, i, request.solver, request.time_limit_s)
        if smallest is None or smallest <= c.limit * (1 + 1e-9) + _TOL:
            continue
        if c.name == "memory":
            reasons.append(f"memory budget {fmt_bytes(c.limit + costs.fixed_bytes)} cannot be met: the smallest "
                           f"feasible weight memory is {(smallest + costs.fixed_bytes) / 1e9:.4g} GB")
        else:
            b = budgets[i]
            reasons.append(f"budget {b.spec} cannot be met on {gpu.name}: the smallest feasible is "
                           f"{smallest / b.bf16_ns:.4g} of all-bf16 ({fmt_ns(smallest)}) at {b.point}")
    if not reasons:
        reasons.append("each budget can be met alone but not all together: loosen one of "
                       + ", ".join(c.name for c in problem.constraints))
    return InfeasibleError("; ".join(reasons))


def group_choices(costs: CostModel, choice: np.ndarray) -> list[GroupChoice]:
    out = []
    for g, group in enumerate(costs.groups):
        per_format = {
            name: FormatCost(omega=float(costs.omega[g, f]), weight_bytes=int(costs.weight_bytes[g, f]),
                             latency_ns={p: float(m[g, f]) for p, m in costs.latency.items()})
            for f, name in enumerate(costs.formats) if costs.allowed[g, f]
        }
        f = int(choice[g])
        out.append(GroupChoice(group=group.name, kind=group.kind, block=group.block, members=list(group.members),
                               in_features=group.in_features, out_features=group.out_features,
                               format=costs.formats[f], group_size=costs.group_sizes[g][f], costs=per_format))
    return out


def pareto_front(costs: CostModel, budgets: list[BudgetSpec], memory_bytes: int | None, points: int,
                 solver: str, mip_rel_gap: float, time_limit_s: float | None = None) -> list[ParetoPoint]:
    """Sweep one common fraction of all-bf16 over every latency budget, fastest feasible to 1.0.

    The feasible set only grows with the fraction, so when the solutions at two fractions
    are the same assignment, it is also the solution at every fraction between them: the
    sweep bisects and solves only where the front changes.
    """
    problem, resolved = problem_for(costs, budgets, memory_bytes, scale=1.0)
    t_min = min_common_scale(problem, list(range(len(budgets))), solver, time_limit_s)
    if t_min is None:
        return []
    fractions = [float(t) for t in np.linspace(t_min, 1.0, points)] if points > 1 else [t_min]
    fixed_limits = [c.limit for c in problem.constraints[len(resolved):]]
    sweep = ParametricIlp(problem, solver, mip_rel_gap, time_limit_s)
    solutions: dict[int, np.ndarray | None] = {}
    statuses: dict[int, str] = {}

    def solve_at(i: int, start: np.ndarray | None) -> None:
        limits = [fractions[i] * (1 + 1e-12) * b.bf16_ns for b in resolved] + fixed_limits
        sol = sweep.solve(limits, start=start)
        solutions[i] = sol.choice if sol.feasible else None
        statuses[i] = sol.status if sol.feasible else "infeasible"

    def fill(lo: int, hi: int) -> None:
        if hi - lo <= 1:
            return
        a, b = solutions[lo], solutions[hi]
        if a is not None and b is not None and np.array_equal(a, b):
            for i in range(lo + 1, hi):
                solutions[i] = a
                statuses[i] = statuses[lo] if statuses[lo] == statuses[hi] else "time_limit"
            return
        mid = (lo + hi) // 2
        solve_at(mid, a)
        fill(lo, mid)
        fill(mid, hi)

    solve_at(0, None)
    if len(fractions) > 1:
        solve_at(len(fractions) - 1, solutions[0])
        fill(0, len(fractions) - 1)
    front = []
    for i, t in enumerate(fractions):
        choice = solutions[i]
        if choice is None:
            front.append(ParetoPoint(fraction=t, status="infeasible"))
        else:
            front.append(ParetoPoint(fraction=t, status=statuses[i], totals=costs.totals(choice),
                                     formats=[costs.formats[f] for f in choice]))
    return front


def solve_plan(graph: LayerGraph, profile: Profile, sensitivity: Sensitivity, gpu: GpuSpec,
               request: PlanRequest, inputs: dict | None = None) -> Plan:
    if profile.backend != "cpu" and profile.gpu != gpu.name:
        raise InputError(f"profile was measured for {profile.gpu}, the plan targets {gpu.name}: "
                         f"profile {gpu.name} first")
    budgets = parse_budgets(request.budgets)
    if not budgets:
        raise InputError("give at least one --budget, e.g. --budget decode@16=0.6")
    memory_bytes = parse_memory_gb(request.memory_gb)
    runtime = get_runtime(request.runtime)
    formats = candidate_formats(gpu, request.formats, runtime)
    costs = build_cost_model(graph, profile, sensitivity, formats, {b.point: b.tokens for b in budgets})
    problem, resolved = problem_for(costs, budgets, memory_bytes)
    notes = list(costs.notes) + family_advisories(runtime, graph.architecture, costs.formats)
    if profile.model != graph.model:
        notes.append(f"latencies from a profile of {profile.model} (same GEMM shapes)")
    for c, b in zip(problem.constraints, resolved):
        worst = float(np.nanmax(np.where(costs.allowed, costs.latency[b.point], np.nan), axis=1).sum())
        if worst <= c.limit:
            notes.append(f"budget {b.spec} is met by every assignment (slowest possible: "
                         f"{worst / b.bf16_ns:.3g} of all-bf16)")
    sol = solve(problem, request.solver, request.mip_rel_gap, request.time_limit_s)
    if not sol.feasible:
        raise explain_infeasible(problem, resolved, costs, gpu, request)
    if sol.status == "time_limit":
        notes.append(f"the solver stopped at the {request.time_limit_s:g} s time limit with a plan proven within "
                     f"{sol.gap:.2%} of the optimum (--time-limit raises it)")
    totals = costs.totals(sol.choice)
    front = pareto_front(costs, budgets, memory_bytes, request.pareto, request.solver, request.pareto_mip_rel_gap,
                         request.pareto_time_limit_s) if request.pareto else []
    chosen = [costs.formats[f] for f in sol.choice]
    marked = False
    for point in front:
        if point.formats == chosen:
            point.chosen = marked = True
    if front and not marked:
        fraction = max(totals.latency_ns[b.point] / totals.bf16_latency_ns[b.point] for b in budgets)
        front.append(ParetoPoint(fraction=fraction, status="optimal", totals=totals, formats=chosen, chosen=True))
        front.sort(key=lambda p: p.fraction)
    return Plan(
        artifact=Plan.KIND,
        schema_version=Plan.SCHEMA_VERSION,
        metadata=make_metadata(inputs=inputs or {}, notes=[]),
        model=graph.model,
        gpu=gpu.name,
        runtime=runtime.name,
        profile_backend=profile.backend,
        launch_cost_ns=profile.launch_cost_ns,
        sensitivity_method=sensitivity.method,
        budgets=resolved,
        memory_budget_bytes=memory_bytes,
        candidate_formats=costs.formats,
        fixed_parameter_bytes=costs.fixed_bytes,
        solver=SolverInfo(name=sol.solver, version=sol.solver_version, status=sol.status,
                          solve_time_s=sol.solve_time_s, objective=sol.objective, mip_rel_gap=request.mip_rel_gap,
                          proven_gap=sol.gap, time_limit_s=request.time_limit_s,
                          pareto_mip_rel_gap=request.pareto_mip_rel_gap if front else None),
        groups=group_choices(costs, sol.choice),
        totals=totals,
        pareto=front,
        notes=notes,
    )


def make_plan(model: str, profile_path: str | Path, sensitivity_path: str | Path, gpu_name: str,
              request: PlanRequest, graph: LayerGraph | None = None) -> Plan:
    from trtq.model.layers import build_layer_graph
    from trtq.model.zoo import resolve_model

    profile = load_artifact(profile_path, Profile)
    sensitivity = load_artifact(sensitivity_path, Sensitivity)
    gpu = get_gpu(gpu_name)
    if graph is None:
        include_lm_head = bool(sensitivity.settings.get("include_lm_head", False))
        graph = build_layer_graph(resolve_model(model), include_lm_head=include_lm_head)
    inputs = {"profile": input_ref(profile_path), "sensitivity": input_ref(sensitivity_path)}
    return solve_plan(graph, profile, sensitivity, gpu, request, inputs)
