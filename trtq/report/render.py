"""Render report models to one self-contained HTML file (and the same data as JSON beside it).

The page works offline: Plotly's JavaScript is inlined once per page, no CDN, no fonts
fetched. Jinja2 autoescapes every template value; figure JSON is embedded with `<`, `>`
and `&` as \\u escapes so no string in it can close the script element.

Entry points (`trtq report` calls write_report, `trtq demo` write_comparison_report):

    write_report(request: ReportRequest, out_html=None) -> (html path, report)
    write_plan_report(plan_path, out_html, profile=None, sensitivity=None, eval_result=None, bench_table=None)
    write_comparison_report(plan_paths, out_html, bench_tables=[], quality_bound=None, fraction=None)

The last two build the request and call the first, and return the HTML path; the JSON is `out_html`
with suffix `.json`.
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trtq import __version__
from trtq.artifacts.io import atomic_pair, dump_artifact
from trtq.artifacts.paths import check_output_path
from trtq.artifacts.report import ComparisonReport, PlanReport
from trtq.console import fmt_bytes, fmt_ns
from trtq.errors import InputError
from trtq.report.request import ReportRequest

TEMPLATES = Path(__file__).resolve().parent / "templates"
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


@functools.lru_cache(maxsize=1)
def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ns"] = fmt_ns
    env.filters["bytes"] = fmt_bytes
    env.filters["pct"] = lambda x, digits=1: "-" if x is None else f"{100 * x:.{digits}f}%"
    env.filters["num"] = lambda x, digits=4: "-" if x is None else f"{x:.{digits}g}"
    env.filters["times"] = lambda x: "-" if x is None else (f"{x:.2f}×" if x < 10 else f"{x:.1f}×")
    env.filters["us"] = lambda ns: "-" if ns is None else f"{ns / 1e3:.2f}"
    env.filters["short"] = lambda sha: "-" if not sha else sha[:12]
    return env


@functools.lru_cache(maxsize=1)
def plotly_js() -> str:
    import plotly.offline

    return plotly.offline.get_plotlyjs()


def script_json(data: Any) -> str:
    """JSON safe to place inside a <script> element."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    for raw, escaped in _JSON_ESCAPES.items():
        text = text.replace(raw, escaped)
    return text


def _figures_json(figures: dict[str, Any]) -> tuple[str, dict[str, int]]:
    import plotly.io as pio

    parts, heights = [], {}
    for name, fig in figures.items():
        parts.append(f"{json.dumps(name)}:{pio.to_json(fig, validate=False, engine='json')}")
        heights[name] = int(fig.layout.height or 400)
    return script_json("{" + ",".join(parts) + "}"), heights


def _render(template: str, out_html: Path, report, figures: dict[str, Any], **context) -> Path:
    out_html = Path(out_html)
    if out_html.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"report output must end in .html: {out_html}")
    # The default path (reports/...) and library callers get the checks `-o` gets when parsed.
    check_output_path(out_html, suffixes=(".html", ".htm"))
    check_output_path(out_html.with_suffix(".json"), suffixes=(".json",))
    figures_json, heights = _figures_json(figures)
    json_path = out_html.with_suffix(".json")
    html_text = (
        _environment()
        .get_template(template)
        .render(
            r=report,
            figures=figures,
            heights=heights,
            figures_json=figures_json,
            plotly_js=plotly_js(),
            trtq_version=__version__,
            json_name=json_path.name,
            generated_at=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            **context,
        )
    )
    # The JSON and the HTML land together or not at all (see atomic_pair for what a crash leaves).
    with atomic_pair(json_path, out_html) as (tmp_json, tmp_html):
        tmp_json.write_text(dump_artifact(report, "json"), encoding="utf-8")
        tmp_html.write_text(html_text, encoding="utf-8")
    return out_html


def _plan_yaml_data_uri(plan_path: Path) -> str:
    """The plan as YAML for the download link: the file itself when it is YAML, so its sha256 holds."""
    raw = plan_path.read_bytes()
    if plan_path.suffix.lower() not in (".yaml", ".yml"):
        import yaml

        raw = yaml.safe_dump(json.loads(raw), sort_keys=False, width=120).encode("utf-8")
    return "data:application/x-yaml;base64," + base64.b64encode(raw).decode("ascii")


