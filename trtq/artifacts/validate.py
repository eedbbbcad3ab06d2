"""What every artifact must mean, checked on read: one validator per kind, run by `load_artifact`.

The schemas (pydantic) check types; these check sense: every number finite, physical
quantities (ns, bytes, Ω, widths, token counts) not negative, formats known to the registry
and runnable on the GPU the artifact names, one format per fused group, tables complete over
their own keys, totals that add up. The first offence is raised as one line; `load_artifact`
prefixes the file. A reader that knows the model also checks a plan against its layer graph
(`check_plan_covers_graph`): every quantizable layer covered, fused groups on one format.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

# Free-form fields (backend details, settings, provenance) are not checked for finiteness.
_FREE_FORM = frozenset({"metadata", "details", "settings", "device", "extra_llm_api_options", "flags_why"})
# (kind, field name) whose value may be +inf by design: a trace that did not get a second probe,
# the perplexity of a quantized model so broken that it overflows (a measurement, not a typo).
_INF_ALLOWED = frozenset({("sensitivity", "relative_change"), ("eval", "ppl_quant"), ("eval", "relative_increase")})

_REL_TOL = 1e-6


class Offence(Exception):
    """The first thing wrong with an artifact, in words (the loader adds the file)."""


def _fail(message: str):
    raise Offence(message)


# ---------------------------------------------------------------------------- generic checks


def _walk_finite(kind: str, value: Any, where: str) -> None:
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, float):
        if math.isnan(value) or (math.isinf(value) and (kind, where.rsplit(".", 1)[-1]) not in _INF_ALLOWED):
            _fail(f"{where} is {value!r}: every number must be finite")
        return
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            if name not in _FREE_FORM:
                _walk_finite(kind, getattr(value, name), f"{where}.{name}" if where else name)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _walk_finite(kind, item, f"{where}[{key}]")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _walk_finite(kind, item, f"{where}[{i}]")


def _all_finite(artifact: BaseModel) -> bool:
    """True when no number anywhere in `artifact` is NaN or infinite: the C JSON encoder refuses them, in a
    fraction of the walk's time (a 70B profile and sensitivity: ~40,000 values). Not pydantic's JSON
    serializer: a model's own inf/nan setting turns NaN into null there."""
    try:
        json.dumps(artifact.model_dump(), allow_nan=False, default=str)
    except ValueError:
        return False
    return True


def _non_negative(value: float | int | None, where: str, unit: str = "") -> None:
    if value is not None and value < 0:
        _fail(f"{where} is {value:g}{unit}: it cannot be negative")


def _positive(value: float | int | None, where: str) -> None:
    if value is not None and value <= 0:
        _fail(f"{where} is {value:g}: it must be positive")


def _format(name: str, where: str):
    from trtq.registry.formats import FORMATS

    fmt = FORMATS.get(str(name).strip().lower())
    if fmt is None:
        _fail(f"{where}: unknown format {name!r} (known: {', '.join(FORMATS)})")
    return fmt


def _gpu(name: str, where: str):
    from trtq.errors import TrtqError
    from trtq.registry.gpus import get_gpu

    try:
        return get_gpu(name)
    except TrtqError as exc:
        _fail(f"{where}: {exc}")


def _runnable(gpu, fmt, where: str) -> None:
    if not gpu.supports(fmt):
        _fail(
            f"{where}: format {fmt.name} does not run on {gpu.name} (sm{gpu.sm}; it needs sm{fmt.min_sm}+); "
            f"{gpu.name} runs {', '.join(f.name for f in gpu.formats)}"
        )


def _group_size(fmt, group_size: int | None, in_features: int | None, where: str) -> None:
    if fmt.block_sizes:
        if group_size is None:
            _fail(f"{where}: format {fmt.name} needs a group_size")
        if group_size not in fmt.block_sizes:
            _fail(f"{where}: {fmt.name} group_size {group_size} is not one of {fmt.block_sizes}")
        if in_features is not None and in_features % group_size:
            _fail(f"{where}: {fmt.name} group_size {group_size} does not divide its input width {in_features}")
    elif group_size is not None:
        _fail(f"{where}: format {fmt.name} takes no group_size (got {group_size})")


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_REL_TOL, abs_tol=1e-6)


# ---------------------------------------------------------------------------- one validator per kind


