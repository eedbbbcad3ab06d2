"""Build the report models from artifacts: what every chart and table of a report shows.

Reads artifacts only (plan, profile, sensitivity, eval, the tidy bench table), never
the code that made them. Numbers stay raw (ns, bytes); the templates convert units.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtq.artifacts.io import load_artifact, make_metadata, read_structured, sha256_file
from trtq.artifacts.plan import GpuFacts, GroupFormat, Plan, Totals
from trtq.artifacts.report import (
    BenchRow,
    ComparisonReport,
    EvalSummary,
    GpuColumn,
    GroupRow,
    LayerSensitivity,
    ParetoRow,
    PlanReport,
    PointTotals,
    PredictedVsMeasured,
    ProfileSummary,
    ServingPrediction,
    ServingVsMeasured,
    Verdict,
)
from trtq.errors import ArtifactError, InputError, TrtqError, UnknownNameError

# Layer kinds in the order a reader expects them across a block, and how a column is titled.
KIND_ORDER = ("qkv", "q_proj", "k_proj", "v_proj", "o_proj", "gate_up", "gate_proj", "up_proj", "down_proj")
KIND_LABELS = {
    "qkv": "q/k/v",
    "q_proj": "q",
    "k_proj": "k",
    "v_proj": "v",
    "o_proj": "o",
    "gate_up": "gate/up",
    "gate_proj": "gate",
    "up_proj": "up",
    "down_proj": "down",
}

TIME_METRICS = ("time_to_first_token", "inter_token_latency", "request_latency")

# Two latencies closer than this are reported as a tie rather than a winner.
TIE_TOLERANCE = 0.01


def kind_label(kind: str) -> str:
    return KIND_LABELS.get(kind, kind)


def order_kinds(kinds) -> list[str]:
    seen = list(dict.fromkeys(kinds))
    known = [k for k in KIND_ORDER if k in seen]
    return known + [k for k in seen if k not in KIND_ORDER]


def parse_point(point: str) -> tuple[str, int]:
    """'decode@16' -> ('decode', 16)."""
    phase, _, tokens = point.partition("@")
    try:
        return phase, int(tokens)
    except ValueError:
        raise InputError(f"workload point {point!r} is not PHASE@TOKENS (e.g. decode@16)") from None


# ---------------------------------------------------------------------------- loading


@dataclass
class LoadedPlan:
    path: Path
    plan: Plan
    sha256: str


def load_plan(path: str | os.PathLike[str]) -> LoadedPlan:
    p = Path(path)
    plan = load_artifact(p, Plan)
    return LoadedPlan(path=p, plan=plan, sha256=sha256_file(p))


def _looks_like_plan(path: Path) -> bool:
    try:
        data = read_structured(path, "file")
    except ArtifactError:
        return False
    return isinstance(data, dict) and data.get("artifact") == "plan"


def collect_plans(paths: Sequence[str | os.PathLike[str]]) -> list[LoadedPlan]:
    """Plan files given directly, and every plan artifact directly inside a given directory."""
    found: list[LoadedPlan] = []
    for given in paths:
        p = Path(given)
        if p.is_dir():
            inside = sorted(
                f
                for f in p.iterdir()
                if f.is_file() and f.suffix.lower() in (".yaml", ".yml", ".json") and _looks_like_plan(f)
            )
            if not inside:
                raise ArtifactError(f"no plan artifact (*.yaml, *.json with artifact: plan) in directory {p}")
            found.extend(load_plan(f) for f in inside)
        else:
            found.append(load_plan(p))
    if not found:
        raise InputError("no plans given")
    return found


def load_eval(path: str | os.PathLike[str]):
    from trtq.artifacts.eval import EvalResult

    return load_artifact(path, EvalResult)


def load_bench_table(path: str | os.PathLike[str]):
    """The tidy bench table (parquet or CSV) `trtq bench` writes; see trtq/artifacts/bench.py."""
    import pandas as pd

    from trtq.artifacts.bench import read_table

    p = Path(path)
    frame = read_table(p)
    if frame.empty:
        raise ArtifactError(f"bench table {p}: no rows")
    try:
        frame = frame.assign(
            value=pd.to_numeric(frame["value"], errors="raise").astype(float),
            concurrency=pd.to_numeric(frame["concurrency"], errors="raise").astype(int),
        )
    except (ValueError, TypeError):
        raise ArtifactError(f"bench table {p}: columns value and concurrency must be numeric") from None
    wrong = frame[frame["metric"].isin(TIME_METRICS) & (frame["unit"] != "ns")]
    if not wrong.empty:
        row = wrong.iloc[0]
        raise ArtifactError(f"bench table {p}: {row['metric']} is in {row['unit']!r}; the table holds times in ns")
    return frame


def _text(value, default: str = "") -> str:
    """A cell of an optional text column: NaN / None / empty become `default`."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return default
    text = str(value).strip()
    return text or default


