"""JSON on the router's predict path: orjson where it gives the same document, the standard library where not.

Each request is decoded once from the client and once from the legacy system, and encoded once
for each: with the standard `json` module that was about a sixth of the router's CPU per request
(py-spy on `loadtests/bench_router.py`); orjson does the same work several times faster. Two
differences are kept out: TF Serving's REST API accepts the non-standard `NaN` and `Infinity`
literals (a missing number is NaN here), which orjson refuses to read and writes as `null`. So a
document orjson cannot read is read again by `json` (its error is the one reported), and an
encoding that contains `null` is redone by `json`, which writes NaN as `NaN` and None as `null`
alike. Both fallbacks only run for documents that hold those values.

`parse_body` is how every route of the router reads a JSON request body (predict, outcomes,
weights): one wording of the 400 for a body that is not JSON.
"""

from __future__ import annotations

import json
import math

import orjson

from serving.tfserving import errors


def loads(data: bytes | str) -> object:
    """Parse a JSON document; raises ValueError (or UnicodeDecodeError) as `json.loads` does."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)  # NaN / Infinity literals, or the standard library's own error


def dumps(document: object) -> bytes:
    """Compact JSON as bytes, the same document `json.dumps(document, separators=(",", ":"))` writes."""
    try:
        encoded = orjson.dumps(document)
    except TypeError:  # a type orjson does not take (numpy scalars, big integers): the slow path decides
        encoded = b"null"
    if b"null" not in encoded:
        return encoded
    return json.dumps(document, separators=(",", ":")).encode()


def parse_body(body: bytes) -> object:
    """A request body as a JSON document, or `errors.InvalidArgument` (400) naming what is wrong with it.

    What a client sends must fail as the client's error, before either arm and the same on both:
    beyond what `loads` refuses, a body is refused when it holds an infinite number (`Infinity`,
    or a literal such as 1e400 that only fits as one; `NaN` stays the missing number), a string
    with a lone surrogate (`"\\ud800"`: no UTF-8 encoding exists, so neither the model server nor
    a metric label could take it), or nesting deeper than orjson's 1024 levels or than Python's
    recursion allows (a RecursionError otherwise). Only bodies orjson refuses are checked again,
    so an ordinary body costs nothing more.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as err:
        first = str(err)
    try:
        document = json.loads(body, parse_constant=_nan_only, parse_float=_finite_float)
        # The standard library keeps lone surrogates, which no UTF-8 encoder takes; integers beyond
        # 64 bits pass here (orjson refuses them) and are the signature check's to name.
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except RecursionError:
        raise errors.InvalidArgument("malformed JSON in request body: nested too deeply") from None
    except UnicodeEncodeError:
        raise errors.InvalidArgument("malformed JSON in request body: a string holds a lone surrogate (not valid Unicode)") from None
    except (ValueError, UnicodeDecodeError) as err:
        if "recursion limit" in first:
            raise errors.InvalidArgument("malformed JSON in request body: nested too deeply") from None
        raise errors.InvalidArgument(f"malformed JSON in request body: {err}") from None
    return document


class _NonFinite(ValueError):
    pass


def _nan_only(literal: str) -> float:
    if literal == "NaN":
        return math.nan
    raise _NonFinite(f"non-finite number {literal} (only NaN, a missing value, is accepted)")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise _NonFinite(f"number {literal} is too large (infinite)")
    return value
