"""The comparison report as a person sees it: opened in headless Chromium, charts drawn, screenshot kept.

Needs Debian's chromium (`make test` installs it with scripts/ensure-chromium.sh where it can);
skips with the reason where it is missing. Screenshots go to tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import json

from pathlib import Path


from tests.report.browser import Browser
from trtq.report.render import write_comparison_report, write_plan_report

# Git-ignored (/tests/artifacts/ in .gitignore); a folder of its own beside the artifacts package tests.
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "report"

CHARTS_STATE = """
Array.from(document.querySelectorAll('.chart[data-figure]')).map(div => ({
  id: div.id,
  drawn: div.getAttribute('data-drawn') === '1',
  svg: div.querySelectorAll('svg.main-svg').length,
  marks: Array.from(div.querySelectorAll(
      'svg.main-svg g.trace path, svg.main-svg g.point path, svg.main-svg .heatmaplayer image'))
    .filter(e => e.tagName.toLowerCase() === 'image'
      ? (e.getAttribute('href') || e.getAttribute('xlink:href') || '').startsWith('data:image')
      : (e.getAttribute('d') || '').length > 2).length,
  width: div.getBoundingClientRect().width,
}))
"""


def _open_and_check(chromium: str, html: Path, screenshot: Path) -> dict:
    from PIL import Image, ImageStat

    with Browser(chromium) as browser:
        page = browser.page
        page.send("Network.enable")
        page = browser.open(html.as_uri())
        page.wait_for("document.body.getAttribute('data-charts-ready') === '1'", timeout=120)
        charts = page.evaluate(CHARTS_STATE)
        state = page.evaluate("({scripts: document.querySelectorAll('script').length, "
                              "pwned: typeof window.__pwned, text: document.body.innerText})")
        page.screenshot(screenshot)
        page.drain(0.5)
        errors = page.console_errors()
        requests = [e["params"]["request"]["url"] for e in page.events
                    if e.get("method") == "Network.requestWillBeSent"]
    assert errors == [], f"console errors in {html.name}: {errors}"
    assert all(url.startswith(("file:", "data:", "blob:")) for url in requests), requests
    assert charts, "no chart containers on the page"
    for chart in charts:
        assert chart["drawn"] and chart["svg"] >= 1 and chart["marks"] > 0 and chart["width"] > 300, chart
    image = Image.open(screenshot).convert("RGB")
    assert image.width >= 1200 and image.height >= 1500
    colours = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).getcolors()
    assert len(colours) > 20, "screenshot looks blank"
    assert max(ImageStat.Stat(image.convert("L")).stddev) > 20, "screenshot has no contrast"
    return {"charts": charts, **state}


def test_comparison_report_renders_in_chromium(chromium, plan_dir, bench_table):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    html = write_comparison_report([plan_dir], ARTIFACTS / "report-compare.html", bench_tables=[bench_table],
                                   workload="isl=1024,osl=128,concurrency=8")
    state = _open_and_check(chromium, html, ARTIFACTS / "report-compare.png")
    ids = {c["id"] for c in state["charts"]}
    assert {"chart-latency", "chart-memory", "chart-formats", "chart-bench-throughput"} <= ids
    assert "chart-tokens" not in ids and "GEMM-bound" not in state["text"]   # serving at a workload replaces it
    assert "B200 is fastest" in state["text"]
    # These synthetic plans name no profile: a plan whose formats the tables hold is predicted (A100: bf16 and
    # INT8-SQ), the others' rows say why (H100's INT4-AWQ, B200's INT8-SQ are in no table).
    assert "Predicted serving at isl=1024,osl=128,concurrency=8" in state["text"]
    served = {g["gpu"]: g["serving"] for g in json.loads(html.with_suffix(".json").read_text())["gpus"]}
    assert served["A100-SXM-80GB"]["error"] is None and served["A100-SXM-80GB"]["output_tokens_per_s_per_gpu"] > 0
    assert served["H100-SXM"]["error"] and served["B200"]["error"]
    assert state["text"].count("no prediction: ") == 2


def test_plan_report_renders_in_chromium(chromium, plan_paths, bench_table, eval_path, sensitivity_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    html = write_plan_report(plan_paths["H100-SXM"], ARTIFACTS / "report-plan.html", sensitivity=sensitivity_path,
                             eval_result=eval_path, bench_table=bench_table)
    state = _open_and_check(chromium, html, ARTIFACTS / "report-plan.png")
    ids = {c["id"] for c in state["charts"]}
    assert {"chart-pareto", "chart-perplexity", "chart-layers", "chart-sensitivity", "chart-latency-share",
            "chart-predicted-vs-measured"} <= ids


def test_hostile_strings_stay_text_in_the_browser(chromium, tmp_path):
    from tests.report.test_render import PAYLOAD, render_hostile

    for html in render_hostile(tmp_path):
        state = _open_and_check(chromium, html, tmp_path / f"{html.stem}.png")
        assert state["pwned"] == "undefined" and state["scripts"] == 2
        assert PAYLOAD in state["text"], "the payload should be visible as text"


CHART_LINKS = """
({links: Array.from(document.querySelectorAll('.chart a, .chart [href*="attacker"], .chart [href^="javascript"]'))
          .map(e => e.outerHTML),
  chartText: Array.from(document.querySelectorAll('.chart[data-figure]')).map(d => d.textContent).join('\\n')})
"""


def test_chart_labels_with_markup_stay_text_in_the_browser(chromium, tmp_path, plan_paths, plan_dir, sensitivity_path,
                                                           bench_table):
    """A group kind `<a href=...>` and format names with markup are drawn as text, never as a live link."""
    from tests.report.test_render import HOSTILE_KIND, hostile_comparison_report, hostile_plan_report
    from trtq.report.render import render_comparison_report, render_plan_report

    plan_report = hostile_plan_report(plan_paths["H100-SXM"], sensitivity=sensitivity_path, bench_table=bench_table)
    pages = [render_plan_report(plan_report, tmp_path / "plan.html"),
             render_comparison_report(hostile_comparison_report(plan_dir), tmp_path / "compare.html")]
    for html in pages:
        _open_and_check(chromium, html, tmp_path / f"{html.stem}.png")
        with Browser(chromium) as browser:
            page = browser.open(html.as_uri())
            page.wait_for("document.body.getAttribute('data-charts-ready') === '1'", timeout=120)
            state = page.evaluate(CHART_LINKS)
        assert state["links"] == [], f"live links in the charts of {html.name}: {state['links'][:3]}"
        assert "<b>int4</b>_awq" in state["chartText"], f"format name not drawn as text in {html.name}"
        if html.stem == "plan":
            assert HOSTILE_KIND in state["chartText"], "group kind not drawn as text"
