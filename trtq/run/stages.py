"""The stages of `trtq run`, each a thin call of the library API that `trtq <stage>` uses, by keyword.

A stage is split into units (one per GPU where the work is per GPU); a unit reads its upstream
artifacts by their fixed place in the output tree, writes its own with trtq.artifacts.io (atomic),
and returns the files it made. The runner (trtq.run.runner) decides, from the content keys of
trtq.run.cache, which units to redo, and where they run (here, or as Ray tasks).

Layout under the output root:

    layers/all/layers.json
    profile/<GPU>/profile.json
    sensitivity/all/sensitivity.json
    front/<GPU>/front.json, budget-plan.yaml, candidates/NN.yaml   (fastest first)
    evals/<plan hash>-<settings>.json, evals/plans/<plan hash>.yaml  (shared by every GPU, never invalidated)
    select/all/selection.json, plan-<GPU>.yaml
    quantize/<GPU>/checkpoint/        eval/<GPU>/eval.json
    build/<GPU>/                      bench/<GPU>/
    report/all/compare.html, plan-<GPU>.html
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtq.errors import InfeasibleError, InputError
from trtq.run.pipeline import Pipeline

ALL = "all"


class Skip(Exception):
    """A unit that cannot run on this machine (or is switched off): the reason is printed, nothing written."""


def _text_sha(path: str | None, default: Path) -> str:
    from trtq.data import read_text_file, text_sha256

    return text_sha256(read_text_file(Path(path) if path else default))


@dataclass
class Context:
    """What every unit needs: the pipeline and the output root. Picklable, so Ray tasks get it too."""

    pipeline: Pipeline
    root: Path
    _model: Any = field(default=None, repr=False, compare=False)

    # ---------------------------------------------------------------- places
    def unit_dir(self, stage: str, unit: str) -> Path:
        return self.root / stage / unit

    def layers_path(self) -> Path:
        return self.unit_dir("layers", ALL) / "layers.json"

    def profile_path(self, gpu: str) -> Path:
        return self.unit_dir("profile", gpu) / "profile.json"

    def sensitivity_path(self) -> Path:
        return self.unit_dir("sensitivity", ALL) / "sensitivity.json"

    def front_path(self, gpu: str) -> Path:
        return self.unit_dir("front", gpu) / "front.json"

    def selection_path(self) -> Path:
        return self.unit_dir("select", ALL) / "selection.json"

    def selected_plan_path(self, gpu: str) -> Path:
        return self.unit_dir("select", ALL) / f"plan-{gpu}.yaml"

    def checkpoint_dir(self, gpu: str) -> Path:
        return self.unit_dir("quantize", gpu) / "checkpoint"

    def eval_path(self, gpu: str) -> Path:
        return self.unit_dir("eval", gpu) / "eval.json"

    def evals_dir(self) -> Path:
        return self.root / "evals"

    # ---------------------------------------------------------------- texts and the model
    def calibration_sha(self) -> str:
        from trtq.data import CALIBRATION_PATH

        return _text_sha(self.pipeline.texts.calibration, CALIBRATION_PATH)

    def evaluation_sha(self) -> str:
        from trtq.data import EVALUATION_PATH

        return _text_sha(self.pipeline.texts.evaluation, EVALUATION_PATH)

    def model(self):
        """(model, tokenizer), loaded once per process (a Ray worker keeps its own)."""
        if self._model is None:
            from trtq.model.device import resolve_placement
            from trtq.model.zoo import load_pretrained, resolve_model

            # Checked here, where the stage runs (a Ray worker may hold the GPU the head node lacks).
            placement = resolve_placement(self.pipeline.compute.device, self.pipeline.compute.dtype)
            self._model = load_pretrained(
                resolve_model(self.pipeline.model), dtype=placement.dtype, device=placement.device
            )
        return self._model

    def __getstate__(self):
        return {"pipeline": self.pipeline, "root": self.root, "_model": None}


# -------------------------------------------------------------------- layers, profile, sensitivity


def run_layers(ctx: Context, unit: str, out: Path, say) -> tuple[list[Path], dict]:
    from trtq.artifacts import save_artifact
    from trtq.model.families import config_layer_graph
    from trtq.model.zoo import resolve_model

    resolved = resolve_model(ctx.pipeline.model)
    graph = config_layer_graph(resolved)
    if graph is None:
        from trtq.model.layers import build_layer_graph

        graph = build_layer_graph(resolved)
    path = save_artifact(graph, out / "layers.json")
    return [path], {"layers": len(graph.layers), "groups": len(graph.groups)}


def _graph(ctx: Context):
    from trtq.artifacts import load_artifact
    from trtq.artifacts.layers import LayerGraph

    return load_artifact(ctx.layers_path(), LayerGraph)


def run_profile(ctx: Context, gpu: str, out: Path, say) -> tuple[list[Path], dict]:
    from trtq.artifacts import save_artifact
    from trtq.profile.api import build_profile

    settings = ctx.pipeline.profile
    profile = build_profile(
        _graph(ctx),
        settings.backend,
        "auto" if settings.backend == "cuda" else gpu,
        list(settings.tokens),
        launch_cost_ns=settings.launch_cost_ns,
        runtime=ctx.pipeline.runtime,
    )
    path = save_artifact(profile, out / "profile.json")
    return [path], {"rows": len(profile.rows)}


def run_sensitivity(ctx: Context, unit: str, out: Path, say) -> tuple[list[Path], dict]:
    from trtq.artifacts import save_artifact
    from trtq.sensitivity.api import compute_sensitivity
    from trtq.sensitivity.request import METHOD_SETTINGS, SensitivityRequest

    s, compute = ctx.pipeline.sensitivity, ctx.pipeline.compute
    # The settings the method reads (the request refuses the rest, as `trtq sensitivity` does).
    read = dict(samples=s.samples, seq_len=s.seq_len, calib=ctx.pipeline.texts.calibration, max_iterations=s.probes)
    request = SensitivityRequest.model_validate(
        dict(
            model=ctx.pipeline.model,
            method=s.method,
            formats=s.formats,
            seed=s.seed,
            device=compute.device,
            dtype=compute.dtype,
            sequential=compute.sequential,
            **{k: v for k, v in read.items() if v is not None and s.method in METHOD_SETTINGS[k]},
        )
    )
    target = out / "sensitivity.json"
    if compute.sequential:  # reads the weights itself, block by block, resumable from beside the output
        from trtq.sensitivity.api import checkpoint_dir_for
        from trtq.sensitivity.sequential import remove_checkpoint

        checkpoint_dir = checkpoint_dir_for(str(target))
        table = compute_sensitivity(request, checkpoint_dir=checkpoint_dir)
    else:
        model, tokenizer = ctx.model()
        table = compute_sensitivity(request, model=model, tokenizer=tokenizer)
    path = save_artifact(table, target)
    if compute.sequential:
        remove_checkpoint(checkpoint_dir)
    return [path], {"method": table.method, "rows": len(table.rows)}


# -------------------------------------------------------------------- front


def run_front(ctx: Context, gpu: str, out: Path, say) -> tuple[list[Path], dict]:
    """The plan at the budgets with its Pareto front; every distinct plan of the front as a plan file.

    A front point is re-solved as a plan whose every budget is the point's common fraction of
    all-bf16, so each candidate is a full plan artifact (what quantize and build take).
    """
    from trtq.artifacts import load_artifact, make_metadata, save_artifact
    from trtq.artifacts.plan import Plan
    from trtq.artifacts.profile import Profile
    from trtq.artifacts.run import Front, FrontCandidate
    from trtq.artifacts.sensitivity import Sensitivity
    from trtq.plan.api import solve_plan
    from trtq.plan.budgets import parse_budgets
    from trtq.registry import get_gpu
    from trtq.run.select import plan_hash

    p = ctx.pipeline
    graph = _graph(ctx)
    profile = load_artifact(ctx.profile_path(gpu), Profile)
    sensitivity = load_artifact(ctx.sensitivity_path(), Sensitivity)
    spec = get_gpu(gpu)
    inputs = {"profile": ctx.profile_path(gpu), "sensitivity": ctx.sensitivity_path()}

    def front_artifact(**fields) -> Front:
        return Front(
            artifact=Front.KIND,
            schema_version=Front.SCHEMA_VERSION,
            metadata=make_metadata(inputs=inputs),
            model=graph.model,
            gpu=gpu,
            budgets=list(p.plan.budgets),
            **fields,
        )

    points = [b.point for b in parse_budgets(p.plan.budgets)]
    # The front is the budgets' (latency and memory alone); with a workload, the budget plan and every candidate
    # are solved with its SLOs and KV-cache choice too.
    serving = p.plan.workload is not None
    budgets_only: dict[str, Any] = dict(workload=None, slos=[], kv_formats=None)

    def solve(budgets: list[str], **fields) -> Plan:
        request = p.plan.request(p.runtime, budgets=budgets, **fields)
        return solve_plan(graph, profile, sensitivity, spec, request, inputs=inputs)

    budget_plan: Plan | None = None
    budgets_missed: str | None = None
    try:
        # The front sweeps the budgets' points (one fraction of all-bf16 on each).
        front = solve(list(p.plan.budgets), **budgets_only)
        budget_plan = solve(list(p.plan.budgets), pareto=None) if serving else front
    except InfeasibleError as exc:
        # The budgets are where the user hoped to be; what this GPU can do is its front, fastest feasible
        # plan to all-bf16 (measured tables often say a format does not pay on a GPU). The gate selects from
        # that front, and the selection says the budgets were not met, and why.
        budgets_missed = str(exc)
        try:
            front = solve([f"{point}=1" for point in points], **budgets_only)
        except InfeasibleError as exc:  # no plan at all: a memory budget, or no format the runtime runs
            path = save_artifact(front_artifact(status="infeasible", reason=str(exc)), out / "front.json")
            return [path], {"status": "infeasible"}
    files = [save_artifact(budget_plan, out / "budget-plan.yaml")] if budget_plan is not None else []
    candidates: list[FrontCandidate] = []
    seen: set[str] = set()
    (out / "candidates").mkdir(exist_ok=True)
    for point in front.pareto:
        if point.totals is None:
            continue
        budgets = [f"{b}={point.fraction * (1 + 1e-9):.12g}" for b in points]
        try:
            # At the gap the front was swept to: the candidate is that point's plan, written out whole (at the
            # planner's finer default gap a near-tie knapsack, bf16/fp8 on a small model, can take minutes).
            candidate = solve(budgets, pareto=None, mip_rel_gap=front.solver.pareto_mip_rel_gap)
        except InfeasibleError:
            continue  # at its fraction within the solver's tolerance, or (with a workload) over an SLO
        h = plan_hash(candidate.model, candidate.layer_formats())
        if h in seen:
            continue
        seen.add(h)
        path = save_artifact(candidate, out / "candidates" / f"{len(candidates):02d}.yaml")
        files.append(path)
        t = candidate.totals
        fraction = max(t.latency_ns[b] / t.bf16_latency_ns[b] for b in points)
        candidates.append(
            FrontCandidate(
                plan=str(path.relative_to(out)),
                plan_hash=h,
                fraction=fraction,
                omega=t.sensitivity,
                weight_bytes=t.weight_bytes,
            )
        )
    candidates.sort(key=lambda c: (c.fraction, c.omega))
    if not candidates:  # with a workload: no plan of the front meets its SLOs
        reason = budgets_missed or "no plan on the front meets the workload's SLOs"
        path = save_artifact(front_artifact(status="infeasible", reason=reason), out / "front.json")
        return [*files, path], {"status": "infeasible"}
    missed = f"budgets not met: {budgets_missed}" if budgets_missed else None
    budget_file = "budget-plan.yaml" if budget_plan is not None else None
    files.append(
        save_artifact(
            front_artifact(status="planned", reason=missed, budget_plan=budget_file, candidates=candidates),
            out / "front.json",
        )
    )
    if missed:
        say(f"{gpu}: {missed}")
    say(f"{gpu}: {len(candidates)} distinct plans on the front")
    return files, {"status": "planned", "candidates": len(candidates)}


# -------------------------------------------------------------------- evaluations (the select stage's work)


def eval_settings_key(ctx: Context) -> str:
    """What a measurement depends on (not the thresholds: changing the gate re-judges, never re-measures)."""
    from trtq.run.cache import content_key

    q = ctx.pipeline.quality
    return content_key(
        model=ctx.pipeline.model,
        seq_len=q.seq_len,
        windows=q.windows,
        calib_samples=q.calib_samples,
        seed=q.seed,
        lm_eval=sorted(q.lm_eval),
        lm_eval_limit=q.lm_eval_limit,
        evaluation=ctx.evaluation_sha(),
        calibration=ctx.calibration_sha(),
        compute=ctx.pipeline.compute.model_dump(mode="json"),
    )[:12]


def eval_result_path(ctx: Context, plan_hash: str, settings_key: str) -> Path:
    return ctx.evals_dir() / f"{plan_hash}-{settings_key}.json"


def evaluation_plan_path(ctx: Context, plan_hash: str) -> Path:
    return ctx.evals_dir() / "plans" / f"{plan_hash}.yaml"


def evaluate_plan(ctx: Context, plan_hash: str, settings_key: str) -> Path:
    """Measure one plan (ModelOpt fake quantization, trtq.eval.gate) and cache the EvalResult by plan hash."""
    from trtq.artifacts import save_artifact

    target = eval_result_path(ctx, plan_hash, settings_key)
    if target.is_file():
        return target
    q = ctx.pipeline.quality
    request = _eval_request(
        ctx,
        plan=str(evaluation_plan_path(ctx, plan_hash)),
        calib=ctx.pipeline.texts.calibration,
        calib_samples=q.calib_samples,
        calib_seq_len=q.seq_len,
        seed=q.seed,
    )
    return save_artifact(_evaluate(ctx, request, target), target)


def _compute(ctx: Context) -> dict:
    """The pipeline's compute section, as the stage requests' device, dtype and sequential fields."""
    return ctx.pipeline.compute.model_dump()


def _eval_request(ctx: Context, **source):
    """`trtq eval`'s request for the pipeline's quality gate, texts and compute section; `source`: the plan
    (and its calibration) or the checkpoint."""
    from trtq.eval.gate import EvalRequest

    q = ctx.pipeline.quality
    return EvalRequest(
        model=ctx.pipeline.model,
        text=ctx.pipeline.texts.evaluation,
        seq_len=q.seq_len,
        windows=q.windows,
        max_ppl_increase=q.max_ppl_increase,
        lm_eval=",".join(f"{k}={v}" for k, v in q.lm_eval.items()) or None,
        lm_eval_limit=q.lm_eval_limit,
        **_compute(ctx),
        **source,
    )


def _evaluate(ctx: Context, request, beside: Path):
    """`evaluate` on the pipeline's loaded model, or, with compute.sequential, on weights it reads itself."""
    from trtq.eval.gate import evaluate

    if request.sequential:
        return evaluate(request, work_beside=beside)
    model, tokenizer = ctx.model()
    return evaluate(request, model=model, tokenizer=tokenizer)