def check_layers(graph) -> None:
    _non_negative(graph.num_blocks, "num_blocks")
    _non_negative(graph.fixed_parameter_bytes, "fixed_parameter_bytes", " bytes")
    _non_negative(graph.total_parameters, "total_parameters")
    if not graph.layers:
        _fail("the layer graph lists no layers")
    layers = {}
    for i, layer in enumerate(graph.layers):
        where = f"layers[{i}] ({layer.name})"
        _positive(layer.in_features, f"{where}.in_features")
        _positive(layer.out_features, f"{where}.out_features")
        if layer.name in layers:
            _fail(f"{where}: layer listed twice")
        layers[layer.name] = layer
    covered: dict[str, str] = {}
    for i, group in enumerate(graph.groups):
        where = f"groups[{i}] ({group.name})"
        if not group.members:
            _fail(f"{where}: a group with no member layers")
        for member in group.members:
            layer = layers.get(member)
            if layer is None:
                _fail(f"{where}: member {member} is not a listed layer")
            if member in covered:
                _fail(f"{where}: layer {member} is also in group {covered[member]}")
            covered[member] = group.name
            if layer.group != group.name:
                _fail(f"{where}: layer {member} names group {layer.group}")
            if layer.in_features != group.in_features:
                _fail(f"{where}: member {member} has input width {layer.in_features}, the group {group.in_features}")
        width = sum(layers[m].out_features for m in group.members)
        if width != group.out_features:
            _fail(f"{where}: out_features {group.out_features} is not its members' sum {width}")
    missing = [name for name in layers if name not in covered]
    if missing:
        _fail(f"layer {missing[0]} is in no group ({len(missing)} layers are)")


def check_profile(profile) -> None:
    _non_negative(profile.launch_cost_ns, "launch_cost_ns", " ns")
    if not profile.tokens:
        _fail("the profile lists no token counts")
    for m in profile.tokens:
        _positive(m, "tokens")
    _positive(profile.tp, "tp")
    formats = [_format(f, "formats") for f in profile.formats]
    gpu = _gpu(profile.gpu, "gpu") if profile.backend != "cpu" else None
    listed = {f.name for f in formats}
    seen: set[tuple[int, int, int, str]] = set()
    shapes: dict[tuple[int, int], None] = {}
    for i, row in enumerate(profile.rows):
        where = f"rows[{i}] ({row.out_features}x{row.in_features}, {row.tokens} tokens, {row.format})"
        _positive(row.out_features, f"{where}.out_features")
        _positive(row.in_features, f"{where}.in_features")
        _positive(row.tokens, f"{where}.tokens")
        fmt = _format(row.format, where)
        if fmt.name not in listed:
            _fail(f"{where}: format {fmt.name} is not in the profile's formats")
        if row.tokens not in profile.tokens:
            _fail(f"{where}: {row.tokens} tokens is not in the profile's tokens")
        if row.status in ("ok", "noisy"):
            if row.latency_ns is None:
                _fail(f"{where}: status {row.status} without a latency")
            if gpu is not None:
                _runnable(gpu, fmt, where)
        _non_negative(row.latency_ns, f"{where}.latency_ns", " ns")
        _non_negative(row.min_ns, f"{where}.min_ns", " ns")
        _non_negative(row.max_ns, f"{where}.max_ns", " ns")
        _non_negative(row.cv, f"{where}.cv")
        _non_negative(row.repeats, f"{where}.repeats")
        key = (row.out_features, row.in_features, row.tokens, fmt.name)
        if key in seen:
            _fail(f"{where}: a second row for the same shape, tokens and format")
        seen.add(key)
        shapes.setdefault((row.out_features, row.in_features), None)
    # Complete over its own keys: a missing row would silently drop a format from a shape.
    for n, k in shapes:
        for m in profile.tokens:
            for f in listed:
                if (n, k, m, f) not in seen:
                    _fail(
                        f"no row for {n}x{k} at {m} tokens in {f} (every shape needs every token count and "
                        "format, 'unsupported' with a reason where it has no number)"
                    )


def check_sensitivity(sensitivity) -> None:
    listed = {_format(f, "formats").name for f in sensitivity.formats}
    seen: set[tuple[str, str]] = set()
    for i, row in enumerate(sensitivity.rows):
        where = f"rows[{i}] ({row.layer}, {row.format})"
        fmt = _format(row.format, where)
        if listed and fmt.name not in listed:
            _fail(f"{where}: format {fmt.name} is not in the table's formats")
        _non_negative(row.omega, f"{where}.omega")
        _non_negative(row.weight_error, f"{where}.weight_error")
        _non_negative(row.input_error, f"{where}.input_error")
        if row.group_size is not None:
            _group_size(fmt, row.group_size, None, where)
        if (row.layer, fmt.name) in seen:
            _fail(f"{where}: a second row for the same layer and format")
        seen.add((row.layer, fmt.name))
    from trtq.predict.kernels import KV_BYTES

    for kv, omega in sensitivity.kv_cache.items():
        if kv not in KV_BYTES:
            _fail(f"kv_cache: unknown KV-cache format {kv!r} (known: {', '.join(KV_BYTES)})")
        _non_negative(omega, f"kv_cache[{kv}]")
    for i, trace in enumerate(sensitivity.traces):
        _non_negative(trace.numel, f"traces[{i}].numel")
        _non_negative(trace.iterations, f"traces[{i}].iterations")


