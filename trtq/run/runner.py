"""`trtq run`: the stages in order, each unit redone only when its content key changed.

Keys (trtq.run.cache.content_key) chain: a unit's key holds its settings and the sha256 of every
upstream artifact it reads, so a changed budget changes the fronts' keys and, through their files,
everything after them, while layers, profiles and sensitivity stay cached.

With `--ray`, the independent units (per-GPU profiles and fronts, the sensitivity, each round's
plan evaluations, per-GPU quantize and eval) run as Ray tasks, with `num_gpus=1` where the work
needs CUDA; the artifacts land in the same tree (on a cluster: a file system every node mounts).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtq.errors import InputError
from trtq.run.cache import StageCache, content_key
from trtq.run.pipeline import STAGES, Pipeline
from trtq.run.stages import ALL, Context, Skip

PER_GPU = {"profile", "front", "quantize", "eval", "build", "bench"}


@dataclass
class StageReport:
    stage: str
    unit: str
    status: str  # ran | cached | skipped
    seconds: float
    detail: str = ""


@dataclass
class RunResult:
    reports: list[StageReport] = field(default_factory=list)

    def ran(self) -> list[tuple[str, str]]:
        return [(r.stage, r.unit) for r in self.reports if r.status == "ran"]


class Runner:
    def __init__(
        self,
        pipeline: Pipeline,
        *,
        from_stage: str | None = None,
        only: str | None = None,
        force: bool = False,
        ray_address: str | None = None,
        progress: Any = None,
        log: Callable[[str], None] | None = None,
        model: Any = None,
    ):
        for option, stage in (("--from", from_stage), ("--only", only)):
            if stage is not None and stage not in STAGES:
                raise InputError(f"{option}: unknown stage {stage!r}; stages: {', '.join(STAGES)}")
        if from_stage and only:
            raise InputError("give --from or --only, not both")
        # Absolute paths: a Ray worker does not share the driver's working directory.
        pipeline = pipeline.model_copy(deep=True)
        pipeline.output = str(Path(pipeline.output).resolve())
        for name in ("calibration", "evaluation"):
            if getattr(pipeline.texts, name):
                setattr(pipeline.texts, name, str(Path(getattr(pipeline.texts, name)).resolve()))
        self.pipeline = pipeline
        # model: (model, tokenizer) already loaded in this process (read only), for the units run here.
        self.ctx = Context(pipeline=pipeline, root=Path(pipeline.output), _model=model)
        self.cache = StageCache(self.ctx.root)
        self.from_stage, self.only, self.force = from_stage, only, force
        self.ray_address = ray_address
        self.progress = progress
        self.log = log or (lambda message: None)
        self.result = RunResult()
        self.keys: dict[tuple[str, str], str] = {}
        self.files: dict[tuple[str, str], dict[str, str]] = {}
        self._ray: Any = None  # the ray module once connected (untyped library)

    # ---------------------------------------------------------------- policy
    def _forced(self, stage: str) -> bool:
        if self.force:
            return True
        if self.only:
            return stage == self.only
        if self.from_stage:
            return STAGES.index(stage) >= STAGES.index(self.from_stage)
        return False

    def _wanted(self, stage: str) -> bool:
        return self.only is None or stage == self.only

    def _step(self, text: str) -> None:
        if self.progress is not None:
            self.progress(text)

    # ---------------------------------------------------------------- keys
    def _upstream(self, *units: tuple[str, str]) -> dict[str, dict[str, str]]:
        return {f"{s}/{u}": self.files.get((s, u), {}) for s, u in units}

    def key_for(self, stage: str, unit: str) -> str:
        p, gpus = self.pipeline, self.pipeline.gpu_names()
        if stage == "layers":
            from trtq.model.zoo import resolve_model

            resolved = resolve_model(p.model)
            return content_key(stage=stage, model=resolved.name, config=resolved.config)
        if stage == "profile":
            return content_key(
                stage=stage,
                gpu=unit,
                profile=p.profile.model_dump(mode="json"),
                runtime=p.runtime,
                up=self._upstream(("layers", ALL)),
            )
        if stage == "sensitivity":
            return content_key(
                stage=stage,
                settings=p.sensitivity.model_dump(mode="json"),
                compute=p.compute.model_dump(mode="json"),
                calibration=self.ctx.calibration_sha(),
                up=self._upstream(("layers", ALL)),
            )
        if stage == "front":
            return content_key(
                stage=stage,
                gpu=unit,
                plan=p.plan.model_dump(mode="json"),
                runtime=p.runtime,
                up=self._upstream(("layers", ALL), ("profile", unit), ("sensitivity", ALL)),
            )
        if stage == "select":
            return content_key(
                stage=stage,
                quality=p.quality.model_dump(mode="json"),
                compute=p.compute.model_dump(mode="json"),
                texts=[self.ctx.evaluation_sha(), self.ctx.calibration_sha()],
                prices={g.name: g.price_per_hour for g in p.gpus},
                up=self._upstream(*[("front", g) for g in gpus]),
            )
        if stage == "quantize":
            return content_key(
                stage=stage,
                gpu=unit,
                quality=p.quality.model_dump(mode="json"),
                compute=p.compute.model_dump(mode="json"),
                calibration=self.ctx.calibration_sha(),
                runtime=p.runtime,
                plan=self.files.get(("select", ALL), {}).get(f"plan-{unit}.yaml"),
            )
        if stage == "eval":
            return content_key(
                stage=stage,
                gpu=unit,
                quality=p.quality.model_dump(mode="json"),
                compute=p.compute.model_dump(mode="json"),
                evaluation=self.ctx.evaluation_sha(),
                up=self._upstream(("quantize", unit)),
            )
        if stage == "build":
            return content_key(
                stage=stage,
                gpu=unit,
                build=p.build.model_dump(mode="json"),
                runtime=p.runtime,
                up=self._upstream(("quantize", unit)),
            )
        if stage == "bench":
            return content_key(
                stage=stage, gpu=unit, bench=p.bench.model_dump(mode="json"), up=self._upstream(("build", unit))
            )
        if stage == "report":
            units = [("select", ALL), ("sensitivity", ALL)] + [(s, g) for g in gpus for s in ("profile", "eval")]
            return content_key(stage=stage, up=self._upstream(*units))
        raise InputError(f"no key for stage {stage}")

    # ---------------------------------------------------------------- units
    def units(self, stage: str) -> list[str]:
        if stage not in PER_GPU:
            return [ALL]
        if stage in ("profile", "front"):
            return self.pipeline.gpu_names()
        from trtq.run.stages import selected_gpus

        return selected_gpus(self.ctx) if self.ctx.selection_path().is_file() else []

    def _cached(self, stage: str, unit: str, key: str):
        if self._forced(stage):
            return None
        return self.cache.lookup(stage, unit, key)

    def _settle(self, stage: str, unit: str, key: str) -> bool:
        """Use the cache if it holds this unit; True if nothing is left to do."""
        self.keys[(stage, unit)] = key
        done = self._cached(stage, unit, key)
        if done is not None:
            self.files[(stage, unit)] = done.files
            self.result.reports.append(StageReport(stage, unit, "cached", 0.0))
            self.log(f"{stage} {unit}: cached")
            return True
        if not self._wanted(stage) or (self.from_stage and STAGES.index(stage) < STAGES.index(self.from_stage)):
            raise InputError(
                f"stage {stage} ({unit}) has no up-to-date artifact in {self.ctx.root}: run without --from/--only first"
            )
        return False

    def _finish(self, stage: str, unit: str, started: float, outcome) -> None:
        seconds = time.perf_counter() - started
        if isinstance(outcome, Skip):
            self.result.reports.append(StageReport(stage, unit, "skipped", seconds, str(outcome)))
            self.log(f"{stage} {unit}: skipped: {outcome}")
            self.files[(stage, unit)] = {}
            return
        files, summary = outcome
        done = self.cache.complete(stage, unit, self.keys[(stage, unit)], files, summary, seconds)
        self.files[(stage, unit)] = done.files
        self.result.reports.append(StageReport(stage, unit, "ran", seconds))
        self.log(f"{stage} {unit}: done in {seconds:.1f} s")

    def run_stage(self, stage: str) -> None:
        if stage == "select":
            self.run_select()
            return
        todo = []
        for unit in self.units(stage):
            if not self._settle(stage, unit, self.key_for(stage, unit)):
                todo.append(unit)
        if not todo:
            return
        if self._ray is not None and stage in ("profile", "front", "sensitivity", "quantize", "eval"):
            self._run_units_on_ray(stage, todo)
            return
        for unit in todo:
            self._step(f"{stage} {unit}")
            started = time.perf_counter()
            out = self.cache.begin(stage, unit)
            try:
                outcome = _execute(self.ctx, stage, unit, out, self.log)
            except Skip as skip:
                outcome = skip
            self._finish(stage, unit, started, outcome)

    def _run_units_on_ray(self, stage: str, units: list[str]) -> None:
        ray = self._ray
        remote = ray.remote(_ray_unit).options(num_cpus=1, num_gpus=self._gpus_for(stage))
        started = time.perf_counter()
        refs = {}
        for unit in units:
            self._step(f"{stage} {unit} (ray)")
            refs[unit] = remote.remote(
                self.pipeline.model_dump(mode="json"), str(self.ctx.root), stage, unit, self.keys[(stage, unit)]
            )
        for unit, ref in refs.items():
            outcome = ray.get(ref)
            if isinstance(outcome, str):
                self._finish(stage, unit, started, Skip(outcome))
                continue
            done = self.cache.lookup(stage, unit, self.keys[(stage, unit)])
            if done is None:
                raise InputError(
                    f"ray task {stage} {unit} finished without its artifacts in {self.ctx.root}: "
                    "is the output root on a file system every node mounts?"
                )
            self.files[(stage, unit)] = done.files
            self.result.reports.append(StageReport(stage, unit, "ran", done.seconds))
            self.log(f"{stage} {unit}: done on ray in {done.seconds:.1f} s")

    def _gpus_for(self, stage: str) -> float:
        """num_gpus of a stage's Ray task: CUDA profiling always; model work where the cluster has GPUs."""
        if stage == "profile":
            return 1 if self.pipeline.profile.backend == "cuda" else 0
        if stage in ("sensitivity", "eval", "quantize", "evaluate"):
            return 1 if self._ray.cluster_resources().get("GPU", 0) > 0 else 0
        return 0

    # ---------------------------------------------------------------- the selection
    def run_select(self) -> None:
        from trtq.artifacts import load_artifact, make_metadata, save_artifact
        from trtq.artifacts.eval import EvalResult
        from trtq.artifacts.io import atomic_write_bytes
        from trtq.artifacts.run import Evaluation, Front, GpuSelection, Selection
        from trtq.plan.budgets import parse_budgets
        from trtq.run.select import Candidate, Outcome, select_fastest_passing
        from trtq.run.stages import eval_result_path, eval_settings_key, evaluate_plan, evaluation_plan_path, judge

        stage, unit = "select", ALL
        if self._settle(stage, unit, self.key_for(stage, unit)):
            return
        started = time.perf_counter()
        out = self.cache.begin(stage, unit)
        p, ctx = self.pipeline, self.ctx
        settings_key = eval_settings_key(ctx)
        fronts, candidates_by_gpu = {}, {}
        plan_files: dict[str, Path] = {}
        for gpu in p.gpu_names():
            front = load_artifact(ctx.front_path(gpu), Front)
            fronts[gpu] = front
            cands = []
            for c in front.candidates:
                cands.append(Candidate(plan_hash=c.plan_hash, omega=c.omega, fraction=c.fraction))
                plan_files.setdefault(c.plan_hash, ctx.front_path(gpu).parent / c.plan)
            if front.status == "planned":
                candidates_by_gpu[gpu] = cands
        results: dict[str, EvalResult] = {}

        def outcome_of(h: str) -> Outcome:
            passed, increase = judge(ctx, results[h])
            return Outcome(passed=passed, relative_increase=increase)

        known = {}
        for h in plan_files:
            path = eval_result_path(ctx, h, settings_key)
            if path.is_file():
                results[h] = load_artifact(path, EvalResult)
                known[h] = outcome_of(h)
        cached = set(known)

        def evaluate(batch: list[Candidate]) -> dict[str, Outcome]:
            for c in batch:
                target = evaluation_plan_path(ctx, c.plan_hash)
                if not target.is_file():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_bytes(target, plan_files[c.plan_hash].read_bytes())
            self._step(f"select: evaluating {len(batch)} plan(s): {', '.join(c.plan_hash[:8] for c in batch)}")
            if self._ray is not None:
                remote = self._ray.remote(_ray_evaluate).options(num_cpus=1, num_gpus=self._gpus_for("evaluate"))
                paths = self._ray.get(
                    [remote.remote(p.model_dump(mode="json"), str(ctx.root), c.plan_hash, settings_key) for c in batch]
                )
            else:
                paths = []
                for i, c in enumerate(batch):
                    self._step(f"select: evaluating plan {c.plan_hash[:8]} ({i + 1}/{len(batch)})")
                    paths.append(evaluate_plan(ctx, c.plan_hash, settings_key))
            for c, path in zip(batch, paths):
                results[c.plan_hash] = load_artifact(path, EvalResult)
                self.log(
                    f"select: plan {c.plan_hash[:8]} (sum Omega {c.omega:.4g}): "
                    f"{100 * results[c.plan_hash].relative_increase:+.2f}% perplexity"
                )
            return {c.plan_hash: outcome_of(c.plan_hash) for c in batch}

        threshold = p.quality.max_ppl_increase / 100.0
        found = select_fastest_passing(candidates_by_gpu, evaluate, known=known, threshold=threshold)
        budgets = parse_budgets(p.plan.budgets)
        gpu_rows, files = [], []
        for entry in p.gpus:
            gpu, front = entry.name, fronts[entry.name]
            if front.status != "planned":
                gpu_rows.append(
                    GpuSelection(gpu=gpu, status="infeasible", reason=front.reason, price_per_hour=entry.price_per_hour)
                )
                continue
            index = found.selected[gpu]
            evaluations = []
            for h in found.probed[gpu]:
                c = next(c for c in front.candidates if c.plan_hash == h)
                o = found.outcomes[h]
                evaluations.append(
                    Evaluation(
                        plan_hash=h,
                        omega=c.omega,
                        relative_increase=o.relative_increase,
                        passed=o.passed,
                        eval=str(eval_result_path(ctx, h, settings_key).relative_to(ctx.root)),
                    )
                )
            row: dict[str, Any] = dict(
                gpu=gpu,
                candidates=len(front.candidates),
                probed=found.probed[gpu],
                evaluations=evaluations,
                price_per_hour=entry.price_per_hour,
            )
            if index is None:
                gpu_rows.append(
                    GpuSelection(status="none_passes", reason="no plan on the front passes the gate", **row)
                )
                continue
            chosen = front.candidates[index]
            source = ctx.front_path(gpu).parent / chosen.plan
            target = ctx.selected_plan_path(gpu)
            atomic_write_bytes(target, source.read_bytes())
            files.append(target)
            within = all(b.fraction is None or chosen.fraction <= b.fraction * (1 + 1e-9) for b in budgets)
            gpu_rows.append(
                GpuSelection(
                    status="selected",
                    selected=index,
                    plan=str(target.relative_to(ctx.root)),
                    fraction=chosen.fraction,
                    within_budgets=within,
                    reason=front.reason,
                    **row,
                )
            )
        selection = Selection(
            artifact=Selection.KIND,
            schema_version=Selection.SCHEMA_VERSION,
            metadata=make_metadata(inputs={f"front-{g}": ctx.front_path(g) for g in p.gpu_names()}),
            model=p.model,
            max_ppl_increase=p.quality.max_ppl_increase,
            lm_eval=dict(p.quality.lm_eval),
            gpus=gpu_rows,
            evaluations_run=found.evaluations_run,
            evaluations_cached=len({h for hs in found.probed.values() for h in hs} & cached),
            fit=found.fit.describe() if found.fit is not None else None,
        )
        files.append(save_artifact(selection, out / "selection.json"))
        self._finish(stage, unit, started, (files, {"evaluations_run": found.evaluations_run}))

    # ---------------------------------------------------------------- the whole run
    def run(self) -> RunResult:
        if self.ray_address is not None:
            self._ray = _connect_ray(self.ray_address)
        self.ctx.root.mkdir(parents=True, exist_ok=True)
        for stage in STAGES:
            if self.only and STAGES.index(stage) > STAGES.index(self.only):
                break  # --only: nothing after it
            self.run_stage(stage)
        return self.result


