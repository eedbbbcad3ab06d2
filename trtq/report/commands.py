"""`trtq report PLAN ...` and `trtq report compare PLAN_OR_DIR ...`."""

from __future__ import annotations

import argparse

from trtq.artifacts.paths import output_file
from trtq.report.request import ReportRequest
from trtq.settings import add_options

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
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="PLAN | compare PLAN_OR_DIR...",
        help="a plan file, or `compare` followed by plan files and/or directories of plans",
    )
    p.add_argument(
        "-o",
        "--output",
        type=output_file(".html", ".htm"),
        default=None,
        help="HTML file to write (default reports/<model>-<gpu>.html or reports/<model>-compare.html)",
    )
    add_options(p, ReportRequest, *(name for name in ReportRequest.model_fields if name not in ("plans", "compare")))
    p.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace) -> int:
    from trtq.report.render import write_report

    compare = args.inputs[0] == "compare"
    request = ReportRequest.from_args(args, plans=args.inputs[1:] if compare else args.inputs, compare=compare)
    path, report = write_report(request, args.output)
    for verdict in getattr(report, "verdicts", []) + getattr(report, "measured_verdicts", []):
        print(verdict.text)
    print(f"wrote {path} (data: {path.with_suffix('.json')})")
    return 0
