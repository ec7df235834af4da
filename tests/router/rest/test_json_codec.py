"""The predict path's JSON codec reads and writes the documents the standard library does."""

from __future__ import annotations

import json
import math
import random

import pytest

from router.rest import json_codec


def random_document(rng: random.Random, depth: int = 0):
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return rng.uniform(-1e6, 1e6)
    if kind == 1:
        return rng.randrange(-2**40, 2**40)
    if kind == 2:
        return "".join(rng.choice("ab é\"\\\n\u2603") for _ in range(rng.randrange(6)))
    if kind == 3:
        return rng.choice([True, False, None])
    if kind == 4:
        return rng.choice([math.nan, math.inf, -math.inf, 0.1, 1e-320])
    if kind in (5, 6):
        return {f"k{i}": random_document(rng, depth + 1) for i in range(rng.randrange(4))}
    return [random_document(rng, depth + 1) for _ in range(rng.randrange(4))]


def same(a, b) -> bool:
    """Equality where NaN equals NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def test_random_documents_read_back_as_the_standard_library_reads_them():
    rng = random.Random(7)
    for _ in range(2000):
        document = random_document(rng)
        encoded = json_codec.dumps(document)
        assert same(json.loads(encoded), document)
        assert same(json_codec.loads(encoded), document)
        assert same(json_codec.loads(json.dumps(document)), json.loads(json.dumps(document)))


def test_nan_and_infinity_are_read_and_written_as_tf_serving_reads_them():
    assert same(json_codec.loads(b'{"instances": [{"x": NaN, "y": Infinity, "z": -Infinity}]}'),
                {"instances": [{"x": math.nan, "y": math.inf, "z": -math.inf}]})
    assert json_codec.dumps({"x": math.nan, "y": None}) == b'{"x":NaN,"y":null}'  # NaN is not written as null


def test_compact_output_for_the_common_case():
    assert json_codec.dumps({"predictions": [{"churn_probability": 0.25}]}) == b'{"predictions":[{"churn_probability":0.25}]}'


@pytest.mark.parametrize("bad", [b"{", b"", b'{"a": 1,}', b"\xff\xfe", b"[1, 2"])
def test_malformed_documents_raise_value_errors(bad):
    with pytest.raises(ValueError):
        json_codec.loads(bad)


def test_types_json_cannot_write_still_fail():
    with pytest.raises(TypeError):
        json_codec.dumps({"x": object()})
