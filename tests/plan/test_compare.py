"""`trtq compare` (trtq/plan/compare.py): per GPU the fastest plan meeting the SLOs, $/1M tokens, the front."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers.serving import WORKLOAD, llama_serving_inputs
from trtq.errors import InputError
from trtq.plan.api import PlanRequest, make_plan
from trtq.plan.compare import compare, parse_prices

SLOS = ["ttft=400ms", "tpot=12ms"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TRTQ_CACHE", str(tmp_path_factory.getbasetemp() / "trtq-cache"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("compare")
    _, profiles, _ = llama_serving_inputs(d, ("H100-SXM", "B200"))
    return {gpu: str(path) for gpu, path in profiles.items()}, str(d / "sens.json"), d


@pytest.fixture(scope="module")
def result(inputs):
    profiles, sens, _ = inputs
    return compare(model="llama-3.1-8b", gpus=["h100", "b200"], profiles=profiles, sensitivity=sens,
                   workload=WORKLOAD, slos=SLOS, prices={"H100-SXM": 2.5, "B200": 6.0}, front_points=5)


def test_each_gpu_fastest_plan_front_and_cost(result, inputs):
    profiles, sens, _ = inputs
    assert [g["gpu"] for g in result["gpus"]] == ["H100-SXM", "B200"]
    for g in result["gpus"]:
        fastest, front = g["fastest"], g["front"]
        assert fastest["ttft_ms"] <= 400 and fastest["tpot_ms"] <= 12 and g["max_concurrency"] >= 32
        assert g["usd_per_million_tokens"] == pytest.approx(
            g["price_per_gpu_hour"] / (fastest["tokens_per_s_per_gpu"] * 3600) * 1e6)
        # The front runs from the fastest plan down to the least-Omega plan, both strictly monotone.
        assert front[0]["tokens_per_s_per_gpu"] == pytest.approx(fastest["tokens_per_s_per_gpu"])
        assert all(a["omega"] > b["omega"] and a["tokens_per_s_per_gpu"] > b["tokens_per_s_per_gpu"]
                   for a, b in zip(front, front[1:]))
        for p in front:
            assert p["ttft_ms"] <= 400 * (1 + 1e-9) and p["tpot_ms"] <= 12 * (1 + 1e-9)
        # Its loose end is the plan `trtq plan --workload --slo` makes (least total Omega).
        plan = make_plan("llama-3.1-8b", profiles[g["gpu"]], sens, g["gpu"],
                         PlanRequest(budgets=[], workload=WORKLOAD, slos=SLOS, mip_rel_gap=1e-3))
        s = plan.serving
        assert front[-1]["omega"] == pytest.approx(s.kv_candidates[s.kv_format], rel=2e-3)
        assert front[-1]["tokens_per_s_per_gpu"] <= fastest["tokens_per_s_per_gpu"]
    # B200 runs NVFP4 and serves more tokens/s per GPU than the H100 at these SLOs.
    h100, b200 = result["gpus"]
    assert b200["fastest"]["tokens_per_s_per_gpu"] > h100["fastest"]["tokens_per_s_per_gpu"]
    assert "nvfp4" in b200["fastest"]["formats"] and "nvfp4" not in h100["fastest"]["formats"]
    cheapest = min(result["gpus"], key=lambda g: g["usd_per_million_tokens"])
    assert result["verdict"].startswith(cheapest["gpu"])


def test_quality_bound_limits_the_fastest_plan(inputs, result):
    profiles, sens, _ = inputs
    bound = 1.0
    bounded = compare(model="llama-3.1-8b", gpus=["b200"], profiles=profiles, sensitivity=sens, workload=WORKLOAD,
                      slos=SLOS, quality_bound=bound, front_points=2)["gpus"][0]
    assert bounded["fastest"]["omega"] <= bound
    assert bounded["fastest"]["tokens_per_s_per_gpu"] < result["gpus"][1]["fastest"]["tokens_per_s_per_gpu"]
    # Every front point of the unbounded run within the bound is no faster than the bounded fastest plan.
    within = [p for p in result["gpus"][1]["front"] if p["omega"] <= bound]
    assert all(p["tokens_per_s_per_gpu"] <= bounded["fastest"]["tokens_per_s_per_gpu"] * (1 + 1e-9) for p in within)


def test_gpu_that_cannot_meet_the_slo_says_why(inputs):
    profiles, sens, _ = inputs
    r = compare(model="llama-3.1-8b", gpus=["h100", "b200"], profiles=profiles, sensitivity=sens, workload=WORKLOAD,
                slos=["ttft=100ms"], front_points=2)
    h100, b200 = r["gpus"]
    assert h100["fastest"] is None and "SLO ttft=100ms cannot be met on H100-SXM" in h100["error"]
    assert b200["fastest"]["ttft_ms"] <= 100 and r["verdict"].startswith("B200")


def test_prices_parse_and_refuse():
    assert parse_prices(["h100=2.5", "B200=6"]) == {"H100-SXM": 2.5, "B200": 6.0}
    for bad, words in (("H100", "expected GPU=USD"), ("H100=x", "not a number"), ("H100=-1", "positive"),
                       ("H100=nan", "positive finite"), ("H100=", "expected GPU=USD"), ("H900=2", "unknown GPU")):
        with pytest.raises(InputError, match=words):
            parse_prices([bad])
    with pytest.raises(InputError, match="H100-SXM is given twice"):
        parse_prices(["H100=2", "h100-sxm=3"])


def test_cli_json_and_escaped_html(inputs, tmp_path):
    profiles, sens, _ = inputs
    out = tmp_path / "cmp.html"
    run = subprocess.run([sys.executable, "-m", "trtq", "compare", "llama-3.1-8b", "--gpu", "h100", "--profile",
                          f"h100={profiles['H100-SXM']}", "--sensitivity", sens, "--workload", WORKLOAD, "--slo",
                          "ttft=400ms,tpot=12ms", "--price", "H100=2.5", "--front", "2", "--json", "-o", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["gpus"][0]["fastest"]["tpot_ms"] <= 12
    assert json.loads(out.with_suffix(".json").read_text()) == data
    assert "H100-SXM" in out.read_text()
    from trtq.report.serving import write_serving_comparison

    data["model"] = "<script>alert(1)</script>"
    data["gpus"][0]["error"], data["gpus"][0]["fastest"] = "<img src=x onerror=alert(2)>", None
    html = write_serving_comparison(data, tmp_path / "evil.html").read_text()
    assert "<script>alert" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
