"""From artifacts to the ILP's matrices: one row per fused group, one column per format.

Reads the layer graph, a profile and a sensitivity table as artifacts only. The
latency of a group is its fused GEMM (out = sum of members' outputs) at each
workload point; its Omega and weight bytes are the sums over its members. An MoE group
(the experts of one block, one format) costs its members' grouped GEMMs at the workload's
tokens routed to top-k of E experts, and its weight bytes count all E experts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from trtq.artifacts.layers import GroupInfo, LayerGraph
from trtq.artifacts.plan import Totals
from trtq.artifacts.profile import Profile, ProvenanceLabel
from trtq.artifacts.sensitivity import Sensitivity
from trtq.errors import InputError
from trtq.plan.ilp import exact_sum
from trtq.registry.formats import Format

DECODE_MAX_TOKENS = 256  # unnamed points up to this M are labelled decode@M, above it prefill@M


@dataclass
class CostModel:
    groups: list[GroupInfo]
    formats: list[str]
    points: dict[str, int]  # workload point -> tokens (GEMM M)
    omega: np.ndarray  # (G, F); inf where not allowed
    latency: dict[str, np.ndarray]  # point -> (G, F) ns; nan where not allowed
    weight_bytes: np.ndarray  # (G, F)
    group_sizes: list[list[int | None]]  # [g][f]
    fixed_bytes: int
    notes: list[str] = field(default_factory=list)
    # point -> provenance -> (G, F) ns of the latency that comes from profile rows of that provenance
    provenance_ns: dict[str, dict[ProvenanceLabel, np.ndarray]] = field(default_factory=dict)

    @property
    def allowed(self) -> np.ndarray:
        mask = np.isfinite(self.omega) & np.isfinite(self.weight_bytes)
        for lat in self.latency.values():
            mask &= np.isfinite(lat)
        return mask

    def bf16_index(self) -> int:
        return self.formats.index("bf16")

    def choice_of(self, layer_formats: dict[str, str]) -> np.ndarray:
        """Per-group option index from a per-layer format map (fused members must agree)."""
        choice = np.empty(len(self.groups), dtype=int)
        for g, group in enumerate(self.groups):
            chosen = {layer_formats.get(m, "bf16") for m in group.members}
            if len(chosen) != 1:
                raise InputError(f"fused group {group.name} mixes formats {sorted(chosen)}")
            name = chosen.pop()
            if name not in self.formats or not self.allowed[g, self.formats.index(name)]:
                raise InputError(f"format {name} is not allowed for {group.name}")
            choice[g] = self.formats.index(name)
        return choice

    def totals(self, choice: np.ndarray) -> Totals:
        rows = np.arange(len(choice))
        bf16 = np.full(len(choice), self.bf16_index())
        # Latencies summed exactly (ilp.exact_sum), as the budgets' all-bf16 and the solver's check are: a plan
        # at exactly a budget's fraction reads as within it, not one rounding over.
        return Totals(
            latency_ns={p: exact_sum(m, choice) for p, m in self.latency.items()},
            bf16_latency_ns={p: exact_sum(m, bf16) for p, m in self.latency.items()},
            weight_bytes=int(self.weight_bytes[rows, choice].sum()) + self.fixed_bytes,
            bf16_weight_bytes=int(self.weight_bytes[rows, bf16].sum()) + self.fixed_bytes,
            sensitivity=float(self.omega[rows, choice].sum()),
            provenance_ns={
                p: {prov: float(m[rows, choice].sum()) for prov, m in by_prov.items() if m[rows, choice].sum() > 0}
                for p, by_prov in self.provenance_ns.items()
            },
        )


def point_names(budget_points: dict[str, int], profile_tokens: list[int]) -> dict[str, int]:
    points = dict(budget_points)
    covered = set(points.values())
    for m in profile_tokens:
        if m not in covered:
            points[f"{'decode' if m <= DECODE_MAX_TOKENS else 'prefill'}@{m}"] = m
    return points


def _gemm_key(gemm, tokens: int, fmt: str) -> tuple:
    key = (gemm.out_features, gemm.in_features, tokens, fmt)
    return key if gemm.experts is None else key + (gemm.experts, gemm.experts_per_token)


def _group_latency(gemms, tokens: int, fmt: str, dense: dict, moe: dict) -> float | None:
    """The group's GEMM time at M = tokens: its fused GEMM, or the sum of its MoE grouped GEMMs."""
    total = 0.0
    for gemm in gemms:
        value = (dense if gemm.experts is None else moe).get(_gemm_key(gemm, tokens, fmt))
        if value is None:
            return None
        total += value
    return total


