"""Ingest AIPerf and GenAI-Perf exports into the tidy table (schema: trtq.artifacts.bench).

AIPerf 0.13 `profile_export_aiperf.json` (schema_version "1.4"): top-level metric tags, each
`{"unit": "ms", "avg": ..., "p50": ..., ...}`; `aiperf_version`; `input_config.phases[]` with the
profiling phase's `concurrency`; `input_config.datasets[].prompts.isl/osl.mean`;
`start_time`, `was_cancelled`.

GenAI-Perf 0.0.16 `profile_export_genai_perf.json` (genai_perf/export_data/json_exporter.py):
the Statistics dict (request metrics with avg/p1..p99/min/max/std, system metrics
request_throughput, request_goodput, request_count, output_token_throughput with avg only;
times in ms after scale_data), telemetry merged in, and `input_config` (ConfigCommand.to_json_dict:
`model_names`, `perf_analyzer.stimulus.concurrency`, `input.synthetic_tokens.mean`,
`input.output_tokens.mean`). It records no tool version or date: the caller supplies them.

Every problem is an ArtifactError naming the file and what is wrong; a table is built only
after every export parsed.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtq.artifacts.bench import METRICS, REQUIRED_METRICS, STATISTICS, TIDY_COLUMNS
from trtq.errors import ArtifactError, InputError

EXPORT_FILES = {"profile_export_aiperf.json": "aiperf", "profile_export_genai_perf.json": "genai-perf"}

# Tool tag -> canonical metric name, where they differ.
_RENAME = {"request_goodput": "goodput"}
_TIME_SCALE_TO_NS = {"ns": 1.0, "us": 1e3, "µs": 1e3, "ms": 1e6, "s": 1e9, "sec": 1e9, "seconds": 1e9}
_UNIT_NAMES = {
    "tokens/sec": "tokens/s", "tokens/sec/user": "tokens/s/user", "requests/sec": "requests/s",
    "per sec": "requests/s", "count": "requests",
}
# Keys in the exports that are not metrics.
_NOT_METRICS = {"input_config", "telemetry_data", "telemetry_stats", "sessions", "run_info", "error_summary",
                "schema_version", "aiperf_version", "benchmark_id", "start_time", "end_time",
                "was_cancelled", "is_complete", "server_metrics", "network_latency", "gpu_telemetry"}


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
    models = ((config.get("models") or {}).get("items") or [])
    model = models[0].get("name") if models and isinstance(models[0], dict) else None
    run_info = data.get("run_info") or {}
    return ParsedExport(
        path=path, tool="aiperf", tool_version=data.get("aiperf_version"), model=model,
        concurrency=concurrency, isl=isl, osl=osl, date=data.get("start_time"),
        run_hint=str(data.get("benchmark_id") or run_info.get("benchmark_id") or ""),
        rows=_metric_rows(path, data),
    )


def parse_genai_perf(path: Path) -> ParsedExport:
    data = _load(path)
    config = data.get("input_config")
    if not isinstance(config, dict):
        raise ArtifactError(f"{path}: no input_config object: not a GenAI-Perf export")
    stimulus = ((config.get("perf_analyzer") or {}).get("stimulus") or {})
    concurrency = _int_or_none(stimulus.get("concurrency")) if isinstance(stimulus, dict) else None
    inputs = config.get("input") or {}
    isl = _int_or_none(((inputs.get("synthetic_tokens") or {}).get("mean")))
    osl = _int_or_none(((inputs.get("output_tokens") or {}).get("mean")))
    models = config.get("model_names") or []
    return ParsedExport(
        path=path, tool="genai-perf", tool_version=None, model=models[0] if models else None,
        concurrency=concurrency, isl=isl, osl=osl, date=None, run_hint="",
        rows=_metric_rows(path, data),
    )


def find_exports(directory: Path) -> list[Path]:
    """Export files in `directory` or one level below (GenAI-Perf nests per-run directories)."""
    if directory.is_file():
        if directory.name in EXPORT_FILES:
            return [directory]
        raise InputError(f"{directory}: not an AIPerf or GenAI-Perf export ({', '.join(EXPORT_FILES)})")
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
    raise InputError(f"{path}: not an AIPerf or GenAI-Perf export")


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
        concurrency = export.concurrency if export.concurrency is not None else context.concurrency
        if concurrency is None:
            raise ArtifactError(f"{export.path}: the export does not record its concurrency; pass --concurrency")
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
