"""ModelOpt AutoQuantize's `effective_bits` as an ILP constraint row (no torch).

AutoQuantize's cost of a layer in a format is its weight element count x the format's weight bits
/ 16 (scales and block sizes ignored), and `effective_bits` is 16 x the sum of those costs over the
sum of the uncompressed costs, *including* modules it does not search (lm_head when disabled
stays at 16 bits in the denominator). With that row trtq's ILP solves AutoQuantize's own problem,
which is how a plan is compared with its choice at the same constraint.
"""

from __future__ import annotations

import numpy as np

from trtq.plan.costs import CostModel
from trtq.plan.ilp import Constraint
from trtq.registry import get_format


def effective_bits(costs: CostModel, choice: np.ndarray, fixed_parameters: int = 0) -> float:
    """AutoQuantize's effective bits of a plan; `fixed_parameters` unsearched weights count at 16 bits."""
    row = effective_bits_coefficients(costs)
    searched = float(row[np.arange(len(choice)), choice].sum())
    total = sum(g.in_features * g.out_features for g in costs.groups) + fixed_parameters
    return (searched + 16.0 * fixed_parameters) / total


def effective_bits_coefficients(costs: CostModel) -> np.ndarray:
    """(G, F): elements x weight bits of each group in each format; inf where the format is not allowed."""
    bits = np.array([get_format(f).weight_bits for f in costs.formats], dtype=float)
    numel = np.array([g.in_features * g.out_features for g in costs.groups], dtype=float)
    row = numel[:, None] * bits[None, :]
    return np.where(costs.allowed, row, np.inf)


def effective_bits_constraint(costs: CostModel, target_bits: float, fixed_parameters: int = 0) -> Constraint:
    """Sum of elements x bits <= target x all elements (the fixed ones on both sides at 16 bits)."""
    total = sum(g.in_features * g.out_features for g in costs.groups) + fixed_parameters
    limit = target_bits * total - 16.0 * fixed_parameters
    return Constraint(
        name=f"effective_bits<={target_bits:g}", coeffs=effective_bits_coefficients(costs), limit=float(limit)
    )
