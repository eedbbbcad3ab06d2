"""The latency table: (gpu, GEMM shape, format, tokens) -> nanoseconds."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from trtq.artifacts.io import Artifact, StrictModel

# Where a latency comes from (ProfileRow.provenance); "unknown" for rows of schema-1 tables, which predate it.
Provenance = Literal["measured", "interpolated", "extrapolated", "modelled"]
ProvenanceLabel = Literal[Provenance, "unknown"]


class ProfileRow(StrictModel):
    out_features: int  # GEMM N
    in_features: int  # GEMM K
    tokens: int  # GEMM M
    format: str
    status: Literal["ok", "noisy", "unsupported"]
    latency_ns: float | None  # median; None when unsupported
    method: str  # how the number was obtained (formula or kernel name)
    repeats: int | None = None
    cv: float | None = None  # coefficient of variation of the repeats
    min_ns: float | None = None
    max_ns: float | None = None
    reason: str | None = None  # why unsupported / why noisy
    details: dict[str, Any] = {}  # backend-specific raw numbers (bytes, flops, bound ...)
    # Where the number comes from: measured (a kernel timed, or an exact grid point of a measured table),
    # interpolated / extrapolated (between / beyond a measured table's grid points), modelled (a roofline).
    # None in schema-1 tables, which predate it (their backend says it).
    provenance: Provenance | None = None
    # MoE grouped GEMM: one (out, in) GEMM per expert, `tokens` routed to experts_per_token of them.
    experts: int | None = None
    experts_per_token: int | None = None


class Profile(Artifact):
    KIND: ClassVar[str] = "profile"
    # 3: tp (rows are one GPU's GEMMs under tensor parallelism tp). Schema 1 lacks the rows' provenance
    # (optional here): still readable.
    SCHEMA_VERSION: ClassVar[int] = 3
    READS_SCHEMA_VERSIONS: ClassVar[tuple[int, ...]] = (1, 2, 3)

    model: str
    gpu: str  # registry name; "cpu" for the cpu backend
    backend: str  # roofline | roofline-calibrated | cpu | cuda | aiconfigurator
    launch_cost_ns: float  # fixed cost included in every latency_ns (0 = pure kernel time)
    tokens: list[int]
    formats: list[str]
    tp: int = 1  # rows are the GEMM shapes one of tp tensor-parallel GPUs runs
    device: dict[str, Any] = {}  # what was measured on: CPU/GPU name, clocks, driver ...
    settings: dict[str, Any] = {}  # backend settings (warm-up, repeats, fractions, calibration)
    rows: list[ProfileRow]

    def latency_map(self) -> dict[tuple[int, int, int, str], float]:
        """(out, in, tokens, format) -> latency_ns for dense rows with a number."""
        return {
            (r.out_features, r.in_features, r.tokens, r.format): r.latency_ns
            for r in self.rows
            if r.latency_ns is not None and r.experts is None
        }

    def moe_latency_map(self) -> dict[tuple[int, int, int, str, int, int], float]:
        """(out, in, tokens, format, experts, experts_per_token) -> latency_ns for MoE grouped-GEMM rows."""
        return {
            (r.out_features, r.in_features, r.tokens, r.format, r.experts, r.experts_per_token): r.latency_ns
            for r in self.rows
            if r.latency_ns is not None and r.experts is not None
        }

    def provenance_of(self, row: ProfileRow) -> ProvenanceLabel:
        """A row's provenance; schema-1 rows predate it: "unknown"."""
        return row.provenance or "unknown"

    def provenance_map(self) -> dict[tuple, ProvenanceLabel]:
        """The keys of latency_map and moe_latency_map -> the row's provenance."""
        return {
            (r.out_features, r.in_features, r.tokens, r.format)
            + (() if r.experts is None else (r.experts, r.experts_per_token)): self.provenance_of(r)
            for r in self.rows
            if r.latency_ns is not None
        }

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([r.model_dump(exclude={"details"}) for r in self.rows])

    def provenance_counts(self) -> dict[str, int]:
        """Rows with a latency per provenance ("unknown" for schema-1 rows)."""
        counts: dict[str, int] = {}
        for r in self.rows:
            if r.latency_ns is not None:
                key = r.provenance or "unknown"
                counts[key] = counts.get(key, 0) + 1
        return counts
