"""Assignment: golden cases, uniformity, nesting across ramp stages, independence without a unit id."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from scipy import stats

from router.assignment import Assigner, arm_at, assign, unit_position

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
    assert 350 < sum(x != y for x, y in zip(first, other, strict=True)) < 650  # a new salt reshuffles about half


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


def test_cpython_sha256_agrees_with_hashlib():
    """router._sha256 (CPython's own SHA-256, see its docstring) gives hashlib's digests."""
    import hashlib
    import platform

    from router._sha256 import sha256

    if platform.python_implementation() == "CPython":
        assert sha256.__module__ in ("_sha256", "_sha2")
    rng = random.Random(5)
    for n in [0, 1, 55, 56, 63, 64, 65, 1000] + [rng.randrange(300) for _ in range(50)]:
        data = rng.randbytes(n)
        assert sha256(data).digest() == hashlib.sha256(data).digest()


def _documented_rule(salt: str, unit_id: str, weights: dict[str, float]) -> str:
    """The module docstring's rule written out with hashlib: the reference `Assigner` must reproduce."""
    import hashlib

    digest = hashlib.sha256(salt.encode() + b"\x00" + unit_id.encode()).digest()
    return "model" if int.from_bytes(digest[:8], "big") / 2**64 < weights["model"] or weights["legacy"] <= 0 else "legacy"


def test_assigner_is_the_documented_rule():
    """The router's Assigner: golden cases, random weights and units against the written-out rule, draws."""
    for case in CASES:
        assert Assigner(case["salt"], case["weights"])(case["unit_id"], random.Random(0)) == case["arm"]
    rng = random.Random(11)
    for _ in range(200):
        w = rng.choice([0.0, 1.0, 1e-9, rng.random()])
        weights = {"legacy": 1 - w, "model": w}
        assigner = Assigner("salt", weights)
        units = [f"u{rng.getrandbits(32)}" for _ in range(50)]
        assert [assigner(u, rng) for u in units] == [_documented_rule("salt", u, weights) for u in units]
        assert [assigner(u, rng) for u in units] == [assign("salt", u, weights) for u in units]
    weights = {"legacy": 0.7, "model": 0.3}
    draws = random.Random(3), random.Random(3)
    assert [Assigner("s", weights)(None, draws[0]) for _ in range(500)] == [assign("s", None, weights, draws[1]) for _ in range(500)]
    assert Assigner("s", weights)("", random.Random(3)) == assign("s", None, weights, random.Random(3))  # "" is no unit id
    with pytest.raises(ValueError, match="no arm has a positive weight"):
        Assigner("s", {"legacy": 0.0, "model": 0.0})
