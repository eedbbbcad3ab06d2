"""Service-level objectives as ILP rows: TTFT and TPOT at a workload, and the KV cache that must fit.

At a fixed workload (isl, osl, concurrency) the scheduling model of `trtq predict`
(trtq/predict/step.py) fixes the operating point: requests in flight, context tokens per
step, and so the GEMM M of a mixed step and of a decode-only step. Each step's time is then
the sum over GEMM groups of that group's cost at its format (GEMM + format transition, the
step model's `group_cost`) plus a part no group's format changes (attention at the KV
format, norms, embedding, lm_head, all-reduce). Hence, with c_mix[g,f] and c_dec[g,f] the
group costs at the two M values,

    TTFT = ttft_factor * (mix_fixed + sum_g c_mix[g, f_g])
    TPOT = a * (mix_fixed + sum_g c_mix[g, f_g]) + b * (dec_fixed + sum_g c_dec[g, f_g])

(a, b the shares of mixed and decode-only steps in the TPOT average): two linear rows over
the same one-format-per-group variables the ILP already has. The fixed parts depend on the
KV-cache format only (attention reads the KV cache at its format), so the KV format is
decided by solving one ILP per candidate KV format and keeping the one with the least
total Omega (group Omegas + the KV format's Omega): exact, as the joint optimum is the best
of the per-KV-format optima, and at most three solves.

Memory at the workload (`StepModel.fits`): weights at the groups' formats + bf16 embedding,
lm_head and norms + activation workspace + NCCL + CUDA context, and the KV cache of
`concurrency` sequences of isl + osl tokens at the KV format within TensorRT-LLM's free
fraction (0.9, less its reserve and tolerance). Linear in the groups' weight bytes:

    sum_g w[g, f_g] <= capacity - non_group_bytes - concurrency * (isl + osl) * kv_bytes_per_token / F

GEMM latencies come from the plan's profile (the same rows its budgets use, interpolated in
tokens as `trtq predict --profile` does); attention, norms and communication from
aiconfigurator's tables for the GPU. `trtq predict PLAN --profile SAME_PROFILE` reproduces
the plan's predicted TTFT/TPOT (tested). The solver sees only these matrices: no torch here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from trtq.errors import InputError
from trtq.plan.ilp import Constraint, IlpProblem

# `--slo ttft=500ms` or `--slo ttft=0.5s,tpot=30ms`; a bare number is milliseconds.
_SLO = re.compile(r"^\s*(ttft|tpot)\s*=\s*([0-9.eE+-]+)\s*(us|\u00b5s|\u03bcs|ms|s)?\s*$", re.IGNORECASE)
_UNIT_MS = {"us": 1e-3, "\u00b5s": 1e-3, "\u03bcs": 1e-3, "ms": 1.0, "s": 1e3}
SLO_NAMES = ("ttft", "tpot")
MS_TO_NS = 1e6


@dataclass(frozen=True)
class SloSpec:
    ttft_ms: float | None = None
    tpot_ms: float | None = None

    @property
    def given(self) -> bool:
        return self.ttft_ms is not None or self.tpot_ms is not None

    def as_dict(self) -> dict[str, float]:
        return {k: v for k, v in (("ttft_ms", self.ttft_ms), ("tpot_ms", self.tpot_ms)) if v is not None}


def parse_slos(values: list[str] | None) -> SloSpec:
    """`["ttft=500ms", "tpot=30ms"]` or `["ttft=500ms,tpot=30ms"]` -> SloSpec (milliseconds)."""
    found: dict[str, float] = {}
    for value in values or []:
        for part in (p for p in value.split(",") if p.strip()):
            match = _SLO.match(part)
            if not match:
                raise InputError(
                    f"bad --slo {part.strip()!r}: expected ttft=TIME or tpot=TIME with TIME like "
                    "500ms, 0.5s or 800us (a bare number is ms)"
                )
            name, number, unit = match.groups()
            name = name.lower()
            try:
                ms = float(number) * _UNIT_MS[(unit or "ms").lower()]
            except ValueError:
                raise InputError(f"bad --slo {part.strip()!r}: {number!r} is not a number") from None
            if not math.isfinite(ms) or ms <= 0:
                raise InputError(f"bad --slo {part.strip()!r}: the time must be a positive finite number")
            if name in found:
                raise InputError(f"--slo {name} given twice")
            found[name] = ms
    return SloSpec(found.get("ttft"), found.get("tpot"))


def slo_text(name: str, ms: float) -> str:
    """An SLO value as `--slo` reads it back, rounded up (so pasting it is feasible)."""
    from trtq.plan.budgets import round_up

    return f"{name}={round_up(ms):.4g}ms"


@dataclass
class SloRows:
    """The SLO and workload-memory rows of one KV-cache format, in the ILP's (group, format) layout."""

    kv_format: str
    kv_omega: float
    ttft: Constraint | None  # ns
    tpot: Constraint | None  # ns
    memory: Constraint  # bytes
    # TTFT/TPOT = const + sum of coeffs (ns); used to print predictions of any choice
    ttft_coeffs: np.ndarray
    ttft_const_ns: float
    tpot_coeffs: np.ndarray
    tpot_const_ns: float
    weight_coeffs: np.ndarray
    memory_limit_bytes: float
    operating_point: dict = field(default_factory=dict)
    # The life of the `concurrency` requests (all their steps), ns = const + sum of coeffs: output
    # tokens/s per replica = output_tokens x 1e9 / life (linear, so "fastest plan" is an ILP objective).
    life_coeffs: np.ndarray | None = None
    life_const_ns: float = 0.0
    output_tokens: float = 0.0

    def constraints(self) -> list[Constraint]:
        return [c for c in (self.ttft, self.tpot, self.memory) if c is not None]

    def ttft_ms(self, choice: np.ndarray) -> float:
        return (self.ttft_const_ns + math.fsum(self.ttft_coeffs[np.arange(len(choice)), choice].tolist())) / MS_TO_NS

    def tpot_ms(self, choice: np.ndarray) -> float:
        return (self.tpot_const_ns + math.fsum(self.tpot_coeffs[np.arange(len(choice)), choice].tolist())) / MS_TO_NS

    def life_ns(self, choice: np.ndarray) -> float:
        return self.life_const_ns + math.fsum(self.life_coeffs[np.arange(len(choice)), choice].tolist())

    def tokens_per_s(self, choice: np.ndarray) -> float:
        """Output tokens/s of one TP replica (the step model's output_tokens_per_s)."""
        return 1e9 / self.life_ns(choice) * self.output_tokens

    def memory_slack_bytes(self, choice: np.ndarray) -> float:
        return self.memory_limit_bytes - math.fsum(self.weight_coeffs[np.arange(len(choice)), choice].tolist())


