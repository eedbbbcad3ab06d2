"""The HTML: self-contained, escaped, with its data beside it and the plan downloadable."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from trtq.artifacts.eval import EvalResult
from trtq.artifacts.io import make_metadata, save_artifact, sha256_file
from trtq.report.render import plotly_js, write_comparison_report, write_plan_report
from tests.report.synthetic import build_plan, build_sensitivity, write_bench

PAYLOAD = "<script>window.__pwned=1</script>"
SCRIPT_TAG = re.compile(r"<script\b", re.IGNORECASE)


def _script_srcs(html: str) -> list[str]:
    return re.findall(r"<script[^>]*\bsrc\s*=\s*[\"']?([^\"' >]+)", html, flags=re.IGNORECASE)


def test_comparison_report_is_self_contained(tmp_path, plan_dir, bench_table):
    out = write_comparison_report([plan_dir], tmp_path / "reports" / "compare.html", bench_tables=[bench_table])
    html = out.read_text(encoding="utf-8")
    # Plotly inlined exactly once, and no script loaded from anywhere.
    assert html.count("plotly.js v") >= 1 and len(SCRIPT_TAG.findall(html)) == 2
    assert _script_srcs(html) == []
    # plotly.js itself carries default URLs for map tiles it never fetches here; the page around it has none.
    page = html.replace(plotly_js(), "")
    assert len(page) < len(html) - 1_000_000
    assert "cdn" not in page.lower() and "https://" not in page and "http://" not in page
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["artifact"] == "comparison_report" and len(data["gpus"]) == 3
    for verdict in data["verdicts"]:
        assert verdict["text"].replace("×", "&times;") in html or verdict["text"] in html
    assert oct(out.stat().st_mode & 0o777) == "0o644"


def test_plan_report_offers_the_plan_as_yaml(tmp_path, plan_paths, sensitivity_path, eval_path, bench_table):
    plan = plan_paths["B200"]
    out = write_plan_report(plan, tmp_path / "plan.html", sensitivity=None, eval_result=None, bench_table=bench_table)
    html = out.read_text(encoding="utf-8")
    match = re.search(r'download="([^"]+)" href="data:application/x-yaml;base64,([^"]+)"', html)
    assert match and match.group(1) == "plan-b200.yaml"
    assert base64.b64decode(match.group(2)) == plan.read_bytes()
    for figure in ("pareto", "layers", "sensitivity", "latency-share", "bench-throughput", "bench-ttft",
                   "bench-itl"):
        assert f'data-figure="{figure}"' in html
    # This bench table measured the B200 plan's engine but not at a decode point it lacks: no comparison chart.
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["artifact"] == "plan_report" and data["plan_sha256"] == sha256_file(plan)


def test_plan_report_from_json_plan_converts_download_to_yaml(tmp_path, plan_paths):
    import yaml

    from trtq.artifacts.io import load_artifact
    from trtq.artifacts.plan import Plan

    as_json = save_artifact(load_artifact(plan_paths["A100-SXM-80GB"], Plan), tmp_path / "plan.json")
    html = write_plan_report(as_json, tmp_path / "p.html").read_text(encoding="utf-8")
    encoded = re.search(r'href="data:application/x-yaml;base64,([^"]+)"', html).group(1)
    assert yaml.safe_load(base64.b64decode(encoded))["gpu"] == "A100-SXM-80GB"


def _hostile_artifacts(root: Path) -> dict[str, Path]:
    """Plans, sensitivity, eval and bench where every user-supplied string is a <script>."""
    directory = root / f"dir{PAYLOAD}"          # the path itself carries the payload
    directory.mkdir(parents=True)
    paths = {}
    for gpu in ("H100-SXM", "B200"):
        plan = build_plan(gpu, model=f"model{PAYLOAD}", name_prefix=f"{PAYLOAD}.layers", notes=[f"note {PAYLOAD}"])
        paths[gpu] = save_artifact(plan, directory / f"plan-{gpu}{PAYLOAD.replace('/', '_')}.yaml")
    paths["sensitivity"] = save_artifact(build_sensitivity(plan), directory / "sens.json")
    paths["eval"] = save_artifact(EvalResult(
        artifact="eval", schema_version=1, metadata=make_metadata(notes=[PAYLOAD]), model=f"model{PAYLOAD}",
        plan_sha256=sha256_file(paths["B200"]), text=f"text {PAYLOAD}", seq_len=256,
        ppl_bf16=20.0, ppl_quant=21.0, relative_increase=0.05, threshold=0.1, passed=True,
    ), directory / "eval.json")
    paths["bench"] = write_bench(directory / "bench.csv", [
        (sha256_file(paths["B200"]), "B200", f"engine{PAYLOAD}", 1.5),
        (sha256_file(paths["H100-SXM"]), f"gpu{PAYLOAD}", f"engine{PAYLOAD}", 1.0),
    ])
    return paths


def render_hostile(root: Path) -> tuple[Path, Path]:
    paths = _hostile_artifacts(root)
    plan_html = write_plan_report(paths["B200"], root / "out" / "plan.html", sensitivity=paths["sensitivity"],
                                  eval_result=paths["eval"], bench_table=paths["bench"])
    compare_html = write_comparison_report([paths["B200"].parent], root / "out" / "compare.html",
                                           bench_tables=[paths["bench"]])
    return plan_html, compare_html


def test_every_user_string_is_escaped(tmp_path):
    for out in render_hostile(tmp_path):
        html = out.read_text(encoding="utf-8")
        assert PAYLOAD not in html, f"raw <script> from an input in {out.name}"
        assert "window.__pwned" in html                   # the string is there ...
        assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html   # ... as text
        assert len(SCRIPT_TAG.findall(html)) == 2         # plotly.js and the page's own script only
        assert PAYLOAD in out.with_suffix(".json").read_text(encoding="utf-8")  # JSON keeps the data as is
