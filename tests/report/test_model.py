"""The numbers the reports show: totals, selection across GPUs, verdicts, bench reading, refusals."""

from __future__ import annotations

import pandas as pd
import pytest

from trtq.artifacts.io import load_artifact, save_artifact, sha256_file
from trtq.artifacts.plan import Plan
from trtq.errors import ArtifactError, InputError
from trtq.report.model import build_comparison_report, build_plan_report, load_bench_table, verdict_for
from tests.helpers.synthetic_reports import build_plan


def test_plan_report_totals_match_the_plan(plan_paths, sensitivity_path, eval_path, bench_table):
    path = plan_paths["H100-SXM"]
    plan = load_artifact(path, Plan)
    report = build_plan_report(path, sensitivity=sensitivity_path, eval_result=eval_path, bench_table=bench_table)
    decode = next(p for p in report.points if p.point == "decode@16")
    assert decode.predicted_ns == plan.totals.latency_ns["decode@16"]
    assert decode.bf16_ns == plan.totals.bf16_latency_ns["decode@16"]
    assert decode.met is True and decode.spec == "decode@16=0.6"
    assert report.plan_sha256 == sha256_file(path)
    assert [p.fraction for p in report.pareto] == sorted((p.fraction for p in plan.pareto), reverse=True)
    assert sum(p.chosen for p in report.pareto) == 1
    # Per layer from the sensitivity artifact: q, k, v, o, gate, up, down for 30 blocks.
    assert len(report.layer_sensitivity) == 7 * 30
    assert report.eval.passed and report.eval.matches_plan
    # ITL at concurrency 16 measured on this plan's engine against decode@16's predicted GEMM time.
    (pvm,) = report.predicted_vs_measured
    assert pvm.concurrency == 16 and pvm.ratio == pytest.approx(pvm.measured_itl_ns / decode.predicted_ns)
    assert report.warnings == []


def test_comparison_uses_one_quality_bound_and_computes_the_verdict(plan_paths, bench_table):
    report = build_comparison_report(list(plan_paths.values()), bench_tables=[bench_table])
    chosen = {gpu: load_artifact(p, Plan).totals.sensitivity for gpu, p in plan_paths.items()}
    assert report.quality_bound == pytest.approx(min(chosen.values()))
    assert {g.gpu for g in report.gpus} == set(plan_paths)
    for g in report.gpus:
        assert g.sensitivity <= report.quality_bound * (1 + 1e-9)
        assert g.serving is None   # no --workload: no serving prediction (and no GEMM-bound tokens/s)
        assert g.fits is True
    formats = {g.gpu: set(g.candidate_formats) for g in report.gpus}
    assert "fp8" not in formats["A100-SXM-80GB"] and "nvfp4" in formats["B200"]
    latency = {g.gpu: g.latency_ns["decode@16"] for g in report.gpus}
    verdict = next(v for v in report.verdicts if v.point == "decode@16")
    fastest = min(latency, key=latency.get)
    assert verdict.fastest == fastest
    for other, ratio in verdict.speedups.items():
        assert ratio == pytest.approx(latency[other] / latency[fastest])
        assert f"{ratio:.2f}× faster than {other}" in verdict.text
    # Measured: B200's engine was 1.8× and A100's 0.6× the H100's speed in the bench table.
    measured = report.measured_verdicts[0]
    assert measured.fastest == "B200"
    assert measured.speedups["H100-SXM"] == pytest.approx(1.8)
    assert measured.speedups["A100-SXM-80GB"] == pytest.approx(3.0)


def test_comparison_at_a_budget_fraction(plan_dir):
    report = build_comparison_report([plan_dir], fraction=0.7)
    assert all(g.fraction == 0.7 for g in report.gpus)
    with pytest.raises(InputError, match="no plan for .* at budget fraction 0.33"):
        build_comparison_report([plan_dir], fraction=0.33)


def test_a_stricter_quality_bound_picks_slower_plans(plan_dir):
    loose = build_comparison_report([plan_dir])
    strict = build_comparison_report([plan_dir], quality_bound=0.5)
    for a, b in zip(sorted(loose.gpus, key=lambda g: g.gpu), sorted(strict.gpus, key=lambda g: g.gpu)):
        assert b.sensitivity <= 0.5
        assert b.latency_ns["decode@16"] >= a.latency_ns["decode@16"]


def test_verdict_text_and_ties():
    v = verdict_for("decode@16", {"H100": 20.0, "A100": 43.0, "B200": 10.0})
    assert v.text == "decode@16: B200 is fastest, 2.00× faster than H100 and 4.30× faster than A100"
    tie = verdict_for("decode@16", {"H100": 10.05, "B200": 10.0})
    assert tie.text.startswith("decode@16: B200 and H100 are fastest (within 1% of each other)")


def test_compare_refuses_plans_of_different_models(tmp_path, plan_paths):
    other = save_artifact(build_plan("B200", model="llama-3.1-8b"), tmp_path / "other.yaml")
    with pytest.raises(InputError, match="one model"):
        build_comparison_report([plan_paths["H100-SXM"], other])