def render_plan_report(report: PlanReport, out_html: str | os.PathLike[str]) -> Path:
    from trtq.registry.formats import FORMATS
    from trtq.report.charts import format_color, latency_share_rows, plan_figures
    from trtq.report.model import kind_label, order_kinds

    plan_path = Path(report.plan_path)
    yaml_name = plan_path.with_suffix(".yaml").name
    share_rows = latency_share_rows(report)
    by_kind: dict[str, dict[str, float]] = {}
    for row in share_rows:
        k = by_kind.setdefault(row["kind"], {"bf16_ns": 0.0, "plan_ns": 0.0, "bf16_share": 0.0, "plan_share": 0.0})
        for key in k:
            k[key] += row[key] or 0.0
    return _render(
        "plan.html.j2",
        Path(out_html),
        report,
        plan_figures(report),
        plan_yaml_uri=_plan_yaml_data_uri(plan_path),
        plan_yaml_name=yaml_name,
        format_colors={f: format_color(f) for f in [*FORMATS, *report.candidate_formats]},
        share_rows=share_rows,
        share_by_kind=[(kind_label(k), by_kind[k]) for k in order_kinds(by_kind)],
        kind_label=kind_label,
        bench_points=_bench_points(report.bench),
    )


def render_comparison_report(report: ComparisonReport, out_html: str | os.PathLike[str]) -> Path:
    from trtq.report.charts import comparison_figures, format_color, gpu_colors

    formats = list(dict.fromkeys(f for g in report.gpus for f in g.format_weight_share))
    return _render(
        "compare.html.j2",
        Path(out_html),
        report,
        comparison_figures(report),
        gpu_colors=gpu_colors([g.gpu for g in report.gpus]),
        format_colors={f: format_color(f) for f in formats},
        bench_points=_bench_points(report.bench),
    )


def _bench_points(rows) -> list[dict[str, Any]]:
    """One table row per (series, concurrency) with the numbers the bench charts draw."""
    table: dict[tuple[str, int], dict[str, Any]] = {}
    for r in rows:
        entry = table.setdefault((r.series, r.concurrency), {"series": r.series, "concurrency": r.concurrency})
        entry[f"{r.metric}:{r.statistic}"] = r.value
    return [table[k] for k in sorted(table, key=lambda k: (k[0], k[1]))]


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-").lower() or "report"


def write_report(
    request: ReportRequest,
    out_html: str | os.PathLike[str] | None = None,
) -> tuple[Path, PlanReport | ComparisonReport]:
    """The report the request asks for, rendered to `out_html` (default reports/<model>-<gpu>.html or
    reports/<model>-compare.html) with its JSON beside it; returns the HTML path and the report."""
    from trtq.report.model import build_comparison_report, build_plan_report

    if request.compare:
        compared = build_comparison_report(
            request.plans,
            bench_tables=request.bench,
            quality_bound=request.quality_bound,
            fraction=request.fraction,
            workload=request.workload,
        )
        out = out_html or Path("reports") / f"{_slug(compared.model)}-compare.html"
        return render_comparison_report(compared, out), compared
    report = build_plan_report(
        request.plans[0],
        profile=request.profile,
        sensitivity=request.sensitivity,
        eval_result=request.eval_result,
        bench_table=request.bench[0] if request.bench else None,
    )
    out = out_html or Path("reports") / f"{_slug(report.model)}-{_slug(report.gpu)}.html"
    return render_plan_report(report, out), report


def write_plan_report(
    plan_path: str | os.PathLike[str],
    out_html: str | os.PathLike[str],
    profile: str | os.PathLike[str] | None = None,
    sensitivity: str | os.PathLike[str] | None = None,
    eval_result: str | os.PathLike[str] | None = None,
    bench_table: str | os.PathLike[str] | None = None,
) -> Path:
    def path(given: str | os.PathLike[str] | None) -> Path | None:
        return None if given is None else Path(given)

    request = ReportRequest(
        plans=[Path(plan_path)],
        profile=path(profile),
        sensitivity=path(sensitivity),
        eval_result=path(eval_result),
        bench=[Path(bench_table)] if bench_table is not None else [],
    )
    return write_report(request, out_html)[0]


def write_comparison_report(
    plan_paths: Sequence[str | os.PathLike[str]],
    out_html: str | os.PathLike[str],
    bench_tables: Sequence[str | os.PathLike[str]] | None = None,
    quality_bound: float | None = None,
    fraction: float | None = None,
    workload: str | None = None,
) -> Path:
    request = ReportRequest(
        plans=[Path(p) for p in plan_paths],
        compare=True,
        bench=[Path(t) for t in bench_tables or []],
        quality_bound=quality_bound,
        fraction=fraction,
        workload=workload,
    )
    return write_report(request, out_html)[0]
