"""Which GPU serves this workload best: per GPU, the fastest plan meeting the SLOs (and a quality bound),
its throughput, cost per million output tokens, and the throughput-per-quality front.

At the workload's concurrency the life of the in-flight requests is linear in the per-group costs
(trtq/plan/slo.py: `SloRows.life_coeffs`), and output tokens/s per GPU = output tokens / life / TP.
So on each GPU, for each candidate KV-cache format:

  * fastest plan: minimise the life subject to the SLO rows, the workload's memory row and, when
    given, sum of Omega (groups + KV) <= quality bound — one ILP;
  * front: for N life limits from the fastest plan's to the least-Omega plan's, minimise sum of Omega
    subject to life <= limit and the same rows — N ILPs; the KV format of each point is the one with
    the least total Omega.

Cost per million output tokens = price per GPU-hour x TP / (tokens/s per replica x 3600) x 1e6.
The GPU-hour prices are the user's (`--price H100=2.5`): trtq ships none.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trtq.errors import InfeasibleError, InputError, TrtqError
from trtq.plan.compare_commands import DEFAULT_FRONT_POINTS  # declared with the option, light to import
from trtq.plan.ilp import Constraint, IlpProblem, solve


def _price(raw: str) -> float:
    try:
        price = float(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a number") from None
    if not math.isfinite(price) or price <= 0:
        raise ValueError("the price must be a positive finite number")
    return price


def parse_prices(values: list[str] | None) -> dict[str, float]:
    """["H100=2.5", "B200=6"] -> {canonical GPU name: USD per GPU-hour}."""
    from trtq.options import gpu_keyed

    return gpu_keyed(values, "--price", "GPU=USD_PER_GPU_HOUR, e.g. H100=2.5", _price)


@dataclass
class FrontPoint:
    omega: float  # groups + KV format
    tokens_per_s_per_gpu: float
    ttft_ms: float
    tpot_ms: float
    kv_format: str
    formats: dict[str, int]  # format -> groups


@dataclass
class GpuResult:
    gpu: str
    tp: int
    price_per_gpu_hour: float | None = None
    fastest: FrontPoint | None = None
    max_concurrency: int | None = None
    usd_per_million_tokens: float | None = None
    front: list[FrontPoint] = field(default_factory=list)
    error: str | None = None  # why no plan on this GPU (an SLO, memory, a missing table)
    gemm_source: str | None = None

    def as_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def _counts(formats: list[str]) -> dict[str, int]:
    return dict(sorted(Counter(formats).items()))


def _point(rows, costs, choice, tp: int) -> FrontPoint:
    omega = float(costs.omega[np.arange(len(choice)), choice].sum()) + rows.kv_omega
    return FrontPoint(
        omega=omega,
        tokens_per_s_per_gpu=rows.tokens_per_s(choice) / tp,
        ttft_ms=rows.ttft_ms(choice),
        tpot_ms=rows.tpot_ms(choice),
        kv_format=rows.kv_format,
        formats=_counts([costs.formats[f] for f in choice]),
    )


def compare_gpu(
    *,
    model: str,
    gpu_name: str,
    profile_path: str,
    sensitivity_path: str,
    workload: str,
    slos: list[str] | None,
    kv_formats: str | None = None,
    tp: int | None = None,
    formats: str | None = None,
    quality_bound: float | None = None,
    front_points: int = DEFAULT_FRONT_POINTS,
    price: float | None = None,
    runtime: str | None = None,
    solver: str | None = None,
    mip_rel_gap: float | None = None,
) -> GpuResult:
    from trtq.artifacts import load_artifact
    from trtq.artifacts.profile import Profile
    from trtq.artifacts.sensitivity import Sensitivity
    from trtq.model.families import config_layer_graph
    from trtq.model.zoo import resolve_model
    from trtq.plan.api import PlanRequest, candidate_formats
    from trtq.plan.costs import build_cost_model
    from trtq.plan.slo import (
        build_slo_rows,
        explain_serving_infeasible,
        kv_candidates,
        parse_slos,
        serving_front,
        solve_per_kv,
        step_inputs,
    )
    from trtq.predict.api import ProfileGemms
    from trtq.predict.step import parse_workload
    from trtq.registry import get_gpu
    from trtq.registry.runtimes import get_runtime

    gpu = get_gpu(gpu_name)
    # The plan stage's settings and their defaults (trtq/plan/request.py); None = its default.
    given: dict[str, Any] = dict(
        formats=formats,
        solver=solver,
        mip_rel_gap=mip_rel_gap,
        runtime=runtime,
        workload=workload,
        slos=slos,
        kv_formats=kv_formats,
        tp=tp,
    )
    request = PlanRequest(budgets=[], **{name: value for name, value in given.items() if value is not None})
    tp, solver, mip_rel_gap = request.tp, request.solver, request.mip_rel_gap
    result = GpuResult(gpu=gpu.name, tp=tp, price_per_gpu_hour=price)
    profile = load_artifact(profile_path, Profile)
    if profile.backend != "cpu" and profile.gpu != gpu.name:
        raise InputError(f"profile {profile_path} was measured for {profile.gpu}, not {gpu.name}")
    sensitivity = load_artifact(sensitivity_path, Sensitivity)
    resolved = resolve_model(model)
    graph = config_layer_graph(resolved, include_lm_head=bool(sensitivity.settings.get("include_lm_head", False)))
    if graph is None:
        from trtq.model.layers import build_layer_graph

        graph = build_layer_graph(resolved)
    rt = get_runtime(runtime)
    costs = build_cost_model(graph, profile, sensitivity, candidate_formats(gpu, formats, rt), {})
    objective = np.where(costs.allowed, costs.omega, np.inf)
    base = IlpProblem(objective, [])
    allowed = base.allowed
    w, spec = parse_workload(workload), parse_slos(slos)
    arch, kernels = step_inputs(graph.model, gpu, tp)
    gemms = ProfileGemms(profile, profile_path, request.tp)
    options = kv_candidates(
        spec=kv_formats, sensitivity=sensitivity, gpu=gpu, runtime=rt, layer_formats=set(costs.formats)
    )
    try:
        rows_by_kv = [
            build_slo_rows(
                model=graph.model,
                group_names=[g.name for g in costs.groups],
                formats=costs.formats,
                allowed=allowed,
                gpu=gpu,
                workload=w,
                tp=tp,
                kv_format=kv,
                kv_omega=omega,
                slos=spec,
                gemms=gemms,
                kernels=kernels,
                arch=arch,
            )
            for kv, omega in options
        ]
    except TrtqError as exc:
        result.error = str(exc)
        return result
    result.gemm_source = rows_by_kv[0].operating_point["gemm_source"] if rows_by_kv else None
    # The least-Omega plan (the loosest end of the front); also the feasibility check with its message.
    per_kv, results, feasible = solve_per_kv(base, rows_by_kv, request)
    if not feasible:
        result.error = str(explain_serving_infeasible(per_kv, w, gpu, request))
        return result

    def quality_rows(rows) -> list[Constraint]:
        if quality_bound is None:
            return []
        return [Constraint("quality", np.where(allowed, costs.omega, np.inf), quality_bound - rows.kv_omega)]

    fastest = None
    for rows in rows_by_kv:
        if quality_bound is not None and quality_bound - rows.kv_omega < 0:
            continue
        problem = IlpProblem(np.where(allowed, rows.life_coeffs, np.inf), rows.constraints() + quality_rows(rows))
        sol = solve(problem, solver, mip_rel_gap)
        if sol.feasible and (fastest is None or rows.life_ns(sol.choice) < fastest[0]):
            fastest = (rows.life_ns(sol.choice), rows, sol.choice)
    if fastest is None:
        result.error = (
            f"no plan on {gpu.name} meets the SLOs with sum of Omega <= {quality_bound:g} (raise --quality-bound)"
        )
        return result
    _, rows, choice = fastest
    result.fastest = _point(rows, costs, choice, tp)
    from trtq.predict.step import StepModel

    chosen = {g.name: costs.formats[f] for g, f in zip(costs.groups, choice)}
    step = StepModel(arch, {g.name: chosen[g.name] for g in arch.groups}, rows.kv_format, tp, kernels, gpu, gemms=gemms)
    result.max_concurrency = step.max_concurrency(w)
    if price is not None:
        result.usd_per_million_tokens = price / (result.fastest.tokens_per_s_per_gpu * 3600) * 1e6
    # The front: life limits from the fastest plan's to the least-Omega plan's (slo.serving_front).
    _, best = min(feasible)
    kv_omega = {rows.kv_format: rows.kv_omega for rows in rows_by_kv}
    front = serving_front(
        per_kv=per_kv,
        results=results,
        costs=costs,
        chosen=(per_kv[best][0], results[best].choice),
        request=request,
        points=front_points,
        fastest_ns=fastest[0],
    )
    for p in front:
        if p.totals is None:
            continue
        point = FrontPoint(
            omega=p.totals.sensitivity + kv_omega[p.kv_format],
            tokens_per_s_per_gpu=p.output_tokens_per_s_per_gpu,
            ttft_ms=p.ttft_ms,
            tpot_ms=p.tpot_ms,
            kv_format=p.kv_format,
            formats=_counts(p.formats),
        )
        if (
            not result.front
            or point.omega < result.front[-1].omega - 1e-15
            or point.tokens_per_s_per_gpu > result.front[-1].tokens_per_s_per_gpu
        ):
            result.front.append(point)
    kernels.save()
    return result


def compare(
    *,
    model: str,
    gpus: list[str],
    profiles: dict[str, str],
    sensitivity: str,
    workload: str,
    slos: list[str] | None,
    prices: dict[str, float] | None = None,
    **options,
) -> dict:
    """Per GPU, the fastest plan meeting the SLOs (see module docstring); a plain dict (the JSON)."""
    from trtq.plan.slo import parse_slos
    from trtq.predict.step import parse_workload
    from trtq.registry import get_gpu

    if not gpus:
        raise InputError("give at least one --gpu")
    results = []
    for name in gpus:
        canonical = get_gpu(name).name
        path = profiles.get(canonical)
        if path is None:
            raise InputError(f"no --profile for {canonical}: give --profile {canonical}=FILE")
        results.append(
            compare_gpu(
                model=model,
                gpu_name=canonical,
                profile_path=path,
                sensitivity_path=sensitivity,
                workload=workload,
                slos=slos,
                price=(prices or {}).get(canonical),
                **options,
            )
        )
    w, spec = parse_workload(workload), parse_slos(slos)
    served = [r for r in results if r.fastest is not None]
    verdict = None
    if served and all(r.usd_per_million_tokens is not None for r in served):
        winner = min(served, key=lambda r: r.usd_per_million_tokens)
        verdict = (
            f"{winner.gpu}: cheapest per output token meeting the SLOs "
            f"(${winner.usd_per_million_tokens:.3g} per million output tokens)"
        )
    elif served:
        winner = max(served, key=lambda r: r.fastest.tokens_per_s_per_gpu)
        verdict = (
            f"{winner.gpu}: most output tokens/s per GPU meeting the SLOs "
            f"({winner.fastest.tokens_per_s_per_gpu:.0f}; give --price for each GPU to compare cost)"
        )
    return {
        "model": model,
        "workload": {"isl": w.isl, "osl": w.osl, "concurrency": w.concurrency or 1},
        "slos": spec.as_dict(),
        "quality_bound": options.get("quality_bound"),
        "gpus": [r.as_dict() for r in results],
        "verdict": verdict,
    }


def raise_if_none_served(result: dict) -> None:
    if not any(g["fastest"] for g in result["gpus"]):
        raise InfeasibleError(
            "no GPU serves the workload within the SLOs: "
            + "; ".join(f"{g['gpu']}: {g['error']}" for g in result["gpus"])
        )