def _runtime(name: str, where: str):
    from trtq.errors import TrtqError
    from trtq.registry.runtimes import get_runtime

    try:
        return get_runtime(name)
    except TrtqError as exc:
        _fail(f"{where}: {exc}")


def _runtime_runs(runtime, gpu, fmt, where: str) -> None:
    """The plan's runtime deploys the format on its GPU (the gate the planner applied; an edit skips it)."""
    from trtq.registry.runtimes import format_refusal

    if runtime is not None and (reason := format_refusal(gpu, fmt, runtime)) is not None:
        _fail(f"{where}: format {fmt.name} is not run by the plan's runtime {runtime.name} on {gpu.name}: {reason}")


def check_plan(plan) -> None:
    gpu = _gpu(plan.gpu, "gpu")
    runtime = _runtime(plan.runtime, "runtime") if plan.runtime is not None else None
    _non_negative(plan.launch_cost_ns, "launch_cost_ns", " ns")
    _non_negative(plan.fixed_parameter_bytes, "fixed_parameter_bytes", " bytes")
    _positive(plan.memory_budget_bytes, "memory_budget_bytes")
    candidates = []
    for f in plan.candidate_formats:
        fmt = _format(f, "candidate_formats")
        _runnable(gpu, fmt, "candidate_formats")
        candidates.append(fmt.name)
    points = []
    for i, b in enumerate(plan.budgets):
        where = f"budgets[{i}] ({b.spec})"
        _positive(b.tokens, f"{where}.tokens")
        _non_negative(b.limit_ns, f"{where}.limit_ns", " ns")
        _non_negative(b.bf16_ns, f"{where}.bf16_ns", " ns")
        _positive(b.fraction, f"{where}.fraction")
        points.append(b.point)
    if not plan.groups:
        _fail("the plan has no groups")
    groups_seen: set[str] = set()
    layer_group: dict[str, str] = {}
    for g in plan.groups:
        where = f"group {g.group}"
        if g.group in groups_seen:
            _fail(f"{where} is listed twice")
        groups_seen.add(g.group)
        if not g.members:
            _fail(f"{where} has no member layers")
        for m in g.members:
            if m in layer_group:
                _fail(f"layer {m} is in two groups ({layer_group[m]} and {g.group})")
            layer_group[m] = g.group
        _positive(g.in_features, f"{where}: in_features")
        _positive(g.out_features, f"{where}: out_features")
        fmt = _format(g.format, where)
        if fmt.name not in candidates:
            _fail(f"{where}: format {fmt.name} is not among the plan's candidate formats")
        _runnable(gpu, fmt, where)
        _runtime_runs(runtime, gpu, fmt, where)
        _group_size(fmt, g.group_size, g.in_features, where)
        if fmt.name not in g.costs:
            _fail(f"{where}: no costs for its own format {fmt.name}")
        for name, cost in g.costs.items():
            cfmt = _format(name, f"{where} costs")
            if cfmt.name not in candidates:
                _fail(f"{where}: costs for {cfmt.name}, not a candidate format")
            _non_negative(cost.omega, f"{where} {name} omega")
            _non_negative(cost.weight_bytes, f"{where} {name} weight_bytes", " bytes")
            for p in points:
                if p not in cost.latency_ns:
                    _fail(f"{where}: {name} has no latency at budget point {p}")
            for p, ns in cost.latency_ns.items():
                _non_negative(ns, f"{where} {name} latency at {p}", " ns")
    _check_fused_formats({m: (g.format, g.group) for g in plan.groups for m in g.members})
    _check_plan_totals(plan, points)
    for i, point in enumerate(plan.pareto):
        _positive(point.fraction, f"pareto[{i}].fraction")
        if point.formats and len(point.formats) != len(plan.groups):
            _fail(f"pareto[{i}] gives {len(point.formats)} formats for {len(plan.groups)} groups")
        for f in point.formats:
            if _format(f, f"pareto[{i}]").name not in candidates:
                _fail(f"pareto[{i}]: format {f} is not a candidate format")
    if plan.serving is not None:
        _check_serving(plan)
    _non_negative(plan.solver.solve_time_s, "solver.solve_time_s", " s")
    _non_negative(plan.solver.mip_rel_gap, "solver.mip_rel_gap")


