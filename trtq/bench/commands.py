"""`trtq bench` (serve + load-generator sweep) and `trtq bench ingest` (exports from elsewhere)."""

from __future__ import annotations

import argparse

from trtq.artifacts.paths import output_dir, output_file
from trtq.bench.request import SweepRequest
from trtq.options import MAX_CONCURRENCY, count
from trtq.settings import add_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark a trtq build (starts trtllm-serve, or runs trtllm-bench) or a running endpoint",
        description="Serving sweep: run AIPerf (default) once per concurrency against an OpenAI-compatible endpoint "
        "(--url) or a trtllm-serve that trtq starts and stops (--engine). Offline numbers: --tool "
        "trtllm-bench runs trtllm-bench throughput (or latency) on a prepared dataset. All land in one "
        "tidy table (parquet + CSV) with a tool column. `trtq bench ingest` ingests exports made elsewhere "
        "(AIPerf, trtllm-bench reports, GenAI-Perf).",
    )
    target = p.add_mutually_exclusive_group()
    add_options(target, SweepRequest, "engine", "url")
    add_options(
        p,
        SweepRequest,
        *(name for name in SweepRequest.model_fields if name not in ("engine", "url", "output")),
        concurrencies={"action": "store"},
    )
    p.add_argument(
        "-o", "--output", metavar="DIR", type=output_dir, help=SweepRequest.model_fields["output"].description
    )
    p.set_defaults(handler=run_bench)

    subs = p.add_subparsers(dest="bench_command", metavar="ingest")
    q = subs.add_parser(
        "ingest",
        help="ingest AIPerf / trtllm-bench / GenAI-Perf exports into one table",
        description="Ingest profile_export_aiperf.json, trtllm_bench_report.json (or any trtllm-bench "
        "--report_json file named directly) and profile_export_genai_perf.json from each "
        "directory (or one level below) into one tidy table with a tool column. Older "
        "GenAI-Perf exports' flat input_config.concurrency/model and -concurrencyN "
        "directory names are read.",
    )
    q.add_argument("dirs", nargs="+", metavar="ARTIFACT_DIR_OR_FILE")
    q.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="TABLE",
        type=_table_output,
        help="table path: NAME.parquet or NAME.csv (both are written)",
    )
    q.add_argument("--run-id", help="run id for every row (default: one per export)")
    q.add_argument("--model", help="model name (default: from each export)")
    q.add_argument("--engine", help="engine the runs measured, recorded")
    q.add_argument("--gpu", help="GPU the runs ran on, recorded")
    q.add_argument("--plan", metavar="PLAN_YAML", help="plan.yaml to record the hash of")
    q.add_argument(
        "--concurrency", type=count(1, MAX_CONCURRENCY), help="concurrency, for exports that do not record it"
    )
    q.add_argument("--tool-version", help="load-generator version, for exports that do not record it (GenAI-Perf)")
    q.add_argument("--date", help="ISO date of the runs, for exports that do not record it (GenAI-Perf)")
    q.set_defaults(handler=run_ingest)


def _table_output(value: str):
    """-o TABLE of ingest: NAME.parquet / NAME.csv, a bare NAME (both suffixes added) or a directory."""
    from pathlib import Path

    if Path(value).is_dir() or value.endswith("/"):
        return output_dir(value)
    return output_file()(value)


def run_bench(args: argparse.Namespace) -> int:
    from trtq.bench.process_group import signals_stop_children
    from trtq.bench.runner import run_sweep

    request = SweepRequest.from_args(args)
    if request.tool == "genai-perf":
        from trtq.console import stderr_console

        stderr_console().print(
            "warning: GenAI-Perf is deprecated upstream in favour of AIPerf (perf_analyzer PR #457); "
            "--tool aiperf is the default"
        )
    # SIGTERM/SIGHUP unwind like Ctrl-C: the server and the load generator are stopped, group and all.
    with signals_stop_children():
        return run_sweep(request)


def run_ingest(args: argparse.Namespace) -> int:
    from pathlib import Path

    from trtq.artifacts.io import sha256_file
    from trtq.bench.ingest import RunContext, ingest, table_paths, write_table
    from trtq.bench.runner import print_summary
    from trtq.console import stdout_console
    from trtq.errors import InputError

    plan_sha = None
    if args.plan:
        if not Path(args.plan).is_file():
            raise InputError(f"plan not found: {args.plan}")
        plan_sha = sha256_file(args.plan)
    context = RunContext(
        run_id=args.run_id,
        model=args.model,
        engine=args.engine,
        plan_sha256=plan_sha,
        gpu=args.gpu,
        date=args.date,
        tool_version=args.tool_version,
        concurrency=args.concurrency,
    )
    frame = ingest(args.dirs, context)
    parquet, csv = table_paths(args.output)
    write_table(frame, parquet, csv)
    print_summary(frame, title=f"ingested {len(args.dirs)} artifact director{'y' if len(args.dirs) == 1 else 'ies'}")
    stdout_console().print(f"wrote {parquet} and {csv} ({len(frame)} rows)")
    return 0
