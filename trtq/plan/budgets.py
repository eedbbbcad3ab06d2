"""Budget specs: `decode@16=0.6` (fraction of all-bf16 GEMM time) or `prefill@2048=12ms`.

Every value the planner prints as a budget (the smallest feasible one in an infeasibility
message) is written by `fraction_text` / `time_text` here, in a spelling `parse_budget`
reads back, rounded up so that pasting it gives a feasible budget.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import cast

from trtq.artifacts.plan import Phase
from trtq.errors import InputError

# µs is accepted as the micro sign (U+00B5, what trtq prints) and the Greek mu (U+03BC).
_SPEC = re.compile(r"^\s*(decode|prefill)@(\d+)\s*=\s*([0-9.eE+-]+)\s*(ns|us|\u00b5s|\u03bcs|ms|s)?\s*$")
_UNIT_NS = {"ns": 1.0, "us": 1e3, "\u00b5s": 1e3, "\u03bcs": 1e3, "ms": 1e6, "s": 1e9}
# The largest GEMM M a budget may name: beyond any serving step, and far inside int64.
MAX_TOKENS = 1 << 24
# Digits of a printed budget: enough that rounding up costs at most 0.1% of the budget.
PRINT_DIGITS = 4


@dataclass(frozen=True)
class BudgetSpec:
    spec: str
    phase: Phase
    tokens: int
    fraction: float | None
    absolute_ns: float | None

    @property
    def point(self) -> str:
        return f"{self.phase}@{self.tokens}"

    def limit_ns(self, bf16_ns: float) -> float:
        if self.absolute_ns is not None:
            return self.absolute_ns
        assert self.fraction is not None  # parse_budget gives a budget a time or a fraction
        return self.fraction * bf16_ns


def parse_budget(spec: str) -> BudgetSpec:
    match = _SPEC.match(spec)
    if not match:
        raise InputError(
            f"bad budget {spec!r}: expected PHASE@TOKENS=VALUE with PHASE decode or prefill and VALUE a "
            "fraction of all-bf16 (0.6) or a time (12ms, 850us), e.g. decode@16=0.6"
        )
    phase_text, tokens, value, unit = match.groups()
    phase = cast(Phase, phase_text)  # the pattern admits only decode and prefill
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"bad budget {spec!r}: {value!r} is not a number") from None
    if not math.isfinite(number) or number <= 0:
        raise InputError(f"bad budget {spec!r}: the value must be a positive finite number")
    if not 0 < int(tokens) <= MAX_TOKENS:
        raise InputError(f"bad budget {spec!r}: tokens must be between 1 and {MAX_TOKENS}")
    if unit:
        ns = number * _UNIT_NS[unit]
        if not math.isfinite(ns) or ns <= 0:
            raise InputError(f"bad budget {spec!r}: the time must be a positive finite number")
        return BudgetSpec(spec.strip(), phase, int(tokens), None, ns)
    return BudgetSpec(spec.strip(), phase, int(tokens), number, None)


def parse_budgets(specs: list[str]) -> list[BudgetSpec]:
    budgets = [parse_budget(s) for s in specs]
    points = [b.point for b in budgets]
    dupes = {p for p in points if points.count(p) > 1}
    if dupes:
        raise InputError(f"more than one budget for {', '.join(sorted(dupes))}")
    return budgets


def memory_bytes_of(gb: float) -> int:
    return int(round(gb * 1e9))


def parse_memory_gb(value: float | None) -> int | None:
    if value is None:
        return None
    if not math.isfinite(value) or value <= 0 or not math.isfinite(value * 1e9) or memory_bytes_of(value) < 1:
        raise InputError(f"--memory-gb must be positive and finite (GB), got {value}")
    return memory_bytes_of(value)


def round_up(value: float, digits: int = PRINT_DIGITS) -> float:
    """`value` rounded up to `digits` significant digits (a hair above it when it is exact,
    so a limit computed from the printed text is never below the value in floating point)."""
    if value <= 0 or not math.isfinite(value):
        return value
    target = value * (1 + 1e-12)
    step = 10.0 ** (math.floor(math.log10(target)) - digits + 1)
    units = math.ceil(target / step)
    while (rounded := float(f"{units * step:.{digits + 1}g}")) < target:
        units += 1
    return rounded


def fraction_text(fraction: float) -> str:
    """A budget fraction at least `fraction`, as `parse_budget` reads it."""
    return f"{round_up(fraction):.{PRINT_DIGITS}g}"


def time_text(ns: float) -> str:
    """A budget time at least `ns`, in the largest unit that keeps it >= 1 (12.35ms, 684.5us)."""
    for unit in ("s", "ms", "us", "ns"):
        if ns >= _UNIT_NS[unit] or unit == "ns":
            return f"{round_up(ns / _UNIT_NS[unit]):.{PRINT_DIGITS}g}{unit}"
    raise AssertionError("unreachable")
