"""A multiple-choice ILP over cost matrices, solved with PuLP (HiGHS, or CBC as fallback).

Knows nothing of torch, models or GPUs: G choice groups x F options, an objective
matrix, and linear constraints given as matrices with limits. An option is allowed
for a group where the objective and every constraint coefficient are finite.

    minimise   sum_{g,f} objective[g,f] x[g,f]
    subject to sum_f x[g,f] = 1                      for every group g
               sum_{g,f} coeffs_c[g,f] x[g,f] <= limit_c   for every constraint c
               x binary
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pulp

SOLVERS = ("highs", "cbc")


@dataclass(frozen=True)
class Constraint:
    name: str
    coeffs: np.ndarray   # (G, F); non-finite where the option is not allowed
    limit: float


@dataclass
class IlpProblem:
    objective: np.ndarray                      # (G, F)
    constraints: list[Constraint] = field(default_factory=list)

    @property
    def allowed(self) -> np.ndarray:
        mask = np.isfinite(self.objective)
        for c in self.constraints:
            mask &= np.isfinite(c.coeffs)
        return mask

    def check(self) -> None:
        g, f = self.objective.shape
        for c in self.constraints:
            if c.coeffs.shape != (g, f):
                raise ValueError(f"constraint {c.name}: shape {c.coeffs.shape} != objective {(g, f)}")
        empty = np.flatnonzero(~self.allowed.any(axis=1))
        if empty.size:
            raise ValueError(f"group {int(empty[0])} has no allowed option")


@dataclass
class IlpSolution:
    status: str                        # "optimal" | "time_limit" (best found, see gap) | "infeasible" | other
    choice: np.ndarray | None          # (G,) option index per group
    objective: float | None
    solve_time_s: float
    solver: str
    solver_version: str
    gap: float | None = None           # proven relative optimality gap of `choice`

    @property
    def feasible(self) -> bool:
        return self.status in ("optimal", "time_limit") and self.choice is not None


def _silence_highs_banner() -> None:
    """HiGHS prints its banner to the C-level stdout on the first Highs() of a process;
    plan output goes to stdout, so create that first instance with fd 1 pointed away."""
    global _BANNER_DONE
    if _BANNER_DONE:
        return
    _BANNER_DONE = True
    try:
        import highspy
    except ImportError:
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


_BANNER_DONE = False


def _solver_cmd(name: str, mip_rel_gap: float, time_limit: float | None):
    if name == "highs":
        _silence_highs_banner()
        solver = pulp.HiGHS(msg=False, gapRel=mip_rel_gap, timeLimit=time_limit)
        if solver.available():
            return solver, "HiGHS", _version("highspy")
    solver = pulp.PULP_CBC_CMD(msg=False, gapRel=mip_rel_gap, timeLimit=time_limit)
    return solver, "CBC", _version("pulp")


def _version(package: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _scaled(values: np.ndarray, scale: float) -> np.ndarray:
    return values / scale if scale > 0 else values


def _build(problem: IlpProblem, objective: np.ndarray, constraints: list[Constraint],
           extra_var: bool = False):
    allowed = problem.allowed
    prob = pulp.LpProblem("trtq", pulp.LpMinimize)
    groups, options = objective.shape
    x: dict[tuple[int, int], pulp.LpVariable] = {}
    for g in range(groups):
        for f in np.flatnonzero(allowed[g]):
            x[g, int(f)] = prob.add_variable(f"x_{g}_{int(f)}", cat=pulp.LpBinary)
    t = prob.add_variable("t", lowBound=0) if extra_var else None
    # Normalising every row keeps HiGHS's tolerances meaningful whatever the units (ns, bytes).
    obj_scale = float(np.nanmax(np.abs(np.where(allowed, objective, np.nan)))) if x else 1.0
    obj = _scaled(objective, obj_scale)
    terms = [(v, float(obj[g, f])) for (g, f), v in x.items()]
    if t is not None:
        terms.append((t, 1.0))
    prob += pulp.LpAffineExpression(terms)
    for g in range(groups):
        prob += pulp.LpAffineExpression([(x[g, int(f)], 1.0) for f in np.flatnonzero(allowed[g])]) == 1, f"one_{g}"
    return prob, x, t


def _add_constraints(prob, x, constraints: list[Constraint], t=None, scale_rows: set[int] = frozenset()):
    for i, c in enumerate(constraints):
        scale = _row_scale(c)
        lhs = pulp.LpAffineExpression([(v, float(c.coeffs[g, f] / scale)) for (g, f), v in x.items()])
        if i in scale_rows:
            prob += lhs - t * (c.limit / scale) <= 0, f"c{i}"
        else:
            prob += lhs <= c.limit / scale, f"c{i}"


def _highs_outcome(highs) -> tuple[str, float | None]:
    """HiGHS's own status: PuLP reports a time-limited incumbent as optimal."""
    import highspy

    status = highs.getModelStatus()
    info = highs.getInfo()
    gap = float(info.mip_gap) if np.isfinite(info.mip_gap) else None
    if status == highspy.HighsModelStatus.kOptimal:
        return "optimal", gap
    if status == highspy.HighsModelStatus.kTimeLimit and info.primal_solution_status == 2:
        return "time_limit", gap
    if status in (highspy.HighsModelStatus.kInfeasible, highspy.HighsModelStatus.kUnboundedOrInfeasible):
        return "infeasible", None
    return highs.modelStatusToString(status).lower(), None