def judge(ctx: Context, result) -> tuple[bool, float | None]:
    """The pipeline's gate on a measurement: (passed, relative increase or None if it overflowed)."""
    import math

    q = ctx.pipeline.quality
    increase = result.relative_increase if math.isfinite(result.relative_increase) else None
    passed = increase is not None and increase <= q.max_ppl_increase / 100.0
    for task in result.lm_eval:
        passed = passed and task.degradation <= q.lm_eval.get(task.task, float("inf")) / 100.0
    return passed, increase


# -------------------------------------------------------------------- after the selection


def _selection(ctx: Context):
    from trtq.artifacts import load_artifact
    from trtq.artifacts.run import Selection

    return load_artifact(ctx.selection_path(), Selection)


def selected_gpus(ctx: Context) -> list[str]:
    """GPUs with a selected plan (read from the selection), filtered by quantize.gpus."""
    chosen = [g.gpu for g in _selection(ctx).gpus if g.status == "selected"]
    wanted = ctx.pipeline.quantize.gpus
    return [g for g in chosen if not wanted or g in wanted]


def _require_selected(ctx: Context, gpu: str) -> Path:
    plan = ctx.selected_plan_path(gpu)
    if not plan.is_file():
        raise Skip(f"{gpu} has no selected plan")
    return plan