def step_inputs(model: str, gpu, tp: int, arch=None, kernels=None):
    """(architecture, kernel tables) of the step model: the model's blocks, aiconfigurator's tables."""
    from trtq.predict.kernels import AicKernels

    if arch is None:
        from trtq.model.zoo import resolve_model
        from trtq.predict.architecture import decoder_architecture

        resolved = resolve_model(model)
        arch = decoder_architecture(resolved.name, resolved.config)
    return arch, kernels or AicKernels(gpu.name, scope=f"{arch.name}-tp{tp}")


def build_slo_rows(
    *,
    model: str,
    group_names: list[str],
    formats: list[str],
    allowed: np.ndarray,
    gpu,
    workload,
    tp: int,
    kv_format: str,
    kv_omega: float,
    slos: SloSpec,
    gemms=None,
    kernels=None,
    arch=None,
) -> SloRows:
    """The rows for one KV format. `gemms`: a predict GemmSource (the plan's profile; None: the tables)."""
    from trtq.predict.step import (
        KV_CACHE_FREE_GPU_MEM_FRACTION,
        KV_CACHE_RESERVED_FRACTION,
        KV_CACHE_TOLERANCE,
        StepModel,
    )
    from trtq.registry.formats import FORMATS

    arch, kernels = step_inputs(model, gpu, tp, arch, kernels)
    step = StepModel(arch, {g.name: "bf16" for g in arch.groups}, kv_format, tp, kernels, gpu, gemms=gemms)
    concurrency = workload.concurrency or 1
    point = step.at_concurrency(concurrency, workload)
    arch_groups = {g.name: g for g in arch.groups}
    G, F = allowed.shape
    c_mix, c_dec, weights = (np.full((G, F), np.inf) for _ in range(3))
    cache: dict[tuple[str, str, int], float] = {}

    def cost(group, fmt: str, tokens: int) -> float:
        if tokens <= 0:
            return 0.0
        key = (group.kind, fmt, tokens)
        if key not in cache:
            gemm, trans = step.group_cost(group, fmt, tokens)
            cache[key] = gemm.ms + trans.ms
        return cache[key]

    bf16_mix = bf16_dec = 0.0
    bf16_weights = 0
    for g, name in enumerate(group_names):
        group = arch_groups.get(name)
        for f, fmt in enumerate(formats):
            if not allowed[g, f]:
                continue
            if group is None:
                # A planned group the step model does not run at its format (e.g. lm_head): no SLO effect.
                c_mix[g, f] = c_dec[g, f] = weights[g, f] = 0.0
                continue
            c_mix[g, f] = cost(group, fmt, point.mix_tokens)
            c_dec[g, f] = cost(group, fmt, point.decode_tokens)
            weights[g, f] = FORMATS[fmt].weight_bytes(*group.sharded(tp))
        if group is not None:
            bf16_mix += cost(group, "bf16", point.mix_tokens)
            bf16_dec += cost(group, "bf16", point.decode_tokens)
            bf16_weights += FORMATS["bf16"].weight_bytes(*group.sharded(tp))
    missing = [g.name for g in arch.groups if g.name not in set(group_names)]
    if missing:
        raise InputError(f"the layer graph has no group {missing[0]} that the step model of {arch.name} runs")
    mix_fixed = point.mix_step_ms - bf16_mix
    dec_fixed = (point.decode_step_ms - bf16_dec) if point.decode_tokens else 0.0
    steps = point.mix_steps_for_tpot + point.decode_steps
    a = point.mix_steps_for_tpot / steps if steps > 0 else 0.0
    b = point.decode_steps / steps if steps > 0 else 0.0
    ttft_coeffs = point.ttft_factor * c_mix * MS_TO_NS
    ttft_const = point.ttft_factor * mix_fixed * MS_TO_NS
    tpot_coeffs = (a * c_mix + b * c_dec) * MS_TO_NS
    tpot_const = (a * mix_fixed + b * dec_fixed) * MS_TO_NS
    free_fraction = KV_CACHE_FREE_GPU_MEM_FRACTION * (1 - KV_CACHE_RESERVED_FRACTION) * (1 - KV_CACHE_TOLERANCE)
    kv_bytes = concurrency * (workload.isl + workload.osl) * step.kv_bytes_per_token()
    non_group = step.non_kv_bytes() - bf16_weights
    memory_limit = step.capacity_bytes - non_group - kv_bytes / free_fraction
    # A limit below zero is infeasible for every assignment; the ILP rows need a finite limit.
    ttft = (
        Constraint("slo ttft", ttft_coeffs, slos.ttft_ms * MS_TO_NS - ttft_const) if slos.ttft_ms is not None else None
    )
    tpot = (
        Constraint("slo tpot", tpot_coeffs, slos.tpot_ms * MS_TO_NS - tpot_const) if slos.tpot_ms is not None else None
    )
    memory = Constraint("workload memory", weights, memory_limit)
    op = {
        "in_flight": concurrency,
        "ctx_tokens_per_step": point.ctx_tokens,
        "mix_step_tokens": point.mix_tokens,
        "decode_step_tokens": point.decode_tokens,
        "ttft_factor": point.ttft_factor,
        "tpot_mix_share": a,
        "tpot_decode_share": b,
        "mix_step_fixed_ms": mix_fixed,
        "decode_step_fixed_ms": dec_fixed,
        "kv_bytes_per_token": step.kv_bytes_per_token(),
        "kv_cache_bytes": kv_bytes,
        "capacity_bytes": step.capacity_bytes,
        "non_group_bytes": non_group,
        "gemm_source": step.gemms.describe(),
    }
    kernels.save()
    life_coeffs = (point.mix_steps * c_mix + point.decode_steps * c_dec) * MS_TO_NS
    life_const = (point.mix_steps * mix_fixed + point.decode_steps * dec_fixed) * MS_TO_NS
    return SloRows(
        kv_format,
        kv_omega,
        ttft,
        tpot,
        memory,
        ttft_coeffs,
        ttft_const,
        tpot_coeffs,
        tpot_const,
        weights,
        memory_limit,
        op,
        life_coeffs=life_coeffs,
        life_const_ns=life_const,
        output_tokens=float(point.batch * (workload.osl - 1)),
    )