def _execute(ctx: Context, stage: str, unit: str, out: Path, say):
    from trtq.run.stages import run_unit

    return run_unit(ctx, stage, unit, out, say)


def _ray_unit(pipeline_data: dict, root: str, stage: str, unit: str, key: str):
    """One unit as a Ray task: the same function, the same tree, its marker written here."""
    ctx = Context(pipeline=Pipeline.model_validate(pipeline_data), root=Path(root))
    cache = StageCache(ctx.root)
    started = time.perf_counter()
    out = cache.begin(stage, unit)
    try:
        files, summary = _execute(ctx, stage, unit, out, lambda message: None)
    except Skip as skip:
        return str(skip)
    cache.complete(stage, unit, key, files, summary, time.perf_counter() - started)
    return None


_WORKER_CONTEXTS: dict[tuple[str, str], Context] = {}


def _ray_evaluate(pipeline_data: dict, root: str, plan_hash: str, settings_key: str) -> str:
    """One plan's evaluation as a Ray task; a worker keeps its loaded model for the next plan."""
    from trtq.run.stages import evaluate_plan

    pipeline = Pipeline.model_validate(pipeline_data)
    ident = (root, pipeline.model)
    ctx = _WORKER_CONTEXTS.get(ident)
    if ctx is None or ctx.pipeline != pipeline:
        model = ctx._model if ctx is not None else None
        ctx = _WORKER_CONTEXTS[ident] = Context(pipeline=pipeline, root=Path(root), _model=model)
    return str(evaluate_plan(ctx, plan_hash, settings_key))


def _connect_ray(address: str):
    try:
        import ray
    except ImportError:
        from trtq.errors import MissingToolError

        raise MissingToolError("--ray needs Ray: pip install 'trtq[ray]'") from None
    if not ray.is_initialized():
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env={"env_vars": {"PYTHONPATH": _pythonpath()}},
            )
        except ConnectionError as exc:
            raise InputError(f"--ray {address}: cannot connect to a Ray cluster: {exc}") from None
    return ray


def _pythonpath() -> str:
    import os

    import trtq

    here = str(Path(trtq.__file__).resolve().parent.parent)
    return os.pathsep.join([here] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
