"""The mixture SPRT: closed form against numerical integration, boundary and sequence consistency."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.stats import norm

from experiments.stats.sequential import boundary_z, log_likelihood_ratio, needed_information, run_sequence


@pytest.mark.parametrize(("d", "v", "tau2"), [(0.01, 1e-4, 9e-4), (-0.03, 2e-4, 4e-4), (0.0, 5e-5, 1e-3), (0.02, 1e-3, 9e-4)])
def test_closed_form_is_the_mixture_of_likelihood_ratios(d: float, v: float, tau2: float) -> None:
    # Lambda = integral over theta ~ N(0, tau2) of N(d; theta, v) / N(d; 0, v).
    sd = np.sqrt(tau2)
    integrand = lambda t: norm.pdf(d, t, np.sqrt(v)) / norm.pdf(d, 0, np.sqrt(v)) * norm.pdf(t, 0, sd)  # noqa: E731
    numeric, _ = quad(integrand, -12 * sd, 12 * sd, points=[d], limit=200)
    assert np.exp(log_likelihood_ratio(d, v, tau2)) == pytest.approx(numeric, rel=1e-7)


def test_boundary_is_where_lambda_reaches_one_over_alpha() -> None:
    v, tau2, alpha = 1e-4, 9e-4, 0.05
    z = float(boundary_z(v, tau2, alpha))
    assert np.exp(log_likelihood_ratio(z * np.sqrt(v), v, tau2)) == pytest.approx(1 / alpha, rel=1e-10)
    # Wider than the fixed-horizon 1.96: that is the price of looking at every look.
    assert z > norm.isf(alpha / 2)


def test_no_information_means_no_evidence() -> None:
    assert log_likelihood_ratio(0.5, 0.0, 1e-3) == 0.0
    assert boundary_z(np.nan, 1e-3, 0.05) == np.inf
    seq = run_sequence(np.array([np.nan, 0.01]), np.array([np.nan, 1e-4]), 9e-4, 0.05)
    assert seq.p_value[0] == 1.0 and seq.lower[0] == -np.inf and seq.upper[0] == np.inf


def test_p_value_and_sequence_agree_and_are_monotone() -> None:
    d = np.array([0.05, 0.02, 0.035, 0.03, 0.031])
    v = np.array([4e-4, 2e-4, 1e-4, 5e-5, 2.5e-5])
    seq = run_sequence(d, v, 9e-4, 0.05)
    assert np.all(np.diff(seq.p_value) <= 0)
    assert np.all(np.diff(seq.lower) >= 0) and np.all(np.diff(seq.upper) <= 0)
    for k in range(len(d)):
        # p < alpha exactly when some look so far excluded 0.
        assert (seq.p_value[k] < 0.05) == bool(np.any(np.abs(d[: k + 1]) / np.sqrt(v[: k + 1]) > boundary_z(v[: k + 1], 9e-4, 0.05)))


def test_needed_information_gives_target_power_at_that_look() -> None:
    v = needed_information(0.03, 9e-4, 0.05, 0.8)
    z_b = float(boundary_z(v, 9e-4, 0.05))
    assert norm.sf(z_b - 0.03 / np.sqrt(v)) == pytest.approx(0.8, rel=1e-8)
