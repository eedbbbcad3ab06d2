"""`trtq report PLAN ...` and `trtq report compare PLAN_OR_DIR ...`."""

from __future__ import annotations

import argparse
from pathlib import Path

from trtq.artifacts.paths import output_file
from trtq.options import number

_USAGE = (
    "trtq report PLAN [--profile FILE] [--sensitivity FILE] [--eval FILE] [--bench TABLE] [-o OUT.html]\n"
    "       trtq report compare PLAN_OR_DIR... [--bench TABLE ...] [--quality-bound OMEGA | --fraction F] "
    "[-o OUT.html]"
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write an HTML report: one plan (PLAN), or the hardware comparison (compare PLAN_OR_DIR...)",
        usage=_USAGE,
        description=(
            "One self-contained HTML page (works offline) plus the same data as JSON beside it. "
            "`trtq report PLAN` shows one model on one GPU: budgets, Pareto front, per-layer formats, "
            "sensitivity, where the latency goes and, with --bench, measured serving curves. "
            "`trtq report compare PLAN_OR_DIR...` compares one model across GPUs at the same quality bound "
            "(or budget fraction) with a computed verdict per workload point."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="PLAN | compare PLAN_OR_DIR...",
                   help="a plan file, or `compare` followed by plan files and/or directories of plans")
    p.add_argument("-o", "--output", type=output_file(".html", ".htm"), default=None,
                   help="HTML file to write (default reports/<model>-<gpu>.html or reports/<model>-compare.html)")
    p.add_argument("--profile", type=Path, help="PLAN only: the latency profile the plan was made from")
    p.add_argument("--sensitivity", type=Path, help="PLAN only: the sensitivity artifact (per-layer heatmap)")
    p.add_argument("--eval", dest="eval_result", type=Path, help="PLAN only: eval result (perplexity, pass/fail)")
    p.add_argument("--bench", type=Path, action="append", default=[], metavar="TABLE",
                   help="tidy bench table (.parquet or .csv) from `trtq bench`; compare takes it more than once")
    p.add_argument("--quality-bound", type=number(minimum=0), default=None, metavar="OMEGA",
                   help="compare only: pick each GPU's fastest plan with Σ sensitivity <= OMEGA "
                        "(default: the smallest Σ among the chosen plans)")
    p.add_argument("--fraction", type=number(above=0, maximum=1e6), default=None, metavar="F",
                   help="compare only: pick each GPU's plan at budget fraction F of all-bf16 instead")
    p.set_defaults(handler=run_report)


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-").lower() or "report"


def run_report(args: argparse.Namespace) -> int:
    from trtq.errors import InputError

    inputs = list(args.inputs)
    if inputs[0] == "compare":
        plans = inputs[1:]
        if not plans:
            raise InputError("report compare needs at least one plan file or directory")
        given = [name for name, value in (("--profile", args.profile), ("--sensitivity", args.sensitivity),
                                          ("--eval", args.eval_result)) if value is not None]
        if given:
            raise InputError(f"{', '.join(given)} apply to a single-plan report, not to report compare")
        return _run_compare(plans, args)
    if len(inputs) != 1:
        raise InputError(f"report takes one plan (got {len(inputs)}); to compare plans use `trtq report compare ...`")
    if args.quality_bound is not None or args.fraction is not None:
        raise InputError("--quality-bound and --fraction apply to report compare only")
    if len(args.bench) > 1:
        raise InputError("a single-plan report takes one --bench table")
    return _run_plan(inputs[0], args)


def _run_plan(plan: str, args: argparse.Namespace) -> int:
    from trtq.report.model import build_plan_report
    from trtq.report.render import render_plan_report

    report = build_plan_report(plan, profile=args.profile, sensitivity=args.sensitivity,
                               eval_result=args.eval_result, bench_table=args.bench[0] if args.bench else None)
    out = args.output or Path("reports") / f"{_slug(report.model)}-{_slug(report.gpu)}.html"
    path = render_plan_report(report, out)
    print(f"wrote {path} (data: {path.with_suffix('.json')})")
    return 0


def _run_compare(plans: list[str], args: argparse.Namespace) -> int:
    from trtq.report.model import build_comparison_report
    from trtq.report.render import render_comparison_report

    report = build_comparison_report(plans, bench_tables=args.bench, quality_bound=args.quality_bound,
                                     fraction=args.fraction)
    out = args.output or Path("reports") / f"{_slug(report.model)}-compare.html"
    path = render_comparison_report(report, out)
    for verdict in report.verdicts + report.measured_verdicts:
        print(verdict.text)
    print(f"wrote {path} (data: {path.with_suffix('.json')})")
    return 0
