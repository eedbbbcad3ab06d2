"""A multiple-choice ILP over cost matrices, solved with HiGHS (highspy), or CBC through PuLP.

Knows nothing of torch, models or GPUs: G choice groups x F options, an objective
matrix, and linear constraints given as matrices with limits. An option is allowed
for a group where the objective and every constraint coefficient are finite.

    minimise   sum_{g,f} objective[g,f] x[g,f]
    subject to sum_f x[g,f] = 1                      for every group g
               sum_{g,f} coeffs_c[g,f] x[g,f] <= limit_c   for every constraint c
               x binary

Nothing the solver returns is taken on trust. Every answer is re-checked against the
raw (unscaled) limits in exact arithmetic: HiGHS accepts a row up to its feasibility
tolerance (1e-6 of the scaled row), so an "optimal" plan can sit a hair over a budget;
such a row is tightened by the excess and the model re-solved. The objective HiGHS
reports must match the objective of the assignment it returns (HiGHS 1.16 returned a
MIP start as "optimal" with objective 0 after presolve; trtq therefore gives it no
start). Every solve is a fresh HiGHS model: no state carries from one solve to the next.

The answer comes from the cheapest of three steps that proves the gap asked for against the
LP relaxation's bound: the LP optimum rounded; else branch and bound on neighbourhoods of the
LP optimum (options of small reduced cost, the rest fixed off; see run_neighbourhoods); else
branch and bound on the whole model.

The default answer is deterministic: one thread, a fixed seed, no wall-clock limit; an
optional node limit is a deterministic unit of work. A time limit is an explicit opt-in,
and the status says which limit stopped the solver.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

# HiGHS's default primal feasibility tolerance on a (scaled) row: an answer may exceed a
# limit by this fraction of it. Tightening starts here.
FEASIBILITY_TOLERANCE = 1e-6
# A reported gap at or below this is "optimal"; above it, the solve stopped at the gap asked for.
OPTIMAL_GAP = 1e-6
_TIGHTEN_ATTEMPTS = 5
# Branch-and-bound nodes the neighbourhood search may use before the whole model is solved instead.
_NEIGHBOURHOOD_NODES = 500
# Statuses that come with a plan; "time_limit" and "node_limit" may also come without one.
FEASIBLE_STATUSES = ("optimal", "time_limit", "node_limit")
LIMIT_STATUSES = ("time_limit", "node_limit")


@dataclass(frozen=True)
class Constraint:
    name: str
    coeffs: np.ndarray  # (G, F); non-finite where the option is not allowed
    limit: float


@dataclass
class IlpProblem:
    objective: np.ndarray  # (G, F)
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
            if not math.isfinite(c.limit):
                raise ValueError(f"constraint {c.name}: limit {c.limit} is not finite")
        empty = np.flatnonzero(~self.allowed.any(axis=1))
        if empty.size:
            raise ValueError(f"group {int(empty[0])} has no allowed option")


@dataclass
class IlpSolution:
    # "optimal" (within the gap asked for) | "time_limit" | "node_limit" (best plan when the
    # limit stopped the solver, if any; see gap) | "infeasible" | "tolerance" (no answer met
    # the raw limits after tightening) | another solver status
    status: str
    choice: np.ndarray | None  # (G,) option index per group
    objective: float | None
    solve_time_s: float
    solver: str
    solver_version: str
    gap: float | None = None  # proven relative optimality gap of `choice`
    # what stopped the solver: "optimal" (gap proven ~0) | "gap" (the gap asked for reached)
    # | "time_limit" | "node_limit"; None when there is no plan
    stopped_by: str | None = None
    nodes: int | None = None  # branch-and-bound nodes (HiGHS)
    slack: list[float] = field(default_factory=list)  # per constraint: limit - value (raw units)
    tightened: dict[int, float] = field(default_factory=dict)  # constraint index -> tightening, fraction of limit

    @property
    def feasible(self) -> bool:
        return self.status in FEASIBLE_STATUSES and self.choice is not None

    @property
    def limit_hit_without_plan(self) -> bool:
        """The solver stopped at a time or node limit before it found any plan: nothing is proven."""
        return self.status in LIMIT_STATUSES and self.choice is None


@dataclass(frozen=True)
class SolveOptions:
    solver: str = "highs"
    mip_rel_gap: float = 1e-6
    time_limit_s: float | None = None  # seconds; None = no wall-clock limit (deterministic)
    node_limit: int | None = None  # branch-and-bound nodes; deterministic


def _version(package: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _row_scale(limit: float) -> float:
    return abs(limit) if limit != 0 else 1.0


def exact_sum(matrix: np.ndarray, choice: np.ndarray) -> float:
    """sum_g matrix[g, choice[g]], correctly rounded (independent of summation order)."""
    return math.fsum(matrix[np.arange(len(choice)), choice].tolist())


def evaluate(matrix: np.ndarray, choice: np.ndarray) -> float:
    return exact_sum(matrix, choice)


_HIGHS_QUIET = False


def _highs_module():
    """highspy, imported with its banner kept off stdout (plan output goes there)."""
    global _HIGHS_QUIET
    try:
        import highspy
    except ImportError:
        return None
    if not _HIGHS_QUIET:
        _HIGHS_QUIET = True
        sys.stdout.flush()
        saved = os.dup(1)
        try:
            with open(os.devnull, "w") as devnull:
                os.dup2(devnull.fileno(), 1)
                highspy.Highs()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
    return highspy


@dataclass
class _RawOutcome:
    status: str
    choice: np.ndarray | None
    gap: float | None
    nodes: int | None
    elapsed: float
    stopped_by: str | None


@dataclass(frozen=True)
class _Rounding:
    outcome: _RawOutcome | None = None  # the rounded plan, where it is within the gap asked for
    lower_bound: float | None = None  # else the LP relaxation: its objective,
    x: np.ndarray | None = None  # its solution over the binaries
    reduced_cost: np.ndarray | None = None  # and their reduced costs
    upper_bound: float | None = None  # the rounded plan's cost, where rounding found one


class _Model:
    """One binary per allowed (group, option), plus `t` when some rows scale with it.

    Rows: one-hot per group, then one per constraint, normalised by its limit so HiGHS's
    tolerances mean the same whatever the units (ns, bytes). A scaled row reads
    sum coeffs x - t * limit <= 0 (`t` multiplies that limit).
    """

    def __init__(
        self,
        allowed: np.ndarray,
        objective: np.ndarray,
        constraints: list[Constraint],
        scaled_rows: frozenset[int] = frozenset(),
        objective_t: bool = False,
    ):
        self.groups = allowed.shape[0]
        self.cols = [(int(g), int(f)) for g, f in np.argwhere(allowed)]
        self.col_group = np.array([g for g, _ in self.cols], dtype=np.int64)
        self.col_option = np.array([f for _, f in self.cols], dtype=np.int64)
        self.constraints = constraints
        self.scaled_rows = scaled_rows
        self.has_t = bool(scaled_rows) or objective_t
        values = objective[self.col_group, self.col_option]
        scale = float(np.max(np.abs(values))) if values.size else 1.0
        self.cost = values / scale if scale > 0 else values.astype(float)
        if objective_t:
            self.cost = np.zeros_like(self.cost)
        self.t_cost = 1.0 if objective_t else 0.0
        self.coeffs = [c.coeffs[self.col_group, self.col_option] / _row_scale(c.limit) for c in constraints]

    # -- HiGHS -----------------------------------------------------------------------------------
    def _highs_lp(self, highspy, rhs: list[float]):
        n_bin = len(self.cols)
        n_col = n_bin + (1 if self.has_t else 0)
        starts, index, value, lower, upper = [0], [], [], [], []
        order = np.argsort(self.col_group, kind="stable")
        bounds = np.searchsorted(self.col_group[order], np.arange(self.groups + 1))
        for g in range(self.groups):
            cols = order[bounds[g] : bounds[g + 1]]
            index.extend(cols.tolist())
            value.extend([1.0] * len(cols))
            starts.append(len(index))
            lower.append(1.0)
            upper.append(1.0)
        for i, (c, coeffs) in enumerate(zip(self.constraints, self.coeffs)):
            nz = np.flatnonzero(coeffs)
            index.extend(nz.tolist())
            value.extend(coeffs[nz].tolist())
            if i in self.scaled_rows:
                index.append(n_bin)
                value.append(-c.limit / _row_scale(c.limit))
            starts.append(len(index))
            lower.append(-highspy.kHighsInf)
            upper.append(rhs[i])
        lp = highspy.HighsLp()
        lp.num_col_ = n_col
        lp.num_row_ = len(lower)
        lp.col_cost_ = np.concatenate([self.cost, [self.t_cost] if self.has_t else []])
        lp.col_lower_ = np.zeros(n_col)
        lp.col_upper_ = np.concatenate([np.ones(n_bin), [highspy.kHighsInf] if self.has_t else []])
        lp.row_lower_ = np.array(lower)
        lp.row_upper_ = np.array(upper)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        lp.a_matrix_.num_col_ = n_col
        lp.a_matrix_.num_row_ = len(lower)
        lp.a_matrix_.start_ = np.array(starts, dtype=np.int32)
        lp.a_matrix_.index_ = np.array(index, dtype=np.int32)
        lp.a_matrix_.value_ = np.array(value)
        lp.integrality_ = [highspy.HighsVarType.kInteger] * n_bin + (
            [highspy.HighsVarType.kContinuous] if self.has_t else []
        )
        return lp

    def run_lp_rounding(self, highspy, rhs: list[float], options: SolveOptions) -> _Rounding:
        """The LP relaxation, rounded: the outcome when that is already within the gap asked for,
        else the LP's bound, solution and reduced costs (for the neighbourhood search).

        A multiple-choice problem with m side constraints has an LP optimum (a vertex) with at
        most m groups split between options; every other group is already integral. Trying each
        combination of the split groups' options gives integer plans, and the LP objective is a
        lower bound on every integer plan, so the best feasible combination comes with a proven
        gap. Branch and bound (HiGHS's presolve, probing and cuts at the root cost ~0.5 s of CPU
        on a 70B model) runs only where this proof does not reach the gap: a deterministic
        answer either way.
        """
        lp = self._highs_lp(highspy, rhs)
        lp.integrality_ = []
        highspy.Highs.resetGlobalScheduler(True)
        highs = highspy.Highs()
        highs.setOptionValue("output_flag", False)
        highs.setOptionValue("threads", 1)
        highs.setOptionValue("random_seed", 0)
        highs.setOptionValue("solver", "simplex")  # a vertex: at most m split groups
        highs.passModel(lp)
        begin = time.perf_counter()
        highs.run()
        if highs.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            return _Rounding()
        solution = highs.getSolution()
        col = np.asarray(solution.col_value)
        lower_bound = float(highs.getInfo().objective_function_value)
        x = col[: len(self.cols)]
        relaxed = _Rounding(lower_bound=lower_bound, x=x, reduced_cost=np.asarray(solution.col_dual)[: len(self.cols)])
        support = x > 1e-9
        split = np.flatnonzero(np.bincount(self.col_group[support], minlength=self.groups) > 1)
        if len(split) > max(len(self.constraints), 1) + 1:
            return relaxed
        base = np.full(self.groups, -1, dtype=np.int64)
        whole = support & ~np.isin(self.col_group, split)
        base[self.col_group[whole]] = self.col_option[whole]
        if (np.delete(base, split) < 0).any():
            return relaxed
        options_of = [[int(self.col_option[j]) for j in np.flatnonzero(support & (self.col_group == g))] for g in split]
        best, best_cost = None, math.inf
        for combo in itertools.product(*options_of):
            choice = base.copy()
            choice[split] = combo
            idx = self._col_index(choice)
            t = self._t_needed(idx)
            if t is None:
                continue
            if any(
                float(coeffs[idx].sum()) - (t * c.limit / _row_scale(c.limit) if i in self.scaled_rows else 0.0)
                > rhs[i]
                for i, (c, coeffs) in enumerate(zip(self.constraints, self.coeffs))
            ):
                continue
            cost = float(self.cost[idx].sum()) + self.t_cost * t
            if cost < best_cost:
                best, best_cost = choice, cost
        if best is None:
            return relaxed
        if not self.has_t:
            best, best_cost = self._improve(best, rhs)
        elapsed = time.perf_counter() - begin
        gap = max(0.0, best_cost - lower_bound) / max(abs(best_cost), 1e-12)
        if gap > options.mip_rel_gap and best_cost - lower_bound > 1e-12:
            return dataclasses.replace(relaxed, upper_bound=best_cost)
        stopped_by = "optimal" if gap <= OPTIMAL_GAP else "gap"
        return _Rounding(outcome=_RawOutcome("optimal", best, gap, 0, elapsed, stopped_by))

    def _plan_cost(self, choice: np.ndarray) -> float:
        idx = self._col_index(choice)
        return float(self.cost[idx].sum()) + (self.t_cost * self._t_needed(idx) if self.has_t else 0.0)

    def run_restricted(
        self, highspy, rhs: list[float], options: SolveOptions, relaxed: _Rounding, width: float
    ) -> _RawOutcome:
        """Branch and bound with every option whose LP reduced cost exceeds its group's best by more
        than `width` fixed off (the LP's own support always kept).

        Why that is sound: against the LP optimum, a plan costs at least the LP bound plus the reduced
        cost of each option it uses off the LP's support, plus, where it leaves an option held at 1
        with a negative reduced cost (its group's best), that cost's magnitude (every other term of the
        difference is non-negative at an LP optimum). So a plan within `width` of the bound uses no
        option beyond that, and the restriction holds every plan cheaper than bound + width.
        """
        assert relaxed.x is not None and relaxed.reduced_cost is not None
        reduced = relaxed.reduced_cost
        best_in_group = np.full(self.groups, np.inf)
        np.minimum.at(best_in_group, self.col_group, reduced)
        keep = (reduced - np.minimum(best_in_group[self.col_group], 0.0) <= width) | (relaxed.x > 1e-9)
        lp = self._highs_lp(highspy, rhs)
        upper = np.asarray(lp.col_upper_, dtype=float)
        upper[: len(self.cols)][~keep] = 0.0
        lp.col_upper_ = upper
        return self._run_mip(highspy, lp, options)

    def run_neighbourhoods(
        self, highspy, rhs: list[float], options: SolveOptions, relaxed: _Rounding
    ) -> _RawOutcome | None:
        """Where rounding misses the gap: branch and bound on neighbourhoods of the LP optimum, a
        plan within the gap asked for, or None (the whole model is solved then).

        First a narrow one (options within a tenth of the gap's worth of reduced cost, a node limit):
        any plan it finds is feasible, and where it is within the gap of the full LP bound, that is
        proven. Else, with the best plan known costing U, the exact restriction to width U - bound
        holds every plan cheaper than U (run_restricted), so HiGHS's proven gap there holds for the
        whole model. On Llama-3.1-70B with two budgets and memory: ~0.02 s, where the whole model
        took ~0.25 s at its root.
        """
        assert relaxed.lower_bound is not None
        bound = relaxed.lower_bound
        scale = max(abs(bound), 1e-12)
        incumbent = relaxed.upper_bound
        narrow = self.run_restricted(
            highspy,
            rhs,
            dataclasses.replace(
                options, node_limit=min(_NEIGHBOURHOOD_NODES, options.node_limit or _NEIGHBOURHOOD_NODES)
            ),
            relaxed,
            options.mip_rel_gap * scale / 10,
        )
        if narrow.choice is not None and not narrow.status.startswith("solver_error"):
            cost = self._plan_cost(narrow.choice)
            gap = max(0.0, cost - bound) / max(abs(cost), 1e-12)
            if gap <= options.mip_rel_gap or cost - bound <= 1e-12:
                stopped_by = "optimal" if gap <= OPTIMAL_GAP else "gap"
                return _RawOutcome("optimal", narrow.choice, gap, narrow.nodes, narrow.elapsed, stopped_by)
            incumbent = cost if incumbent is None else min(incumbent, cost)
        if incumbent is None:
            return None
        # A hair wider than U - bound: reduced costs carry the LP's tolerances.
        exact = self.run_restricted(highspy, rhs, options, relaxed, (incumbent - bound) + 1e-7 * scale)
        if exact.status == "optimal" and exact.choice is not None:
            return dataclasses.replace(exact, elapsed=exact.elapsed + narrow.elapsed)
        return None

    def _improve(self, choice: np.ndarray, rhs: list[float]) -> tuple[np.ndarray, float]:
        """Greedy one-group moves: while some group can switch to a cheaper option within every
        row's slack, make the move that saves most. Rounding leaves slack on the rows the split
        groups were rounded away from; this spends it."""
        current = self._col_index(choice)
        uses = np.array(self.coeffs) if self.coeffs else np.zeros((0, len(self.cols)))
        slack = np.array(rhs) - uses[:, current].sum(axis=1)
        for _ in range(self.groups):
            cur_col = current[self.col_group]
            saving = self.cost[cur_col] - self.cost
            extra = uses - uses[:, cur_col]
            fits = (extra <= slack[:, None] + 1e-12).all(axis=0) & (saving > 0)
            if not fits.any():
                break
            j = int(np.flatnonzero(fits)[np.argmax(saving[fits])])
            g = int(self.col_group[j])
            slack -= extra[:, j]
            current[g] = j
        choice = self.col_option[current].copy()
        return choice, float(self.cost[current].sum())

    def _t_needed(self, idx: np.ndarray) -> float:
        """The smallest `t` the scaled rows allow for this plan (0 when there are none)."""
        if not self.scaled_rows:
            return 0.0
        return max(
            float(self.coeffs[i][idx].sum()) / (c.limit / _row_scale(c.limit))
            for i, c in enumerate(self.constraints)
            if i in self.scaled_rows
        )

    def run_highs(self, highspy, rhs: list[float], options: SolveOptions) -> _RawOutcome:
        rounding = self.run_lp_rounding(highspy, rhs, options)
        if rounding.outcome is not None:
            return rounding.outcome
        if rounding.reduced_cost is not None:
            near = self.run_neighbourhoods(highspy, rhs, options, rounding)
            if near is not None:
                return near
        return self._run_mip(highspy, self._highs_lp(highspy, rhs), options)

    def _run_mip(self, highspy, lp, options: SolveOptions) -> _RawOutcome:
        # One thread: the answer must not depend on the machine's core count. HiGHS keeps one
        # global scheduler per process, sized by the first run; reset it so this size holds.
        highspy.Highs.resetGlobalScheduler(True)
        highs = highspy.Highs()
        highs.setOptionValue("output_flag", False)
        highs.setOptionValue("threads", 1)
        highs.setOptionValue("random_seed", 0)
        highs.setOptionValue("mip_rel_gap", float(options.mip_rel_gap))
        if options.time_limit_s is not None:
            highs.setOptionValue("time_limit", float(options.time_limit_s))
        if options.node_limit is not None:
            highs.setOptionValue("mip_max_nodes", int(options.node_limit))
        highs.passModel(lp)
        begin = time.perf_counter()
        highs.run()
        elapsed = time.perf_counter() - begin
        status = highs.getModelStatus()
        info = highs.getInfo()
        nodes = int(info.mip_node_count) if info.mip_node_count >= 0 else None
        gap = float(info.mip_gap) if np.isfinite(info.mip_gap) else None
        names = {
            highspy.HighsModelStatus.kOptimal: "optimal",
            highspy.HighsModelStatus.kTimeLimit: "time_limit",
            # HiGHS reports its node limit (mip_max_nodes) as a solution limit
            highspy.HighsModelStatus.kSolutionLimit: "node_limit",
            highspy.HighsModelStatus.kInfeasible: "infeasible",
            highspy.HighsModelStatus.kUnboundedOrInfeasible: "infeasible",
        }
        name = names.get(status, highs.modelStatusToString(status).lower())
        has_plan = info.primal_solution_status == 2 and name in FEASIBLE_STATUSES
        if not has_plan:
            return _RawOutcome(name, None, None, nodes, elapsed, None)
        col = np.asarray(highs.getSolution().col_value)
        choice = self._choice(col[: len(self.cols)])
        if choice is None:
            return _RawOutcome("solver_error: not one option per group", None, None, nodes, elapsed, None)
        # The objective HiGHS reports must be the objective of the plan it returns.
        computed = float(self.cost[self._col_index(choice)].sum()) + (self.t_cost * col[-1] if self.has_t else 0.0)
        reported = float(info.objective_function_value)
        if abs(reported - computed) > 1e-6 * max(1.0, abs(computed)):
            return _RawOutcome(
                f"solver_error: reported objective {reported:.9g} is not the plan's {computed:.9g}",
                None,
                None,
                nodes,
                elapsed,
                None,
            )
        if name == "optimal":
            stopped_by = "optimal" if gap is not None and gap <= OPTIMAL_GAP else "gap"
        else:
            stopped_by = name
        return _RawOutcome(name, choice, gap, nodes, elapsed, stopped_by)

    def _choice(self, x: np.ndarray) -> np.ndarray | None:
        choice = np.full(self.groups, -1, dtype=int)
        picked = x > 0.5
        if np.bincount(self.col_group[picked], minlength=self.groups).max(initial=0) > 1:
            return None
        choice[self.col_group[picked]] = self.col_option[picked]
        return None if (choice < 0).any() else choice

    def _col_index(self, choice: np.ndarray) -> np.ndarray:
        lookup = {col: i for i, col in enumerate(self.cols)}
        return np.array([lookup[g, int(f)] for g, f in enumerate(choice)], dtype=np.int64)

    # -- CBC through PuLP ------------------------------------------------------------------------
    def run_cbc(self, rhs: list[float], options: SolveOptions) -> _RawOutcome:
        import pulp

        prob = pulp.LpProblem("trtq", pulp.LpMinimize)
        x = [prob.add_variable(f"x_{g}_{f}", cat=pulp.LpBinary) for g, f in self.cols]
        t = prob.add_variable("t", lowBound=0) if self.has_t else None
        terms = list(zip(x, self.cost.tolist()))
        if t is not None:
            terms.append((t, self.t_cost))
        prob += pulp.LpAffineExpression(terms)
        for g in range(self.groups):
            prob += pulp.LpAffineExpression([(x[i], 1.0) for i in np.flatnonzero(self.col_group == g)]) == 1, f"one_{g}"
        for i, (c, coeffs) in enumerate(zip(self.constraints, self.coeffs)):
            row = [(x[j], float(coeffs[j])) for j in np.flatnonzero(coeffs)]
            if i in self.scaled_rows:
                row.append((t, -c.limit / _row_scale(c.limit)))
            prob += pulp.LpAffineExpression(row) <= rhs[i], f"c{i}"
        cmd = pulp.PULP_CBC_CMD(
            msg=False,
            gapRel=options.mip_rel_gap,
            timeLimit=options.time_limit_s,
            threads=1,
            options=["randomSeed 1"] + ([f"maxNodes {options.node_limit}"] if options.node_limit is not None else []),
        )
        begin = time.perf_counter()
        prob.solve(cmd)
        elapsed = time.perf_counter() - begin
        status = pulp.LpStatus[prob.status].lower()
        if status != "optimal":
            return _RawOutcome(
                "infeasible" if status in ("infeasible", "undefined") else status, None, None, None, elapsed, None
            )
        choice = self._choice(np.array([v.value() or 0.0 for v in x]))
        if choice is None:
            return _RawOutcome("solver_error: not one option per group", None, None, None, elapsed, None)
        # PuLP reports a CBC run stopped by a limit as optimal and exposes no gap: say only what is known.
        return _RawOutcome("optimal", choice, None, None, elapsed, "gap" if options.mip_rel_gap > 0 else "optimal")

    # -- verified solve --------------------------------------------------------------------------
    def solve(self, options: SolveOptions) -> IlpSolution:
        """Solve, then re-check the answer against every raw limit; tighten and re-solve where
        the solver's tolerance let a row through."""
        highspy = _highs_module() if options.solver == "highs" else None
        name, version = ("HiGHS", _version("highspy")) if highspy is not None else ("CBC", _version("pulp"))
        checked = [i for i in range(len(self.constraints)) if i not in self.scaled_rows]
        margin = [0.0] * len(self.constraints)
        total = 0.0
        for _ in range(_TIGHTEN_ATTEMPTS):
            rhs = [
                (0.0 if i in self.scaled_rows else c.limit / _row_scale(c.limit)) - margin[i]
                for i, c in enumerate(self.constraints)
            ]
            out = self.run_highs(highspy, rhs, options) if highspy is not None else self.run_cbc(rhs, options)
            total += out.elapsed
            if out.choice is None:
                # Infeasible only once a row was tightened: the raw problem may still be feasible
                # within the sliver cut off, so that is not a proof of infeasibility.
                status = "tolerance" if out.status == "infeasible" and any(margin) else out.status
                return IlpSolution(status, None, None, total, name, version, nodes=out.nodes)
            values = [exact_sum(c.coeffs, out.choice) for c in self.constraints]
            over = [i for i in checked if values[i] > self.constraints[i].limit]
            if not over:
                return IlpSolution(
                    out.status,
                    out.choice,
                    None,
                    total,
                    name,
                    version,
                    out.gap,
                    out.stopped_by,
                    out.nodes,
                    slack=[c.limit - v for c, v in zip(self.constraints, values)],
                    tightened={i: m for i, m in enumerate(margin) if m > 0},
                )
            for i in over:
                excess = (values[i] - self.constraints[i].limit) / _row_scale(self.constraints[i].limit)
                margin[i] = max(2 * margin[i], excess + FEASIBILITY_TOLERANCE)
        return IlpSolution("tolerance", None, None, total, name, version)


def solve(
    problem: IlpProblem,
    solver: str = "highs",
    mip_rel_gap: float = 1e-6,
    time_limit_s: float | None = None,
    node_limit: int | None = None,
) -> IlpSolution:
    problem.check()
    model = _Model(problem.allowed, problem.objective, problem.constraints)
    sol = model.solve(SolveOptions(solver, mip_rel_gap, time_limit_s, node_limit))
    if sol.feasible:
        sol.objective = evaluate(problem.objective, sol.choice)
    return sol


def minimum_of(
    problem: IlpProblem,
    index: int,
    solver: str = "highs",
    time_limit_s: float | None = None,
    node_limit: int | None = None,
) -> IlpSolution:
    """The smallest value constraint `index`'s left side can take while every other
    constraint holds: the solution's `objective` is that value (None when the others
    cannot hold together, or a limit stopped the search: see `status`)."""
    problem.check()
    target = problem.constraints[index]
    others = [c for i, c in enumerate(problem.constraints) if i != index]
    objective = np.where(problem.allowed, target.coeffs, np.inf)
    model = _Model(problem.allowed, objective, others)
    sol = model.solve(SolveOptions(solver, 1e-9, time_limit_s, node_limit))
    if sol.feasible:
        sol.objective = evaluate(target.coeffs, sol.choice)
    return sol


def min_common_scale(
    problem: IlpProblem,
    scaled: list[int],
    solver: str = "highs",
    time_limit_s: float | None = None,
    node_limit: int | None = None,
) -> float | None:
    """The smallest t such that constraints `scaled` hold with limits multiplied by t
    (and the rest as given): how far all latency budgets can shrink together."""
    problem.check()
    zero = np.where(problem.allowed, 0.0, np.inf)
    model = _Model(problem.allowed, zero, problem.constraints, scaled_rows=frozenset(scaled), objective_t=True)
    sol = model.solve(SolveOptions(solver, 1e-9, time_limit_s, node_limit))
    if not sol.feasible:
        return None
    return max(evaluate(problem.constraints[i].coeffs, sol.choice) / problem.constraints[i].limit for i in scaled)


class ParametricIlp:
    """One problem, many right-hand sides: the Pareto sweep changes only the limits.

    The matrices are built once; every solve is a fresh, verified HiGHS model with the new
    limits and no MIP start (a start made HiGHS 1.16 return it as optimal unsolved).
    """

    def __init__(
        self,
        problem: IlpProblem,
        solver: str = "highs",
        mip_rel_gap: float = 1e-3,
        time_limit_s: float | None = None,
        node_limit: int | None = None,
    ):
        problem.check()
        self.problem = problem
        self.options = SolveOptions(solver, mip_rel_gap, time_limit_s, node_limit)

    def solve(self, limits: list[float]) -> IlpSolution:
        constraints = [Constraint(c.name, c.coeffs, limit) for c, limit in zip(self.problem.constraints, limits)]
        model = _Model(self.problem.allowed, self.problem.objective, constraints)
        sol = model.solve(self.options)
        if sol.feasible:
            sol.objective = evaluate(self.problem.objective, sol.choice)
        return sol
