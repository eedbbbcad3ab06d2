"""Both export parsers, the tidy table, and refusals of malformed exports (nothing half-written)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from trtq.artifacts.bench import TIDY_COLUMNS, read_table
from trtq.bench.ingest import RunContext, ingest, parse_aiperf, parse_genai_perf, table_paths
from trtq.cli import main
from trtq.errors import ArtifactError, InputError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bench"
AIPERF = FIXTURES / "aiperf_c2" / "profile_export_aiperf.json"
GENAI = FIXTURES / "genai_perf" / "profile_export_genai_perf.json"


def _value(frame, metric, statistic):
    rows = frame[(frame.metric == metric) & (frame.statistic == statistic)]
    assert len(rows) == 1, (metric, statistic, len(rows))
    return rows.iloc[0]


def test_aiperf_real_export_parses_with_times_in_ns():
    raw = json.loads(AIPERF.read_text())
    parsed = parse_aiperf(AIPERF)
    assert (parsed.tool, parsed.tool_version, parsed.model) == ("aiperf", "0.13.0", "smollm2-135m")
    assert (parsed.concurrency, parsed.isl, parsed.osl) == (2, 32, 8)
    frame = ingest([AIPERF.parent], RunContext(run_id="r1"))
    ttft = _value(frame, "time_to_first_token", "p50")
    assert ttft.unit == "ns"
    assert ttft.value == pytest.approx(raw["time_to_first_token"]["p50"] * 1e6)
    assert _value(frame, "request_count", "avg").value == 3
    assert _value(frame, "output_sequence_length", "avg").value == 8
    assert _value(frame, "output_token_throughput", "avg").unit == "tokens/s"
    assert _value(frame, "output_token_throughput_per_user", "p50").unit == "tokens/s/user"
    assert _value(frame, "request_throughput", "avg").unit == "requests/s"
    assert _value(frame, "inter_token_latency", "count").unit == "samples"
    assert set(frame.concurrency) == {2}
    assert list(frame.columns) == list(TIDY_COLUMNS)


def test_genai_perf_export_parses_and_maps_names():
    parsed = parse_genai_perf(GENAI)
    assert (parsed.tool, parsed.model, parsed.concurrency, parsed.isl, parsed.osl) == (
        "genai-perf", "meta-llama/Llama-3.1-8B-Instruct", 4, 128, 128)
    frame = ingest([GENAI.parent], RunContext(tool_version="0.0.16", gpu="H100-SXM", date="2026-11-25T00:00:00+00:00"))
    assert _value(frame, "time_to_first_token", "p50").value == pytest.approx(46_511_979, rel=1e-9)
    assert _value(frame, "request_latency", "max").unit == "ns"
    assert _value(frame, "goodput", "avg").unit == "requests/s"           # request_goodput, renamed
    assert _value(frame, "request_count", "avg").value == 32
    assert _value(frame, "request_count", "avg").unit == "requests"
    assert set(frame.tool_version) == {"0.0.16"} and set(frame.gpu) == {"H100-SXM"}
    # System metrics carry only avg in GenAI-Perf's export.
    assert set(frame[frame.metric == "output_token_throughput"].statistic) == {"avg"}


def test_one_row_per_run_concurrency_metric_statistic(tmp_path):
    frame = ingest([AIPERF.parent, GENAI.parent], RunContext())
    assert not frame.duplicated(["run_id", "concurrency", "metric", "statistic"]).any()
    assert set(frame.tool) == {"aiperf", "genai-perf"}
    assert frame.groupby("tool").run_id.nunique().to_dict() == {"aiperf": 1, "genai-perf": 1}


def test_ingest_cli_writes_parquet_and_csv_with_the_same_rows(tmp_path, capsys):
    out = tmp_path / "tables" / "all.parquet"
    assert main(["bench", "ingest", str(AIPERF.parent), str(GENAI.parent), "-o", str(out),
                 "--gpu", "H100-SXM", "--tool-version", "0.0.16"]) == 0
    parquet, csv = read_table(out), read_table(out.with_suffix(".csv"))
    assert len(parquet) == len(csv) > 50
    assert parquet.value.tolist() == pytest.approx(csv.value.tolist())
    assert "TTFT p50" in capsys.readouterr().out


def _copy(tmp_path: Path, source: Path, name: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    shutil.copy(source, d / source.name)
    return d / source.name


def test_truncated_export_names_the_file_and_writes_nothing(tmp_path, capsys):
    bad = _copy(tmp_path, AIPERF, "bad")
    bad.write_text(bad.read_text()[:5000])
    out = tmp_path / "t.parquet"
    assert main(["bench", "ingest", str(AIPERF.parent), str(bad.parent), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(bad) in err and "not valid JSON" in err
    assert not out.exists() and not out.with_suffix(".csv").exists()
    assert not list(tmp_path.glob(".t.*"))  # no temporary left behind


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("request_latency"), "no request_latency"),
        (lambda d: d["time_to_first_token"].update(p50="fast"), "time_to_first_token statistic p50"),
        (lambda d: d["request_latency"].update(p99=float("nan")), "not a finite number"),
        (lambda d: d.update(was_cancelled=True), "cancelled"),
        (lambda d: d.pop("input_config") and d.pop("aiperf_version"), "not an AIPerf export"),
    ],
)
def test_malformed_aiperf_exports_are_refused(tmp_path, mutate, message):
    path = _copy(tmp_path, AIPERF, "x")
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=message) as info:
        parse_aiperf(path)
    assert str(path) in str(info.value)


def test_genai_perf_export_without_concurrency_needs_it_given(tmp_path):
    path = _copy(tmp_path, GENAI, "g")
    data = json.loads(path.read_text())
    data["input_config"]["perf_analyzer"]["stimulus"] = {"request_rate": 5}
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="concurrency"):
        ingest([path.parent], RunContext())
    frame = ingest([path.parent], RunContext(concurrency=8))
    assert set(frame.concurrency) == {8}


def test_directory_without_exports_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no profile_export_aiperf.json"):
        ingest([tmp_path], RunContext())


def test_table_paths():
    assert table_paths("r/x.csv") == (Path("r/x.parquet"), Path("r/x.csv"))
    assert table_paths("r/x") == (Path("r/x.parquet"), Path("r/x.csv"))


def test_read_table_refuses_a_foreign_csv(tmp_path):
    path = tmp_path / "other.csv"
    pd.DataFrame({"a": [1]}).to_csv(path, index=False)
    with pytest.raises(ArtifactError, match="missing columns"):
        read_table(path)
