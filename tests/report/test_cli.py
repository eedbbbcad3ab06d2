"""`trtq report` and `trtq report compare` as a user runs them, errors included."""

from __future__ import annotations

import json
import subprocess
import sys

from trtq.cli import main


def test_report_commands_write_html_and_json(tmp_path, plan_dir, plan_paths, bench_table, eval_path,
                                             sensitivity_path, capsys):
    out = tmp_path / "reports" / "h100.html"
    rc = main(["report", str(plan_paths["H100-SXM"]), "--eval", str(eval_path), "--sensitivity",
               str(sensitivity_path), "--bench", str(bench_table), "-o", str(out)])
    assert rc == 0 and out.is_file() and out.with_suffix(".json").is_file()
    assert f"wrote {out}" in capsys.readouterr().out

    out = tmp_path / "reports" / "compare.html"
    rc = main(["report", "compare", str(plan_dir), "--bench", str(bench_table), "-o", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0 and out.is_file()
    verdicts = [v["text"] for v in json.loads(out.with_suffix(".json").read_text())["verdicts"]]
    assert verdicts and all(v in printed for v in verdicts)


def test_missing_and_malformed_artifacts_are_one_line_errors(tmp_path, plan_paths, capsys):
    bad = tmp_path / "broken.yaml"
    bad.write_text("artifact: plan\nschema_version: 1\nmodel: x\n")
    cases = [
        (["report", str(tmp_path / "nope.yaml")], "nope.yaml"),
        (["report", "compare", str(plan_paths["B200"]), str(bad)], "broken.yaml"),
        (["report", str(plan_paths["B200"]), "--bench", str(tmp_path / "none.parquet")], "none.parquet"),
        (["report", str(plan_paths["B200"]), "--eval", str(bad)], "broken.yaml"),
        (["report", "compare", str(plan_paths["B200"]), "--fraction", "0.6", "--quality-bound", "1"], "not both"),
        (["report", "compare"], "at least one plan"),
        (["report", str(plan_paths["B200"]), "--fraction", "0.5"], "compare only"),
    ]
    for argv, needle in cases:
        rc = main(argv + ["-o", str(tmp_path / "x.html")])
        err = capsys.readouterr().err
        assert rc == 2, argv
        assert err.startswith("trtq: error: ") and err.count("\n") == 1 and needle in err, (argv, err)
    assert not (tmp_path / "x.html").exists()


def test_help_stays_light():
    code = ("import sys; from trtq.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('pandas', 'plotly', 'jinja2', 'torch') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "plotly" not in result.stdout and "jinja2" not in result.stdout


def test_report_options_come_from_its_request_and_the_library_takes_it(tmp_path, plan_dir, plan_paths, bench_table):
    from pathlib import Path

    import pytest

    from trtq.cli import build_parser
    from trtq.errors import InputError
    from trtq.report.render import write_report
    from trtq.report.request import ReportRequest

    args = build_parser().parse_args(["report", "compare", str(plan_dir), "--bench", str(bench_table),
                                      "--fraction", "0.6"])
    request = ReportRequest.from_args(args, plans=args.inputs[1:], compare=True)
    assert request == ReportRequest(plans=[plan_dir], compare=True, bench=[bench_table], fraction=0.6)
    assert request.quality_bound is None and request.profile is None  # the defaults are the model's
    out, report = write_report(request, tmp_path / "c.html")
    assert out.is_file() and {g.gpu for g in report.gpus} == set(plan_paths)
    assert all(g.fraction == pytest.approx(0.6) for g in report.gpus)
    out, report = write_report(ReportRequest(plans=[plan_paths["B200"]]), tmp_path / "p.html")
    assert out.is_file() and report.gpu == "B200" and json.loads(out.with_suffix(".json").read_text())["gpu"] == "B200"
    with pytest.raises(InputError, match="--profile apply to a single-plan report"):
        ReportRequest(plans=[plan_dir], compare=True, profile=Path("p.json"))
    with pytest.raises(InputError, match="report takes one plan"):
        ReportRequest(plans=[plan_paths["B200"], plan_paths["H100-SXM"]])