def _choice_from(x, groups: int, value) -> np.ndarray:
    choice = np.full(groups, -1, dtype=int)
    for (g, f), v in x.items():
        if value(v) is not None and value(v) > 0.5:
            choice[g] = f
    return choice


def _solve(prob, x, groups: int, solver: str, mip_rel_gap: float, time_limit: float | None):
    cmd, name, version = _solver_cmd(solver, mip_rel_gap, time_limit)
    start = time.perf_counter()
    prob.solve(cmd)
    elapsed = time.perf_counter() - start
    if name == "HiGHS":
        status, gap = _highs_outcome(prob.solverModel)
    else:
        status = pulp.LpStatus[prob.status].lower()
        status, gap = ("infeasible" if status in ("infeasible", "undefined") else status), None
    if status not in ("optimal", "time_limit"):
        return IlpSolution(status, None, None, elapsed, name, version)
    return IlpSolution(status, _choice_from(x, groups, lambda v: v.value()), None, elapsed, name, version, gap)


def solve(problem: IlpProblem, solver: str = "highs", mip_rel_gap: float = 1e-6,
          time_limit: float | None = None) -> IlpSolution:
    problem.check()
    prob, x, _ = _build(problem, problem.objective, problem.constraints)
    _add_constraints(prob, x, problem.constraints)
    sol = _solve(prob, x, problem.objective.shape[0], solver, mip_rel_gap, time_limit)
    if sol.feasible:
        sol.objective = evaluate(problem.objective, sol.choice)
    return sol


def evaluate(matrix: np.ndarray, choice: np.ndarray) -> float:
    return float(matrix[np.arange(len(choice)), choice].sum())


def minimum_of(problem: IlpProblem, index: int, solver: str = "highs",
               time_limit: float | None = None) -> float | None:
    """The smallest value constraint `index`'s left side can take while every other
    constraint holds; None when the others cannot hold together."""
    problem.check()
    target = problem.constraints[index]
    others = [c for i, c in enumerate(problem.constraints) if i != index]
    objective = np.where(problem.allowed, target.coeffs, np.inf)
    prob, x, _ = _build(problem, objective, others)
    _add_constraints(prob, x, others)
    sol = _solve(prob, x, objective.shape[0], solver, 1e-9, time_limit)
    return evaluate(target.coeffs, sol.choice) if sol.feasible else None


