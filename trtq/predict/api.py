"""`predict`: a plan (or a uniform format) on a GPU at a workload -> TTFT, TPOT, throughput.

Imports nothing heavy: the plan and profile artifacts are pydantic models, the kernel
latencies come from aiconfigurator-core's native engine (memoised on disk) — no torch,
pandas or transformers, so a repeated prediction answers in well under a second.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

from trtq.errors import InputError, UnsupportedError
from trtq.predict.architecture import decoder_architecture
from trtq.predict.kernels import PROVENANCES, AicKernels, Answer
from trtq.predict.request import PredictRequest
from trtq.predict.step import (
    AggPoint,
    GemmSource,
    StepModel,
    Workload,
    parse_workload,
    provenance_shares,
)


class ProfileGemms(GemmSource):
    """GEMM latencies from a trtq profile artifact, linear in log-log between its token counts.
    Its rows are one GPU's GEMMs at the profile's tensor parallelism: it serves that --tp only."""

    def __init__(self, profile, path: str, tp: int):
        if profile.tp != tp:
            raise InputError(
                f"profile {path} has one GPU's GEMMs at tensor parallelism {profile.tp}, not {tp}: "
                f"`trtq profile ... --tp {tp}` makes the table for --tp {tp}"
            )
        self.profile, self.path = profile, path
        self.rows: dict[tuple[int, int, str], list[tuple[int, float, str]]] = {}
        measured_backend = profile.backend in ("cuda", "cpu")
        for r in profile.rows:
            if r.latency_ns is None or r.experts is not None:  # MoE rows: not a dense GEMM
                continue
            # The row's provenance (profile schema 2; older tables kept it in details), else the backend's kind.
            prov = r.provenance or (r.details.get("provenance") if isinstance(r.details, dict) else None)
            prov = prov if prov in PROVENANCES else ("measured" if measured_backend else "modelled")
            # A modelled row (roofline, calibrated) carries its activation-quantize pass in its latency;
            # the step model prices that quantize itself, once, as the format-transition term (where no
            # producer fuses it). Keeping both counted it twice: the GEMM alone is the row less the pass.
            quantize = r.details.get("activation_quantize_ns", 0.0) if isinstance(r.details, dict) else 0.0
            self.rows.setdefault((r.out_features, r.in_features, r.format), []).append(
                (r.tokens, r.latency_ns - float(quantize or 0.0), prov)
            )
        for v in self.rows.values():
            v.sort()

    def has(self, fmt):
        return any(key[2] == fmt for key in self.rows)

    def describe(self):
        return f"profile {self.path} ({self.profile.backend})"

    def gemm(self, n, k, fmt, tokens):
        pts = self.rows.get((n, k, fmt))
        if not pts:
            raise UnsupportedError(
                f"profile {self.path} has no {fmt} row for the GEMM {n}x{k} (N x K on one GPU); "
                "profile the model's shapes at this TP size"
            )
        ms = [p[0] for p in pts]
        i = bisect.bisect_left(ms, tokens)
        if i < len(pts) and pts[i][0] == tokens:
            return Answer(pts[i][1] / 1e6, pts[i][2])
        if i == 0 or i == len(pts):
            # Outside the profiled tokens: scale the nearest point linearly in tokens above, hold below.
            t, ns, _ = pts[0] if i == 0 else pts[-1]
            value = ns if i == 0 else ns * tokens / t
            return Answer(value / 1e6, "modelled")
        (t0, a, _), (t1, b, _) = pts[i - 1], pts[i]
        w = (math.log(tokens) - math.log(t0)) / (math.log(t1) - math.log(t0))
        return Answer(math.exp((1 - w) * math.log(a) + w * math.log(b)) / 1e6, "interpolated")


def looks_like_plan(target: str) -> bool:
    from pathlib import Path

    path = Path(target)
    return path.is_file() and path.suffix.lower() in (".yaml", ".yml", ".json")


def _plan_formats(plan_path: str):
    from trtq.artifacts import load_artifact
    from trtq.artifacts.plan import Plan

    plan = load_artifact(plan_path, Plan)
    formats = {g.group: g.format for g in plan.groups}
    return plan, formats


def build_step_model(
    model: str | None, plan_path: str | None, uniform: str | None, gpu_name: str | None, request: PredictRequest
) -> tuple[StepModel, dict[str, Any]]:
    from trtq.model.zoo import resolve_model
    from trtq.registry import get_format, get_gpu

    source: dict[str, Any] = {}
    if plan_path:
        plan, formats = _plan_formats(plan_path)
        model = plan.model
        gpu_name = gpu_name or plan.gpu
        kv = request.kv_format or getattr(plan, "kv_format", None) or "bf16"
        source["plan"] = plan_path
    else:
        if not uniform:
            raise InputError("give a plan file, or a model with --uniform FORMAT")
        uniform = get_format(uniform).name  # an unknown --uniform is refused with the known formats
        formats, kv = None, request.kv_format or "bf16"
    if not gpu_name:
        raise InputError("--gpu is required for a model (a plan names its GPU)")
    gpu = get_gpu(gpu_name)
    resolved = resolve_model(model)
    arch = decoder_architecture(resolved.name, resolved.config)
    if formats is None:
        formats = {g.name: uniform for g in arch.groups}
        source["uniform"] = uniform
    else:
        # A plan for another model (or edited) would otherwise be priced with its strangers in bf16.
        from trtq.artifacts.validate import check_plan_covers_graph
        from trtq.model.families import config_layer_graph

        graph = config_layer_graph(resolved, include_lm_head=any(g.kind == "lm_head" for g in plan.groups))
        if graph is not None:
            check_plan_covers_graph(plan, graph, plan_path)
        formats = {g.name: formats[g.name] for g in arch.groups if g.name in formats} | {
            g.name: "bf16" for g in arch.groups if g.name not in formats
        }
    kernels = AicKernels(gpu.name, scope=f"{resolved.name}-tp{request.tp}")
    gemms = None
    if request.profile:
        from trtq.artifacts import load_artifact
        from trtq.artifacts.profile import Profile

        profile = load_artifact(request.profile, Profile)
        if profile.gpu != gpu.name:
            raise InputError(f"profile {request.profile} was made for {profile.gpu}, not {gpu.name}")
        gemms = ProfileGemms(profile, request.profile, request.tp)
    step = StepModel(arch, formats, kv, request.tp, kernels, gpu, gemms=gemms)
    source.update(
        model=resolved.name,
        gpu=gpu.name,
        tp=request.tp,
        kv_format=kv,
        kernels=kernels.describe(),
        gemm_source=step.gemms.describe(),
    )
    return step, source


def _format_mix(step: StepModel) -> dict[str, int]:
    out: dict[str, int] = {}
    for fmt in step.formats.values():
        out[fmt] = out.get(fmt, 0) + 1
    return out


def predict(request: PredictRequest) -> dict[str, Any]:
    """One prediction as a plain dict (what `trtq predict --json` prints): of the plan file `request.target`,
    or of the model `request.target` with every group in `request.uniform`."""
    if looks_like_plan(request.target):
        if request.uniform:
            raise InputError("--uniform applies to a model, not to a plan file")
        step, source = build_step_model(None, request.target, None, request.gpu, request)
    else:
        if not request.uniform:
            raise InputError(f"{request.target!r} is not a plan file; for a model give --uniform FORMAT")
        step, source = build_step_model(request.target, None, request.uniform, request.gpu, request)
    w = request.parsed_workload
    try:
        max_conc = step.max_concurrency(w)
        notes: list[str] = []
        if request.max_throughput:
            point = step.max_throughput(w, request.max_batch_size)
            if point is None:
                raise UnsupportedError(_no_fit(step, source, w))
            mode = "max_throughput"
        else:
            concurrency = w.concurrency or 1
            if max_conc < 1 or not step.fits(1, w):
                raise UnsupportedError(_no_fit(step, source, w))
            if concurrency > max_conc:
                notes.append(
                    f"concurrency {concurrency} exceeds the KV-cache capacity ({max_conc} sequences "
                    f"of {w.isl + w.osl} tokens): {max_conc} run in flight, the rest queue "
                    "(their wait is not in the TTFT)"
                )
            point = step.at_concurrency(min(concurrency, max_conc), w)
            mode = "fixed_concurrency"
    finally:
        step.kernels.save()
    return _result(step, source, w, point, max_conc, mode, notes)


def _groups_ms(step: StepModel, tokens: int) -> float:
    return sum(next(iter(row.values())) for row in step.group_costs(tokens).values())


def _no_fit(step: StepModel, source: dict[str, Any], w: Workload) -> str:
    return (
        f"{source['model']} does not fit on {step.gpu.name} at TP {step.tp} with one sequence of "
        f"{w.isl + w.osl} tokens: weights {step.weight_bytes() / 1e9:.1f} GB of "
        f"{step.capacity_bytes / 1e9:.1f} GB, KV budget {step.kv_budget_bytes() / 1e9:.2f} GB "
        f"(one sequence needs {(w.isl + w.osl) * step.kv_bytes_per_token() / 1e9:.2f} GB)"
    )


def _result(
    step: StepModel, source: dict[str, Any], w: Workload, point: AggPoint, max_conc: int, mode: str, notes: list[str]
) -> dict[str, Any]:
    shares = provenance_shares(point.cost)
    total = point.cost.ms
    breakdown = {k: v / total for k, v in sorted(point.cost.by_category.items(), key=lambda kv: -kv[1]) if v > 0}
    replicas_gpus = step.tp
    return {
        "mode": mode,
        **source,
        "formats": _format_mix(step),
        "workload": {"isl": w.isl, "osl": w.osl, "concurrency": w.concurrency},
        "concurrency": w.concurrency if mode == "fixed_concurrency" and w.concurrency else point.batch,
        "in_flight": point.batch,
        "ctx_tokens_per_step": point.ctx_tokens,
        "ttft_ms": point.ttft_ms,
        "tpot_ms": point.tpot_ms,
        "request_latency_ms": point.request_latency_ms,
        "output_tokens_per_s": point.output_tokens_per_s,
        "output_tokens_per_s_per_gpu": point.output_tokens_per_s / replicas_gpus,
        "max_concurrency": max_conc,
        "fits": (w.concurrency or point.batch) <= max_conc,
        "memory": {
            "capacity_bytes": step.capacity_bytes,
            "weight_bytes": step.weight_bytes(),
            "non_kv_bytes": int(step.non_kv_bytes()),
            "kv_budget_bytes": int(step.kv_budget_bytes()),
            "kv_bytes_per_token": step.kv_bytes_per_token(),
        },
        "time_breakdown": breakdown,
        "measured_share": shares["measured"],
        "interpolated_share": shares["interpolated"],
        "extrapolated_share": shares["extrapolated"],
        "modelled_share": shares["modelled"],
        # TTFT and TPOT are linear in the mixed- and decode-step times, which are sums of
        # per-group costs at these GEMM M values (StepModel.group_costs) plus fixed terms.
        "linear_model": {
            "ttft_per_mix_step_ms": point.ttft_factor,
            "tpot_weights": {
                "mix_step": point.mix_steps_for_tpot / max(point.mix_steps_for_tpot + point.decode_steps, 1e-9),
                "decode_step": point.decode_steps / max(point.mix_steps_for_tpot + point.decode_steps, 1e-9),
            },
            "mix_step_tokens": point.mix_tokens,
            "decode_step_tokens": point.decode_tokens,
            "mix_step_ms": point.mix_step_ms,
            "decode_step_ms": point.decode_step_ms,
            # The part of each step no GEMM group's format changes (attention, norms, ...).
            "mix_step_fixed_ms": point.mix_step_ms - _groups_ms(step, point.mix_tokens),
            "decode_step_fixed_ms": (
                point.decode_step_ms - _groups_ms(step, point.decode_tokens) if point.decode_tokens else 0.0
            ),
        },
        "notes": notes,
    }


__all__ = ["PredictRequest", "ProfileGemms", "build_step_model", "parse_workload", "predict"]
