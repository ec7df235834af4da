"""Assignment: golden cases, uniformity, nesting across ramp stages, independence without a unit id."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from scipy import stats

from router.assignment import arm_at, assign, unit_position

CASES = json.loads((Path(__file__).parents[1] / "data" / "assignment_cases.json").read_text())["cases"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['salt']}/{c['unit_id']}/{c['weights']['model']}")
def test_golden_cases(case):
    assert unit_position(case["salt"], case["unit_id"]) == case["position"]
    assert assign(case["salt"], case["unit_id"], case["weights"]) == case["arm"]


def test_hash_is_documented_sha256():
    import hashlib

    digest = hashlib.sha256(b"s\x00u").digest()
    assert unit_position("s", "u") == int.from_bytes(digest[:8], "big") / 2**64


def test_positions_are_uniform():
    positions = [unit_position("uniformity", f"user-{i}") for i in range(20_000)]
    assert stats.kstest(positions, "uniform").pvalue > 0.001


def test_share_matches_weight_within_binomial_bound():
    n, w = 50_000, 0.05
    k = sum(assign("share", f"u{i}", {"legacy": 1 - w, "model": w}) == "model" for i in range(n))
    assert stats.binomtest(k, n, w).pvalue > 0.001


def test_nested_across_ramp_stages():
    units = [f"user-{i}" for i in range(20_000)]
    previous: set[str] = set()
    for w in (0.01, 0.05, 0.2, 0.5, 1.0):
        in_model = {u for u in units if assign("ramp", u, {"legacy": 1 - w, "model": w}) == "model"}
        assert previous <= in_model, "a unit left the model arm when its share grew"
        previous = in_model
    assert len(previous) == len(units)


def test_sticky_and_salt_dependent():
    weights = {"legacy": 0.5, "model": 0.5}
    first = [assign("a", f"u{i}", weights) for i in range(1000)]
    assert first == [assign("a", f"u{i}", weights) for i in range(1000)]
    other = [assign("b", f"u{i}", weights) for i in range(1000)]
    assert 350 < sum(x != y for x, y in zip(first, other)) < 650  # a new salt reshuffles about half


def test_no_unit_id_is_an_independent_draw():
    rng = random.Random(7)
    arms = [assign("s", None, {"legacy": 0.8, "model": 0.2}, rng) for _ in range(10_000)]
    assert stats.binomtest(arms.count("model"), 10_000, 0.2).pvalue > 0.001


def test_zero_and_full_weights():
    assert arm_at(0.0, {"legacy": 1.0, "model": 0.0}) == "legacy"
    assert arm_at(0.999999, {"legacy": 0.0, "model": 1.0}) == "model"
    assert arm_at(0.9999999999, {"legacy": 0.7, "model": 0.3 - 1e-12}) == "legacy"
    with pytest.raises(ValueError):
        arm_at(0.5, {"legacy": 0.0, "model": 0.0})
