"""`rows_fit`'s fast check (type tuples judged once, numbers bounded by one min and max) gives the exact loop's answer."""

from __future__ import annotations

import math
import random

import pytest

from router.signature import Signature, TensorSpec, _row_fits, rows_fit
from serving.tfserving.tensors import DT_DOUBLE, DT_FLOAT, DT_HALF, DT_INT64, DT_STRING

# Values that sit on every edge the loop checks: kinds, bools, int64's ends, float16's and float32's largest, NaN, infinities.
EDGES = [0.0, -1.5, 3, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 65504.0, 70000.0, 3.4e38, 1e39, -1e39, 1e300,
         math.nan, math.inf, -math.inf, True, False, None, "KS", "", [1.0], {"a": 1}]


def signature(dtypes: list[int]) -> Signature:
    return Signature("serving_default", {f"x{i}": TensorSpec(d, (-1,)) for i, d in enumerate(dtypes)},
                     {"probability": TensorSpec(DT_FLOAT, (-1,))})


def reference(rows: list, sig: Signature) -> bool:
    """The loop alone, as rows_fit was before its fast check."""
    kinds = sig.row_kinds
    assert kinds is not None
    return all(type(row) is dict and row.keys() == sig.inputs.keys() and _row_fits(row, kinds) for row in rows)


def typical(dtype: int, rng: random.Random) -> object:
    if dtype == DT_STRING:
        return rng.choice(["KS", "OH", "no"])
    return rng.choice([rng.uniform(-500, 500), float(rng.randint(0, 300)), rng.randint(0, 300)])


@pytest.mark.parametrize("dtypes", [[DT_FLOAT], [DT_STRING], [DT_FLOAT, DT_FLOAT], [DT_HALF, DT_FLOAT, DT_STRING],
                                    [DT_INT64, DT_DOUBLE], [DT_STRING] * 4 + [DT_FLOAT] * 15, [DT_FLOAT, DT_STRING, DT_HALF]])
def test_the_fast_check_answers_as_the_loop_does(dtypes):
    rng = random.Random(len(dtypes) * 1000 + sum(dtypes))
    sig = signature(dtypes)
    names = list(sig.inputs)
    disagreements = []
    for _ in range(3000):
        row = {name: typical(d, rng) for name, d in zip(names, dtypes, strict=True)}
        for _ in range(rng.choice([0, 0, 1, 2])):  # most rows fit; others carry one or two edge values
            row[rng.choice(names)] = rng.choice(EDGES)
        rows = [row] if rng.random() < 0.8 else [row, {name: typical(d, rng) for name, d in zip(names, dtypes, strict=True)}]
        if rng.random() < 0.05:
            rows = [{**row, "extra": 1.0}]
        if rows_fit(rows, sig) != reference(rows, sig):
            disagreements.append(rows)
    assert not disagreements, disagreements[:3]
    assert sig.row_check is not None and sig.row_check.fits, "the type tuples seen were judged once and kept"


def test_numbers_beyond_the_bound_are_decided_by_the_loop():
    sig = signature([DT_HALF, DT_FLOAT])  # the bound is float16's largest
    assert sig.row_check is not None and sig.row_check.bound == 65504.0
    assert rows_fit([{"x0": 1.0, "x1": 1e30}], sig), "a float32 input takes 1e30 although it is beyond the bound"
    assert rows_fit([{"x0": 100000, "x1": 1.0}], sig), "an int within int64 fits a float16 input (the loop's rule)"
    assert not rows_fit([{"x0": 70000.0, "x1": 1.0}], sig), "infinite as a float16"
    assert rows_fit([{"x0": math.nan, "x1": 1.0}], sig), "NaN is the missing value"
    assert not rows_fit([{"x0": True, "x1": 1.0}], sig), "a bool is not a number"


def test_a_client_with_endless_type_mixes_does_not_grow_the_cache():
    sig = signature([DT_FLOAT] * 14)
    rng = random.Random(7)
    for _ in range(5000):
        assert rows_fit([{f"x{i}": rng.choice([1, 1.0]) for i in range(14)}], sig)
    assert sig.row_check is not None and len(sig.row_check.fits) == 1024
