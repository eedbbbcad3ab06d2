"""The measurement harness shared by every measuring backend (cpu, cuda).

A backend supplies only the kernel: `prepare(case)` returns a zero-argument callable
that runs one GEMM (or a reason it cannot), a timer for one call, and an optional hook
run between repetitions (the CUDA backend flushes L2 there). Repetitions, statistics,
re-measurement of noisy rows and the table rows themselves live here, once.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import Field

from trtq.artifacts.io import StrictModel
from trtq.artifacts.profile import ProfileRow


@dataclass(frozen=True)
class GemmCase:
    out_features: int
    in_features: int
    tokens: int
    format: str
    # MoE grouped GEMM: `experts` (out, in) GEMMs sharing the tokens x experts_per_token routed rows.
    experts: int | None = None
    experts_per_token: int | None = None


def case_fields(case: GemmCase) -> dict[str, Any]:
    """The row fields that name a case (an MoE case's expert counts only where set)."""
    base: dict[str, Any] = dict(
        out_features=case.out_features, in_features=case.in_features, tokens=case.tokens, format=case.format
    )
    if case.experts is not None:
        base.update(experts=case.experts, experts_per_token=case.experts_per_token)
    return base


@dataclass
class Prepared:
    """A ready-to-run kernel for one case, or why there is none."""

    run: Callable[[], object] | None
    method: str
    reason: str | None = None
    details: dict = field(default_factory=dict)


class MeasuringBackend(Protocol):
    name: str

    def device_info(self) -> dict: ...

    def prepare(self, case: GemmCase) -> Prepared: ...

    def time_ns(self, run: Callable[[], object]) -> float:
        """Wall time of one call of `run`, in nanoseconds, synchronised."""

    def between_repeats(self) -> None: ...


class HarnessSettings(StrictModel):
    warmup: int = Field(default=3, ge=0)
    min_repeats: int = Field(default=10, ge=3)
    max_repeats: int = Field(default=200, ge=3)
    # Stop repeating once this much kernel time was measured (after min_repeats).
    target_total_ns: float = Field(default=2e8, gt=0)
    # Rows whose coefficient of variation exceeds this are re-measured once, then flagged noisy.
    max_cv: float = Field(default=0.10, gt=0)


@dataclass(frozen=True)
class Stats:
    median_ns: float
    cv: float
    min_ns: float
    max_ns: float
    repeats: int


def summarise(samples: list[float]) -> Stats:
    median = statistics.median(samples)
    mean = statistics.fmean(samples)
    stdev = statistics.pstdev(samples) if len(samples) > 1 else 0.0
    return Stats(median, stdev / mean if mean > 0 else 0.0, min(samples), max(samples), len(samples))


def sample(
    backend: MeasuringBackend, run: Callable[[], object], settings: HarnessSettings, repeats_floor: int | None = None
) -> list[float]:
    for _ in range(settings.warmup):
        backend.between_repeats()
        backend.time_ns(run)
    samples: list[float] = []
    floor = repeats_floor or settings.min_repeats
    while len(samples) < settings.max_repeats:
        backend.between_repeats()
        samples.append(backend.time_ns(run))
        if len(samples) >= floor and sum(samples) >= settings.target_total_ns:
            break
    return samples


def measure_case(backend: MeasuringBackend, case: GemmCase, settings: HarnessSettings) -> ProfileRow:
    prepared = backend.prepare(case)
    base: dict[str, Any] = dict(
        out_features=case.out_features,
        in_features=case.in_features,
        tokens=case.tokens,
        format=case.format,
        method=prepared.method,
    )
    if prepared.run is None:
        return ProfileRow(
            **base, status="unsupported", latency_ns=None, reason=prepared.reason, details=prepared.details
        )
    stats = summarise(sample(backend, prepared.run, settings))
    details = dict(prepared.details)
    if stats.cv > settings.max_cv:
        first_cv = stats.cv
        stats = summarise(sample(backend, prepared.run, settings, repeats_floor=2 * settings.min_repeats))
        details["first_attempt_cv"] = first_cv
    noisy = stats.cv > settings.max_cv
    return ProfileRow(
        **base,
        status="noisy" if noisy else "ok",
        latency_ns=stats.median_ns,
        provenance="measured",
        repeats=stats.repeats,
        cv=stats.cv,
        min_ns=stats.min_ns,
        max_ns=stats.max_ns,
        reason=f"coefficient of variation {stats.cv:.2f} > {settings.max_cv:.2f} after re-measuring" if noisy else None,
        details=details,
    )


def measure_table(
    backend: MeasuringBackend,
    cases: Iterable[GemmCase],
    settings: HarnessSettings,
    on_row: Callable[[ProfileRow], None] | None = None,
) -> list[ProfileRow]:
    rows = []
    for case in cases:
        row = measure_case(backend, case, settings)
        rows.append(row)
        if on_row:
            on_row(row)
    return rows