def _check_serving(plan) -> None:
    """A plan solved for a workload meets its SLOs and fits its workload (the raw re-check on read)."""
    from trtq.predict.kernels import KV_BYTES

    s = plan.serving
    for name in ("isl", "osl", "concurrency", "tp"):
        _positive(getattr(s, name), f"serving.{name}")
    if s.kv_format not in KV_BYTES or plan.kv_format != s.kv_format:
        _fail(
            f"serving.kv_format {s.kv_format!r} is not a KV-cache format ({', '.join(KV_BYTES)}) or not the "
            f"plan's kv_format {plan.kv_format!r}"
        )
    _non_negative(s.kv_omega, "serving.kv_omega")
    for name, limit, value in (("TTFT", s.slo_ttft_ms, s.ttft_ms), ("TPOT", s.slo_tpot_ms, s.tpot_ms)):
        _non_negative(value, f"serving predicted {name}", " ms")
        if limit is not None:
            _positive(limit, f"serving SLO {name}")
            if value > limit * (1 + 1e-9):
                _fail(f"serving: the predicted {name} {value:.6g} ms is over the SLO {limit:g} ms")
    if s.max_concurrency < s.concurrency:
        _fail(f"serving: {s.concurrency} sequences in flight but the KV cache holds {s.max_concurrency}")


def _check_fused_formats(layer_formats: dict[str, tuple[str, str]]) -> None:
    """Layers TensorRT-LLM fuses into one GEMM (q/k/v, gate/up of one block) share one format."""
    from trtq.artifacts.layers import fused_group_name

    by_fused: dict[str, dict[str, list[str]]] = {}
    for layer, (fmt, _) in layer_formats.items():
        fused = fused_group_name(layer)
        if fused is not None:
            by_fused.setdefault(fused, {}).setdefault(fmt, []).append(layer.rsplit(".", 1)[-1])
    for fused, formats in by_fused.items():
        if len(formats) > 1:
            parts = "; ".join(f"{', '.join(kinds)} in {fmt}" for fmt, kinds in formats.items())
            _fail(
                f"fused group {fused} is split across formats ({parts}): TensorRT-LLM runs it as one GEMM in one format"
            )


def _check_plan_totals(plan, points: list[str]) -> None:
    """Totals add up over the groups: a plan with groups removed (or formats edited) is refused."""
    t = plan.totals
    groups = plan.groups
    if all("bf16" in g.costs for g in groups):
        bf16_bytes = plan.fixed_parameter_bytes + sum(g.costs["bf16"].weight_bytes for g in groups)
        if bf16_bytes != t.bf16_weight_bytes:
            layers = sum(len(g.members) for g in groups)
            _fail(
                f"the plan's {len(groups)} groups ({layers} layers) hold {bf16_bytes} bytes in bf16 with the fixed "
                f"part, but its totals say {t.bf16_weight_bytes}: groups are missing or were edited"
            )
    chosen_bytes = plan.fixed_parameter_bytes + sum(g.costs[g.format].weight_bytes for g in groups)
    if chosen_bytes != t.weight_bytes:
        _fail(
            f"totals.weight_bytes is {t.weight_bytes} but the groups' formats add up to {chosen_bytes}: "
            "the plan was edited after it was solved (re-run trtq plan)"
        )
    omega = sum(g.costs[g.format].omega for g in groups)
    if not _close(omega, t.sensitivity):
        _fail(
            f"totals.sensitivity is {t.sensitivity:.6g} but the groups' formats add up to {omega:.6g}: "
            "the plan was edited after it was solved (re-run trtq plan)"
        )
    for p in points:
        if p not in t.latency_ns or p not in t.bf16_latency_ns:
            _fail(f"totals have no latency at budget point {p}")
        ns = sum(g.costs[g.format].latency_ns[p] for g in groups)
        if not _close(ns, t.latency_ns[p]):
            _fail(
                f"totals.latency_ns[{p}] is {t.latency_ns[p]:.6g} but the groups' formats add up to {ns:.6g}: "
                "the plan was edited after it was solved (re-run trtq plan)"
            )