def kv_candidates(*, spec: str | None, sensitivity, gpu, runtime, layer_formats: set[str]) -> list[tuple[str, float]]:
    """(KV format, its Omega) to decide among: bf16 (Omega 0) and every format the sensitivity table
    measured that the runtime runs on this GPU; or the formats named in `--kv-formats`."""
    from trtq.predict.kernels import KV_BYTES
    from trtq.registry.runtimes import kv_cache_refusal

    measured = dict(sensitivity.kv_cache)
    measured.setdefault("bf16", 0.0)
    if spec:
        names = [n.strip().lower() for n in spec.split(",") if n.strip()]
        if not names:
            raise InputError(f"--kv-formats {spec!r}: name at least one KV-cache format (bf16, fp8)")
    else:
        names = sorted(measured, key=lambda n: (n != "bf16", n))
    out = []
    for name in names:
        if name not in KV_BYTES:
            raise InputError(f"unknown KV-cache format {name!r} in --kv-formats; known: {', '.join(KV_BYTES)}")
        if name != "bf16":
            refusal = kv_cache_refusal(gpu, name, runtime, layer_formats)
            if refusal is not None:
                if spec:
                    raise InputError(
                        f"{name} KV cache is not supported on {gpu.name} (sm{gpu.sm}) by {runtime.name}: {refusal}"
                    )
                continue
        if name not in measured:
            raise InputError(
                f"the sensitivity table has no KV-cache Omega for {name}: run `trtq sensitivity ... "
                f"--kv-formats {name}` (or leave {name} out of --kv-formats)"
            )
        out.append((name, float(measured[name])))
    return out


