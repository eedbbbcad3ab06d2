"""`trtq bench`: serve (optionally), sweep concurrencies with the load generator, ingest, summarise."""

from __future__ import annotations

import contextlib
import datetime as _dt
import shutil
import time
from pathlib import Path

from trtq.bench.request import SweepRequest, parse_concurrencies  # noqa: F401 - public here as before
from trtq.errors import ArtifactError, ExternalToolError, InputError, MissingToolError


def requests_for(concurrency: int, requested: int | None) -> int:
    # Enough requests that every slot turns over a few times, unless the user said otherwise.
    return requested if requested is not None else max(16, 4 * concurrency)


def load_build_record(engine: Path):
    from trtq.artifacts.build import BuildRecord
    from trtq.artifacts.io import load_artifact

    for candidate in (engine / "build_record.json", engine.parent / "build_record.json"):
        if candidate.is_file():
            return candidate, load_artifact(candidate, BuildRecord)
    raise ArtifactError(f"{engine}: no build_record.json here or in its parent: run trtq build first")


def serve_command(record_path: Path, record, host: str, port: int, out_dir: Path) -> list[str]:
    # Rebuilt from the record's validated fields: never the record's own serve_command (trtq/bench/engine.py).
    from trtq.bench.engine import serve_command as rebuilt

    return rebuilt(record_path, record, host, port, out_dir)


def run_sweep(request: SweepRequest) -> int:
    from trtq.bench import loadgen
    from trtq.bench.serve import HEALTH_PATH, free_port, running_server

    # The request checked what to measure and the ranges (SweepRequest's validators).
    if request.tool == "trtllm-bench":
        from trtq.bench.offline import run_trtllm_bench

        return run_trtllm_bench(request)
    tool, executable = loadgen.choose_tool(request.tool)
    version = loadgen.tool_version(tool, executable)

    engine_name = plan_sha = None
    gpu = request.gpu
    server = None
    tokenizer = request.tokenizer
    if request.plan is not None:
        from trtq.artifacts.io import sha256_file

        if not request.plan.is_file():
            raise InputError(f"plan not found: {request.plan}")
        plan_sha = sha256_file(request.plan)
    if request.engine is not None:
        record_path, record = load_build_record(request.engine)
        port = free_port()
        server = serve_command(record_path, record, "127.0.0.1", port, request.output)
        if shutil.which("trtllm-serve") is None:
            from trtq.build.trtllm import NOT_INSTALLED

            raise MissingToolError(NOT_INSTALLED)
        url = f"http://127.0.0.1:{port}"
        engine_name = str(request.engine)
        plan_sha = plan_sha or record.checkpoint.plan_sha256
        gpu = gpu or record.gpu
        tokenizer = tokenizer or record.tokenizer_dir
    else:
        url = request.url.rstrip("/")
    tokenizer = tokenizer or request.model

    out = request.output
    out.mkdir(parents=True, exist_ok=True)
    run_id = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    context_manager = (
        running_server(server, url + HEALTH_PATH, out / "server.log", request.startup_timeout_s)
        if server
        else contextlib.nullcontext()
    )
    with context_manager:
        runs, parsed = _sweep(request, tool, executable, url, tokenizer)

    from trtq.artifacts.bench import BenchRun
    from trtq.artifacts.io import make_metadata, save_artifact
    from trtq.bench.ingest import RunContext, to_frame, write_table

    frame = to_frame(
        parsed,
        RunContext(
            run_id=run_id, model=request.model, engine=engine_name, plan_sha256=plan_sha, gpu=gpu, tool_version=version
        ),
    )
    parquet, csv = out / "bench.parquet", out / "bench.csv"
    write_table(frame, parquet, csv)
    inputs = {"plan": request.plan} if request.plan else {}
    record = BenchRun.create(
        metadata=make_metadata(inputs=inputs, versions={tool: version}),
        run_id=run_id,
        tool=tool,
        tool_version=version,
        model=request.model,
        url=url,
        engine=engine_name,
        plan_sha256=plan_sha,
        gpu=gpu,
        isl=request.isl,
        osl=request.osl,
        requests={str(c): requests_for(c, request.requests) for c in request.concurrencies},
        server_command=server,
        runs=runs,
        table_parquet=str(parquet),
        table_csv=str(csv),
    )
    save_artifact(record, out / "bench_run.json")
    print_summary(frame, title=f"{tool} {version} against {engine_name or url} ({request.model})")
    from trtq.console import stdout_console

    stdout_console().print(f"wrote {parquet}, {csv} and {out / 'bench_run.json'}")
    return 0