def min_common_scale(problem: IlpProblem, scaled: list[int], solver: str = "highs",
                     time_limit: float | None = None) -> float | None:
    """The smallest t such that constraints `scaled` hold with limits multiplied by t
    (and the rest as given): how far all latency budgets can shrink together."""
    problem.check()
    zero = np.where(problem.allowed, 0.0, np.inf)
    prob, x, t = _build(problem, zero, problem.constraints, extra_var=True)
    prob.setObjective(t)
    _add_constraints(prob, x, problem.constraints, t=t, scale_rows=set(scaled))
    sol = _solve(prob, x, zero.shape[0], solver, 1e-9, time_limit)
    if not sol.feasible:
        return None
    return max(evaluate(problem.constraints[i].coeffs, sol.choice) / problem.constraints[i].limit for i in scaled)


class ParametricIlp:
    """One model, many right-hand sides: the Pareto sweep changes only the limits.

    PuLP builds the model once; with HiGHS, later solves change the row bounds of the
    HiGHS model PuLP made and start from the previous solution (sweeping from tight to
    loose budgets, each solution is feasible for the next point). CBC rebuilds per solve.
    """

    def __init__(self, problem: IlpProblem, solver: str = "highs", mip_rel_gap: float = 1e-3,
                 time_limit: float | None = None):
        problem.check()
        self.problem = problem
        self.solver = solver
        self.mip_rel_gap = mip_rel_gap
        self.time_limit = time_limit
        self.prob, self.x, _ = _build(problem, problem.objective, problem.constraints)
        _add_constraints(self.prob, self.x, problem.constraints)
        self._solved_once = False
        self._previous: np.ndarray | None = None

    def solve(self, limits: list[float], start: np.ndarray | None = None) -> IlpSolution:
        """Solve with these limits; `start`, a feasible choice, seeds HiGHS's incumbent."""
        if start is not None:
            self._previous = start
        constraints = [Constraint(c.name, c.coeffs, limit) for c, limit in zip(self.problem.constraints, limits)]
        problem = IlpProblem(self.problem.objective, constraints)
        highs = getattr(self.prob, "solverModel", None)
        if not self._solved_once or highs is None or self.solver != "highs":
            sol = (solve(problem, self.solver, self.mip_rel_gap, self.time_limit) if self._solved_once
                   else self._first(problem))
        else:
            sol = self._resolve(highs, problem)
        if sol.feasible:
            self._previous = sol.choice
            sol.objective = evaluate(problem.objective, sol.choice)
        return sol

    def _first(self, problem: IlpProblem) -> IlpSolution:
        for i, c in enumerate(problem.constraints):
            self.prob.constraints[f"c{i}"].constant = -c.limit / _row_scale(self.problem.constraints[i])
        sol = _solve(self.prob, self.x, problem.objective.shape[0], self.solver, self.mip_rel_gap, self.time_limit)
        self._solved_once = True
        return sol

    def _resolve(self, highs, problem: IlpProblem) -> IlpSolution:
        import highspy

        for i, c in enumerate(problem.constraints):
            row = self.prob.constraints[f"c{i}"].index
            highs.changeRowBounds(row, -highspy.kHighsInf, c.limit / _row_scale(self.problem.constraints[i]))
        if self._previous is not None and all(
            evaluate(c.coeffs, self._previous) <= c.limit for c in problem.constraints
        ):
            start = highspy.HighsSolution()
            values = [0.0] * highs.getNumCol()
            for g, f in enumerate(self._previous):
                values[self.x[g, int(f)].index] = 1.0
            start.col_value = values
            highs.setSolution(start)
        begin = time.perf_counter()
        highs.run()
        elapsed = time.perf_counter() - begin
        status, gap = _highs_outcome(highs)
        if status not in ("optimal", "time_limit"):
            return IlpSolution(status, None, None, elapsed, "HiGHS", _version("highspy"))
        col = highs.getSolution().col_value
        choice = _choice_from(self.x, problem.objective.shape[0], lambda v: col[v.index])
        return IlpSolution(status, choice, None, elapsed, "HiGHS", _version("highspy"), gap)


def _row_scale(c: Constraint) -> float:
    return abs(c.limit) if c.limit != 0 else 1.0
