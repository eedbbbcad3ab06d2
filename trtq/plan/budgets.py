"""Budget specs: `decode@16=0.6` (fraction of all-bf16 GEMM time) or `prefill@2048=12ms`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from trtq.errors import InputError

_SPEC = re.compile(r"^\s*(decode|prefill)@(\d+)\s*=\s*([0-9.eE+-]+)\s*(ns|us|µs|ms|s)?\s*$")
_UNIT_NS = {"ns": 1.0, "us": 1e3, "µs": 1e3, "ms": 1e6, "s": 1e9}


@dataclass(frozen=True)
class BudgetSpec:
    spec: str
    phase: str
    tokens: int
    fraction: float | None
    absolute_ns: float | None

    @property
    def point(self) -> str:
        return f"{self.phase}@{self.tokens}"

    def limit_ns(self, bf16_ns: float) -> float:
        return self.absolute_ns if self.absolute_ns is not None else self.fraction * bf16_ns


def parse_budget(spec: str) -> BudgetSpec:
    match = _SPEC.match(spec)
    if not match:
        raise InputError(
            f"bad budget {spec!r}: expected PHASE@TOKENS=VALUE with PHASE decode or prefill and VALUE a "
            "fraction of all-bf16 (0.6) or a time (12ms, 850us), e.g. decode@16=0.6"
        )
    phase, tokens, value, unit = match.groups()
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"bad budget {spec!r}: {value!r} is not a number") from None
    if int(tokens) <= 0 or number <= 0:
        raise InputError(f"bad budget {spec!r}: tokens and value must be positive")
    if unit:
        return BudgetSpec(spec.strip(), phase, int(tokens), None, number * _UNIT_NS[unit])
    return BudgetSpec(spec.strip(), phase, int(tokens), number, None)


def parse_budgets(specs: list[str]) -> list[BudgetSpec]:
    budgets = [parse_budget(s) for s in specs]
    points = [b.point for b in budgets]
    dupes = {p for p in points if points.count(p) > 1}
    if dupes:
        raise InputError(f"more than one budget for {', '.join(sorted(dupes))}")
    return budgets


def parse_memory_gb(value: float | None) -> int | None:
    if value is None:
        return None
    if value <= 0:
        raise InputError(f"--memory-gb must be positive, got {value}")
    return int(value * 1e9)