def _slo_label(name: str) -> str:
    return name.removeprefix("slo ")


def explain_serving_infeasible(per_kv: list[tuple[SloRows, IlpProblem]], workload, gpu, request):
    """No KV format gives a plan: name each SLO (or the workload's memory) that binds, with the
    smallest value it could take with every other row held, over the KV formats."""
    from trtq.errors import InfeasibleError, SolverStoppedError
    from trtq.plan.ilp import minimum_of

    smallest: dict[str, tuple[float, str]] = {}
    limits: dict[str, float] = {}
    unknown = False
    for rows, problem in per_kv:
        base = problem.constraints[: len(problem.constraints) - len(rows.constraints())]
        for c in rows.constraints():
            # Each SLO alone with the budgets and the workload's memory (memory alone with the budgets):
            # the smallest value it can take, whatever the other SLO asks.
            held = base + ([rows.memory] if c is not rows.memory else [])
            alone = IlpProblem(problem.objective, held + [c])
            least = minimum_of(alone, len(held), request.solver, request.time_limit_s, request.node_limit)
            if least.limit_hit_without_plan:
                unknown = True
                continue
            if least.objective is None:
                continue
            value = least.objective
            if c.name == "workload memory":
                value = -value  # the most memory left: larger is better
            if c.name not in smallest or value < smallest[c.name][0]:
                smallest[c.name] = (value, rows.kv_format)
                limits[c.name] = c.limit
    w = f"isl={workload.isl},osl={workload.osl},concurrency={workload.concurrency or 1}"
    reasons = []
    consts = {rows.kv_format: rows for rows, _ in per_kv}
    for name, (value, kv) in smallest.items():
        rows = consts[kv]
        if name == "workload memory":
            need = -value
            if need <= rows.memory_limit_bytes * (1 + 1e-12):
                continue
            min_weights = float(np.where(np.isfinite(rows.weight_coeffs), rows.weight_coeffs, np.inf).min(axis=1).sum())
            per_seq = (workload.isl + workload.osl) * rows.operating_point["kv_bytes_per_token"]
            from trtq.predict.step import KV_CACHE_FREE_GPU_MEM_FRACTION, KV_CACHE_RESERVED_FRACTION, KV_CACHE_TOLERANCE

            frac = KV_CACHE_FREE_GPU_MEM_FRACTION * (1 - KV_CACHE_RESERVED_FRACTION) * (1 - KV_CACHE_TOLERANCE)
            free = rows.operating_point["capacity_bytes"] - rows.operating_point["non_group_bytes"] - min_weights
            fits = max(0, int(free * frac // per_seq))
            reasons.append(
                f"the workload {w} does not fit in {gpu.name}'s memory with any plan: with the smallest "
                f"weights ({min_weights / 1e9:.3g} GB) and a {kv} KV cache at most {fits} sequences of "
                f"{workload.isl + workload.osl} tokens fit (--workload ...,concurrency={fits})"
            )
            continue
        slo_ms = getattr(request_slos(request), f"{_slo_label(name)}_ms")
        const = rows.ttft_const_ns if name == "slo ttft" else rows.tpot_const_ns
        best_ms = (const + value) / MS_TO_NS
        if best_ms <= slo_ms * (1 + 1e-9):
            continue
        reasons.append(
            f"SLO {_slo_label(name)}={slo_ms:g}ms cannot be met on {gpu.name} at {w}: the smallest "
            f"feasible {_slo_label(name).upper()} is {best_ms:.4g} ms (KV cache {kv}; "
            f"--slo {slo_text(_slo_label(name), best_ms)})"
        )
    if not reasons and unknown:
        return SolverStoppedError(
            "no plan meets the SLOs, and the solver reached its limit before it could tell which one binds"
        )
    if not reasons:
        names = sorted({c.name for rows, _ in per_kv for c in rows.constraints()})
        reasons.append(
            "each SLO can be met alone but not all together (with the budgets and the workload's "
            "memory): loosen one of " + ", ".join(names)
        )
    return InfeasibleError("; ".join(reasons))


def request_slos(request) -> SloSpec:
    return parse_slos(request.slos)


def solve_serving(
    *, problem, costs, gpu, request, runtime, profile, profile_path: str, sensitivity, model: str, kernels=None
):
    """Solve the plan's ILP once per KV-cache candidate with that KV format's SLO and memory rows
    added; keep the least total Omega. Returns (solution, the problem solved, Serving record, the
    throughput front of `request.pareto` points: serving_front)."""
    from trtq.plan.api import stopped_without_plan
    from trtq.plan.ilp import solve
    from trtq.predict.api import ProfileGemms
    from trtq.predict.step import parse_workload

    workload = parse_workload(request.workload)
    slos = parse_slos(request.slos)
    gemms = ProfileGemms(profile, profile_path, request.tp)
    layer_formats = set(costs.formats)
    options = kv_candidates(
        spec=request.kv_formats, sensitivity=sensitivity, gpu=gpu, runtime=runtime, layer_formats=layer_formats
    )
    allowed = problem.allowed
    names = [g.name for g in costs.groups]
    arch, kernels = step_inputs(model, gpu, request.tp, None, kernels)
    rows_by_kv = [
        build_slo_rows(
            model=model,
            group_names=names,
            formats=costs.formats,
            allowed=allowed,
            gpu=gpu,
            workload=workload,
            tp=request.tp,
            kv_format=kv,
            kv_omega=kv_omega,
            slos=slos,
            gemms=gemms,
            kernels=kernels,
            arch=arch,
        )
        for kv, kv_omega in options
    ]
    per_kv, results, feasible = solve_per_kv(problem, rows_by_kv, request)
    if not feasible:
        stopped = [sol for sol in results if sol.status != "infeasible"]
        if stopped:
            raise stopped_without_plan(stopped[0], request)
        base = solve(problem, request.solver, request.mip_rel_gap, request.time_limit_s, request.node_limit)
        if not base.feasible:
            return base, problem, None, []  # the budgets alone are infeasible: the caller explains them
        raise explain_serving_infeasible(per_kv, workload, gpu, request)
    _, best = min(feasible)
    rows, kv_problem = per_kv[best]
    sol = results[best]
    serving = serving_record(
        rows=rows,
        choice=sol.choice,
        group_names=names,
        formats=costs.formats,
        model=model,
        gpu=gpu,
        workload=workload,
        slos=slos,
        tp=request.tp,
        gemms=gemms,
        kernels=kernels,
        arch=arch,
        candidates={per_kv[i][0].kv_format: total for total, i in feasible},
    )
    front = (
        serving_front(
            per_kv=per_kv,
            results=results,
            costs=costs,
            chosen=(rows, sol.choice),
            request=request,
            points=request.pareto,
        )
        if request.pareto
        else []
    )
    return sol, kv_problem, serving, front


def serving_front(*, per_kv, results, costs, chosen, request, points: int, fastest_ns: float | None = None) -> list:
    """Throughput against quality at the workload and SLOs: `points` limits on the request time (the
    life of `concurrency` requests, so output tokens/s = tokens / life), evenly from the fastest plan
    meeting the SLOs (or `fastest_ns`) to `chosen` = (rows, choice), the least total Omega plan (no slower plan is better),
    each point the least total Omega (groups + KV format) within its limit, over every KV format.

    Request time is linear in the choice (SloRows.life_*), so each point is the KV formats' ILPs with
    one more row; points are solved where the front changes only (api.bisect_sweep). `fraction` is
    the limit over the all-bf16 plan's request time (bf16 layers, the least-sensitive KV format).
    """
    from trtq.artifacts.plan import ParetoPoint, PointStatus
    from trtq.plan.api import bisect_sweep, monotone
    from trtq.plan.ilp import Constraint, IlpProblem, ParametricIlp, minimum_of

    usable = [(rows, kv_problem) for (rows, kv_problem), sol in zip(per_kv, results) if sol.feasible]
    chosen_rows, chosen_choice = chosen
    bf16_rows = min((rows for rows, _ in per_kv), key=lambda rows: rows.kv_omega)
    all_bf16 = np.full(len(costs.groups), costs.bf16_index())
    base_ns = bf16_rows.life_ns(all_bf16)
    sweeps, fastest = [], [] if fastest_ns is None else [fastest_ns]
    for rows, kv_problem in usable:
        life = Constraint("request time", np.where(kv_problem.allowed, rows.life_coeffs, np.inf), 0.0)
        with_life = IlpProblem(kv_problem.objective, kv_problem.constraints + [life])
        if fastest_ns is None:
            least = minimum_of(
                with_life, len(with_life.constraints) - 1, request.solver, request.pareto_time_limit, request.node_limit
            )
            if least.feasible:
                fastest.append(rows.life_const_ns + least.objective)
        sweeps.append(
            (
                rows,
                ParametricIlp(
                    with_life, request.solver, request.pareto_mip_rel_gap, request.pareto_time_limit, request.node_limit
                ),
            )
        )
    slowest = chosen_rows.life_ns(chosen_choice)
    limits = [float(x) for x in np.linspace(min(fastest, default=slowest), slowest, points)]
    kv_index = {rows.kv_format: i for i, (rows, _) in enumerate(sweeps)}
    rows_of = [rows for rows, _ in sweeps]

    def solve_at(i: int):
        if i == len(limits) - 1:  # the loosest limit is the chosen plan's own request time
            return np.append(chosen_choice, kv_index[chosen_rows.kv_format]), "optimal"
        best = None
        for rows, sweep in sweeps:
            fixed = [c.limit for c in sweep.problem.constraints[:-1]]
            sol = sweep.solve(fixed + [limits[i] * (1 + 1e-12) - rows.life_const_ns])
            if sol.feasible and (best is None or sol.objective + rows.kv_omega < best[0]):
                best = (sol.objective + rows.kv_omega, rows, sol)
        if best is None:
            return None, "infeasible"
        _, rows, sol = best
        # A feasible solution stopped at optimal, time_limit or node_limit (ilp.FEASIBLE_STATUSES).
        return np.append(sol.choice, kv_index[rows.kv_format]), cast(PointStatus, sol.status)

    def point(
        limit: float, status: PointStatus, rows: SloRows, choice: np.ndarray, chosen: bool = False
    ) -> ParetoPoint:
        return ParetoPoint(
            fraction=limit / base_ns,
            status=status,
            totals=costs.totals(choice),
            formats=[costs.formats[f] for f in choice],
            chosen=chosen,
            kv_format=rows.kv_format,
            kv_omega=rows.kv_omega,
            output_tokens_per_s_per_gpu=rows.tokens_per_s(choice) / request.tp,
            ttft_ms=rows.ttft_ms(choice),
            tpot_ms=rows.tpot_ms(choice),
        )

    front = []
    for limit, (answer, status) in zip(limits, bisect_sweep(len(limits), solve_at)):
        if answer is None:
            front.append(ParetoPoint(fraction=limit / base_ns, status="infeasible"))
        else:
            front.append(point(limit, status, rows_of[int(answer[-1])], answer[:-1]))
    for p in front:
        p.chosen = p.formats == front[-1].formats and p.kv_format == front[-1].kv_format
    return monotone(front)


def solve_per_kv(problem, rows_by_kv: list[SloRows], request):
    """One verified solve per KV format with its rows added. Returns ([(rows, problem)], [solution],
    [(total Omega incl. the KV format's, index)] of the feasible ones)."""
    from trtq.plan.ilp import solve

    per_kv, results = [], []
    for rows in rows_by_kv:
        kv_problem = IlpProblem(problem.objective, problem.constraints + rows.constraints())
        results.append(solve(kv_problem, request.solver, request.mip_rel_gap, request.time_limit_s, request.node_limit))
        per_kv.append((rows, kv_problem))
    feasible = [
        (sol.objective + rows.kv_omega, i) for i, ((rows, _), sol) in enumerate(zip(per_kv, results)) if sol.feasible
    ]
    return per_kv, results, feasible


def serving_record(
    *,
    rows: SloRows,
    choice,
    group_names,
    formats,
    model,
    gpu,
    workload,
    slos,
    tp,
    gemms,
    candidates,
    kernels=None,
    arch=None,
):
    """The chosen plan run through the step model itself (not the ILP's rows), checked against the
    rows' linear prediction and against the SLOs' raw limits."""
    from trtq.artifacts.plan import Serving
    from trtq.predict.step import StepModel

    arch, kernels = step_inputs(model, gpu, tp, arch, kernels)
    chosen = {name: formats[f] for name, f in zip(group_names, choice)}
    step = StepModel(arch, {g.name: chosen[g.name] for g in arch.groups}, rows.kv_format, tp, kernels, gpu, gemms=gemms)
    concurrency = workload.concurrency or 1
    point = step.at_concurrency(concurrency, workload)
    max_conc = step.max_concurrency(workload)
    kernels.save()
    for name, linear, exact in (
        ("TTFT", rows.ttft_ms(choice), point.ttft_ms),
        ("TPOT", rows.tpot_ms(choice), point.tpot_ms),
    ):
        if abs(linear - exact) > 1e-6 * max(1.0, abs(exact)):
            raise RuntimeError(f"internal: the ILP's linear {name} {linear!r} ms is not the step model's {exact!r} ms")
    if abs(rows.tokens_per_s(choice) - point.output_tokens_per_s) > 1e-6 * point.output_tokens_per_s:
        raise RuntimeError(
            f"internal: the rows' tokens/s {rows.tokens_per_s(choice)!r} is not the step model's "
            f"{point.output_tokens_per_s!r}"
        )
    for name, limit, value in (("ttft", slos.ttft_ms, point.ttft_ms), ("tpot", slos.tpot_ms, point.tpot_ms)):
        if limit is not None and value > limit * (1 + 1e-9):
            raise RuntimeError(f"internal: the plan's {name} {value!r} ms is over the SLO {limit!r} ms")
    if max_conc < concurrency:
        raise RuntimeError(
            f"internal: the plan's KV cache holds {max_conc} sequences, the workload needs {concurrency}"
        )
    return Serving(
        isl=workload.isl,
        osl=workload.osl,
        concurrency=concurrency,
        tp=tp,
        slo_ttft_ms=slos.ttft_ms,
        slo_tpot_ms=slos.tpot_ms,
        kv_format=rows.kv_format,
        kv_omega=rows.kv_omega,
        kv_candidates=candidates,
        ttft_ms=point.ttft_ms,
        tpot_ms=point.tpot_ms,
        output_tokens_per_s_per_gpu=point.output_tokens_per_s / tp,
        max_concurrency=max_conc,
        memory_slack_bytes=rows.memory_slack_bytes(choice),
        gemm_source=step.gemms.describe(),
        operating_point={k: v for k, v in rows.operating_point.items() if isinstance(v, (int, float, str))},
    )


# Sensitivity methods whose Omega estimates the loss increase (second order), the scale of the KV Omega (KL).
LOSS_SCALE_METHODS = ("fisher", "hessian")


def kv_scale_note(sensitivity, serving) -> str | None:
    """A plan note when the KV Omega (a KL divergence) is weighed against layer Omegas in other units."""
    if serving is None or set(serving.kv_candidates) <= {"bf16"} or sensitivity.method in LOSS_SCALE_METHODS:
        return None
    return (
        f"the KV-cache Omega ({sensitivity.kv_cache_method or 'kl'}: mean per-token KL of the output) estimates a "
        f"loss increase; the layers' {sensitivity.method} Omega is in other units, so the KV-format decision "
        "weighs unlike quantities (use --method fisher or hessian for a consistent scale)"
    )
