"""Benchmark results: the tidy table every load-generator export lands in, and bench_run.json.

The tidy table (`bench.parquet` and `bench.csv`, same rows) has one row per
run x concurrency x metric x statistic. Columns, in this order:

| column        | type    | meaning |
| ---           | ---     | --- |
| run_id        | str     | one `trtq bench` sweep (or one ingested artifact directory) |
| tool          | str     | `aiperf`, `trtllm-bench` or `genai-perf` (deprecated upstream; old exports) |
| tool_version  | str     | the load generator's version, from its export where it records it |
| model         | str     | the model name the requests carried |
| engine        | str?    | engine / checkpoint directory benchmarked (empty for a bare --url) |
| plan_sha256   | str?    | sha256 of the trtq plan.yaml the engine was built from |
| gpu           | str?    | GPU the server ran on (registry name), when known |
| date          | str     | ISO-8601 UTC start time of the run |
| concurrency   | int     | concurrent requests the load generator kept in flight |
| isl           | int?    | requested mean input sequence length (tokens) |
| osl           | int?    | requested mean output sequence length (tokens) |
| metric        | str     | canonical metric name, see METRICS (other tool metrics keep the tool's tag) |
| statistic     | str     | avg, min, max, std, sum, count, p1, p5, p10, p25, p50, p75, p90, p95, p99 |
| value         | float   | the number, in `unit` |
| unit          | str     | `ns` for every time; `tokens/s`, `tokens/s/user`, `requests/s`, `tokens`, `requests`, ... |
| artifact_dir  | str     | the directory holding the load generator's export |

Times are nanoseconds (AIPerf, GenAI-Perf and trtllm-bench report milliseconds; ingestion converts).
trtllm-bench rows use the same names (its TPOT is `inter_token_latency`) plus `total_token_throughput`,
`output_token_throughput_per_gpu`, `generation_token_throughput_per_user` and `concurrent_requests`.
`statistic == "count"` is the number of samples behind a distribution, not a metric value.
Read the table with `read_table(path)`, which checks the columns.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from trtq.artifacts.io import Artifact, StrictModel
from trtq.errors import ArtifactError

TIDY_COLUMNS: tuple[str, ...] = (
    "run_id",
    "tool",
    "tool_version",
    "model",
    "engine",
    "plan_sha256",
    "gpu",
    "date",
    "concurrency",
    "isl",
    "osl",
    "metric",
    "statistic",
    "value",
    "unit",
    "artifact_dir",
)

# Canonical metric -> unit in the table. Both tools' exports map onto these names.
METRICS: dict[str, str] = {
    "time_to_first_token": "ns",
    "time_to_second_token": "ns",
    "inter_token_latency": "ns",
    "request_latency": "ns",
    "output_token_throughput": "tokens/s",
    "output_token_throughput_per_user": "tokens/s/user",
    "request_throughput": "requests/s",
    "goodput": "requests/s",
    "input_sequence_length": "tokens",
    "output_sequence_length": "tokens",
    "request_count": "requests",
}

# The metrics every ingested run must carry (a run without them is not a load-generator export).
REQUIRED_METRICS: tuple[str, ...] = ("request_latency", "request_throughput")

STATISTICS: tuple[str, ...] = (
    "avg",
    "min",
    "max",
    "std",
    "sum",
    "count",
    "p1",
    "p5",
    "p10",
    "p25",
    "p50",
    "p75",
    "p90",
    "p95",
    "p99",
)


class ConcurrencyRun(StrictModel):
    concurrency: int
    artifact_dir: str
    export_file: str
    command: list[str]
    returncode: int
    wall_s: float


class BenchRun(Artifact):
    """bench_run.json: what `trtq bench` ran, against what, and where the table is."""

    KIND: ClassVar[str] = "bench_run"
    SCHEMA_VERSION: ClassVar[int] = 1

    run_id: str
    tool: str
    tool_version: str
    model: str
    url: str
    engine: str | None = None
    plan_sha256: str | None = None
    gpu: str | None = None
    isl: int
    osl: int
    requests: dict[str, int]  # concurrency (as a string key) -> requests sent
    server_command: list[str] | None = None
    runs: list[ConcurrencyRun]
    table_parquet: str
    table_csv: str


def read_table(path: str | Path):
    """Read a tidy bench table (parquet or CSV) and check its columns; one-line errors."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"bench table not found: {p}")
    try:
        frame = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
    except Exception as exc:  # pyarrow / csv parser errors vary by version
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"{p}: not a readable bench table: {first}") from None
    missing = [c for c in TIDY_COLUMNS if c not in frame.columns]
    if missing:
        raise ArtifactError(f"{p}: not a trtq bench table: missing columns {', '.join(missing)}")
    return frame[list(TIDY_COLUMNS)]
