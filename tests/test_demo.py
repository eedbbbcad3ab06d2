"""`trtq demo`, the README's first command, end to end on the real model — its own options make it quick.

The full default run (three GPUs, 4 x 256-token Hessian windows, 16 perplexity windows) takes minutes
more on 2 cores; this is the same code path with two GPUs and short windows.
"""

from __future__ import annotations

import json

import pytest

from trtq.artifacts import load_artifact
from trtq.artifacts.eval import EvalResult
from trtq.artifacts.plan import Plan
from trtq.artifacts.profile import Profile
from trtq.artifacts.run import Front, Selection
from trtq.artifacts.sensitivity import Sensitivity
from trtq.cli import main

QUICK = ["--gpu", "H100", "--gpu", "B200", "--seq-len", "64", "--hessian-samples", "2", "--hessian-probes", "2",
         "--calib-samples", "2", "--eval-windows", "2", "--pareto", "3"]


def test_demo_runs_the_whole_pipeline(tmp_path, capsys, loads_smollm2):
    out, report = tmp_path / "demo", tmp_path / "reports" / "demo-compare.html"
    code = main(["demo", "-o", str(out), "--report", str(report), *QUICK])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    sensitivity = load_artifact(out / "sensitivity" / "all" / "sensitivity.json", Sensitivity)
    assert sensitivity.method == "hessian" and len({r.layer for r in sensitivity.rows}) == 210
    selection = load_artifact(out / "select" / "all" / "selection.json", Selection)
    assert [g.gpu for g in selection.gpus] == ["H100-SXM", "B200"]
    for gpu in ("H100-SXM", "B200"):  # NVIDIA's measured tables, the formats they lack modelled and marked
        profile = load_artifact(out / "profile" / gpu / "profile.json", Profile)
        assert profile.backend == "aiconfigurator"
        assert {r.provenance for r in profile.rows if r.format == "bf16"} <= {"measured", "interpolated"}
    # A budget no plan meets is said, per GPU, with the planner's reason.
    for g in selection.gpus:
        if g.reason:
            assert g.within_budgets is False and f"{g.gpu}: budgets not met: " in " ".join(captured.out.split())
    for g in selection.gpus:
        assert g.status == "selected", g
        plan = load_artifact(out / g.plan, Plan)
        assert plan.gpu == g.gpu and plan.model == "smollm2-135m" and len(plan.groups) == 120
        # The selected plan passes the gate it was selected by, measured.
        front = load_artifact(out / "front" / g.gpu / "front.json", Front)
        picked = next(e for e in g.evaluations if e.plan_hash == front.candidates[g.selected].plan_hash)
        assert picked.passed and picked.relative_increase <= selection.max_ppl_increase / 100
    assert "nvfp4" not in {gr.format for gr in load_artifact(out / "select" / "all" / "plan-H100-SXM.yaml",
                                                             Plan).groups}  # Hopper has no FP4 kernels
    result = load_artifact(out / "eval" / "H100-SXM" / "eval.json", EvalResult)   # the exported checkpoint
    assert result.source == "checkpoint" and result.seq_len == 64 and 5 < result.ppl_bf16 < 500
    assert str(report) in captured.out and "evaluations:" in captured.out
    data = json.loads(report.with_suffix(".json").read_text())
    assert data["artifact"] == "comparison_report" and [g["gpu"] for g in data["gpus"]] == ["H100-SXM", "B200"]
    # Each selected plan served at the bench's heaviest point (isl 1024, osl 128, concurrency 32), predicted.
    assert data["workload"] == "isl=1024,osl=128,concurrency=32"
    for g in data["gpus"]:
        assert g["serving"]["error"] is None and 0 < g["serving"]["tpot_ms"] < g["serving"]["ttft_ms"], g
    # Nothing changed: the second run redoes nothing.
    assert main(["demo", "-o", str(out), "--report", str(report), *QUICK]) == 0
    assert "0 unit(s) ran" in capsys.readouterr().err


@pytest.mark.parametrize("extra, needle", [
    (["--gpu", "H900"], "unknown GPU"),
    (["--hessian-samples", "0"], "must be at least 1"),
    (["--budget", "decode@16=fast"], "budget"),
    (["--seq-len", "x"], "not an integer"),
])
def test_demo_options_are_checked_before_any_work(tmp_path, capsys, extra, needle):
    out = tmp_path / "demo"
    try:
        code = main(["demo", "-o", str(out), "--report", str(tmp_path / "r.html"), *extra])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.strip().count("\n") == 0, err
    assert not out.exists()