def _gpu_name(name: str) -> str:
    from trtq.registry import get_gpu

    try:
        return get_gpu(str(name)).name
    except UnknownNameError:
        return str(name)


def _gpu_facts(plan: Plan, path: Path, warnings: list[str]) -> GpuFacts | None:
    """The GPU facts the plan recorded when it was made, so a later edit of profiles/gpus.yaml does not
    change a report's verdicts. Plans before schema 3 recorded none: today's registry, said in a warning."""
    from trtq.registry import get_gpu

    if plan.gpu_facts is not None:
        return plan.gpu_facts
    try:
        spec = get_gpu(plan.gpu)
    except UnknownNameError:
        warnings.append(f"plan {path.name} records no facts on its GPU {plan.gpu} and the GPU registry has none")
        return None
    warnings.append(
        f"plan {path.name} predates recorded GPU facts (schema {plan.schema_version}): {plan.gpu}'s "
        "memory is read from today's GPU registry"
    )
    return spec.facts()


def bench_rows(frame, series) -> list[BenchRow]:
    """Rows as the report uses them; `series(gpu, engine, plan_sha256)` names a run's legend entry."""
    rows = []
    for rec in frame.to_dict("records"):
        sha = _text(rec["plan_sha256"]) or None
        gpu = _gpu_name(_text(rec["gpu"], "unknown GPU"))
        engine = _text(rec["engine"]) or _text(rec["run_id"], "run")
        rows.append(
            BenchRow(
                series=series(gpu, engine, sha),
                gpu=gpu,
                engine=engine,
                plan_sha256=sha,
                concurrency=int(rec["concurrency"]),
                metric=str(rec["metric"]),
                statistic=str(rec["statistic"]),
                value=float(rec["value"]),
                unit=str(rec["unit"]),
            )
        )
    return rows


# ---------------------------------------------------------------------------- one plan


def _points(plan: Plan) -> list[str]:
    ordered = [b.point for b in plan.budgets]
    return list(dict.fromkeys(ordered + list(plan.totals.latency_ns)))


def _decode_point(points: list[str]) -> str:
    return next((p for p in points if p.startswith("decode@")), points[0])


def _point_totals(plan: Plan) -> list[PointTotals]:
    budgets = {b.point: b for b in plan.budgets}
    rows = []
    for point in _points(plan):
        phase, tokens = parse_point(point)
        b = budgets.get(point)
        predicted = plan.totals.latency_ns.get(point)
        if predicted is None:
            continue
        rows.append(
            PointTotals(
                point=point,
                phase=phase,
                tokens=tokens,
                predicted_ns=predicted,
                bf16_ns=plan.totals.bf16_latency_ns.get(point, b.bf16_ns if b else math.nan),
                spec=b.spec if b else None,
                limit_ns=b.limit_ns if b else None,
                met=(predicted <= b.limit_ns * (1 + 1e-9)) if b else None,
                provenance_ns=dict(plan.totals.provenance_ns.get(point, {})),
            )
        )
    return rows


