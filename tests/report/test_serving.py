"""Report sections for serving: the plan page's predicted TTFT/TPOT and KV format (escaped)."""

from __future__ import annotations

import pytest

from trtq.artifacts import load_artifact, save_artifact
from trtq.artifacts.plan import Plan


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TRTQ_CACHE", str(tmp_path_factory.getbasetemp() / "trtq-cache"))


@pytest.fixture(scope="module")
def serving_plan(tmp_path_factory):
    """A plan with a workload, SLOs and a 5-point serving front."""
    from tests.helpers.serving import WORKLOAD, llama_serving_inputs
    from trtq.artifacts import input_ref
    from trtq.artifacts.profile import Profile
    from trtq.plan.api import PlanRequest, solve_plan
    from trtq.registry import get_gpu

    d = tmp_path_factory.mktemp("serving")
    graph, profiles, sens = llama_serving_inputs(d)
    plan = solve_plan(graph, load_artifact(profiles["H100-SXM"], Profile), sens, get_gpu("H100-SXM"),
                      PlanRequest(budgets=[], workload=WORKLOAD, slos=["ttft=400ms", "tpot=12ms"], pareto=5),
                      {"profile": input_ref(profiles["H100-SXM"])})
    save_artifact(plan, d / "plan.yaml")
    return d / "plan.yaml"


def test_plan_page_shows_the_serving_prediction_and_kv_format(serving_plan, tmp_path):
    from trtq.report.render import write_plan_report

    plan = load_artifact(serving_plan, Plan)
    html = write_plan_report(serving_plan, tmp_path / "r.html").read_text()
    assert 'id="serving"' in html
    assert f"TTFT {plan.serving.ttft_ms:.1f} ms" in html and f"TPOT {plan.serving.tpot_ms:.2f} ms" in html
    assert f"KV cache <strong>{plan.serving.kv_format}</strong>" in html
    import json

    data = json.loads((tmp_path / "r.json").read_text())
    assert data["serving"]["kv_format"] == plan.serving.kv_format
    # The front is throughput against quality: one table row per point, the plan starred.
    assert "Pareto front: predicted throughput vs Σ sensitivity" in html
    assert "predicted latency vs Σ sensitivity" not in html
    assert len(data["pareto"]) == 5 and all(p["output_tokens_per_s_per_gpu"] > 0 for p in data["pareto"])
    assert f"{plan.serving.output_tokens_per_s_per_gpu:.0f}</td>" in html


def test_serving_strings_are_escaped(serving_plan, tmp_path):
    from trtq.report.render import write_plan_report

    plan = load_artifact(serving_plan, Plan)
    plan.serving.gemm_source = "<script>alert(1)</script>"
    evil = tmp_path / "evil.yaml"
    save_artifact(plan, evil)
    html = write_plan_report(evil, tmp_path / "e.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert(1)" not in html


def test_plan_without_serving_has_no_serving_card(plan_paths, tmp_path):
    from trtq.report.render import write_plan_report

    path = next(iter(plan_paths.values()))
    html = write_plan_report(path, tmp_path / "r.html").read_text()
    assert 'id="serving"' not in html


def test_serving_plan_page_renders_in_chromium(chromium, serving_plan, tmp_path):
    from tests.report.test_browser import _open_and_check
    from trtq.report.render import write_plan_report

    html = write_plan_report(serving_plan, tmp_path / "serving.html")
    state = _open_and_check(chromium, html, tmp_path / "serving.png")
    assert "chart-pareto" in {c["id"] for c in state["charts"]}
    assert "output tokens/s per GPU" in state["text"] and "KV cache" in state["text"]


def test_bench_sits_beside_the_serving_prediction(serving_plan, tmp_path):
    """A bench run of this plan at the workload's concurrency: predicted vs measured TTFT, TPOT, tokens/s per GPU."""
    import json

    from tests.helpers.synthetic_reports import bench_frame, write_bench
    from trtq.artifacts.io import sha256_file
    from trtq.report.render import write_plan_report

    plan = load_artifact(serving_plan, Plan)
    sha = sha256_file(serving_plan)
    bench = write_bench(tmp_path / "bench.csv", [(sha, plan.gpu, "engine-a", 1.0)])
    html = write_plan_report(serving_plan, tmp_path / "r.html", bench_table=bench).read_text()
    data = json.loads((tmp_path / "r.json").read_text())
    rows = {r["quantity"]: r for r in data["serving_vs_measured"]}
    assert set(rows) == {"TTFT", "TPOT", "output tokens/s per GPU"} and 'id="serving-vs-measured"' in html
    measured = {(r["metric"], r["statistic"]): r["value"] for r in bench_frame(sha, plan.gpu, "engine-a")
                if r["concurrency"] == plan.serving.concurrency}
    assert rows["TTFT"]["measured"] == pytest.approx(measured[("time_to_first_token", "p50")] / 1e6)
    assert rows["TPOT"]["predicted"] == pytest.approx(plan.serving.tpot_ms)
    assert rows["TPOT"]["ratio"] == pytest.approx(measured[("inter_token_latency", "p50")] / 1e6 / plan.serving.tpot_ms)
    assert rows["output tokens/s per GPU"]["measured"] == pytest.approx(measured[("output_token_throughput", "avg")])
    # A bench of this plan at other concurrencies only: nothing compared, and the page says why.
    other = tmp_path / "other.csv"
    import pandas as pd

    frame = pd.read_csv(bench)
    frame[frame.concurrency != plan.serving.concurrency].to_csv(other, index=False)
    html = write_plan_report(serving_plan, tmp_path / "o.html", bench_table=other).read_text()
    assert 'id="serving-vs-measured"' not in html and "serving prediction is not compared" in html
