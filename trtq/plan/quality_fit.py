"""Omega in perplexity terms: fit measured perplexity increase against a plan's sum of Omega (no torch).

Every sensitivity method estimates the loss increase a format causes (Fisher and AutoQuantize's
gradient score are second-order terms of the loss; weight and Hessian errors are proportional to
one), so the relation fitted is the one that form implies: the increase of the mean NLL,
ln(ppl / ppl_bf16), proportional to sum Omega, through the origin (all-bf16: Omega 0, no increase).
The slope's standard error, R^2 and the residuals' RMS say how far a prediction can be trusted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from trtq.errors import InputError


@dataclass(frozen=True)
class QualityFit:
    slope: float  # d ln(ppl) / d sum Omega
    slope_stderr: float
    r2: float  # uncentred (the fit has no intercept)
    residual_rms: float  # in ln(ppl) units: about the relative error of a predicted ppl
    points: int

    def predict_increase(self, omega_sum: float) -> float:
        """Predicted relative perplexity increase ppl / ppl_bf16 - 1 of a plan with this sum of Omega."""
        return math.expm1(self.slope * omega_sum)

    def omega_for_increase(self, increase: float) -> float:
        """The sum of Omega at which the fit predicts a relative increase `increase` (e.g. 0.02 for +2%)."""
        if self.slope <= 0:
            raise InputError("the fitted slope is not positive: Omega does not predict perplexity here")
        return math.log1p(increase) / self.slope

    def describe(self) -> str:
        return (
            f"ln(ppl/ppl_bf16) = {self.slope:.4g} (± {self.slope_stderr:.2g}) x sum Omega; "
            f"R^2 {self.r2:.3f}, residual RMS {self.residual_rms:.4f} (~{self.residual_rms:.1%} of ppl), "
            f"{self.points} plans"
        )


def fit_quality(omega_sums, perplexities, bf16_perplexity: float) -> QualityFit:
    """Least squares through the origin of ln(ppl / ppl_bf16) on sum Omega, over evaluated plans."""
    x = np.asarray(omega_sums, dtype=float)
    if bf16_perplexity <= 0 or not np.all(np.asarray(perplexities, dtype=float) > 0):
        raise InputError("perplexities must be positive")
    y = np.log(np.asarray(perplexities, dtype=float) / bf16_perplexity)
    if x.shape != y.shape or x.ndim != 1:
        raise InputError("one sum of Omega per perplexity")
    keep = x > 0  # all-bf16 plans carry no information about the slope
    x, y = x[keep], y[keep]
    if x.size < 2:
        raise InputError(f"need at least 2 quantized plans to fit, got {x.size}")
    sxx = float(x @ x)
    slope = float(x @ y) / sxx
    residuals = y - slope * x
    rss = float(residuals @ residuals)
    stderr = math.sqrt(rss / (x.size - 1) / sxx)
    tss = float(y @ y)
    return QualityFit(
        slope=slope,
        slope_stderr=stderr,
        r2=1 - rss / tss if tss > 0 else float("nan"),
        residual_rms=math.sqrt(rss / x.size),
        points=int(x.size),
    )