def test_refuses_missing_and_malformed_artifacts(tmp_path, plan_paths, bench_table):
    with pytest.raises(ArtifactError, match="plan artifact not found: .*missing.yaml"):
        build_plan_report(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("artifact: plan\nschema_version: 1\nmodel: [\n")
    with pytest.raises(ArtifactError, match="bad.yaml"):
        build_comparison_report([bad])
    wrong_kind = tmp_path / "sens.yaml"
    wrong_kind.write_text("artifact: sensitivity\nschema_version: 1\n")
    with pytest.raises(ArtifactError, match="expected a plan artifact"):
        build_plan_report(wrong_kind)
    with pytest.raises(ArtifactError, match="eval artifact not found"):
        build_plan_report(plan_paths["H100-SXM"], eval_result=tmp_path / "eval.json")
    with pytest.raises(ArtifactError, match="no plan artifact"):
        build_comparison_report([_empty_dir(tmp_path)])


def _empty_dir(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_bench_table_is_checked(tmp_path, bench_table):
    frame = pd.read_parquet(bench_table)
    frame.drop(columns=["concurrency"]).to_csv(tmp_path / "no_conc.csv", index=False)
    with pytest.raises(ArtifactError, match="missing columns concurrency"):
        load_bench_table(tmp_path / "no_conc.csv")
    ms = frame.copy()
    ms.loc[ms["metric"] == "inter_token_latency", "unit"] = "ms"
    ms.to_csv(tmp_path / "ms.csv", index=False)
    with pytest.raises(ArtifactError, match="inter_token_latency is in 'ms'"):
        load_bench_table(tmp_path / "ms.csv")
    (tmp_path / "garbage.parquet").write_bytes(b"not parquet")
    with pytest.raises(ArtifactError, match="garbage.parquet"):
        load_bench_table(tmp_path / "garbage.parquet")
    # The CSV and parquet forms of the same table read the same.
    frame.to_csv(tmp_path / "same.csv", index=False)
    a, b = load_bench_table(bench_table), load_bench_table(tmp_path / "same.csv")
    assert a["value"].tolist() == pytest.approx(b["value"].tolist())


def test_reports_read_the_gpu_facts_the_plan_recorded_not_todays_registry(tmp_path, plan_paths, monkeypatch):
    """An edit of profiles/gpus.yaml after planning changes no report: the plan carries its GPU's facts."""
    import shutil

    import yaml

    from trtq.registry import get_gpu, profiles_dir

    paths = list(plan_paths.values())
    before_plan, before_compare = build_plan_report(plan_paths["H100-SXM"]), build_comparison_report(paths)
    profiles = tmp_path / "profiles"
    shutil.copytree(profiles_dir(), profiles)
    data = yaml.safe_load((profiles / "gpus.yaml").read_text())
    for gpu in data["gpus"]:
        gpu["memory_bytes"], gpu["sm"] = 1, gpu["sm"] + 1  # by today's registry nothing fits any more
    (profiles / "gpus.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv("TRTQ_PROFILES_DIR", str(profiles))
    assert get_gpu("H100-SXM").memory_bytes == 1

    after_plan, after_compare = build_plan_report(plan_paths["H100-SXM"]), build_comparison_report(paths)
    assert after_plan.gpu_memory_bytes == before_plan.gpu_memory_bytes == 80_000_000_000
    columns = [(g.gpu, g.sm, g.memory_bytes, g.fits, g.memory_share) for g in after_compare.gpus]
    assert columns == [(g.gpu, g.sm, g.memory_bytes, g.fits, g.memory_share) for g in before_compare.gpus]
    assert all(g.fits for g in after_compare.gpus) and {g.sm for g in after_compare.gpus} == {80, 90, 100}
    assert after_compare.verdicts == before_compare.verdicts
    assert after_plan.warnings == after_compare.warnings == []

    # A plan from before schema 3 recorded no facts: its report reads today's registry and says so.
    old = load_artifact(plan_paths["H100-SXM"], Plan).model_copy(update={"gpu_facts": None, "schema_version": 2})
    report = build_plan_report(save_artifact(old, tmp_path / "old-plan.yaml"))
    assert report.gpu_memory_bytes == 1
    assert any("predates recorded GPU facts" in w and "H100-SXM" in w for w in report.warnings)


def test_comparison_predicts_serving_at_a_workload(plan_paths, tmp_path):
    """--workload: each GPU's plan served (trtq predict) on its own profile; what cannot be predicted says why."""
    from trtq.artifacts.io import input_ref
    from trtq.model.layers import build_layer_graph
    from trtq.model.zoo import resolve_model
    from trtq.profile.api import build_profile

    h100 = load_artifact(plan_paths["H100-SXM"], Plan)
    graph = build_layer_graph(resolve_model(h100.model))
    profile = save_artifact(build_profile(graph, "roofline", "H100-SXM", [1, 16, 128, 1024, 2048], runtime="all"),
                            tmp_path / "h100-profile.json")
    h100.metadata.inputs["profile"] = input_ref(profile)
    plans = [save_artifact(h100, tmp_path / "plan-h100.yaml"), plan_paths["B200"]]
    report = build_comparison_report(plans, workload="isl=1024,osl=128,concurrency=8")
    assert report.workload == "isl=1024,osl=128,concurrency=8"
    served = {g.gpu: g.serving for g in report.gpus}
    h = served["H100-SXM"]
    assert h.error is None and 0 < h.tpot_ms < h.ttft_ms and h.output_tokens_per_s_per_gpu > 0
    assert h.concurrency == 8 <= h.max_concurrency and 0 <= h.modelled_share <= 1
    # B200's plan names no profile and holds INT8-SQ, which NVIDIA's B200 tables lack: said, not guessed.
    assert served["B200"].error and "int8_sq" in served["B200"].error
    verdict = report.verdicts[-1]   # only H100 has a prediction: it serves the most, alone
    assert verdict.point == report.workload and verdict.fastest == "H100-SXM" and "serves the most" in verdict.text
    with pytest.raises(InputError, match="--workload"):
        from trtq.report.request import ReportRequest

        ReportRequest(plans=[plans[0]], workload="isl=1024,osl=128")   # a single-plan report takes none