def _group_provenance(
    gemms, tokens: int, fmt: str, dense: dict, moe: dict, provenance: dict[tuple, ProvenanceLabel]
) -> dict[ProvenanceLabel, float]:
    """The group's GEMM time at M = tokens split by the provenance of the profile rows it sums."""
    parts: dict[ProvenanceLabel, float] = {}
    for gemm in gemms:
        key = _gemm_key(gemm, tokens, fmt)
        label = provenance[key]
        parts[label] = parts.get(label, 0.0) + (dense if gemm.experts is None else moe)[key]
    return parts


def build_cost_model(
    graph: LayerGraph, profile: Profile, sensitivity: Sensitivity, formats: list[Format], budget_points: dict[str, int]
) -> CostModel:
    if sensitivity.model != graph.model:
        raise InputError(f"sensitivity table is for {sensitivity.model}, the plan is for {graph.model}")
    missing_tokens = sorted({m for m in budget_points.values() if m not in profile.tokens})
    if missing_tokens:
        raise InputError(
            f"profile has no rows for tokens {','.join(map(str, missing_tokens))} "
            f"(it has {','.join(map(str, profile.tokens))}): re-run trtq profile with --tokens"
        )
    points = point_names(budget_points, profile.tokens)
    latency_of = profile.latency_map()
    moe_latency_of = profile.moe_latency_map()
    provenance_of = profile.provenance_map()
    provenance_ns: dict[str, dict[ProvenanceLabel, np.ndarray]] = {p: {} for p in points}
    omega_of = sensitivity.omega_map()
    layer_names = {layer.name for layer in graph.layers}
    covered_layers = {layer for layer, _ in omega_of}
    absent = sorted(layer_names - covered_layers)
    if absent:
        raise InputError(f"sensitivity table has no rows for layer {absent[0]} (and {len(absent) - 1} more)")

    names = [f.name for f in formats]
    G, F = len(graph.groups), len(formats)
    omega = np.full((G, F), np.inf)
    weight_bytes = np.full((G, F), np.inf)
    latency = {p: np.full((G, F), np.nan) for p in points}
    group_sizes: list[list[int | None]] = [[None] * F for _ in range(G)]
    notes: set[str] = set()
    members_of = {layer.name: layer for layer in graph.layers}
    # Latencies (and the widths a block size must divide) are one GPU's under the profile's tensor
    # parallelism; weight bytes stay the whole model's.
    per_gpu = graph.sharded(profile.tp)
    for g, group in enumerate(graph.groups):
        gemms = per_gpu.group_gemms(per_gpu.groups[g])
        # An MoE group's members read different widths (hidden, expert intermediate): one block size for all.
        width = math.gcd(*(gemm.in_features for gemm in gemms))
        for f, fmt in enumerate(formats):
            if not fmt.available_for(width):
                notes.add(f"{fmt.unavailable_reason(width)}: {fmt.name} not planned there")
                continue
            gs = fmt.group_size_for(width)
            omegas = [omega_of.get((m, fmt.name)) for m in group.members]
            if any(o is None for o in omegas):
                notes.add(f"sensitivity table has no {fmt.name} rows: {fmt.name} not planned")
                continue
            lats = {p: _group_latency(gemms, m, fmt.name, latency_of, moe_latency_of) for p, m in points.items()}
            if any(v is None for v in lats.values()):
                shapes = ", ".join(
                    f"{gemm.out_features}x{gemm.in_features}"
                    + (f" ({gemm.experts} experts, top-{gemm.experts_per_token})" if gemm.experts else "")
                    for gemm in gemms
                )
                notes.add(f"profile has no {fmt.name} latency for shape {shapes}: {fmt.name} not planned there")
                continue
            omega[g, f] = float(sum(omegas))
            weight_bytes[g, f] = sum(
                fmt.weight_bytes(members_of[m].out_features, members_of[m].in_features, gs)
                * (members_of[m].experts or 1)
                for m in group.members
            )
            for p, v in lats.items():
                latency[p][g, f] = v
                for label, ns in _group_provenance(
                    gemms, points[p], fmt.name, latency_of, moe_latency_of, provenance_of
                ).items():
                    provenance_ns[p].setdefault(label, np.zeros((G, F)))[g, f] = ns
            group_sizes[g][f] = gs
        if "bf16" in names and not np.isfinite(omega[g, names.index("bf16")]):
            why = next(
                (
                    r.reason
                    for r in profile.rows
                    if r.reason
                    and r.format == "bf16"
                    and (r.out_features, r.in_features) in {(m.out_features, m.in_features) for m in gemms}
                ),
                None,
            )
            raise InputError(
                f"no bf16 baseline for {group.name} ({group.out_features}x{group.in_features}) "
                "in the profile or sensitivity table" + (f": the profile says {why}" if why else "")
            )
    return CostModel(
        graph.groups,
        names,
        points,
        omega,
        latency,
        weight_bytes,
        group_sizes,
        graph.fixed_parameter_bytes,
        sorted(notes),
        provenance_ns,
    )