def run_quantize(ctx: Context, gpu: str, out: Path, say) -> tuple[list[Path], dict]:
    from trtq.quantize.api import quantize_from_plan
    from trtq.quantize.request import QuantizeRequest

    if not ctx.pipeline.quantize.enabled:
        raise Skip("quantize.enabled is false")
    plan = _require_selected(ctx, gpu)
    q = ctx.pipeline.quality
    request = QuantizeRequest(
        model=ctx.pipeline.model,
        plan=str(plan),
        runtime=ctx.pipeline.runtime,
        calib=ctx.pipeline.texts.calibration,
        calib_samples=q.calib_samples,
        calib_seq_len=q.seq_len,
        seed=q.seed,
        **_compute(ctx),
    )
    checkpoint = quantize_from_plan(request, out / "checkpoint")
    return [Path(checkpoint)], {}


def run_eval(ctx: Context, gpu: str, out: Path, say) -> tuple[list[Path], dict]:
    """The exported checkpoint itself, as shipped, against bf16 on the evaluation text."""
    from trtq.artifacts import save_artifact
    from trtq.eval.gate import verdict

    checkpoint = ctx.checkpoint_dir(gpu)
    if not checkpoint.is_dir():
        raise Skip(f"{gpu} has no quantized checkpoint")
    result = _evaluate(ctx, _eval_request(ctx, checkpoint=str(checkpoint)), out / "eval.json")
    path = save_artifact(result, out / "eval.json")
    say(f"{gpu} checkpoint: {verdict(result)}")
    return [path], {"passed": result.passed, "relative_increase": result.relative_increase}


