"""Plotly figures for the reports, built from the report models only.

Plotly renders a subset of HTML in every label it draws (hover text, tick labels, legend
names, titles, annotations, bar text): `<b>` in a layer name would become bold and
`<a href=...>` in a group kind a live link. So the two entry points, `plan_figures` and
`comparison_figures`, escape the whole report once (`escaped`: every string, dict keys
included) before any figure is built, and the figure builders below take an escaped report
and add only markup of their own. Charts show µs, ms and MB; the report models keep ns and bytes.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from typing import Any

from trtq.artifacts.report import BenchRow, ComparisonReport, PlanReport
from trtq.registry.formats import FORMATS
from trtq.report.model import kind_label, order_kinds

# One colour per format on every page: each format's own (Format.color; Okabe-Ito, readable by most
# colour-blind readers); a name the registry does not know gets one of these.
_EXTRA_COLORS = ("#F0E442", "#000000", "#8c564b", "#17becf")
GPU_COLORS = ("#D55E00", "#0072B2", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"


def esc(text: object) -> str:
    """Text for a Plotly label: HTML-escaped, and `%{` defused so it cannot act as a hovertemplate field."""
    # Plotly decodes numeric entities when it draws a label, so "&#123;" still reads "{".
    return html.escape(str(text), quote=False).replace("%{", "%&#123;")


def escaped(value):
    """A copy of `value` (a report model, or anything inside one) with every string escaped by `esc`.

    Dict keys too: format and point names key the report's dicts and also label the charts, and
    escaping is one-to-one, so lookups between the escaped names still match.
    """
    from pydantic import BaseModel

    if isinstance(value, str):
        return esc(value)
    if isinstance(value, BaseModel):
        return value.model_copy(update={name: escaped(getattr(value, name)) for name in type(value).model_fields})
    if isinstance(value, dict):
        return {escaped(k): escaped(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(escaped(v) for v in value)
    return value


def format_color(name: str) -> str:
    if name in FORMATS:
        return FORMATS[name].color
    return _EXTRA_COLORS[sum(map(ord, name)) % len(_EXTRA_COLORS)]


def gpu_colors(names: list[str]) -> dict[str, str]:
    return {n: GPU_COLORS[i % len(GPU_COLORS)] for i, n in enumerate(names)}


def _us(ns: float | None) -> float | None:
    return None if ns is None else ns / 1e3


def _ms(ns: float | None) -> float | None:
    return None if ns is None else ns / 1e6


def _base_layout(fig, height: int, **extra) -> None:
    fig.update_layout(
        template="plotly_white",
        height=height,
        font=dict(family=FONT, size=12, color="#222"),
        margin=dict(l=70, r=30, t=70, b=60),
        hoverlabel=dict(font=dict(family=FONT, size=12), align="left"),
        # Legends sit above the plot area so they never cover data.
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0, bgcolor="rgba(255,255,255,0)"),
        **extra,
    )


# ---------------------------------------------------------------------------- plan page


def serving_front_figure(report: PlanReport):
    """A plan with a workload: output tokens/s per GPU at the SLOs against total Omega (groups + KV)."""
    import plotly.graph_objects as go

    front = sorted(
        (p for p in report.pareto if p.status != "infeasible" and p.output_tokens_per_s_per_gpu),
        key=lambda p: p.output_tokens_per_s_per_gpu,
    )
    fig = go.Figure()
    hover = (
        "%{x:.0f} output tokens/s per GPU<br>Σ Ω %{y:.4g} (KV %{customdata[0]})<br>TTFT %{customdata[1]:.1f} ms"
        " · TPOT %{customdata[2]:.2f} ms<br>request time %{customdata[3]:.2f}× all-bf16<extra></extra>"
    )
    for name, points, marker in (
        ("Pareto front", front, dict(size=8, color="#0072B2")),
        (
            "chosen plan",
            [p for p in front if p.chosen],
            dict(symbol="star", size=18, color="#D55E00", line=dict(color="#222", width=1)),
        ),
    ):
        fig.add_trace(
            go.Scatter(
                x=[p.output_tokens_per_s_per_gpu for p in points],
                y=[p.total_omega for p in points],
                mode="lines+markers" if name == "Pareto front" else "markers",
                name=name,
                marker=marker,
                line=dict(color="#0072B2", width=2),
                customdata=[[p.kv_format, p.ttft_ms, p.tpot_ms, p.fraction] for p in points],
                hovertemplate=hover,
            )
        )
    fig.update_xaxes(title_text="predicted output tokens/s per GPU at the workload")
    fig.update_yaxes(title_text="Σ sensitivity Ω, groups + KV cache (lower is better)")
    _base_layout(fig, 420)
    return fig


def pareto_figure(report: PlanReport):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if any(p.output_tokens_per_s_per_gpu for p in report.pareto):
        return serving_front_figure(report)

    points = report.points
    fig = make_subplots(
        rows=1,
        cols=len(points),
        shared_yaxes=True,
        horizontal_spacing=0.06,
        subplot_titles=[f"at {p.point}" + ("" if p.limit_ns is not None else " (not budgeted)") for p in points],
    )
    feasible = [p for p in report.pareto if p.status != "infeasible" and p.sensitivity is not None]
    for col, pt in enumerate(points, start=1):
        front = sorted((p for p in feasible if pt.point in p.latency_ns), key=lambda p: p.latency_ns[pt.point])
        # The sweep scales the budgeted points; at other points the same plans are not a front,
        # and a line through them would zig-zag, so they are drawn as dots only.
        swept = pt.limit_ns is not None
        fig.add_trace(
            go.Scatter(
                x=[_us(p.latency_ns[pt.point]) for p in front],
                y=[p.sensitivity for p in front],
                mode="lines+markers" if swept else "markers",
                name="Pareto front" if swept else "same plans (not budgeted here)",
                legendgroup="front" if swept else "other",
                showlegend=col == 1 or not swept,
                line=dict(color="#0072B2", width=2),
                marker=dict(size=8),
                customdata=[[p.fraction, (p.weight_bytes or 0) / 1e6] for p in front],
                hovertemplate=(
                    "budget %{customdata[0]:.2f}× bf16<br>predicted %{x:.1f} µs<br>"
                    "Σ sensitivity %{y:.4g}<br>weights %{customdata[1]:.1f} MB<extra></extra>"
                ),
            ),
            row=1,
            col=col,
        )
        fig.add_trace(
            go.Scatter(
                x=[_us(pt.predicted_ns)],
                y=[report.sensitivity],
                mode="markers",
                name="chosen plan",
                legendgroup="chosen",
                showlegend=col == 1,
                marker=dict(symbol="star", size=18, color="#D55E00", line=dict(color="#222", width=1)),
                hovertemplate="chosen plan<br>predicted %{x:.1f} µs<br>Σ sensitivity %{y:.4g}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.add_trace(
            go.Scatter(
                x=[_us(pt.bf16_ns)],
                y=[0.0],
                mode="markers",
                name="all-bf16",
                legendgroup="bf16",
                showlegend=col == 1,
                marker=dict(symbol="square", size=10, color=format_color("bf16")),
                hovertemplate="all-bf16<br>%{x:.1f} µs<extra></extra>",
            ),
            row=1,
            col=col,
        )
        if pt.limit_ns is not None:
            fig.add_vline(
                x=_us(pt.limit_ns),
                line=dict(color="#D55E00", dash="dash", width=1),
                annotation_text="budget",
                annotation_position="top right",
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text="predicted GEMM time per step (µs)", row=1, col=col)
    fig.update_yaxes(title_text="Σ sensitivity Ω (lower is better)", row=1, col=1)
    _base_layout(fig, 440)
    _legend_above_titles(fig)
    return fig


def _legend_above_titles(fig) -> None:
    """Subplot titles sit just above the plot area; the legend goes one line higher."""
    fig.update_layout(margin=dict(t=110), legend=dict(y=1.13, yanchor="bottom"))


def perplexity_figure(report: PlanReport):
    import plotly.graph_objects as go

    ev = report.eval
    if ev is None:
        return None
    pt = next(p for p in report.points if p.point == report.decode_point)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[_us(pt.bf16_ns), _us(pt.predicted_ns)],
            y=[ev.ppl_bf16, ev.ppl_quant],
            mode="markers+text",
            text=["all-bf16", "this plan"],
            textposition="top center",
            marker=dict(size=[12, 18], symbol=["square", "star"], color=[format_color("bf16"), "#D55E00"]),
            name="measured perplexity",
            hovertemplate="%{text}<br>predicted %{x:.1f} µs<br>perplexity %{y:.3f}<extra></extra>",
        )
    )
    if ev.threshold is not None:
        bound = ev.ppl_bf16 * (1 + ev.threshold)
        fig.add_hline(
            y=bound,
            line=dict(color="#D55E00", dash="dash", width=1),
            annotation_text=f"quality bound (+{ev.threshold:.1%})",
            annotation_position="top left",
        )
    fig.update_xaxes(title_text=f"predicted GEMM time at {report.decode_point} (µs)")
    fig.update_yaxes(title_text="perplexity (lower is better)")
    _base_layout(fig, 380, showlegend=False)
    return fig


def _block_rows(groups) -> list[tuple[str, object]]:
    """Row keys for the block × kind grid: blocks in order, then groups outside blocks by name."""
    blocks = sorted({g.block for g in groups if g.block is not None})
    rows = [(f"block {b}", b) for b in blocks]
    rows += [(g.group, g.group) for g in groups if g.block is None]
    return rows


def layer_format_figure(report: PlanReport):
    import plotly.graph_objects as go

    formats = list(report.candidate_formats)
    for g in report.groups:
        if g.format not in formats:
            formats.append(g.format)
    kinds = order_kinds(g.kind for g in report.groups if g.block is not None)
    rows = _block_rows(report.groups)
    row_index = {key: i for i, (_, key) in enumerate(rows)}
    columns = kinds + (["(other)"] if any(g.block is None for g in report.groups) else [])
    col_index = {k: i for i, k in enumerate(columns)}
    z: list[list[int | None]] = [[None] * len(columns) for _ in rows]
    text = [[""] * len(columns) for _ in rows]
    hover = [[""] * len(columns) for _ in rows]
    points = [p.point for p in report.points]
    for g in report.groups:
        r = row_index[g.block if g.block is not None else g.group]
        c = col_index[g.kind if g.block is not None else "(other)"]
        z[r][c] = formats.index(g.format)
        text[r][c] = g.format
        lines = [
            f"<b>{g.group}</b>",
            f"{g.out_features}×{g.in_features}, chosen <b>{g.format}</b>"
            + (f" (group {g.group_size})" if g.group_size else ""),
            "format: Ω · " + " · ".join(f"{p} µs" for p in points),
        ]
        for f in formats:
            if f not in g.omega:
                continue
            lat = " · ".join(f"{_us(g.latency_ns[f].get(p)):.2f}" if p in g.latency_ns[f] else "-" for p in points)
            mark = "▶ " if f == g.format else "   "
            lines.append(f"{mark}{f}: {g.omega[f]:.3g} · {lat}")
        hover[r][c] = "<br>".join(lines)
    n = len(formats)
    scale = []
    for i, f in enumerate(formats):
        scale += [[i / n, format_color(f)], [(i + 1) / n, format_color(f)]]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[kind_label(k) for k in columns],
            y=[label for label, _ in rows],
            zmin=-0.5,
            zmax=n - 0.5,
            colorscale=scale,
            xgap=2,
            ygap=2,
            text=text,
            texttemplate="%{text}",
            textfont=dict(size=11, color="#111"),
            customdata=hover,
            hovertemplate="%{customdata}<extra></extra>",
            colorbar=dict(
                title=dict(text="format"),
                tickvals=list(range(n)),
                ticktext=list(formats),
                thickness=14,
                len=min(1.0, 0.15 * n + 0.1),
                y=1,
                yanchor="top",
            ),
        )
    )
    fig.update_yaxes(autorange="reversed", title_text="decoder block")
    fig.update_xaxes(side="top", title_text="layer kind (fused group)")
    _base_layout(fig, max(360, 22 * len(rows) + 110))
    fig.update_layout(margin=dict(l=90, t=70, b=20))
    return fig


def sensitivity_figure(report: PlanReport):
    import plotly.graph_objects as go

    formats = [f for f in report.candidate_formats if f != "bf16"]
    layers = sorted(
        report.layer_sensitivity,
        key=lambda s: (
            s.block is None,
            s.block if s.block is not None else 0,
            _KIND_RANK.get(s.kind, len(_KIND_RANK)),
            s.layer,
        ),
    )
    if not formats or not layers:
        return None
    z, hover = [], []
    chosen_x, chosen_y = [], []
    for i, s in enumerate(layers):
        row, hrow = [], []
        for f in formats:
            omega = s.omega.get(f)
            row.append(math.log10(omega) if omega and omega > 0 else None)
            hrow.append(
                f"<b>{s.layer}</b><br>{f}: Ω = {omega:.4g}"
                if omega is not None
                else f"<b>{s.layer}</b><br>{f}: not available for this shape"
            )
            if f == s.chosen:
                chosen_x.append(f)
                chosen_y.append(i)
        z.append(row)
        hover.append(hrow)
    tickvals, ticktext, last = [], [], object()
    for i, s in enumerate(layers):
        if s.block != last:
            tickvals.append(i)
            ticktext.append(f"block {s.block}" if s.block is not None else s.layer)
            last = s.block
    step = max(1, math.ceil(len(tickvals) / 40))
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=formats,
            y=list(range(len(layers))),
            colorscale="Viridis",
            customdata=hover,
            hovertemplate="%{customdata}<extra></extra>",
            xgap=1,
            colorbar=dict(title=dict(text="log₁₀ Ω"), thickness=14),
        )
    )
    fig.add_trace(
        go.Scatter(
            x=chosen_x,
            y=chosen_y,
            mode="markers",
            name="chosen format",
            marker=dict(symbol="circle", size=5, color="#ffffff", line=dict(color="#D55E00", width=1.5)),
            hoverinfo="skip",
        )
    )
    fig.update_yaxes(
        autorange="reversed",
        tickvals=tickvals[::step],
        ticktext=ticktext[::step],
        title_text=f"layer ({report.layer_sensitivity_source})",
    )
    fig.update_xaxes(side="top")
    _base_layout(fig, max(360, 6 * len(layers) + 140))
    fig.update_layout(
        margin=dict(l=90, t=90, b=20),
        showlegend=True,
        legend=dict(y=1.0, yanchor="bottom", x=0.0, xanchor="left", orientation="h"),
    )
    fig.update_layout(legend=dict(y=-0.02, yanchor="top"))
    return fig


_KIND_RANK = {
    k: i
    for i, k in enumerate(
        ("q_proj", "k_proj", "v_proj", "qkv", "o_proj", "gate_proj", "up_proj", "gate_up", "down_proj")
    )
}


def latency_share_rows(report: PlanReport) -> list[dict]:
    """Per group: predicted time at the decode point in bf16 and in the plan, as shares of all-bf16."""
    point = report.decode_point
    bf16_total = sum(g.latency_ns.get("bf16", {}).get(point, 0.0) for g in report.groups) or 1.0
    rows = []
    for g in report.groups:
        bf16 = g.latency_ns.get("bf16", {}).get(point)
        plan = g.latency_ns.get(g.format, {}).get(point)
        rows.append(
            dict(
                group=g.group,
                block=g.block,
                kind=g.kind,
                format=g.format,
                bf16_ns=bf16,
                plan_ns=plan,
                bf16_share=(bf16 or 0.0) / bf16_total,
                plan_share=(plan or 0.0) / bf16_total,
            )
        )
    return rows


def latency_share_figure(report: PlanReport):
    """Per block: all-bf16 beside the plan, the plan's bar stacked by group in its format's colour."""
    import plotly.graph_objects as go

    rows = latency_share_rows(report)
    blocks = list(dict.fromkeys(r["block"] if r["block"] is not None else r["group"] for r in rows))
    labels = [str(b) for b in blocks]
    position = {b: i for i, b in enumerate(blocks)}
    fig = go.Figure()
    bf16_total = [0.0] * len(blocks)
    for r in rows:
        bf16_total[position[r["block"] if r["block"] is not None else r["group"]]] += 100 * r["bf16_share"]
    fig.add_trace(
        go.Bar(
            x=labels,
            y=bf16_total,
            name="all-bf16 (reference)",
            marker=dict(color="#e4e4e4", line=dict(color="#8a8a8a", width=1)),
            offsetgroup="bf16",
            hovertemplate="block %{x}, all-bf16: %{y:.2f}% of the bf16 total<extra></extra>",
        )
    )
    kinds = order_kinds(r["kind"] for r in rows)
    base = [0.0] * len(blocks)
    for kind in kinds:
        members = [r for r in rows if r["kind"] == kind]
        xs = [position[r["block"] if r["block"] is not None else r["group"]] for r in members]
        ys = [100 * r["plan_share"] for r in members]
        fig.add_trace(
            go.Bar(
                x=[labels[i] for i in xs],
                y=ys,
                base=[base[i] for i in xs],
                offsetgroup="plan",
                showlegend=False,
                marker=dict(color=[format_color(r["format"]) for r in members], line=dict(color="#fff", width=0.6)),
                customdata=[
                    [r["group"], r["format"], _us(r["plan_ns"]) or 0.0, _us(r["bf16_ns"]) or 0.0] for r in members
                ],
                hovertemplate=(
                    "%{customdata[0]}<br>%{customdata[1]}: %{customdata[2]:.2f} µs "
                    "(bf16 %{customdata[3]:.2f} µs)<br>%{y:.2f}% of the bf16 total<extra></extra>"
                ),
            )
        )
        for i, y in zip(xs, ys):
            base[i] += y
    used = [f for f in report.candidate_formats if any(r["format"] == f for r in rows)]
    for f in used:
        fig.add_trace(
            go.Bar(
                x=[labels[0]],
                y=[0],
                name=f"plan: {f}",
                marker_color=format_color(f),
                offsetgroup="plan",
                hoverinfo="skip",
            )
        )
    fig.update_xaxes(title_text="decoder block", type="category")
    fig.update_yaxes(title_text=f"% of all-bf16 GEMM time at {report.decode_point}", ticksuffix="%")
    _base_layout(fig, 400, barmode="group", bargap=0.25, bargroupgap=0.05)
    return fig


def _series_colors(series: list[str]) -> dict[str, str]:
    return {s: GPU_COLORS[i % len(GPU_COLORS)] for i, s in enumerate(series)}


def _lookup(rows: list[BenchRow]) -> dict[tuple[str, int, str, str], float]:
    return {(r.series, r.concurrency, r.metric, r.statistic): r.value for r in rows}


def _stat(table, series: str, level: int, metric: str, prefer=("p50", "avg")) -> float | None:
    for s in prefer:
        if (series, level, metric, s) in table:
            return table[(series, level, metric, s)]
    return None


def throughput_latency_figure(rows: list[BenchRow], colors: dict[str, str] | None = None):
    import plotly.graph_objects as go

    if not rows:
        return None
    table = _lookup(rows)
    series = list(dict.fromkeys(r.series for r in rows))
    colors = colors or _series_colors(series)
    fig = go.Figure()
    for s in series:
        levels = sorted({r.concurrency for r in rows if r.series == s})
        pts = [
            (lv, _stat(table, s, lv, "request_latency"), _stat(table, s, lv, "output_token_throughput", ("avg", "p50")))
            for lv in levels
        ]
        pts = [(lv, lat, tp) for lv, lat, tp in pts if lat is not None and tp is not None]
        if not pts:
            continue
        fig.add_trace(
            go.Scatter(
                x=[_ms(lat) for _, lat, _ in pts],
                y=[tp for _, _, tp in pts],
                mode="lines+markers+text",
                name=s,
                text=[str(lv) for lv, _, _ in pts],
                textposition="top left",
                textfont=dict(size=10, color=colors.get(s, "#333")),
                line=dict(color=colors.get(s)),
                marker=dict(size=7),
                hovertemplate=(
                    f"{s}<br>concurrency %{{text}}<br>request latency p50 %{{x:.1f}} ms<br>"
                    "output %{y:,.0f} tokens/s<extra></extra>"
                ),
            )
        )
    fig.update_xaxes(title_text="request latency, p50 (ms) — labels: concurrency", rangemode="tozero")
    fig.update_yaxes(title_text="output throughput (tokens/s)", rangemode="tozero")
    _base_layout(fig, 400)
    return fig


def percentile_figure(rows: list[BenchRow], metric: str, title: str, colors: dict[str, str] | None = None):
    import plotly.graph_objects as go

    rows = [r for r in rows if r.metric == metric]
    if not rows:
        return None
    series = list(dict.fromkeys(r.series for r in rows))
    colors = colors or _series_colors(series)
    stats = [s for s in ("p50", "p90", "p99") if any(r.statistic == s for r in rows)] or ["avg"]
    dashes = {"p50": "solid", "p90": "dash", "p99": "dot", "avg": "solid"}
    fig = go.Figure()
    for s in series:
        for st in stats:
            pts = sorted((r.concurrency, r.value) for r in rows if r.series == s and r.statistic == st)
            if not pts:
                continue
            # One legend entry per run (its p50 line); clicking it toggles all its percentiles.
            fig.add_trace(
                go.Scatter(
                    x=[c for c, _ in pts],
                    y=[_ms(v) for _, v in pts],
                    mode="lines+markers",
                    name=s,
                    legendgroup=s,
                    showlegend=st == stats[0],
                    line=dict(color=colors.get(s), dash=dashes[st]),
                    marker=dict(size=6),
                    hovertemplate=f"{s} {st}<br>concurrency %{{x}}<br>%{{y:.2f}} ms<extra></extra>",
                )
            )
    styles = ", ".join(f"{st} {dict(solid='solid', dash='dashed', dot='dotted')[dashes[st]]}" for st in stats)
    fig.update_xaxes(title_text=f"concurrency (requests in flight) · lines: {styles}", type="log", dtick=math.log10(2))
    fig.update_yaxes(title_text=f"{title} (ms)", rangemode="tozero")
    _base_layout(fig, 400)
    return fig


def predicted_vs_measured_figure(report: PlanReport):
    import plotly.graph_objects as go

    rows = report.predicted_vs_measured
    if not rows:
        return None
    fig = go.Figure()
    x = [r.point for r in rows]
    fig.add_trace(
        go.Bar(
            x=x,
            y=[_us(r.predicted_ns) for r in rows],
            name="predicted GEMM time per step",
            marker_color="#0072B2",
            hovertemplate="predicted %{y:.1f} µs<extra></extra>",
        )
    )
    fig.add_trace(
        go.Bar(
            x=x,
            y=[_us(r.measured_itl_ns) for r in rows],
            name="measured inter-token latency, p50",
            marker_color="#D55E00",
            text=[f"{r.ratio:.1f}× predicted" for r in rows],
            textposition="outside",
            hovertemplate="measured %{y:.1f} µs<extra></extra>",
        )
    )
    # Measured steps include attention and scheduling: often tens of times the GEMM time.
    fig.update_yaxes(title_text="time per decode step (µs, log scale)", type="log")
    _base_layout(fig, 380, barmode="group")
    return fig


def plan_figures(report: PlanReport) -> dict[str, object]:
    report = escaped(report)
    figures = {
        "pareto": pareto_figure(report),
        "perplexity": perplexity_figure(report),
        "layers": layer_format_figure(report),
        "sensitivity": sensitivity_figure(report),
        "latency-share": latency_share_figure(report),
    }
    if report.bench:
        figures["bench-throughput"] = throughput_latency_figure(report.bench)
        figures["bench-ttft"] = percentile_figure(report.bench, "time_to_first_token", "time to first token")
        figures["bench-itl"] = percentile_figure(report.bench, "inter_token_latency", "inter-token latency")
        figures["predicted-vs-measured"] = predicted_vs_measured_figure(report)
    return {k: v for k, v in figures.items() if v is not None}


# ---------------------------------------------------------------------------- comparison


def _per_point_bars(report: ComparisonReport, values, axis_title: str, fmt: Callable[[Any], str], bf16=None):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    colors = gpu_colors([g.gpu for g in report.gpus])
    points = report.points
    fig = make_subplots(rows=1, cols=len(points), subplot_titles=list(points), horizontal_spacing=0.08)
    for col, point in enumerate(points, start=1):
        gpus = [g for g in report.gpus if values(g, point) is not None]
        ys = [values(g, point) for g in gpus]
        # Values go under the GPU names: on or above the bars they collide with the bf16 ticks.
        fig.add_trace(
            go.Bar(
                x=[g.gpu for g in gpus],
                y=ys,
                marker_color=[colors[g.gpu] for g in gpus],
                text=[fmt(v) for v in ys],
                textposition="none",
                showlegend=False,
                hovertemplate="%{x}: %{text}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(
            tickvals=[g.gpu for g in gpus],
            ticktext=[f"{g.gpu}<br><b>{fmt(v)}</b>" for g, v in zip(gpus, ys)],
            row=1,
            col=col,
        )
        if bf16 is not None:
            fig.add_trace(
                go.Scatter(
                    x=[g.gpu for g in gpus],
                    y=[bf16(g, point) for g in gpus],
                    mode="markers",
                    name="all-bf16 on the same GPU",
                    showlegend=col == 1,
                    legendgroup="bf16",
                    marker=dict(symbol="line-ew-open", size=28, color="#444", line=dict(width=2)),
                    hovertemplate="%{x} all-bf16: %{y:.1f}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        top = max([v for v in ys if v is not None] + ([bf16(g, point) for g in gpus] if bf16 else []) + [0])
        fig.update_yaxes(range=[0, top * 1.08 if top else 1], row=1, col=col)
    fig.update_yaxes(title_text=axis_title, row=1, col=1)
    _base_layout(fig, 420)
    _legend_above_titles(fig)
    return fig


def comparison_figures(report: ComparisonReport) -> dict[str, object]:
    import plotly.graph_objects as go

    report = escaped(report)
    colors = gpu_colors([g.gpu for g in report.gpus])
    figures: dict[str, object] = {}
    figures["latency"] = _per_point_bars(
        report,
        lambda g, p: _us(g.latency_ns.get(p)),
        "predicted GEMM time per step (µs, lower is better)",
        lambda v: f"{v:.1f} µs",
        bf16=lambda g, p: _us(g.bf16_latency_ns.get(p)),
    )
    gpus = [g.gpu for g in report.gpus]
    mem = go.Figure()
    mem.add_trace(
        go.Bar(
            y=list(gpus),
            x=[g.weight_bytes / 1e6 for g in report.gpus],
            orientation="h",
            marker_color=[colors[g] for g in gpus],
            showlegend=False,
            text=[
                (
                    f"{g.weight_bytes / 1e6:,.1f} MB · {g.memory_share:.2%} of {g.memory_bytes / 1e9:.0f} GB · "
                    f"{'fits' if g.fits else 'does NOT fit'}"
                )
                if g.memory_share is not None
                else f"{g.weight_bytes / 1e6:,.1f} MB"
                for g in report.gpus
            ],
            textposition="auto",
            insidetextanchor="start",
            hovertemplate="%{y}: %{x:,.1f} MB<extra></extra>",
        )
    )
    mem.update_xaxes(title_text="weight memory (MB)", rangemode="tozero")
    _base_layout(mem, 90 + 60 * len(gpus))
    mem.update_layout(margin=dict(l=130, t=30))
    figures["memory"] = mem

    formats_seen = list(
        dict.fromkeys(
            f
            for g in report.gpus
            for f in sorted(g.format_weight_share, key=lambda f: list(FORMATS).index(f) if f in FORMATS else 99)
        )
    )
    fmt_fig = go.Figure()
    for f in formats_seen:
        shares = [100 * g.format_weight_share.get(f, 0.0) for g in report.gpus]
        fmt_fig.add_trace(
            go.Bar(
                y=list(gpus),
                x=shares,
                orientation="h",
                name=f,
                marker_color=format_color(f),
                text=[f"{f} {s:.0f}%" if s >= 7 else "" for s in shares],
                textposition="inside",
                insidetextanchor="middle",
                hovertemplate=f"%{{y}}: {f} %{{x:.1f}}% of weights<extra></extra>",
            )
        )
    fmt_fig.update_xaxes(title_text="share of quantizable weight parameters (%)", range=[0, 100], ticksuffix="%")
    _base_layout(fmt_fig, 120 + 60 * len(gpus), barmode="stack")
    fmt_fig.update_layout(legend=dict(traceorder="normal"))
    fmt_fig.update_layout(margin=dict(l=130, t=60))
    figures["formats"] = fmt_fig

    if report.bench:
        bench_colors: dict[str, str] = {}
        for r in report.bench:
            if r.series not in bench_colors:
                base = colors.get(r.gpu)
                bench_colors[r.series] = (
                    base
                    if base and base not in bench_colors.values()
                    else GPU_COLORS[(len(bench_colors) + len(colors)) % len(GPU_COLORS)]
                )
        figures["bench-throughput"] = throughput_latency_figure(report.bench, bench_colors)
        figures["bench-ttft"] = percentile_figure(
            report.bench, "time_to_first_token", "time to first token", bench_colors
        )
        figures["bench-itl"] = percentile_figure(
            report.bench, "inter_token_latency", "inter-token latency", bench_colors
        )
    return {k: v for k, v in figures.items() if v is not None}
