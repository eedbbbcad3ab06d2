"""Quality-gated selection against an exhaustive evaluation of every plan on the front."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trtq.artifacts import load_artifact, make_metadata, save_artifact
from trtq.artifacts.run import Evaluation, Front, FrontCandidate, GpuSelection, Selection
from trtq.run.select import Candidate, Outcome, bisection_bound, plan_hash, select_fastest_passing


def _front(rng, n: int, prefix: str) -> list[Candidate]:
    # Fastest first: latency fraction rises while sum of Omega falls, as on a Pareto front.
    omegas = np.sort(rng.uniform(0.0, 2.0, n))[::-1]
    fractions = np.sort(rng.uniform(0.3, 1.0, n))
    return [Candidate(plan_hash=f"{prefix}{i}", omega=float(o), fraction=float(f))
            for i, (o, f) in enumerate(zip(omegas, fractions))]


def _measure(slope: float, noise: float, rng):
    table = {}

    def increase(c: Candidate) -> float:
        if c.plan_hash not in table:
            table[c.plan_hash] = math.expm1(slope * c.omega) * (1 + noise * rng.uniform(-1, 1))
        return table[c.plan_hash]
    return increase


@pytest.mark.parametrize("seed", range(40))
def test_bisection_finds_what_exhaustive_evaluation_finds(seed):
    rng = np.random.default_rng(seed)
    threshold = float(rng.choice([0.01, 0.03, 0.05, 0.2]))
    shared = _front(rng, 6, "s")
    fronts = {"A": _front(rng, int(rng.integers(1, 14)), "a"), "B": _front(rng, int(rng.integers(1, 14)), "b"),
              "C": sorted(shared + _front(rng, 3, "c"), key=lambda c: (c.fraction, -c.omega))}
    # keep C a front: Omega must fall as the fraction rises
    omegas = sorted((c.omega for c in fronts["C"]), reverse=True)
    fronts["C"] = [Candidate(c.plan_hash, o, c.fraction) for c, o in zip(fronts["C"], omegas)]
    increase = _measure(slope=float(rng.uniform(0.02, 0.2)), noise=0.0, rng=rng)
    calls = []

    def evaluate(batch):
        assert len({c.plan_hash for c in batch}) == len(batch)   # each plan once per round
        calls.extend(c.plan_hash for c in batch)
        return {c.plan_hash: Outcome(increase(c) <= threshold, increase(c)) for c in batch}

    found = select_fastest_passing(fronts, evaluate, threshold=threshold)
    assert len(calls) == len(set(calls)) == found.evaluations_run     # never the same plan twice
    for gpu, cands in fronts.items():
        exhaustive = [increase(c) <= threshold for c in cands]
        expected = next((i for i, ok in enumerate(exhaustive) if ok), None)
        assert found.selected[gpu] == expected, (gpu, exhaustive)
    # Fewer evaluations than the exhaustive search whenever the fronts are not tiny.
    total = len({c.plan_hash for cands in fronts.values() for c in cands})
    assert found.evaluations_run <= total


def test_plain_bisection_stays_within_log2_and_uses_known_outcomes():
    rng = np.random.default_rng(1)
    front = {"A": _front(rng, 31, "a")}
    increase = _measure(0.1, 0.0, rng)
    threshold = increase(front["A"][12])
    found = select_fastest_passing(front, lambda b: {c.plan_hash: Outcome(increase(c) <= threshold, increase(c))
                                                     for c in b})
    assert found.selected["A"] == 12 and found.evaluations_run <= bisection_bound(31) == 5
    # Everything known already: no evaluation at all.
    again = select_fastest_passing(front, lambda b: pytest.fail("evaluated a known plan"), known=found.outcomes)
    assert again.selected == found.selected and again.evaluations_run == 0


def test_nothing_passes():
    rng = np.random.default_rng(2)
    front = {"A": _front(rng, 5, "a")}
    found = select_fastest_passing(front, lambda b: {c.plan_hash: Outcome(False, 0.5) for c in b})
    assert found.selected == {"A": None} and 1 <= found.evaluations_run <= bisection_bound(5)


def test_plan_hash_ignores_order_and_gpu():
    a = plan_hash("m", {"x": ("fp8", None), "y": ("int4_awq", 64)})
    assert a == plan_hash("m", {"y": ("int4_awq", 64), "x": ("fp8", None)})
    assert a != plan_hash("m", {"y": ("int4_awq", 128), "x": ("fp8", None)})
    assert a != plan_hash("other", {"x": ("fp8", None), "y": ("int4_awq", 64)})


def test_front_and_selection_round_trip(tmp_path):
    front = Front(artifact=Front.KIND, schema_version=1, metadata=make_metadata(), model="m", gpu="H100-SXM",
                  budgets=["decode@16=0.5"], status="planned", budget_plan="budget-plan.yaml",
                  candidates=[FrontCandidate(plan="candidates/00.yaml", plan_hash="ab", fraction=0.5, omega=1.5,
                                             weight_bytes=10)])
    assert load_artifact(save_artifact(front, tmp_path / "front.json"), Front) == front
    selection = Selection(artifact=Selection.KIND, schema_version=1, metadata=make_metadata(), model="m",
                          max_ppl_increase=5.0, evaluations_run=1, evaluations_cached=0,
                          gpus=[GpuSelection(gpu="H100-SXM", status="selected", candidates=1, selected=0,
                                             plan="select/all/plan-H100-SXM.yaml", fraction=0.5, probed=["ab"],
                                             evaluations=[Evaluation(plan_hash="ab", omega=1.5,
                                                                     relative_increase=0.01, passed=True,
                                                                     eval="evals/ab-x.json")])])
    assert load_artifact(save_artifact(selection, tmp_path / "selection.yaml"), Selection) == selection
