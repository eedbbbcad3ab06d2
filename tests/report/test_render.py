"""The HTML: self-contained, escaped, with its data beside it and the plan downloadable."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path


from trtq.artifacts.eval import EvalResult
from trtq.artifacts.io import make_metadata, save_artifact, sha256_file
from trtq.report.render import plotly_js, write_comparison_report, write_plan_report
from tests.helpers.synthetic_reports import build_plan, build_sensitivity, write_bench

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


# A group kind and format names that Plotly would draw as a live link / markup if they reached it raw.
HOSTILE_KIND = '<a href="https://attacker.example/">qkv</a>'
HOSTILE_FORMATS = {"int4_awq": "<b>int4</b>_awq", "fp8": '<a href="javascript:alert(1)">fp8</a>'}


def hostile_plan_report(plan_path: Path, **inputs):
    """The report model of a real plan with one group kind and two format names swapped for markup.

    Built at the model level: a plan carrying such names may be refused when read, but the charts
    must be safe whatever the report model holds.
    """
    from trtq.artifacts.report import PlanReport
    from trtq.report.model import build_plan_report

    text = build_plan_report(plan_path, **inputs).model_dump_json()
    assert '"kind":"qkv"' in text
    return PlanReport.model_validate_json(_swap_names(text))


def hostile_comparison_report(plan_dir: Path):
    from trtq.artifacts.report import ComparisonReport
    from trtq.report.model import build_comparison_report

    text = build_comparison_report([plan_dir]).model_dump_json()
    return ComparisonReport.model_validate_json(_swap_names(text))


def _swap_names(model_json: str) -> str:
    text = model_json.replace('"kind":"qkv"', f'"kind":{json.dumps(HOSTILE_KIND)}')
    for name, hostile in HOSTILE_FORMATS.items():
        assert f'"{name}"' in text
        text = text.replace(f'"{name}"', json.dumps(hostile))
    return text


def _figure_strings(figures: dict) -> list[str]:
    """Every string in every figure's JSON (data and layout), as Plotly receives it."""
    import plotly.io as pio

    found: list[str] = []

    def walk(node):
        if isinstance(node, str):
            found.append(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                walk(key)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for fig in figures.values():
        walk(json.loads(pio.to_json(fig, validate=False, engine="json")))
    return found


def _assert_no_raw_markup(strings: list[str]) -> None:
    raw = [s for s in strings if "<a" in s.lower() or "</a>" in s.lower() or any(h in s for h in HOSTILE_FORMATS.values())]
    assert raw == [], f"user markup reached Plotly raw: {raw[:5]}"
    joined = "\n".join(strings)
    # ... and it is there, as text.
    assert "&lt;a href=\"https://attacker.example/\"&gt;qkv&lt;/a&gt;" in joined
    assert "&lt;b&gt;int4&lt;/b&gt;_awq" in joined


def test_chart_json_escapes_group_kinds_and_format_names(plan_paths, sensitivity_path, eval_path, bench_table,
                                                         plan_dir):
    from trtq.report.charts import comparison_figures, plan_figures

    report = hostile_plan_report(plan_paths["H100-SXM"], sensitivity=sensitivity_path, eval_result=eval_path,
                                 bench_table=bench_table)
    figures = plan_figures(report)
    assert {"pareto", "layers", "sensitivity", "latency-share", "bench-throughput"} <= set(figures)
    _assert_no_raw_markup(_figure_strings(figures))

    comparison = hostile_comparison_report(plan_dir)
    strings = _figure_strings(comparison_figures(comparison))
    assert not [s for s in strings if "<a" in s.lower() or any(h in s for h in HOSTILE_FORMATS.values())]
    assert "&lt;b&gt;int4&lt;/b&gt;_awq" in "\n".join(strings)


def test_chart_labels_cannot_inject_hovertemplate_fields():
    from trtq.report.charts import esc

    # "%{y}" in a run name would be filled in by Plotly inside a hovertemplate; escaped, it reads as typed.
    assert "%{" not in esc("engine %{y} <i>")
    assert esc("a & b") == "a &amp; b"