def _sweep(request: SweepRequest, tool: str, executable: str, url: str, tokenizer: str):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from trtq.artifacts.bench import ConcurrencyRun
    from trtq.artifacts.io import atomic_path
    from trtq.bench import loadgen
    from trtq.bench.ingest import find_exports, parse_export
    from trtq.bench.process_group import run_group
    from trtq.console import stderr_console

    runs, parsed = [], []
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=stderr_console(),
        transient=False,
    )
    with progress:
        task = progress.add_task(f"{tool} sweep", total=len(request.concurrencies))
        for concurrency in request.concurrencies:
            progress.update(task, description=f"{tool} concurrency {concurrency}")
            artifact_dir = request.output / f"c{concurrency}"
            shutil.rmtree(artifact_dir, ignore_errors=True)  # a stale export must not be ingested
            spec = loadgen.LoadSpec(
                url=url,
                model=request.model,
                tokenizer=tokenizer,
                concurrency=concurrency,
                requests=requests_for(concurrency, request.requests),
                isl=request.isl,
                osl=request.osl,
                artifact_dir=artifact_dir,
                warmup_requests=concurrency if request.warmup is None else request.warmup,
                endpoint_type=request.endpoint_type,
            )
            command = loadgen.loadgen_command(tool, executable, spec)
            log_path = request.output / f"c{concurrency}.log"
            start = time.monotonic()
            with atomic_path(log_path) as tmp:
                with open(tmp, "w", encoding="utf-8") as log:
                    # Its own process group, stopped whole: AIPerf's workers must not outlive it.
                    returncode = run_group(command, log, env=loadgen.loadgen_env(tool, tokenizer))
            wall = time.monotonic() - start
            if returncode != 0:
                raise ExternalToolError(
                    f"{tool} exited with status {returncode} at concurrency {concurrency}; log: {log_path}"
                )
            exports = find_exports(artifact_dir)
            export = parse_export(exports[0])
            if export.concurrency is not None and export.concurrency != concurrency:
                raise ArtifactError(f"{exports[0]}: records concurrency {export.concurrency}, asked {concurrency}")
            export.concurrency = concurrency
            parsed.append(export)
            runs.append(
                ConcurrencyRun(
                    concurrency=concurrency,
                    artifact_dir=str(artifact_dir),
                    export_file=str(exports[0]),
                    command=command,
                    returncode=returncode,
                    wall_s=round(wall, 3),
                )
            )
            progress.advance(task)
    return runs, parsed


def _value(frame, concurrency: int, metric: str, statistic: str) -> float | None:
    rows = frame[(frame.concurrency == concurrency) & (frame.metric == metric) & (frame.statistic == statistic)]
    return float(rows.value.iloc[0]) if len(rows) else None


def print_summary(frame, title: str) -> None:
    from rich.table import Table

    from trtq.console import fmt_ns, stdout_console

    table = Table(title=title)
    for column in (
        "concurrency",
        "requests",
        "TTFT p50",
        "TTFT p99",
        "ITL p50",
        "ITL p99",
        "output tokens/s",
        "tokens/s/user p50",
        "requests/s",
    ):
        table.add_column(column, justify="right")

    def num(value: float | None, digits: str = ".1f") -> str:
        return "-" if value is None else format(value, digits)

    for run_id in frame.run_id.unique():
        sub = frame[frame.run_id == run_id]
        for concurrency in sorted(sub.concurrency.unique()):
            c = int(concurrency)
            count = _value(sub, c, "request_count", "avg")
            table.add_row(
                str(c),
                num(count, ".0f"),
                fmt_ns(_value(sub, c, "time_to_first_token", "p50")),
                fmt_ns(_value(sub, c, "time_to_first_token", "p99")),
                fmt_ns(_value(sub, c, "inter_token_latency", "p50")),
                fmt_ns(_value(sub, c, "inter_token_latency", "p99")),
                num(_value(sub, c, "output_token_throughput", "avg")),
                num(_value(sub, c, "output_token_throughput_per_user", "p50")),
                num(_value(sub, c, "request_throughput", "avg"), ".3g"),
            )
    stdout_console().print(table)