def _format_counts(formats: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for f in formats:
        counts[f] = counts.get(f, 0) + 1
    return counts


def _layer_sensitivity_from_artifact(plan: Plan, sensitivity) -> list[LayerSensitivity]:
    owner = {m: g for g in plan.groups for m in g.members}
    by_layer: dict[str, dict[str, float]] = {}
    for row in sensitivity.rows:
        by_layer.setdefault(row.layer, {})[row.format] = row.omega
    out = []
    for layer, omega in by_layer.items():
        group = owner.get(layer)
        out.append(
            LayerSensitivity(
                layer=layer,
                block=group.block if group else None,
                kind=layer.rsplit(".", 1)[-1],
                chosen=group.format if group else None,
                omega=omega,
            )
        )
    return out


def build_plan_report(
    plan_path: str | os.PathLike[str],
    profile: str | os.PathLike[str] | None = None,
    sensitivity: str | os.PathLike[str] | None = None,
    eval_result: str | os.PathLike[str] | None = None,
    bench_table: str | os.PathLike[str] | None = None,
) -> PlanReport:
    from trtq.artifacts.profile import Profile
    from trtq.artifacts.sensitivity import Sensitivity

    loaded = load_plan(plan_path)
    plan = loaded.plan
    warnings: list[str] = []
    inputs: dict[str, Any] = {"plan": loaded.path}

    def check_recorded(name: str, path: Path) -> None:
        recorded = plan.input_hash(name)
        if recorded and recorded.sha256 and recorded.sha256 != sha256_file(path):
            warnings.append(f"the {name} given ({path}) is not the one the plan was made from (sha256 differs)")

    profile_summary = None
    if profile is not None:
        prof = load_artifact(profile, Profile)
        if prof.model != plan.model:
            raise InputError(f"profile {profile} is for model {prof.model}, plan {plan_path} for {plan.model}")
        if prof.gpu != plan.gpu and prof.backend != "cpu":
            warnings.append(f"profile {profile} was measured for {prof.gpu}, the plan targets {plan.gpu}")
        check_recorded("profile", Path(profile))
        inputs["profile"] = profile
        cvs = sorted(r.cv for r in prof.rows if r.cv is not None)
        profile_summary = ProfileSummary(
            backend=prof.backend,
            gpu=prof.gpu,
            launch_cost_ns=prof.launch_cost_ns,
            device={str(k): str(v) for k, v in prof.device.items()},
            rows=len(prof.rows),
            ok_rows=sum(r.status == "ok" for r in prof.rows),
            noisy_rows=sum(r.status == "noisy" for r in prof.rows),
            unsupported_rows=sum(r.status == "unsupported" for r in prof.rows),
            median_cv=cvs[len(cvs) // 2] if cvs else None,
        )

    if sensitivity is not None:
        sens = load_artifact(sensitivity, Sensitivity)
        if sens.model != plan.model:
            raise InputError(f"sensitivity {sensitivity} is for model {sens.model}, plan {plan_path} for {plan.model}")
        check_recorded("sensitivity", Path(sensitivity))
        inputs["sensitivity"] = sensitivity
        layer_sens = _layer_sensitivity_from_artifact(plan, sens)
        layer_source = f"sensitivity artifact, per layer ({sens.method})"
    else:
        layer_sens = [
            LayerSensitivity(
                layer=g.group,
                block=g.block,
                kind=g.kind,
                chosen=g.format,
                omega={f: c.omega for f, c in g.costs.items()},
            )
            for g in plan.groups
        ]
        layer_source = "plan, per fused group"

    eval_summary = None
    if eval_result is not None:
        ev = load_eval(eval_result)
        if ev.model != plan.model:
            raise InputError(f"eval {eval_result} is for model {ev.model}, plan {plan_path} for {plan.model}")
        inputs["eval"] = eval_result
        matches = None if not ev.plan_sha256 else ev.plan_sha256 == loaded.sha256
        if matches is False:
            warnings.append(f"eval {eval_result} measured another plan (plan sha256 {ev.plan_sha256[:12]}…)")
        eval_summary = EvalSummary(
            text=ev.text,
            seq_len=ev.seq_len,
            ppl_bf16=ev.ppl_bf16,
            ppl_quant=ev.ppl_quant,
            relative_increase=ev.relative_increase,
            threshold=ev.threshold,
            passed=ev.passed,
            matches_plan=matches,
        )

    points = _point_totals(plan)
    point_names = [p.point for p in points]
    bench: list[BenchRow] = []
    pvm: list[PredictedVsMeasured] = []
    svm: list[ServingVsMeasured] = []
    if bench_table is not None:
        frame = load_bench_table(bench_table)
        inputs["bench"] = bench_table

        def series(gpu: str, engine: str, sha: str | None) -> str:
            return f"{engine} (this plan)" if sha == loaded.sha256 else engine

        bench = bench_rows(frame, series)
        if not any(r.plan_sha256 == loaded.sha256 for r in bench):
            warnings.append(f"no run in bench table {bench_table} used this plan (plan sha256 {loaded.sha256[:12]}…)")
        pvm = _predicted_vs_measured(points, bench, loaded.sha256)
        svm = _serving_vs_measured(plan.serving, bench, loaded.sha256) if plan.serving else []
        if plan.serving and not svm and any(r.plan_sha256 == loaded.sha256 for r in bench):
            warnings.append(
                f"the bench table has no run of this plan at its workload's concurrency "
                f"{plan.serving.concurrency}: the serving prediction is not compared"
            )

    gpu = _gpu_facts(plan, loaded.path, warnings)
    return PlanReport.create(
        metadata=make_metadata(inputs=inputs),
        title=f"{plan.model} on {plan.gpu}",
        model=plan.model,
        gpu=plan.gpu,
        runtime=plan.runtime,
        gpu_memory_bytes=gpu.memory_bytes if gpu else None,
        plan_path=str(loaded.path),
        plan_sha256=loaded.sha256,
        plan_created_at=plan.metadata.created_at,
        profile_backend=plan.profile_backend,
        sensitivity_method=plan.sensitivity_method,
        solver=plan.solver,
        memory_budget_bytes=plan.memory_budget_bytes,
        candidate_formats=list(plan.candidate_formats),
        points=points,
        decode_point=_decode_point(point_names),
        weight_bytes=plan.totals.weight_bytes,
        bf16_weight_bytes=plan.totals.bf16_weight_bytes,
        sensitivity=plan.totals.sensitivity,
        serving=getattr(plan, "serving", None),
        groups=[
            GroupRow(
                **g.model_dump(include=set(GroupFormat.model_fields)),
                omega={f: c.omega for f, c in g.costs.items()},
                weight_bytes={f: c.weight_bytes for f, c in g.costs.items()},
                latency_ns={f: dict(c.latency_ns) for f, c in g.costs.items()},
            )
            for g in plan.groups
        ],
        pareto=[
            ParetoRow(
                fraction=p.fraction,
                status=p.status,
                chosen=p.chosen,
                sensitivity=p.totals.sensitivity if p.totals else None,
                weight_bytes=p.totals.weight_bytes if p.totals else None,
                latency_ns=dict(p.totals.latency_ns) if p.totals else {},
                format_counts=_format_counts(p.formats),
                provenance_ns={k: dict(v) for k, v in p.totals.provenance_ns.items()} if p.totals else {},
                kv_format=p.kv_format,
                output_tokens_per_s_per_gpu=p.output_tokens_per_s_per_gpu,
                ttft_ms=p.ttft_ms,
                tpot_ms=p.tpot_ms,
                total_omega=p.totals.sensitivity + (p.kv_omega or 0.0) if p.totals else None,
            )
            for p in sorted(plan.pareto, key=lambda p: -p.fraction)
        ],
        layer_sensitivity=layer_sens,
        layer_sensitivity_source=layer_source,
        eval=eval_summary,
        profile=profile_summary,
        bench=bench,
        predicted_vs_measured=pvm,
        serving_vs_measured=svm,
        plan_versions=dict(plan.metadata.versions),
        plan_inputs=dict(plan.metadata.inputs),
        plan_notes=list(plan.notes) + list(plan.metadata.notes),
        warnings=warnings,
    )


def _measured(bench: list[BenchRow], sha: str, concurrency: int, metric: str) -> float | None:
    for statistic in ("p50", "avg"):
        for r in bench:
            if (
                r.plan_sha256 == sha
                and r.concurrency == concurrency
                and r.metric == metric
                and r.statistic == statistic
            ):
                return r.value
    return None


def _serving_vs_measured(serving, bench: list[BenchRow], sha: str) -> list[ServingVsMeasured]:
    """TTFT and TPOT (measured inter-token latency) p50 and output tokens/s per GPU, at the plan's concurrency."""
    c = serving.concurrency
    out = []
    for quantity, predicted, metric, unit, scale in (
        ("TTFT", serving.ttft_ms, "time_to_first_token", "ms", 1e-6),
        ("TPOT", serving.tpot_ms, "inter_token_latency", "ms", 1e-6),
        (
            "output tokens/s per GPU",
            serving.output_tokens_per_s_per_gpu,
            "output_token_throughput",
            "tokens/s",
            1.0 / serving.tp,
        ),
    ):
        for statistic in ("p50", "avg"):
            value = next(
                (
                    r.value
                    for r in bench
                    if r.plan_sha256 == sha and r.concurrency == c and r.metric == metric and r.statistic == statistic
                ),
                None,
            )
            if value is not None and predicted > 0:
                out.append(
                    ServingVsMeasured(
                        quantity=quantity,
                        concurrency=c,
                        predicted=predicted,
                        measured=value * scale,
                        unit=unit,
                        statistic=statistic,
                        ratio=value * scale / predicted,
                    )
                )
                break
    return out


def _predicted_vs_measured(points: list[PointTotals], bench: list[BenchRow], sha: str) -> list[PredictedVsMeasured]:
    """A decode step at concurrency C is a GEMM with C tokens: ITL there is what decode@C predicts."""
    out = []
    for p in points:
        if p.phase != "decode":
            continue
        itl = _measured(bench, sha, p.tokens, "inter_token_latency")
        if itl is not None and p.predicted_ns > 0:
            out.append(
                PredictedVsMeasured(
                    point=p.point,
                    concurrency=p.tokens,
                    predicted_ns=p.predicted_ns,
                    measured_itl_ns=itl,
                    ratio=itl / p.predicted_ns,
                )
            )
    return out


# ---------------------------------------------------------------------------- comparison


@dataclass
class _Candidate:
    loaded: LoadedPlan
    totals: Totals
    formats: list[str]
    fraction: float | None
    chosen: bool


def _candidates(loaded: LoadedPlan) -> list[_Candidate]:
    plan = loaded.plan
    fractions = {b.fraction for b in plan.budgets if b.fraction is not None}
    chosen_fraction = next(iter(fractions)) if len(fractions) == 1 else None
    out = [_Candidate(loaded, plan.totals, [g.format for g in plan.groups], chosen_fraction, True)]
    for p in plan.pareto:
        if p.status == "infeasible" or p.totals is None or len(p.formats) != len(plan.groups):
            continue
        out.append(_Candidate(loaded, p.totals, list(p.formats), p.fraction, p.chosen))
    return out


def _selection_text(c: _Candidate) -> str:
    name = c.loaded.path.name
    if c.chosen:
        return f"chosen plan of {name}"
    return f"Pareto point at {c.fraction:g}× bf16 latency in {name}"


def _pick_fraction(gpu: str, candidates: list[_Candidate], fraction: float) -> _Candidate:
    matching = [c for c in candidates if c.fraction is not None and abs(c.fraction - fraction) < 1e-9]
    if not matching:
        have = sorted({c.fraction for c in candidates if c.fraction is not None}, reverse=True)
        raise InputError(
            f"no plan for {gpu} at budget fraction {fraction:g}; its plans have "
            f"{', '.join(f'{f:g}' for f in have) or 'no fractions'}"
        )
    return min(matching, key=lambda c: (c.totals.sensitivity, not c.chosen))


def _pick_quality(candidates: list[_Candidate], bound: float, point: str) -> _Candidate | None:
    ok = [c for c in candidates if c.totals.sensitivity <= bound * (1 + 1e-9) + 1e-12]
    if not ok:
        return None
    return min(ok, key=lambda c: (c.totals.latency_ns.get(point, math.inf), c.totals.sensitivity, not c.chosen))


def _times(x: float) -> str:
    return f"{x:.2f}×" if x < 10 else f"{x:.1f}×"


def verdict_for(
    point: str, values: dict[str, float], higher_is_better: bool = False, quantity: str = ""
) -> Verdict | None:
    """The fastest GPU at one point and how many times faster it is than each other GPU."""
    usable = {g: v for g, v in values.items() if v is not None and v > 0 and math.isfinite(v)}
    if not usable:
        return None
    ranked = sorted(usable, key=lambda g: -usable[g] if higher_is_better else usable[g])
    best = ranked[0]
    speedups = {g: (usable[best] / usable[g]) if higher_is_better else (usable[g] / usable[best]) for g in ranked[1:]}
    suffix = f" ({quantity})" if quantity else ""
    if len(ranked) == 1:
        return Verdict(point=point, fastest=best, speedups={}, text=f"{point}: only {best} has a number{suffix}")
    ties = [g for g in ranked[1:] if speedups[g] < 1 + TIE_TOLERANCE]
    faster = [f"{_times(speedups[g])} faster than {g}" for g in ranked[1:] if g not in ties]
    lead = f"{point}: {' and '.join([best, *ties])}"
    verb = f" are fastest (within {TIE_TOLERANCE:.0%} of each other)" if ties else " is fastest"
    tail = (", " + " and ".join(faster)) if faster else ""
    return Verdict(point=point, fastest=best, speedups=speedups, text=f"{lead}{verb}{tail}{suffix}")


def _weight_share(loaded: LoadedPlan, formats: list[str]) -> dict[str, float]:
    params = [g.in_features * g.out_features for g in loaded.plan.groups]
    total = sum(params) or 1
    share: dict[str, float] = {}
    for f, n in zip(formats, params):
        share[f] = share.get(f, 0.0) + n / total
    return share


def build_comparison_report(
    plan_paths: Sequence[str | os.PathLike[str]],
    bench_tables: Sequence[str | os.PathLike[str]] | None = None,
    quality_bound: float | None = None,
    fraction: float | None = None,
    workload: str | None = None,
) -> ComparisonReport:
    if quality_bound is not None and fraction is not None:
        raise InputError("give either --quality-bound or --fraction, not both")
    if quality_bound is not None and quality_bound < 0:
        raise InputError(f"--quality-bound must be >= 0, got {quality_bound:g}")
    loaded = collect_plans(plan_paths)
    models = sorted({lp.plan.model for lp in loaded})
    if len(models) > 1:
        raise InputError(f"the comparison is for one model; the plans cover {', '.join(models)}")
    warnings: list[str] = []
    sens_hashes = {
        (lp.plan.input_hash("sensitivity").sha256 if lp.plan.input_hash("sensitivity") else None) for lp in loaded
    }
    if len(sens_hashes - {None}) > 1:
        warnings.append("the plans were made from different sensitivity files: their Σ sensitivity may not compare")

    by_gpu: dict[str, list[_Candidate]] = {}
    for lp in loaded:
        by_gpu.setdefault(lp.plan.gpu, []).extend(_candidates(lp))

    points: list[str] = []
    for lp in loaded:
        points.extend(p for p in _points(lp.plan) if p not in points)
    primary = _decode_point(points)

    selected: dict[str, _Candidate] = {}
    if fraction is not None:
        selection = f"each GPU's plan at {fraction:g}× its all-bf16 GEMM time (the same budget fraction)"
        for gpu, cands in by_gpu.items():
            selected[gpu] = _pick_fraction(gpu, cands, fraction)
    else:
        if quality_bound is None:
            chosen = {gpu: min(c.totals.sensitivity for c in cands if c.chosen) for gpu, cands in by_gpu.items()}
            strictest = min(chosen, key=lambda gpu: chosen[gpu])
            quality_bound = chosen[strictest]
            why = f"the chosen plan of {strictest}, the strictest of the inputs"
        else:
            why = "--quality-bound"
        selection = (
            f"each GPU's fastest plan at {primary} with Σ sensitivity ≤ {quality_bound:.4g} "
            f"({why}); the same quality bound for every GPU"
        )
        for gpu, cands in by_gpu.items():
            pick = _pick_quality(cands, quality_bound, primary)
            if pick is None:
                lowest = min(c.totals.sensitivity for c in cands)
                raise InputError(
                    f"no plan for {gpu} meets Σ sensitivity ≤ {quality_bound:.4g} (its lowest is {lowest:.4g}); "
                    f"plan with a Pareto sweep or raise --quality-bound"
                )
            selected[gpu] = pick

    columns = []
    for gpu, c in selected.items():
        spec = _gpu_facts(c.loaded.plan, c.loaded.path, warnings)
        columns.append(
            GpuColumn(
                gpu=gpu,
                sm=spec.sm if spec else None,
                memory_bytes=spec.memory_bytes if spec else None,
                plan_path=str(c.loaded.path),
                plan_sha256=c.loaded.sha256,
                selected=_selection_text(c),
                fraction=c.fraction,
                sensitivity=c.totals.sensitivity,
                latency_ns=dict(c.totals.latency_ns),
                bf16_latency_ns=dict(c.totals.bf16_latency_ns),
                serving=_serving(c, workload) if workload else None,
                weight_bytes=c.totals.weight_bytes,
                fits=(c.totals.weight_bytes <= spec.memory_bytes) if spec else None,
                memory_share=(c.totals.weight_bytes / spec.memory_bytes) if spec else None,
                format_counts=_format_counts(c.formats),
                format_weight_share=_weight_share(c.loaded, c.formats),
                candidate_formats=list(c.loaded.plan.candidate_formats),
            )
        )
    # Slowest first reads like a story towards the newest GPU; the order is fixed by the numbers.
    columns.sort(key=lambda col: -col.latency_ns.get(primary, 0.0))

    verdicts = [
        v
        for point in points
        if (
            v := verdict_for(
                point, {col.gpu: col.latency_ns.get(point) for col in columns}, quantity="predicted GEMM time"
            )
        )
        is not None
    ]
    served = {c.gpu: c.serving.output_tokens_per_s_per_gpu for c in columns if c.serving and not c.serving.error}
    if workload and (v := verdict_for(workload, served, higher_is_better=True)):
        others = " and ".join(f"{_times(ratio)} {gpu}'s" for gpu, ratio in v.speedups.items())
        text = f"{workload}: {v.fastest} serves the most output tokens/s per GPU ({served[v.fastest]:,.0f})"
        verdicts.append(v.model_copy(update={"text": text + (f", {others}" if others else "") + " (predicted)"}))

    bench: list[BenchRow] = []
    measured: list[Verdict] = []
    inputs: dict[str, Any] = {f"plan{i}": lp.path for i, lp in enumerate(loaded)}
    for i, table in enumerate(bench_tables or []):
        frame = load_bench_table(table)
        inputs[f"bench{i}"] = table
        if set(frame["model"].astype(str)) - {models[0]}:
            warnings.append(f"bench table {table} holds runs of other models than {models[0]}: shown as given")
        bench.extend(bench_rows(frame, lambda gpu, engine, sha: f"{gpu} · {engine}"))
    if bench:
        decode_tokens = {parse_point(p)[1] for p in points if p.startswith("decode@")}
        measured = _measured_verdicts(bench, columns, decode_tokens)

    return ComparisonReport.create(
        metadata=make_metadata(inputs=inputs),
        title=f"{models[0]}: {' vs '.join(col.gpu for col in reversed(columns))}",
        model=models[0],
        selection=selection,
        workload=workload,
        quality_bound=quality_bound,
        fraction=fraction,
        points=points,
        gpus=columns,
        verdicts=verdicts,
        measured_verdicts=measured,
        bench=bench,
        warnings=warnings,
    )


def _serving(candidate: _Candidate, workload: str) -> ServingPrediction:
    """The candidate's plan at `workload`, by the step model (trtq predict), on the GEMM latencies of the profile
    it was planned from where that file is still there; a prediction that cannot be made says why."""
    import tempfile

    from trtq.artifacts.io import save_artifact
    from trtq.predict.api import PredictRequest, predict

    plan = candidate.loaded.plan
    ref = plan.metadata.inputs.get("profile")
    profile = ref.path if ref is not None and Path(ref.path).is_file() else None
    with tempfile.TemporaryDirectory() as tmp:
        target = str(candidate.loaded.path)
        if candidate.formats != [g.format for g in plan.groups]:
            # A Pareto point of the plan file: the plan with the point's formats, for the step model to read.
            from trtq.registry import get_format

            groups = [
                g.model_copy(update={"format": f, "group_size": get_format(f).group_size_for(g.in_features)})
                for g, f in zip(plan.groups, candidate.formats)
            ]
            point = plan.model_copy(update={"groups": groups, "totals": candidate.totals})
            target = str(save_artifact(point, Path(tmp) / "point.yaml"))
        try:
            r = predict(PredictRequest(target=target, workload=workload, profile=profile, kv_format=plan.kv_format))
        except TrtqError as exc:
            return ServingPrediction(
                ttft_ms=0,
                tpot_ms=0,
                output_tokens_per_s_per_gpu=0,
                concurrency=0,
                max_concurrency=0,
                kv_format="",
                modelled_share=0,
                error=str(exc),
            )
    return ServingPrediction(
        ttft_ms=r["ttft_ms"],
        tpot_ms=r["tpot_ms"],
        output_tokens_per_s_per_gpu=r["output_tokens_per_s_per_gpu"],
        concurrency=r["in_flight"],
        max_concurrency=r["max_concurrency"],
        kv_format=r["kv_format"],
        modelled_share=r["modelled_share"],
    )


def _measured_verdicts(bench: list[BenchRow], columns: list[GpuColumn], decode_tokens: set[int]) -> list[Verdict]:
    """Which GPU served the most output tokens/s with its selected plan, at the lowest and highest
    concurrency measured on every GPU and at the planned decode batch sizes."""
    shas = {col.gpu: col.plan_sha256 for col in columns}
    per_level: dict[int, dict[str, float]] = {}
    for r in bench:
        if r.metric != "output_token_throughput" or r.statistic != "avg":
            continue
        if shas.get(r.gpu) != r.plan_sha256:
            continue
        per_level.setdefault(r.concurrency, {})[r.gpu] = r.value
    shared = sorted(level for level, values in per_level.items() if len(values) >= 2)
    if not shared:
        return []
    wanted = {shared[0], shared[-1]} | (decode_tokens & set(shared))
    out = []
    for level in sorted(wanted):
        v = verdict_for(
            f"measured at concurrency {level}", per_level[level], higher_is_better=True, quantity="output tokens/s"
        )
        if v:
            out.append(v)
    return out
