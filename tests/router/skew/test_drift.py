"""Drift statistics against direct scipy computations, and the verdict's guard against small samples."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, entropy

from router.config import SkewSpec, judged_thresholds  # drift imports it without `as`: no export for mypy
from router.skew import drift

RNG_SEED = 20261123
# Known distributions over 6 bins: a baseline and a shifted one.
P = np.array([0.10, 0.20, 0.30, 0.20, 0.15, 0.05])
Q = np.array([0.05, 0.10, 0.25, 0.25, 0.20, 0.15])


def test_js_distance_is_scipys_base_2():
    assert drift.js_distance(P, Q) == pytest.approx(jensenshannon(P, Q, base=2), abs=1e-12)
    assert drift.js_distance(P * 1000, Q * 37) == pytest.approx(jensenshannon(P, Q, base=2), abs=1e-12)
    assert drift.js_distance(P, P) == pytest.approx(0.0, abs=1e-7)
    assert drift.js_distance([1, 0], [0, 1]) == pytest.approx(1.0)  # disjoint supports: the maximum


def test_psi_is_the_symmetrised_kl_divergence():
    # PSI = sum (q - p) ln(q / p) = KL(q || p) + KL(p || q).
    assert drift.psi(P, Q) == pytest.approx(entropy(Q, P) + entropy(P, Q), rel=1e-12)
    assert drift.psi(P * 2500, Q * 800) == pytest.approx(entropy(Q, P) + entropy(P, Q), rel=1e-12)
    assert drift.psi(P, P) == 0.0


def test_psi_of_an_empty_baseline_bin_is_large_and_finite():
    # A category training never saw holds 30% of live values: floored at EPS, not infinite.
    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.35, 0.35, 0.30])
    floored = np.maximum(p, drift.EPS)
    expected = float(np.sum((q - floored) * np.log(q / floored)))
    assert drift.psi(p, q) == pytest.approx(expected)
    assert 2.0 < drift.psi(p, q) < 10.0


def test_linf_is_the_largest_difference_of_shares():
    assert drift.linf(P, Q) == pytest.approx(0.10)
    assert drift.linf([40, 60], [400, 600]) == pytest.approx(0.0)


def test_chi2_pvalue_is_scipys_homogeneity_test():
    base = np.array([250, 248, 252, 249, 250, 0])
    live = np.array([30, 70, 90, 60, 41, 0])  # the last bin is empty on both sides: dropped
    _, p, _, _ = chi2_contingency(np.vstack([base[:-1], live[:-1]]), correction=False)
    assert drift.chi2_pvalue(base, live) == pytest.approx(p, rel=1e-9)
    table = np.vstack([P * 2500, Q * 900])
    assert drift.chi2_pvalue(table[0], table[1]) == pytest.approx(chi2_contingency(table, correction=False)[1], rel=1e-9)


def test_chi2_without_evidence():
    assert drift.chi2_pvalue([10, 0], [5, 0]) == 1.0  # one bin used
    assert drift.chi2_pvalue([10, 5], [0, 0]) == 1.0  # no live values


def test_judge_needs_the_minimum_sample():
    limits = judged_thresholds("numeric")
    j = drift.judge("x", "numeric", P * 2500, Q * 20, limits, min_sample=100, alpha=0.01)
    assert j.verdict == drift.TOO_FEW and j.n == 20
    j = drift.judge("x", "numeric", P * 2500, Q * 2000, limits, min_sample=100, alpha=0.01)
    assert j.verdict == drift.DRIFT and "psi" in j.over


def test_judge_effect_without_significance_is_no_alarm():
    # Over the threshold, but on so few values that chance explains it.
    limits = {"js_distance": 0.1}
    j = drift.judge("x", "numeric", [50, 50], [7, 3], limits, min_sample=5, alpha=0.01)
    assert j.statistics["js_distance"] > 0.1 and j.over == ("js_distance",)
    assert j.statistics["chi2_pvalue"] > 0.01 and j.verdict == drift.OK


def test_judge_significance_without_effect_is_no_alarm():
    # A tiny shift on a huge sample: significant, but under every threshold.
    base, live = np.array([500_000, 500_000]), np.array([490_000, 510_000])
    j = drift.judge("x", "categorical", base, live, judged_thresholds("categorical"), 1000, 0.01)
    assert j.statistics["chi2_pvalue"] < 1e-6 and j.verdict == drift.OK


def test_many_categories_same_distribution_small_sample_no_false_alarm():
    # 51 equally likely categories (like `state`): at 1,000 values the plug-in JS distance alone would
    # cross 0.1 by chance; categories are judged on PSI and L-infinity (as TFDV does) and stay quiet.
    rng = np.random.default_rng(RNG_SEED)
    p = np.full(51, 1 / 51)
    base = rng.multinomial(2500, p)
    false_alarms, js_over = 0, 0
    for _ in range(200):
        live = rng.multinomial(1000, p)
        js_over += drift.js_distance(base, live) > 0.1
        j = drift.judge("state", "categorical", base, live, judged_thresholds("categorical"), 1000, 0.01)
        false_alarms += j.verdict == drift.DRIFT
    assert js_over > 100 and false_alarms == 0


def test_thresholds_from_config_defaults_and_overrides():
    skew = SkewSpec(thresholds={"psi": 0.25}, features={"state": {"psi": 0.5, "js_distance": 0.3}})
    assert skew.thresholds_for("total_day_minutes", "numeric") == {"psi": 0.25, "js_distance": 0.1}
    assert skew.thresholds_for("area_code", "categorical") == {"psi": 0.25, "linf": 0.1}
    assert skew.thresholds_for("state", "categorical") == {"psi": 0.5, "linf": 0.1, "js_distance": 0.3}


def test_judgement_json_has_no_nan():
    j = drift.judge("x", "numeric", [1, 1], [0, 0], judged_thresholds("numeric"), 1, 0.01)
    assert j.to_dict()["verdict"] == drift.TOO_FEW and j.to_dict()["statistics"] == {}
