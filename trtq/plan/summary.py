"""A readable summary of plans: per plan, format counts, predicted latency vs bf16, weight memory."""

from __future__ import annotations

from collections import Counter

from trtq.artifacts.plan import Plan
from trtq.console import fmt_bytes, fmt_ns, stdout_console


def format_counts(plan: Plan) -> Counter:
    return Counter(g.format for g in plan.groups for _ in g.members)


def _stopped_by(plan: Plan) -> str:
    """What stopped the solver, when the plan records it (schema 2)."""
    solver = plan.solver
    if solver.stopped_by is None or solver.proven_gap is None:
        return ""
    if solver.stopped_by == "optimal":
        return " (gap proven 0)"
    if solver.stopped_by == "gap":
        return f" (within {solver.proven_gap:.2%} of the optimum, {solver.mip_rel_gap:.2%} asked)"
    return f" (stopped by the {solver.stopped_by.replace('_', ' ')}, within {solver.proven_gap:.2%})"


def print_plan_summary(plans: list[Plan], title: str = "Plan") -> None:
    from rich.table import Table

    points = list(dict.fromkeys(b.point for plan in plans for b in plan.budgets))
    table = Table(title=title)
    for col in ("GPU", "layers per format", *[f"{p} (vs all-bf16)" for p in points], "weights", "Σ Ω"):
        table.add_column(col)
    for plan in plans:
        cells = []
        for p in points:
            if p in plan.totals.latency_ns:
                ratio = plan.totals.latency_ns[p] / plan.totals.bf16_latency_ns[p]
                cells.append(f"{fmt_ns(plan.totals.latency_ns[p])} ({ratio:.2f}x)")
            else:
                cells.append("-")
        table.add_row(
            plan.gpu,
            ", ".join(f"{f} {n}" for f, n in format_counts(plan).most_common()),
            *cells,
            f"{fmt_bytes(plan.totals.weight_bytes)} ({plan.totals.weight_bytes / plan.totals.bf16_weight_bytes:.2f}x)",
            f"{plan.totals.sensitivity:.4g}",
        )
    console = stdout_console()
    console.print(table)
    for plan in plans:
        budgets = ", ".join(b.spec for b in plan.budgets)
        console.print(
            f"{plan.model} on {plan.gpu} ({plan.runtime or 'runtime not recorded'}): budgets {budgets}; "
            f"{plan.solver.name} {plan.solver.status}"
            f"{_stopped_by(plan)} in {plan.solver.solve_time_s * 1e3:.0f} ms; latencies from the "
            f"{plan.profile_backend} profile" + (" (kernel time, launch cost 0)" if plan.launch_cost_ns == 0 else "")
        )
        shares = provenance_line(plan)
        if shares:
            from rich.markup import escape

            console.print(f"  latency from: {escape(shares)}")
        serving = getattr(plan, "serving", None)
        if serving is not None:
            from rich.markup import escape

            slos = ", ".join(
                f"{k} <= {v:g} ms"
                for k, v in (("TTFT", serving.slo_ttft_ms), ("TPOT", serving.slo_tpot_ms))
                if v is not None
            )
            console.print(
                escape(
                    f"  serving isl={serving.isl}, osl={serving.osl}, concurrency={serving.concurrency}, TP{serving.tp}"
                    f" ({slos or 'no SLO'}): predicted TTFT {serving.ttft_ms:.1f} ms, TPOT {serving.tpot_ms:.2f} ms, "
                    f"{serving.output_tokens_per_s_per_gpu:.0f} output tokens/s per GPU; KV cache {serving.kv_format} "
                    f"(Omega {serving.kv_omega:.4g}), at most {serving.max_concurrency} sequences fit"
                )
            )
        for note in plan.notes:
            console.print(f"  note: {note}")


PROVENANCE_ORDER = ("measured", "interpolated", "extrapolated", "modelled", "unknown")


def provenance_line(plan: Plan) -> str:
    """Per budgeted point, what share of the plan's predicted time comes from measured, interpolated,
    extrapolated or modelled profile rows ("" for plans that predate it)."""
    parts = []
    for point in dict.fromkeys([b.point for b in plan.budgets] + list(plan.totals.provenance_ns)):
        shares = plan.totals.provenance_shares(point)
        if shares:
            ordered = sorted(shares, key=lambda p: (PROVENANCE_ORDER.index(p) if p in PROVENANCE_ORDER else 99, p))
            parts.append(f"{point} " + ", ".join(f"{p} {shares[p]:.0%}" for p in ordered))
    return "; ".join(parts)
