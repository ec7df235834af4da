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
    """A request body as a JSON document, or `errors.InvalidArgument` (400) naming the parser's complaint."""
    try:
        return loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise errors.InvalidArgument(f"malformed JSON in request body: {err}") from None
