import itertools

import numpy as np
import pytest

from trtq.plan.ilp import Constraint, IlpProblem, evaluate, min_common_scale, minimum_of, solve


def brute_force(problem: IlpProblem):
    best, best_choice = np.inf, None
    allowed = problem.allowed
    options = [np.flatnonzero(allowed[g]) for g in range(problem.objective.shape[0])]
    for combo in itertools.product(*options):
        choice = np.array(combo)
        if all(evaluate(c.coeffs, choice) <= c.limit + 1e-9 for c in problem.constraints):
            value = evaluate(problem.objective, choice)
            if value < best - 1e-12:
                best, best_choice = value, choice
    return best, best_choice


def random_problem(seed: int, groups: int = 6, options: int = 4, tight: float = 0.6) -> IlpProblem:
    rng = np.random.default_rng(seed)
    objective = rng.uniform(0, 1, (groups, options)) ** 3 * 10
    objective[:, 0] = 0.0                       # option 0 plays bf16: no error, slowest
    lat1 = rng.uniform(0.2, 1.0, (groups, options))
    lat1[:, 0] = 1.0
    lat2 = rng.uniform(0.3, 1.0, (groups, options))
    lat2[:, 0] = 1.0
    mem = rng.uniform(0.25, 1.0, (groups, options))
    mem[:, 0] = 1.0
    objective[rng.integers(0, groups), options - 1] = np.inf     # one option not allowed somewhere
    return IlpProblem(objective, [Constraint("lat1", lat1, tight * groups),
                                  Constraint("lat2", lat2, 0.8 * groups),
                                  Constraint("mem", mem, 0.7 * groups)])


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("solver", ["highs", "cbc"])
def test_ilp_matches_brute_force_exactly(seed, solver):
    problem = random_problem(seed)
    best, _ = brute_force(problem)
    sol = solve(problem, solver=solver)
    if not np.isfinite(best):
        assert sol.status == "infeasible"
        return
    assert sol.feasible
    assert sol.objective == pytest.approx(best, rel=1e-9, abs=1e-12)
    assert all(problem.allowed[g, f] for g, f in enumerate(sol.choice))
    for c in problem.constraints:
        assert evaluate(c.coeffs, sol.choice) <= c.limit + 1e-9


def test_minimum_of_a_constraint_given_the_others():
    problem = random_problem(3, tight=0.01)
    assert not solve(problem).feasible
    smallest = minimum_of(problem, 0).objective
    # brute force: the least lat1 among assignments that satisfy lat2 and mem
    others = IlpProblem(np.where(problem.allowed, problem.constraints[0].coeffs, np.inf), problem.constraints[1:])
    expected, _ = brute_force(others)
    assert smallest == pytest.approx(expected)


def test_min_common_scale_is_the_fastest_feasible_fraction():
    problem = random_problem(5)
    # limits as fractions of the all-option-0 totals (= number of groups)
    base = IlpProblem(problem.objective, [Constraint("lat1", problem.constraints[0].coeffs, 6.0),
                                          Constraint("lat2", problem.constraints[1].coeffs, 6.0),
                                          problem.constraints[2]])
    t = min_common_scale(base, [0, 1])
    assert t is not None and 0 < t <= 1
    assert solve(IlpProblem(base.objective, [Constraint("a", base.constraints[0].coeffs, 6.0 * t * (1 + 1e-9)),
                                            Constraint("b", base.constraints[1].coeffs, 6.0 * t * (1 + 1e-9)),
                                            base.constraints[2]])).feasible
    assert not solve(IlpProblem(base.objective, [Constraint("a", base.constraints[0].coeffs, 6.0 * t * 0.999),
                                                Constraint("b", base.constraints[1].coeffs, 6.0 * t * 0.999),
                                                base.constraints[2]])).feasible


def test_group_without_options_is_rejected():
    objective = np.array([[np.inf, np.inf], [0.0, 1.0]])
    with pytest.raises(ValueError, match="group 0 has no allowed option"):
        solve(IlpProblem(objective, []))


def test_lp_rounding_answer_is_within_the_gap_it_claims(neighbourhood_answers):
    """Large instances: the LP-rounded plan (no branch and bound) and the neighbourhood searches'
    plans (branch and bound on part of the model) must sit within the gap they report of the true
    optimum, and within the gap asked for."""
    used_rounding = 0
    for seed in range(10):
        problem = random_problem(100 + seed, groups=120, options=5, tight=0.7)
        exact = solve(problem, mip_rel_gap=1e-9)
        assert exact.feasible
        for gap in (0.01, 0.002):
            sol = solve(problem, mip_rel_gap=gap)
            assert sol.feasible
            assert all(evaluate(c.coeffs, sol.choice) <= c.limit for c in problem.constraints)
            assert exact.objective - 1e-9 <= sol.objective <= exact.objective * (1 + gap) + 1e-9
            assert (sol.objective - exact.objective) / sol.objective <= sol.gap + 1e-9
            used_rounding += sol.nodes == 0
    assert used_rounding > 0          # the shortcut was really taken, not only branch and bound
    assert any(neighbourhood_answers)  # and the neighbourhoods answered where rounding did not