def _require_container(what: str) -> None:
    if importlib.util.find_spec("tensorrt_llm") is None:
        raise Skip(
            f"{what} needs TensorRT-LLM, which is not installed here: run the pipeline in the NGC "
            "container (docker/README.md)"
        )


def run_build(ctx: Context, gpu: str, out: Path, say) -> tuple[list[Path], dict]:
    import argparse

    from trtq.build.commands import run_build_command

    if not ctx.pipeline.build.enabled:
        raise Skip("build.enabled is false")
    _require_container("build")
    if not ctx.checkpoint_dir(gpu).is_dir():
        raise Skip(f"{gpu} has no quantized checkpoint")
    b = ctx.pipeline.build
    # `trtq build`'s own handler, given its options by name (it writes build_record.json atomically).
    run_build_command(
        argparse.Namespace(
            checkpoint=str(ctx.checkpoint_dir(gpu)),
            gpu=gpu,
            runtime=ctx.pipeline.runtime,
            backend=b.backend,
            tp=b.tp,
            pp=None,
            max_batch_size=b.max_batch_size,
            max_input_len=None,
            max_seq_len=b.max_seq_len,
            max_num_tokens=None,
            free_gpu_memory_fraction=None,
            dry_run=False,
            output=str(out / "engine"),
        )
    )
    return [out / "engine"], {}


