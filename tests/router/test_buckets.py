"""Analysis buckets: the documented hash, uniform, independent of the arm, random without a unit id."""

from __future__ import annotations

import hashlib
import random

import pytest

from router.assignment import assign
from router.buckets import analysis_bucket
from router.config import RouterOptionsSpec


def test_bucket_is_the_documented_hash():
    for unit in ("user-1", "ü", "x" * 100):
        digest = hashlib.sha256(b"modelramp-analysis-bucket\x00" + unit.encode()).digest()
        assert analysis_bucket(unit, 64) == int.from_bytes(digest[:8], "big") % 64
    assert analysis_bucket("user-1", 1) == 0


def test_buckets_are_uniform_and_independent_of_the_arm():
    weights = {"legacy": 0.5, "model": 0.5}
    counts = {arm: [0] * 8 for arm in weights}
    for n in range(16_000):
        unit = f"u{n}"
        counts[assign("salt", unit, weights)][analysis_bucket(unit, 8)] += 1
    for arm, row in counts.items():
        share = [c / sum(row) for c in row]
        assert max(abs(s - 1 / 8) for s in share) < 0.02, (arm, share)


def test_no_unit_id_draws_a_bucket():
    rng = random.Random(3)
    drawn = {analysis_bucket(None, 16, rng) for _ in range(500)} | {analysis_bucket("", 16, rng) for _ in range(500)}
    assert drawn == set(range(16))
    with pytest.raises(ValueError):
        analysis_bucket("u", 0)


def test_router_option_bounds():
    assert RouterOptionsSpec().analysis_buckets == 64
    for bad in (0, 1025):
        with pytest.raises(ValueError):
            RouterOptionsSpec(analysis_buckets=bad)
