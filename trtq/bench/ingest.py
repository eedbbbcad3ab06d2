"""Ingest AIPerf, GenAI-Perf and trtllm-bench exports into the tidy table (schema: trtq.artifacts.bench).

AIPerf 0.13 `profile_export_aiperf.json` (schema_version "1.4"): top-level metric tags, each
`{"unit": "ms", "avg": ..., "p50": ..., ...}`; `aiperf_version`; `input_config.phases[]` with the
profiling phase's `concurrency`; `input_config.datasets[].prompts.isl/osl.mean`;
`start_time`, `was_cancelled`.

GenAI-Perf 0.0.16 `profile_export_genai_perf.json` (genai_perf/export_data/json_exporter.py):
the Statistics dict (request metrics with avg/p1..p99/min/max/std, system metrics
request_throughput, request_goodput, request_count, output_token_throughput with avg only;
times in ms after scale_data), telemetry merged in, and `input_config` (ConfigCommand.to_json_dict:
`model_names`, `perf_analyzer.stimulus.concurrency`, `input.synthetic_tokens.mean`,
`input.output_tokens.mean`). It records no tool version or date: the caller supplies them. Older
GenAI-Perf exports record concurrency and model flat, as `input_config.concurrency` and
`input_config.model` (a list), ISL/OSL as `synthetic_input_tokens_mean` / `output_tokens_mean`, and
name their artifact directory `<model>-<service>-<endpoint>-concurrency<N>`: all three are read.

trtllm-bench `--report_json` (tensorrt_llm/bench/dataclasses/reporting.py, `get_statistics_dict`):
`engine` (model, version, backend, quantization), `world_info`, `request_info` (num_requests,
avg_num_concurrent_requests, avg_input_length, avg_output_length), `performance`
(request_throughput_req_s, system_output_throughput_tok_s, system_total_throughput_tok_s,
output_throughput_per_user_tok_s, output_throughput_per_gpu_tok_s, avg_request_latency_ms,
request_latency_percentiles_ms), with `--streaming` also `streaming_metrics` (ttft_percentiles,
tpot_percentiles, gen_tps_percentiles; avg_ttft_ms, avg_tpot_ms), and `dataset`. Percentile dicts
use minimum/maximum/average/p50/p90/p95/p99, times in ms. trtq names the file
`trtllm_bench_report.json`; any file name given directly is read when its content is one.
It does not record the --concurrency cap: the directory name (`c4`, `...-concurrency4`) or
--concurrency gives it.

Every problem is an ArtifactError naming the file and what is wrong; a table is built only
after every export parsed.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtq.artifacts.bench import METRICS, REQUIRED_METRICS, STATISTICS, TIDY_COLUMNS
from trtq.errors import ArtifactError, InputError

EXPORT_FILES = {
    "profile_export_aiperf.json": "aiperf",
    "profile_export_genai_perf.json": "genai-perf",
    "trtllm_bench_report.json": "trtllm-bench",
}
# GenAI-Perf names its artifact directories ...-concurrency4; trtq bench names them c4 (or NAME_c4).
_CONCURRENCY_DIR = re.compile(r"(?:-concurrency|(?:^|[_-])c)(\d+)$")

# Tool tag -> canonical metric name, where they differ.
_RENAME = {"request_goodput": "goodput"}
_TIME_SCALE_TO_NS = {"ns": 1.0, "us": 1e3, "µs": 1e3, "ms": 1e6, "s": 1e9, "sec": 1e9, "seconds": 1e9}
_UNIT_NAMES = {
    "tokens/sec": "tokens/s",
    "tokens/sec/user": "tokens/s/user",
    "requests/sec": "requests/s",
    "per sec": "requests/s",
    "count": "requests",
}
# Keys in the exports that are not metrics.
_NOT_METRICS = {
    "input_config",
    "telemetry_data",
    "telemetry_stats",
    "sessions",
    "run_info",
    "error_summary",
    "schema_version",
    "aiperf_version",
    "benchmark_id",
    "start_time",
    "end_time",
    "was_cancelled",
    "is_complete",
    "server_metrics",
    "network_latency",
    "gpu_telemetry",
}


@dataclass
class ParsedExport:
    path: Path
    tool: str
    tool_version: str | None
    model: str | None
    concurrency: int | None
    isl: int | None
    osl: int | None
    date: str | None
    run_hint: str
    rows: list[tuple[str, str, float, str]] = field(default_factory=list)  # metric, statistic, value, unit


def _load(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArtifactError(f"{path}: export not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: cannot read the export ({exc})") from None
    if not text.strip():
        raise ArtifactError(f"{path}: export is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArtifactError(
            f"{path}: not valid JSON at line {exc.lineno} column {exc.colno} ({exc.msg}): truncated or malformed export"
        ) from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: export must be a JSON object, found {type(data).__name__}")
    return data


def _metric_rows(path: Path, data: dict) -> list[tuple[str, str, float, str]]:
    rows: list[tuple[str, str, float, str]] = []
    for tag, entry in data.items():
        if tag in _NOT_METRICS or not isinstance(entry, dict) or "unit" not in entry:
            continue
        stats = {k: v for k, v in entry.items() if k in STATISTICS}
        if not stats:
            if tag in METRICS or tag in _RENAME:
                raise ArtifactError(f"{path}: metric {tag} has a unit but no statistics")
            continue
        unit = str(entry["unit"]).strip()
        scale = _TIME_SCALE_TO_NS.get(unit)
        name = _RENAME.get(tag, tag)
        out_unit = "ns" if scale is not None else _UNIT_NAMES.get(unit, unit)
        if name == "request_count":
            out_unit = "requests"
        for stat, value in stats.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ArtifactError(f"{path}: metric {tag} statistic {stat} is {value!r}, not a finite number")
            # The sample count is a count whatever the metric's unit.
            if stat == "count":
                rows.append((name, stat, float(value), "samples"))
            else:
                rows.append((name, stat, float(value) * (scale or 1.0), out_unit))
    present = {r[0] for r in rows}
    missing = [m for m in REQUIRED_METRICS if m not in present]
    if missing:
        raise ArtifactError(f"{path}: no {', '.join(missing)} in the export: not a complete load-generator run")
    return rows


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return int(round(value))
    return None


def parse_aiperf(path: Path) -> ParsedExport:
    data = _load(path)
    if "aiperf_version" not in data and "input_config" not in data:
        raise ArtifactError(f"{path}: no aiperf_version or input_config: not an AIPerf export")
    if data.get("was_cancelled") is True:
        raise ArtifactError(f"{path}: the AIPerf run was cancelled; its numbers are partial")
    config = data.get("input_config") or {}
    if not isinstance(config, dict):
        raise ArtifactError(f"{path}: input_config must be an object")
    concurrency = None
    for phase in config.get("phases") or []:
        if isinstance(phase, dict) and phase.get("kind", phase.get("name")) == "profiling":
            concurrency = _int_or_none(phase.get("concurrency"))
    isl = osl = None
    for dataset in config.get("datasets") or []:
        prompts = (dataset or {}).get("prompts") or {}
        isl = _int_or_none((prompts.get("isl") or {}).get("mean")) if isl is None else isl
        osl = _int_or_none((prompts.get("osl") or {}).get("mean")) if osl is None else osl
    models = (config.get("models") or {}).get("items") or []
    model = models[0].get("name") if models and isinstance(models[0], dict) else None
    run_info = data.get("run_info") or {}
    return ParsedExport(
        path=path,
        tool="aiperf",
        tool_version=data.get("aiperf_version"),
        model=model,
        concurrency=concurrency,
        isl=isl,
        osl=osl,
        date=data.get("start_time"),
        run_hint=str(data.get("benchmark_id") or run_info.get("benchmark_id") or ""),
        rows=_metric_rows(path, data),
    )


def parse_genai_perf(path: Path) -> ParsedExport:
    data = _load(path)
    config = data.get("input_config")
    if not isinstance(config, dict):
        raise ArtifactError(f"{path}: no input_config object: not a GenAI-Perf export")
    stimulus = (config.get("perf_analyzer") or {}).get("stimulus") or {}
    concurrency = _int_or_none(stimulus.get("concurrency")) if isinstance(stimulus, dict) else None
    if concurrency is None:  # older GenAI-Perf: flat input_config.concurrency, else the directory name
        concurrency = _int_or_none(config.get("concurrency"))
    if concurrency is None:
        concurrency = concurrency_from_directory(path)
    inputs = config.get("input") or {}
    isl = _int_or_none((inputs.get("synthetic_tokens") or {}).get("mean"))
    osl = _int_or_none((inputs.get("output_tokens") or {}).get("mean"))
    isl = isl if isl is not None else _int_or_none(config.get("synthetic_input_tokens_mean"))
    osl = osl if osl is not None else _int_or_none(config.get("output_tokens_mean"))
    models = config.get("model_names") or config.get("model") or []  # older GenAI-Perf: input_config.model
    if isinstance(models, str):
        models = [models]
    return ParsedExport(
        path=path,
        tool="genai-perf",
        tool_version=None,
        model=str(models[0]) if models else None,
        concurrency=concurrency,
        isl=isl,
        osl=osl,
        date=None,
        run_hint="",
        rows=_metric_rows(path, data),
    )


def concurrency_from_directory(path: Path) -> int | None:
    """`...-concurrency4` (GenAI-Perf's artifact directory) or `c4` (trtq bench's) -> 4."""
    match = _CONCURRENCY_DIR.search(path.parent.name)
    return int(match.group(1)) if match else None


_PERCENTILE_STATS = {
    "minimum": "min",
    "maximum": "max",
    "average": "avg",
    "p50": "p50",
    "p90": "p90",
    "p95": "p95",
    "p99": "p99",
}


def _number(path: Path, where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ArtifactError(f"{path}: {where} is {value!r}, not a finite number")
    return float(value)


def _percentile_rows(path: Path, section: str, data: Any, metric: str, scale: float, unit: str):
    if data is None:
        return []
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: {section} must be an object")
    return [
        (metric, _PERCENTILE_STATS[key], _number(path, f"{section}.{key}", value) * scale, unit)
        for key, value in data.items()
        if key in _PERCENTILE_STATS
    ]


def parse_trtllm_bench(path: Path) -> ParsedExport:
    data = _load(path)
    perf, engine = data.get("performance"), data.get("engine")
    if not isinstance(perf, dict) or not isinstance(engine, dict):
        raise ArtifactError(f"{path}: no 'performance' and 'engine' objects: not a trtllm-bench --report_json report")
    requests = data.get("request_info") or {}
    streaming = data.get("streaming_metrics") or {}
    dataset = data.get("dataset") or {}
    if not all(isinstance(x, dict) for x in (requests, streaming, dataset)):
        raise ArtifactError(f"{path}: request_info, streaming_metrics and dataset must be objects")
    ms = 1e6
    rows = _percentile_rows(
        path,
        "performance.request_latency_percentiles_ms",
        perf.get("request_latency_percentiles_ms"),
        "request_latency",
        ms,
        "ns",
    )
    if not any(r[1] == "avg" for r in rows) and "avg_request_latency_ms" in perf:
        rows.append(
            (
                "request_latency",
                "avg",
                _number(path, "avg_request_latency_ms", perf["avg_request_latency_ms"]) * ms,
                "ns",
            )
        )
    rows += _percentile_rows(
        path, "streaming_metrics.ttft_percentiles", streaming.get("ttft_percentiles"), "time_to_first_token", ms, "ns"
    )
    # trtllm-bench's TPOT is (last token - first token) / generated tokens per request: AIPerf's inter-token latency.
    rows += _percentile_rows(
        path, "streaming_metrics.tpot_percentiles", streaming.get("tpot_percentiles"), "inter_token_latency", ms, "ns"
    )
    rows += _percentile_rows(
        path,
        "streaming_metrics.gen_tps_percentiles",
        streaming.get("gen_tps_percentiles"),
        "generation_token_throughput_per_user",
        1.0,
        "tokens/s/user",
    )
    for key, metric, unit, source in (
        ("request_throughput_req_s", "request_throughput", "requests/s", perf),
        ("system_output_throughput_tok_s", "output_token_throughput", "tokens/s", perf),
        ("system_total_throughput_tok_s", "total_token_throughput", "tokens/s", perf),
        ("output_throughput_per_user_tok_s", "output_token_throughput_per_user", "tokens/s/user", perf),
        ("output_throughput_per_gpu_tok_s", "output_token_throughput_per_gpu", "tokens/s/gpu", perf),
        ("num_requests", "request_count", "requests", requests),
        ("avg_num_concurrent_requests", "concurrent_requests", "requests", requests),
        ("avg_input_length", "input_sequence_length", "tokens", requests),
        ("avg_output_length", "output_sequence_length", "tokens", requests),
    ):
        if source.get(key) is not None:
            rows.append((metric, "avg", _number(path, key, source[key]), unit))
    present = {r[0] for r in rows}
    missing = [m for m in REQUIRED_METRICS if m not in present]
    if missing:
        raise ArtifactError(f"{path}: no {', '.join(missing)} in the report: not a complete trtllm-bench run")
    isl = _int_or_none(dataset.get("avg_isl", (dataset.get("isl_stats") or {}).get("average")))
    osl = _int_or_none(dataset.get("avg_osl", (dataset.get("osl_stats") or {}).get("average")))
    version = engine.get("version")
    return ParsedExport(
        path=path,
        tool="trtllm-bench",
        tool_version=str(version) if version is not None else None,
        model=engine.get("model"),
        concurrency=concurrency_from_directory(path),
        isl=isl,
        osl=osl,
        date=None,
        run_hint="",
        rows=rows,
    )


def find_exports(directory: Path) -> list[Path]:
    """Export files in `directory` or one level below (GenAI-Perf nests per-run directories).

    A file named directly is taken whatever its name when it is a trtllm-bench report (trtllm-bench
    writes wherever --report_json points)."""
    if directory.is_file():
        if directory.name in EXPORT_FILES or directory.suffix == ".json":
            return [directory]
        raise InputError(f"{directory}: not an AIPerf, GenAI-Perf or trtllm-bench export ({', '.join(EXPORT_FILES)})")
    if not directory.is_dir():
        raise InputError(f"artifact directory not found: {directory}")
    found = [directory / name for name in EXPORT_FILES if (directory / name).is_file()]
    if not found:
        found = sorted(p for name in EXPORT_FILES for p in directory.glob(f"*/{name}"))
    if not found:
        raise InputError(f"{directory}: no {' or '.join(EXPORT_FILES)} here or one level below")
    return found


def parse_export(path: Path) -> ParsedExport:
    tool = EXPORT_FILES.get(path.name)
    if tool == "aiperf":
        return parse_aiperf(path)
    if tool == "genai-perf":
        return parse_genai_perf(path)
    if tool == "trtllm-bench" or path.suffix == ".json":
        return parse_trtllm_bench(path)
    raise InputError(f"{path}: not an AIPerf, GenAI-Perf or trtllm-bench export")


@dataclass
class RunContext:
    """Columns the exports do not carry: who ran what, where."""

    run_id: str | None = None
    model: str | None = None
    engine: str | None = None
    plan_sha256: str | None = None
    gpu: str | None = None
    date: str | None = None
    tool_version: str | None = None
    concurrency: int | None = None


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def to_frame(parsed: list[ParsedExport], context: RunContext):
    import pandas as pd

    records = []
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    for export in parsed:
        concurrency = context.concurrency if export.concurrency is None else export.concurrency
        if concurrency is None:
            raise ArtifactError(
                f"{export.path}: the export does not record its concurrency (nor does its directory "
                "name, e.g. c4 or ...-concurrency4); pass --concurrency"
            )
        model = context.model or export.model
        if not model:
            raise ArtifactError(f"{export.path}: the export does not name its model; pass --model")
        base = {
            "run_id": context.run_id or f"{export.tool}-{export.run_hint or _file_digest(export.path)}",
            "tool": export.tool,
            "tool_version": export.tool_version or context.tool_version or "unknown",
            "model": model,
            "engine": context.engine,
            "plan_sha256": context.plan_sha256,
            "gpu": context.gpu,
            "date": export.date or context.date or now,
            "concurrency": int(concurrency),
            "isl": export.isl,
            "osl": export.osl,
            "artifact_dir": str(export.path.parent),
        }
        for metric, statistic, value, unit in export.rows:
            records.append({**base, "metric": metric, "statistic": statistic, "value": value, "unit": unit})
    frame = pd.DataFrame.from_records(records, columns=list(TIDY_COLUMNS))
    frame = frame.astype({"concurrency": "int64", "value": "float64", "isl": "Int64", "osl": "Int64"})
    duplicated = frame.duplicated(["run_id", "concurrency", "metric", "statistic"])
    if duplicated.any():
        row = frame[duplicated].iloc[0]
        raise ArtifactError(
            f"two exports give run {row['run_id']} concurrency {row['concurrency']} metric {row['metric']}: "
            "ingest them under different --run-id values"
        )
    return frame.sort_values(["run_id", "concurrency", "metric", "statistic"], kind="stable").reset_index(drop=True)


def ingest(paths: list[str | Path], context: RunContext):
    """Parse every export under `paths` (all must parse) and return the tidy table."""
    exports = [export for path in paths for export in find_exports(Path(path))]
    parsed = [parse_export(path) for path in exports]
    return to_frame(parsed, context)


def write_table(frame, parquet_path: Path, csv_path: Path) -> None:
    """Both files, each atomically; the CSV only after the parquet succeeded."""
    from trtq.artifacts.io import atomic_path

    with atomic_path(parquet_path) as tmp:
        frame.to_parquet(tmp, index=False)
    with atomic_path(csv_path) as tmp:
        frame.to_csv(tmp, index=False)


def table_paths(output: str | Path) -> tuple[Path, Path]:
    """-o TABLE: foo.parquet or foo.csv names both files; any other name gets both suffixes."""
    out = Path(output)
    if out.suffix in (".parquet", ".csv"):
        return out.with_suffix(".parquet"), out.with_suffix(".csv")
    if out.is_dir() or str(output).endswith(("/", "\\")):
        return out / "bench.parquet", out / "bench.csv"
    return out.with_name(out.name + ".parquet"), out.with_name(out.name + ".csv")