def run_bench(ctx: Context, gpu: str, out: Path, say) -> tuple[list[Path], dict]:
    from trtq.bench.runner import SweepRequest, run_sweep

    if not ctx.pipeline.bench.enabled:
        raise Skip("bench.enabled is false")
    _require_container("bench")
    engine = ctx.unit_dir("build", gpu) / "engine"
    if not (engine / "build_record.json").is_file():
        raise Skip(f"{gpu} has no build")
    b = ctx.pipeline.bench
    run_sweep(
        SweepRequest(
            model=ctx.pipeline.model,
            concurrencies=list(b.concurrency),
            isl=b.isl,
            osl=b.osl,
            output=out / "bench",
            engine=engine,
            requests=b.requests,
            tool=b.tool,
            gpu=gpu,
            plan=ctx.selected_plan_path(gpu),
        )
    )
    return [out / "bench"], {}


def run_report(ctx: Context, unit: str, out: Path, say) -> tuple[list[Path], dict]:
    from trtq.report.render import write_comparison_report, write_plan_report

    if not ctx.pipeline.report.enabled:
        raise Skip("report.enabled is false")
    selection = _selection(ctx)
    gpus = [g.gpu for g in selection.gpus if g.status == "selected"]
    if not gpus:
        raise Skip("no GPU has a selected plan")
    from trtq.artifacts import load_artifact
    from trtq.artifacts.plan import Plan

    plans = [ctx.selected_plan_path(g) for g in gpus]
    # The selection already holds each GPU to the measured gate: compare the selected plans themselves (the
    # report's default would hold every GPU to the strictest plan's sum of Omega instead).
    bound = max(load_artifact(path, Plan).totals.sensitivity for path in plans)
    # Served at the pipeline's workload, or at the bench's heaviest point when it names none.
    b = ctx.pipeline.bench
    workload = ctx.pipeline.plan.workload or f"isl={b.isl},osl={b.osl},concurrency={max(b.concurrency)}"
    files = [write_comparison_report(plans, out / "compare.html", quality_bound=bound, workload=workload)]
    files.append(out / "compare.json")
    for g in gpus:
        evaluated = ctx.eval_path(g)
        files.append(
            write_plan_report(
                ctx.selected_plan_path(g),
                out / f"plan-{g}.html",
                profile=ctx.profile_path(g),
                sensitivity=ctx.sensitivity_path(),
                eval_result=evaluated if evaluated.is_file() else None,
            )
        )
        json_twin = out / f"plan-{g}.json"
        if json_twin.is_file():
            files.append(json_twin)
    return files, {"gpus": gpus}


UNIT_FUNCTIONS = {
    "layers": run_layers,
    "profile": run_profile,
    "sensitivity": run_sensitivity,
    "front": run_front,
    "quantize": run_quantize,
    "eval": run_eval,
    "build": run_build,
    "bench": run_bench,
    "report": run_report,
}


def run_unit(ctx: Context, stage: str, unit: str, out: Path, say) -> tuple[list[Path], dict]:
    if stage not in UNIT_FUNCTIONS:
        raise InputError(f"no unit function for stage {stage}")
    return UNIT_FUNCTIONS[stage](ctx, unit, out, say)
