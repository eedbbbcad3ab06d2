"""`trtq bench` (serve + load-generator sweep) and `trtq bench ingest` (exports from elsewhere)."""

from __future__ import annotations

import argparse

from trtq.artifacts.paths import output_dir, output_file
from trtq.options import MAX_CONCURRENCY, MAX_SECONDS, count, number, tokens


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
    target.add_argument("--engine", metavar="DIR",
                        help="trtq build output (build_record.json): trtq serves it (or trtllm-bench runs it)")
    target.add_argument("--url", help="a running OpenAI-compatible server, e.g. http://127.0.0.1:8000")
    p.add_argument("--model", help="model name sent in requests (and recorded)")
    p.add_argument("--concurrency", default="1,4,16,64", help="comma-separated sweep (default 1,4,16,64)")
    p.add_argument("--isl", type=tokens, default=128, help="input sequence length, tokens (default 128)")
    p.add_argument("--osl", type=tokens, default=128, help="output sequence length, tokens (default 128)")
    p.add_argument("--requests", type=count(1), help="requests per concurrency (default max(16, 4 x concurrency))")
    p.add_argument("--warmup", type=count(0), help="warm-up requests per concurrency (default: the concurrency)")
    p.add_argument("--tool", choices=("aiperf", "trtllm-bench", "genai-perf"), default="aiperf",
                   help="aiperf (default): serving sweep; trtllm-bench: offline throughput/latency, needs --engine; "
                        "genai-perf: deprecated upstream for AIPerf, kept for old setups (needs perf_analyzer)")
    p.add_argument("--bench-mode", choices=("throughput", "latency"), default="throughput",
                   help="with --tool trtllm-bench: `throughput` per concurrency, or one `latency` run")
    p.add_argument("--tokenizer", help="tokenizer name or local directory (default: the engine's, else --model)")
    p.add_argument("--endpoint-type", choices=("chat", "completions"), default="chat")
    p.add_argument("--gpu", help="GPU the server runs on, recorded in the table (default: the build's)")
    p.add_argument("--plan", metavar="PLAN_YAML", help="plan.yaml to record the hash of (default: the build's)")
    p.add_argument("--startup-timeout", type=number(above=0, maximum=MAX_SECONDS), default=1800.0,
                   help="seconds to wait for trtllm-serve /health")
    p.add_argument("-o", "--output", metavar="DIR", type=output_dir, help="results directory, e.g. results/NAME/")
    p.set_defaults(handler=run_bench)

    subs = p.add_subparsers(dest="bench_command", metavar="ingest")
    q = subs.add_parser("ingest", help="ingest AIPerf / trtllm-bench / GenAI-Perf exports into one table",
                        description="Ingest profile_export_aiperf.json, trtllm_bench_report.json (or any trtllm-bench "
                                    "--report_json file named directly) and profile_export_genai_perf.json from each "
                                    "directory (or one level below) into one tidy table with a tool column. Older "
                                    "GenAI-Perf exports' flat input_config.concurrency/model and -concurrencyN "
                                    "directory names are read.")
    q.add_argument("dirs", nargs="+", metavar="ARTIFACT_DIR_OR_FILE")
    q.add_argument("-o", "--output", required=True, metavar="TABLE", type=_table_output,
                   help="table path: NAME.parquet or NAME.csv (both are written)")
    q.add_argument("--run-id", help="run id for every row (default: one per export)")
    q.add_argument("--model", help="model name (default: from each export)")
    q.add_argument("--engine", help="engine the runs measured, recorded")
    q.add_argument("--gpu", help="GPU the runs ran on, recorded")
    q.add_argument("--plan", metavar="PLAN_YAML", help="plan.yaml to record the hash of")
    q.add_argument("--concurrency", type=count(1, MAX_CONCURRENCY),
                   help="concurrency, for exports that do not record it")
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
    from pathlib import Path

    from trtq.bench.process_group import signals_stop_children
    from trtq.bench.runner import SweepRequest, parse_concurrencies, run_sweep
    from trtq.errors import InputError

    if not args.model:
        raise InputError("trtq bench needs --model (the name requests carry)")
    if not args.output:
        raise InputError("trtq bench needs -o DIR (results directory)")
    if not args.engine and not args.url:
        raise InputError("give --engine DIR (trtq serves it) or --url URL (a running server)")
    if args.tool == "genai-perf":
        from trtq.console import stderr_console

        stderr_console().print("warning: GenAI-Perf is deprecated upstream in favour of AIPerf (perf_analyzer PR #457); "
                                "--tool aiperf is the default")
    request = SweepRequest(
        model=args.model, concurrencies=parse_concurrencies(args.concurrency), isl=args.isl, osl=args.osl,
        output=Path(args.output), url=args.url, engine=Path(args.engine) if args.engine else None,
        requests=args.requests, tool=args.tool, tokenizer=args.tokenizer, warmup=args.warmup, gpu=args.gpu,
        plan=Path(args.plan) if args.plan else None, startup_timeout_s=args.startup_timeout,
        endpoint_type=args.endpoint_type, bench_mode=args.bench_mode,
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
    context = RunContext(run_id=args.run_id, model=args.model, engine=args.engine, plan_sha256=plan_sha,
                         gpu=args.gpu, date=args.date, tool_version=args.tool_version, concurrency=args.concurrency)
    frame = ingest(args.dirs, context)
    parquet, csv = table_paths(args.output)
    write_table(frame, parquet, csv)
    print_summary(frame, title=f"ingested {len(args.dirs)} artifact director{'y' if len(args.dirs) == 1 else 'ies'}")
    stdout_console().print(f"wrote {parquet} and {csv} ({len(frame)} rows)")
    return 0