def check_eval(result) -> None:
    _positive(result.seq_len, "seq_len")
    _positive(result.ppl_bf16, "ppl_bf16")
    _positive(result.ppl_quant, "ppl_quant")
    _non_negative(result.threshold, "threshold")
    _non_negative(result.windows, "windows")
    _non_negative(result.tokens, "tokens")
    for name, count in result.layer_formats.items():
        _format(name, "layer_formats")
        _non_negative(count, f"layer_formats[{name}]")
    for i, task in enumerate(result.lm_eval):
        _non_negative(task.threshold, f"lm_eval[{i}].threshold")
        _non_negative(task.samples, f"lm_eval[{i}].samples")


def check_bench_run(run) -> None:
    _positive(run.isl, "isl")
    _positive(run.osl, "osl")
    for key, count in run.requests.items():
        _positive(count, f"requests[{key}]")
    for i, r in enumerate(run.runs):
        _positive(r.concurrency, f"runs[{i}].concurrency")
        _non_negative(r.wall_s, f"runs[{i}].wall_s", " s")


def check_build_record(record) -> None:
    gpu = _gpu(record.gpu, "gpu")
    _positive(record.tp_size, "tp_size")
    _positive(record.pp_size, "pp_size")
    _non_negative(record.wall_s, "wall_s", " s")
    for name in record.checkpoint.formats:
        _runnable(gpu, _format(name, "checkpoint.formats"), "checkpoint.formats")
    for i, layer in enumerate(record.checkpoint.layers):
        _runnable(
            gpu,
            _format(layer.format, f"checkpoint.layers[{i}] ({layer.layer})"),
            f"checkpoint.layers[{i}] ({layer.layer})",
        )


def check_plan_report(report) -> None:
    for name in report.candidate_formats:
        _format(name, "candidate_formats")
    _non_negative(report.weight_bytes, "weight_bytes", " bytes")
    _non_negative(report.sensitivity, "sensitivity")
    for i, point in enumerate(report.points):
        _non_negative(point.predicted_ns, f"points[{i}].predicted_ns", " ns")
        _non_negative(point.bf16_ns, f"points[{i}].bf16_ns", " ns")


VALIDATORS: dict[str, Callable[[Any], None]] = {
    "layers": check_layers,
    "profile": check_profile,
    "sensitivity": check_sensitivity,
    "plan": check_plan,
    "eval": check_eval,
    "bench_run": check_bench_run,
    "build_record": check_build_record,
    "plan_report": check_plan_report,
}


def validate_artifact(artifact) -> None:
    """Raise Offence naming the first thing wrong with `artifact` (generic checks, then its kind's)."""
    kind = type(artifact).KIND
    if not _all_finite(artifact):
        _walk_finite(kind, artifact, "")  # names the first offence (or finds only allowed infinities)
    check = VALIDATORS.get(kind)
    if check is not None:
        check(artifact)


# ---------------------------------------------------------------------------- against the model


def check_plan_covers_graph(plan, graph, where: str) -> None:
    """A plan applied to a model covers each of its quantizable layers, with fused groups on one format.

    `graph` is the model's LayerGraph (built with lm_head when the plan plans lm_head). Raises
    ArtifactError naming `where` (the plan file) and the first offence.
    """
    from trtq.errors import ArtifactError

    planned = {m: (g.format, g.in_features) for g in plan.groups for m in g.members}
    model_layers = {layer.name: layer for layer in graph.layers}
    extra = [m for m in planned if m not in model_layers]
    if extra:
        raise ArtifactError(
            f"{where}: plan layer {extra[0]} is not a quantizable layer of {graph.model}"
            + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
        )
    missing = [name for name in model_layers if name not in planned]
    if missing:
        raise ArtifactError(
            f"{where}: the plan covers {len(model_layers) - len(missing)} of {len(model_layers)} "
            f"quantizable layers of {graph.model}; first missing: {missing[0]}"
        )
    for name, (_, in_features) in planned.items():
        if model_layers[name].in_features != in_features:
            raise ArtifactError(
                f"{where}: plan layer {name} has input width {in_features}, the model's is "
                f"{model_layers[name].in_features}"
            )
    for group in graph.groups:
        formats: dict[str, list[str]] = {}
        for m in group.members:
            formats.setdefault(planned[m][0], []).append(m.rsplit(".", 1)[-1])
        if len(formats) > 1:
            parts = "; ".join(f"{', '.join(kinds)} in {fmt}" for fmt, kinds in formats.items())
            raise ArtifactError(
                f"{where}: fused group {group.name} is split across formats ({parts}): "
                "TensorRT-LLM runs it as one GEMM in one format"
            )
