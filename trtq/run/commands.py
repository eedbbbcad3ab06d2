"""`trtq run PIPELINE.yaml`: the whole chain from one pipeline file, cached, resumable, quality-gated."""

from __future__ import annotations

import argparse

from trtq.run import STAGES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a pipeline file: layers -> profile -> sensitivity -> front -> gated "
        "selection -> quantize -> eval -> build -> bench -> report (cached, resumable)",
    )
    p.add_argument("pipeline", metavar="PIPELINE.yaml", help="the pipeline file (see examples/smollm2.yaml)")
    p.add_argument(
        "--from",
        dest="from_stage",
        choices=STAGES,
        metavar="STAGE",
        help=f"redo STAGE and every later one; earlier stages must be cached ({', '.join(STAGES)})",
    )
    p.add_argument("--only", choices=STAGES, metavar="STAGE", help="redo STAGE alone; earlier ones must be cached")
    p.add_argument("--force", action="store_true", help="redo every stage, ignoring the cache")
    p.add_argument(
        "--ray",
        metavar="auto|ADDRESS",
        help="run per-GPU profiles and fronts, the sensitivity and the plan evaluations as tasks on "
        "this Ray cluster (the output root must be on a file system every node mounts)",
    )
    p.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    from trtq.run.pipeline import load_pipeline

    pipeline = load_pipeline(args.pipeline)
    return run_pipeline(pipeline, from_stage=args.from_stage, only=args.only, force=args.force, ray=args.ray)


def run_pipeline(pipeline, *, from_stage=None, only=None, force=False, ray=None) -> int:
    import time

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from trtq.console import stderr_console
    from trtq.run.runner import Runner

    log = stderr_console()
    started = time.perf_counter()
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=log, transient=True
    ) as progress:
        task = progress.add_task("starting", total=None)

        def step(text: str) -> None:
            progress.update(task, description=text)

        def say(text: str) -> None:
            progress.console.print(f"[{time.perf_counter() - started:6.1f} s] {text}", markup=False, highlight=False)

        runner = Runner(
            pipeline, from_stage=from_stage, only=only, force=force, ray_address=ray, progress=step, log=say
        )
        result = runner.run()
    print_summary(runner)
    ran = result.ran()
    log.print(
        f"trtq run: {len(ran)} unit(s) ran, "
        f"{sum(r.status == 'cached' for r in result.reports)} cached, "
        f"{sum(r.status == 'skipped' for r in result.reports)} skipped, "
        f"in {time.perf_counter() - started:.1f} s; artifacts in {runner.ctx.root}",
        markup=False,
    )
    return 0


def print_summary(runner) -> None:
    from rich.markup import escape
    from rich.table import Table

    from trtq.artifacts import load_artifact
    from trtq.artifacts.run import Selection
    from trtq.console import stdout_console

    path = runner.ctx.selection_path()
    if not path.is_file():
        return
    selection = load_artifact(path, Selection)
    table = Table(
        title=escape(
            f"{selection.model}: the fastest plan per GPU whose measured perplexity is within "
            f"+{selection.max_ppl_increase:g}% of bf16"
        )
    )
    for col in (
        "GPU",
        "status",
        "latency vs all-bf16",
        "Δ perplexity",
        "plans on front",
        "evaluated",
        "within budgets",
        "$/GPU-hour",
    ):
        table.add_column(col)
    for g in selection.gpus:
        increase = ""
        if g.status == "selected":
            from trtq.artifacts.run import Front

            front = load_artifact(runner.ctx.front_path(g.gpu), Front)
            h = front.candidates[g.selected].plan_hash
            chosen = next((e for e in g.evaluations if e.plan_hash == h), None)
            if chosen is not None and chosen.relative_increase is not None:
                increase = f"{100 * chosen.relative_increase:+.2f}%"
        table.add_row(
            escape(g.gpu),
            escape(g.status if g.status != "infeasible" else f"infeasible: {g.reason}"),
            f"{g.fraction:.3f}" if g.fraction is not None else "",
            increase,
            str(g.candidates),
            str(len(g.evaluations)),
            "" if g.within_budgets is None else ("yes" if g.within_budgets else "no"),
            "" if g.price_per_hour is None else f"{g.price_per_hour:g}",
        )
    selected = [g for g in selection.gpus if g.status == "selected"]
    if selected:
        from trtq.artifacts.plan import Plan
        from trtq.plan.summary import print_plan_summary

        # What each GPU would serve: the selected plans' format mix, predicted latency and weights.
        print_plan_summary(
            [load_artifact(runner.ctx.root / g.plan, Plan) for g in selected],
            title=escape(f"{selection.model}: the selected plan per GPU"),
        )
    console = stdout_console()
    console.print(table)
    for g in selection.gpus:
        if g.status == "selected" and g.reason:  # the budgets were not met: the front was the GPU's own
            console.print(f"{g.gpu}: {g.reason}", markup=False)
    console.print(
        f"evaluations: {selection.evaluations_run} run, {selection.evaluations_cached} from the cache"
        + (f"; fit {selection.fit}" if selection.fit else ""),
        markup=False,
    )
