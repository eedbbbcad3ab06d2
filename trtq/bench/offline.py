"""`trtq bench --engine DIR --tool trtllm-bench`: offline numbers comparable to NVIDIA's published tables.

trtllm-bench runs the model in process (no server): `prepare-dataset token-norm-dist` once (exact
ISL/OSL, seeded), then `throughput --streaming --concurrency N` per concurrency (or `latency` once),
each writing its `--report_json`, which lands in the same tidy table as AIPerf's exports
(tool `trtllm-bench`). Commands are rebuilt from the build record's validated fields
(trtq/bench/engine.py), argument lists only.
"""

from __future__ import annotations

import datetime as _dt
import shutil
import subprocess
import time
from pathlib import Path

from trtq.errors import ArtifactError, ExternalToolError, InputError, MissingToolError

REPORT_FILE = "trtllm_bench_report.json"


def _run(command: list[str], log_path: Path, what: str) -> float:
    from trtq.artifacts.io import atomic_path

    start = time.monotonic()
    with atomic_path(log_path) as tmp:
        with open(tmp, "w", encoding="utf-8") as log:
            try:
                result = subprocess.run(
                    command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False
                )
            except OSError as exc:
                raise ExternalToolError(f"trtllm-bench could not start: {exc}") from None
    if result.returncode != 0:
        raise ExternalToolError(f"trtllm-bench {what} exited with status {result.returncode}; log: {log_path}")
    return time.monotonic() - start


def run_trtllm_bench(request) -> int:
    from trtq.artifacts.bench import BenchRun, ConcurrencyRun
    from trtq.artifacts.io import make_metadata, save_artifact, sha256_file
    from trtq.bench.engine import trtllm_bench_commands, trtllm_bench_run
    from trtq.bench.ingest import RunContext, parse_trtllm_bench, to_frame, write_table
    from trtq.bench.runner import load_build_record, print_summary, requests_for
    from trtq.console import stdout_console

    if request.engine is None:
        raise InputError(
            "--tool trtllm-bench runs the model itself: give --engine DIR (a trtq build output), not --url"
        )
    if request.bench_mode not in ("throughput", "latency"):
        raise InputError(f"--bench-mode is throughput or latency, got {request.bench_mode!r}")
    for name, value in (("--isl", request.isl), ("--osl", request.osl), ("--requests", request.requests)):
        if value is not None and value < 1:
            raise InputError(f"{name} must be a positive integer, got {value}")
    record_path, record = load_build_record(request.engine)
    out = request.output
    concurrencies = request.concurrencies if request.bench_mode == "throughput" else [1]
    total = max(requests_for(c, request.requests) for c in concurrencies)
    prepare, dataset, options = trtllm_bench_commands(
        record_path, record, request.model, out, total, request.isl, request.osl
    )
    if shutil.which("trtllm-bench") is None:
        from trtq.build.trtllm import NOT_INSTALLED

        raise MissingToolError(NOT_INSTALLED)
    plan_sha = sha256_file(request.plan) if request.plan else record.checkpoint.plan_sha256
    run_id = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    _run(prepare, out / "prepare-dataset.log", "prepare-dataset")
    runs, parsed = [], []
    for concurrency in concurrencies:
        directory = out / f"c{concurrency}"
        shutil.rmtree(directory, ignore_errors=True)  # a stale report must not be ingested
        directory.mkdir(parents=True)
        report = directory / REPORT_FILE
        warmup = concurrency if request.warmup is None else request.warmup
        command = trtllm_bench_run(
            record_path,
            record,
            request.model,
            dataset,
            options,
            report,
            request.bench_mode,
            concurrency if request.bench_mode == "throughput" else None,
            requests_for(concurrency, request.requests),
            warmup,
        )
        wall = _run(command, out / f"c{concurrency}.log", f"{request.bench_mode} at concurrency {concurrency}")
        if not report.is_file():
            raise ArtifactError(f"trtllm-bench wrote no report at {report}; log: {out / f'c{concurrency}.log'}")
        export = parse_trtllm_bench(report)
        export.concurrency = concurrency
        parsed.append(export)
        runs.append(
            ConcurrencyRun(
                concurrency=concurrency,
                artifact_dir=str(directory),
                export_file=str(report),
                command=command,
                returncode=0,
                wall_s=round(wall, 3),
            )
        )
    version = parsed[0].tool_version or "unknown"
    frame = to_frame(
        parsed,
        RunContext(
            run_id=run_id,
            model=request.model,
            engine=str(request.engine),
            plan_sha256=plan_sha,
            gpu=request.gpu or record.gpu,
            tool_version=version,
        ),
    )
    parquet, csv = out / "bench.parquet", out / "bench.csv"
    write_table(frame, parquet, csv)
    save_artifact(
        BenchRun.create(
            metadata=make_metadata(inputs={"build_record": record_path}, versions={"trtllm-bench": version}),
            run_id=run_id,
            tool="trtllm-bench",
            tool_version=version,
            model=request.model,
            url="(in process)",
            engine=str(request.engine),
            plan_sha256=plan_sha,
            gpu=request.gpu or record.gpu,
            isl=request.isl,
            osl=request.osl,
            requests={str(c): requests_for(c, request.requests) for c in concurrencies},
            server_command=None,
            runs=runs,
            table_parquet=str(parquet),
            table_csv=str(csv),
        ),
        out / "bench_run.json",
    )
    print_summary(frame, title=f"trtllm-bench {request.bench_mode} {version} on {request.engine} ({request.model})")
    stdout_console().print(f"wrote {parquet}, {csv} and {out / 'bench_run.json'}")
    return 0
