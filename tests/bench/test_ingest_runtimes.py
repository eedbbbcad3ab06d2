"""trtllm-bench reports and older GenAI-Perf exports land in the same tidy table as AIPerf's, with a tool column."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from trtq.artifacts.bench import TIDY_COLUMNS, read_table
from trtq.bench.ingest import RunContext, ingest, parse_genai_perf, parse_trtllm_bench
from trtq.cli import main
from trtq.errors import ArtifactError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bench"
TRTLLM_BENCH = FIXTURES / "trtllm_bench_c8" / "trtllm_bench_report.json"
OLD_GENAI_DIR = FIXTURES / "genai_perf_flat" / "meta-llama_Llama-3.1-8B-Instruct-openai-chat-concurrency4"
AIPERF = FIXTURES / "aiperf_c2"


def _value(frame, metric, statistic, tool=None):
    rows = frame[(frame.metric == metric) & (frame.statistic == statistic)]
    if tool:
        rows = rows[rows.tool == tool]
    assert len(rows) == 1, (metric, statistic, len(rows))
    return rows.iloc[0]


def test_trtllm_bench_report_parses_with_times_in_ns():
    raw = json.loads(TRTLLM_BENCH.read_text())
    parsed = parse_trtllm_bench(TRTLLM_BENCH)
    assert (parsed.tool, parsed.tool_version, parsed.model) == ("trtllm-bench", "1.2.1",
                                                                "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert (parsed.concurrency, parsed.isl, parsed.osl) == (8, 128, 128)   # c8: the directory name
    frame = ingest([TRTLLM_BENCH.parent], RunContext(run_id="tb", gpu="H100-SXM"))
    assert list(frame.columns) == list(TIDY_COLUMNS)
    assert _value(frame, "request_throughput", "avg").value == pytest.approx(8.800821872121215)
    assert _value(frame, "time_to_first_token", "p50").value == pytest.approx(23.864002e6)
    assert _value(frame, "time_to_first_token", "p50").unit == "ns"
    assert _value(frame, "request_latency", "p90").value == pytest.approx(
        raw["performance"]["request_latency_percentiles_ms"]["p90"] * 1e6)
    assert _value(frame, "request_latency", "max").value == pytest.approx(
        raw["performance"]["request_latency_percentiles_ms"]["maximum"] * 1e6)
    assert _value(frame, "inter_token_latency", "avg").value == pytest.approx(
        raw["streaming_metrics"]["tpot_percentiles"]["average"] * 1e6)
    assert _value(frame, "output_token_throughput", "avg").unit == "tokens/s"
    assert _value(frame, "request_count", "avg").value == 64
    assert set(frame.tool) == {"trtllm-bench"} and set(frame.concurrency) == {8}


def test_older_genai_perf_export_reads_flat_model_and_concurrency_and_the_directory_name(tmp_path):
    parsed = parse_genai_perf(OLD_GENAI_DIR / "profile_export_genai_perf.json")
    assert (parsed.model, parsed.concurrency, parsed.isl, parsed.osl) == (
        "meta-llama/Llama-3.1-8B-Instruct", 4, 128, 128)
    # Without input_config.concurrency, the -concurrency4 directory name says it.
    copy = tmp_path / OLD_GENAI_DIR.name
    shutil.copytree(OLD_GENAI_DIR, copy)
    export = copy / "profile_export_genai_perf.json"
    data = json.loads(export.read_text())
    del data["input_config"]["concurrency"]
    export.write_text(json.dumps(data))
    assert parse_genai_perf(export).concurrency == 4
    # A parent directory with per-run directories below it: one level down, as GenAI-Perf nests them.
    frame = ingest([tmp_path], RunContext(tool_version="0.0.8"))
    assert set(frame.concurrency) == {4} and set(frame.model) == {"meta-llama/Llama-3.1-8B-Instruct"}


def test_three_tools_one_table_through_the_cli(tmp_path, capsys):
    out = tmp_path / "all.parquet"
    assert main(["bench", "ingest", str(AIPERF), str(OLD_GENAI_DIR), str(TRTLLM_BENCH), "-o", str(out),
                 "--tool-version", "0.0.8"]) == 0
    table = read_table(out)
    assert set(table.tool) == {"aiperf", "genai-perf", "trtllm-bench"}
    by_tool = table[(table.metric == "request_throughput") & (table.statistic == "avg")].set_index("tool")
    assert by_tool.loc["trtllm-bench", "concurrency"] == 8 and by_tool.loc["genai-perf", "concurrency"] == 4
    assert by_tool.loc["aiperf", "concurrency"] == 2
    assert (read_table(out.with_suffix(".csv")).shape == table.shape)


def test_a_report_without_concurrency_anywhere_asks_for_it(tmp_path):
    path = tmp_path / "report.json"
    shutil.copyfile(TRTLLM_BENCH, path)
    with pytest.raises(ArtifactError, match="does not record its concurrency .* pass --concurrency"):
        ingest([path], RunContext())
    assert set(ingest([path], RunContext(concurrency=16)).concurrency) == {16}


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("performance"), "not a trtllm-bench --report_json report"),
    (lambda d: d["performance"].update(request_throughput_req_s="fast"), "request_throughput_req_s is 'fast'"),
    (lambda d: d["performance"].pop("request_latency_percentiles_ms") and d["performance"].pop("avg_request_latency_ms"),
     "no request_latency in the report"),
    (lambda d: d["streaming_metrics"]["ttft_percentiles"].update(p50=float("nan")), "ttft_percentiles.p50 is nan"),
])
def test_malformed_trtllm_bench_reports_are_refused(mutate, message, tmp_path):
    data = json.loads(TRTLLM_BENCH.read_text())
    mutate(data)
    path = tmp_path / "c8" / "trtllm_bench_report.json"
    path.parent.mkdir()
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=message):
        ingest([path.parent], RunContext())
