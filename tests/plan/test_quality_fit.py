"""The Omega -> perplexity fit recovers a known relation and reports its error."""

import math

import numpy as np
import pytest

from trtq.errors import InputError
from trtq.plan.quality_fit import fit_quality


def test_recovers_a_known_slope_with_noise():
    rng = np.random.default_rng(0)
    omega = np.linspace(0.5, 10, 12)
    noise = rng.normal(0, 0.002, omega.size)
    ppl = 20.0 * np.exp(0.03 * omega + noise)
    fit = fit_quality(np.r_[0.0, omega], np.r_[20.0, ppl], 20.0)   # the bf16 plan is ignored
    assert fit.points == 12
    assert fit.slope == pytest.approx(0.03, abs=3 * fit.slope_stderr + 1e-4)
    assert 0 < fit.slope_stderr < 0.001
    assert fit.residual_rms == pytest.approx(0.002, rel=0.5)
    assert fit.r2 > 0.99
    assert fit.predict_increase(5.0) == pytest.approx(math.expm1(fit.slope * 5.0))
    assert fit.omega_for_increase(fit.predict_increase(5.0)) == pytest.approx(5.0)
    assert "R^2" in fit.describe()


def test_exact_data_has_no_error_and_bad_input_is_refused():
    fit = fit_quality([1.0, 2.0, 4.0], [10 * math.exp(0.1), 10 * math.exp(0.2), 10 * math.exp(0.4)], 10.0)
    assert fit.slope == pytest.approx(0.1) and fit.slope_stderr == pytest.approx(0, abs=1e-12)
    with pytest.raises(InputError):
        fit_quality([0.0, 1.0], [10.0, 11.0], 10.0)       # one quantized plan
    with pytest.raises(InputError):
        fit_quality([1.0, 2.0], [10.0, -1.0], 10.0)
