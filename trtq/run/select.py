"""Quality-gated selection: on each GPU's Pareto front, the fastest plan whose MEASURED quality passes.

A front's candidates are ordered fastest first; slower plans quantize less (their sum of Omega only
falls), so whether a plan passes the gate is taken as monotone along the front and the boundary is
found by bisection: O(log n) evaluations instead of n. Evaluations are keyed by what a plan
quantizes (`plan_hash`: the model and each layer's format and group size), so a plan that appears
on two GPUs' fronts is evaluated once; all GPUs advance in lock-step rounds, and each round's new
evaluations are handed to `evaluate` together (so a Ray cluster runs them in parallel).

Where two or more quantized plans have been measured, the probe is steered by the fit of measured
perplexity against sum of Omega (trtq.plan.quality_fit): the first candidate the fit predicts to
pass, kept inside the middle half of the bracket so a bad fit still costs no more than bisection.
No torch here: outcomes come in through the `evaluate` callback.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trtq.plan.quality_fit import QualityFit


def plan_hash(model: str, layer_formats: dict[str, tuple[str, int | None]]) -> str:
    """What a plan quantizes, independent of the GPU, budgets, metadata and file layout."""
    payload = json.dumps({"model": model, "layers": sorted([k, v[0], v[1]] for k, v in layer_formats.items())})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Candidate:
    plan_hash: str
    omega: float  # sum of Omega: lower is better quality
    fraction: float  # achieved latency fraction: lower is faster


@dataclass(frozen=True)
class Outcome:
    passed: bool
    relative_increase: float | None  # None when the quantized perplexity overflowed


@dataclass
class _Search:
    gpu: str
    candidates: list[Candidate]
    lo: int = -1  # highest index known to fail
    hi: int = -1  # lowest index known to pass; len(candidates): none known
    probed: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.hi = len(self.candidates)

    @property
    def done(self) -> bool:
        return self.hi - self.lo <= 1

    def apply(self, index: int, outcome: Outcome) -> None:
        if outcome.passed:
            self.hi = min(self.hi, index)
        else:
            self.lo = max(self.lo, index)


@dataclass
class SelectionOutcome:
    selected: dict[str, int | None]  # gpu -> index of the fastest passing candidate (None: none passes)
    probed: dict[str, list[str]]  # gpu -> plan hashes looked at, in order
    evaluations_run: int  # calls for outcomes not already known
    outcomes: dict[str, Outcome]  # every outcome known at the end, by plan hash
    fit: QualityFit | None = None  # the last one used, if any


def _fit(known: dict[str, Outcome], omegas: dict[str, float]) -> QualityFit | None:
    from trtq.errors import InputError
    from trtq.plan.quality_fit import fit_quality

    points = [
        (omegas[h], o.relative_increase)
        for h, o in known.items()
        if o.relative_increase is not None and h in omegas and omegas[h] > 0 and o.relative_increase > -1
    ]
    if len(points) < 2:
        return None
    try:
        fit = fit_quality([p[0] for p in points], [1.0 + p[1] for p in points], 1.0)
    except InputError:
        return None
    return fit if fit.slope > 0 else None


def _probe(search: _Search, fit, threshold: float | None) -> int:
    lo, hi = search.lo, search.hi
    mid = (lo + hi) // 2
    if fit is None or threshold is None:
        return mid
    omega_max = fit.omega_for_increase(threshold)
    inside = range(lo + 1, hi)
    guess = next((i for i in inside if search.candidates[i].omega <= omega_max), hi - 1)
    quarter = (hi - lo) // 4
    return min(max(guess, lo + max(1, quarter)), hi - max(1, quarter))


def select_fastest_passing(
    fronts: dict[str, list[Candidate]],
    evaluate: Callable[[list[Candidate]], dict[str, Outcome]],
    known: dict[str, Outcome] | None = None,
    threshold: float | None = None,
) -> SelectionOutcome:
    """Bisection on every front at once; `evaluate` gets each round's unknown candidates (distinct plans).

    `known`: outcomes already measured (a cache), used for free. `threshold`: the gate's relative
    perplexity increase (0.05 for 5%), which lets the Omega fit steer the probes; None: plain bisection.
    """
    outcomes: dict[str, Outcome] = dict(known or {})
    omegas = {c.plan_hash: c.omega for cands in fronts.values() for c in cands}
    searches = [_Search(gpu, list(cands)) for gpu, cands in fronts.items()]
    evaluations_run = 0
    fit = None
    while True:
        wanted: dict[str, Candidate] = {}
        for search in searches:
            while not search.done:
                fit = _fit(outcomes, omegas)
                index = _probe(search, fit, threshold)
                candidate = search.candidates[index]
                if candidate.plan_hash not in search.probed:
                    search.probed.append(candidate.plan_hash)
                if candidate.plan_hash in outcomes:
                    search.apply(index, outcomes[candidate.plan_hash])
                    continue
                wanted[candidate.plan_hash] = candidate
                break
        if not wanted:
            break
        results = evaluate(list(wanted.values()))
        missing = set(wanted) - set(results)
        if missing:
            raise RuntimeError(f"evaluate() returned no outcome for {sorted(missing)}")
        evaluations_run += len(wanted)
        outcomes.update({h: results[h] for h in wanted})
    selected = {s.gpu: (s.hi if s.hi < len(s.candidates) else None) for s in searches}
    return SelectionOutcome(
        selected=selected,
        probed={s.gpu: s.probed for s in searches},
        evaluations_run=evaluations_run,
        outcomes=outcomes,
        fit=fit,
    )


def bisection_bound(n: int) -> int:
    """Evaluations plain bisection needs at most on a front of n distinct plans."""
    return math.ceil(math.log2(n + 1)) if n > 0 else 0
