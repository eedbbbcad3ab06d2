"""`trtq compare MODEL --gpu A --gpu B --profile A=P --profile B=Q --sensitivity S --workload .. --slo ..`."""

from __future__ import annotations

import argparse

from trtq.artifacts.paths import output_file
from trtq.options import count, number
from trtq.plan.request import PlanRequest
from trtq.settings import add_options

# `trtq compare`'s own default; the module that uses it (trtq/plan/compare.py) imports numpy.
DEFAULT_FRONT_POINTS = 8


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="per GPU: the fastest plan meeting the SLOs, tokens/s per GPU, $ per "
        "million tokens, and the throughput-per-quality front",
        description="Which GPU serves a workload best under SLOs: per GPU, trtq plans the fastest "
        "mixed-precision plan (and KV-cache format) meeting --slo at --workload, predicts "
        "its throughput with the step model of `trtq predict`, and, with --price, its "
        "cost per million output tokens. See trtq/plan/compare.py.",
    )
    p.add_argument("model", help="built-in alias, HF id or local path")
    p.add_argument("--gpu", action="append", default=[], required=True, help="a GPU to compare; repeatable")
    p.add_argument(
        "--profile",
        action="append",
        default=[],
        required=True,
        metavar="GPU=FILE",
        help="the latency profile of each GPU (`trtq profile`); repeatable",
    )
    p.add_argument(
        "--sensitivity",
        required=True,
        help="table from `trtq sensitivity` (with --kv-formats for the KV-cache decision)",
    )
    # The serving settings are the plan stage's (trtq/plan/request.py), declared there once.
    add_options(p, PlanRequest, "workload", "slos", "kv_formats", "formats", "tp", workload={"required": True})
    p.add_argument(
        "--price",
        action="append",
        default=[],
        metavar="GPU=USD",
        help="price per GPU-hour, for cost per million output tokens; repeatable",
    )
    p.add_argument(
        "--quality-bound",
        type=number(minimum=0),
        default=None,
        metavar="OMEGA",
        help="each GPU's fastest plan with sum of Omega (layers + KV cache) <= OMEGA",
    )
    p.add_argument(
        "--front",
        type=count(2, 64),
        default=DEFAULT_FRONT_POINTS,
        metavar="N",
        help=f"points of the throughput-per-quality front per GPU (default {DEFAULT_FRONT_POINTS})",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "-o",
        "--output",
        type=output_file(".html", ".htm"),
        default=None,
        help="also write the comparison as an HTML report (and its JSON beside it)",
    )
    p.set_defaults(handler=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    import json

    from trtq.options import gpu_keyed
    from trtq.plan.compare import compare, parse_prices, raise_if_none_served

    profiles = gpu_keyed(args.profile, "--profile", "GPU=FILE, e.g. H100=h100.json", str)
    prices = parse_prices(args.price)
    request = PlanRequest.from_args(args, budgets=[])  # workload, SLOs, tp ... checked before any file is read
    result = compare(
        model=args.model,
        gpus=args.gpu,
        profiles=profiles,
        sensitivity=args.sensitivity,
        workload=request.workload,
        slos=request.slos,
        prices=prices,
        kv_formats=request.kv_formats,
        tp=request.tp,
        formats=request.formats,
        quality_bound=args.quality_bound,
        front_points=args.front,
    )
    raise_if_none_served(result)
    if args.output is not None:
        from trtq.report.serving import write_serving_comparison

        path = write_serving_comparison(result, args.output)
        if not args.json:
            print(f"wrote {path} (data: {path.with_suffix('.json')})")
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    _print(result)
    return 0


def _print(r: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    from trtq.console import stdout_console

    w = r["workload"]
    slos = ", ".join(f"{k.removesuffix('_ms').upper()} <= {v:g} ms" for k, v in r["slos"].items()) or "no SLO"
    table = Table(
        title=escape(f"{r['model']}: isl {w['isl']}, osl {w['osl']}, concurrency {w['concurrency']} ({slos})")
    )
    for col in ("GPU", "TTFT ms", "TPOT ms", "tokens/s/GPU", "KV", "Σ Ω", "max conc.", "$/1M tokens", "formats"):
        table.add_column(col)
    for g in r["gpus"]:
        f = g["fastest"]
        if f is None:
            table.add_row(escape(g["gpu"]), "-", "-", "-", "-", "-", "-", "-", escape(g["error"] or ""))
            continue
        usd = "-" if g["usd_per_million_tokens"] is None else f"{g['usd_per_million_tokens']:.3g}"
        table.add_row(
            escape(g["gpu"]),
            f"{f['ttft_ms']:.1f}",
            f"{f['tpot_ms']:.2f}",
            f"{f['tokens_per_s_per_gpu']:.0f}",
            f["kv_format"],
            f"{f['omega']:.4g}",
            str(g["max_concurrency"]),
            usd,
            escape(", ".join(f"{k} {n}" for k, n in f["formats"].items())),
        )
    console = stdout_console()
    console.print(table)
    if r["verdict"]:
        console.print(escape(r["verdict"]))
