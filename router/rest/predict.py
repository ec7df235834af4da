"""REST predict, as `router.rest.server` answers it: TF Serving's body in, TF Serving's answer out.

The one way into REST predict is the router's HTTP server (`router.rest.server`): it matches
`PREDICT_PATH`, applies the body limit, and calls `answer_predict` with the body it kept. This
module turns that body into the `decode` callable `Router.predict` takes (`RestDecoder`), and
the `Served` result or the error into (status, JSON body, headers): `{"error": message}` with
the error's `http_status`, as TF Serving does. Nothing here reads a socket or an ASGI scope;
the FastAPI app (`router.rest.app`) serves every other route and documents these paths.
"""

from __future__ import annotations

import json
import re

from router.backends import ColumnOutputs, Prediction, PredictRequest, forwarding
from router.breaker import CircuitOpen
from router.core import Router, Served
from router.rest import json_codec
from router.signature import Signature, rows_fit
from serving.tfserving import errors
from serving.tfserving.rest_format import format_columns, format_predict_response, parse_predict_body

ARM_HEADER = "X-Modelramp-Arm"  # the arm the request was assigned to
OUTCOME_ID_HEADER = "X-Modelramp-Outcome-Id"  # the signed id to report the outcome with (router.signing)
# A success's header lines, filled with one `%` per answer. Both values are ASCII: arm names and base64url.
_SERVED_LINES = f"{ARM_HEADER.lower()}: %s\r\n{OUTCOME_ID_HEADER.lower()}: %s\r\n".encode()

# /v1/models/{name}:predict, /v1/models/{name}/versions/{version}:predict, /v1/models/{name}/labels/{label}:predict
PREDICT_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/\d+|/labels/[^/:]+)?:predict$")


def too_large(limit: int) -> errors.PayloadTooLarge:
    """The answer to a body over the server's limit (`router.max_body_bytes`), for predict and every other route."""
    return errors.PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")


class RestDecoder:
    """The `decode` callable of one REST predict body; remembers whether the body was in row format.

    TF Serving answers a row-format request (`instances`) with `predictions` and a columnar one
    (`inputs`) with `outputs`, so the encoder needs to know which one the decoder saw. `body`
    None: the server refused the body at its limit; decoding inside `Router.predict` (not
    before it) is what counts that 413 with the request's arm like every other bad input.
    """

    __slots__ = ("body", "limit", "signature_name", "row_format")

    def __init__(self, body: bytes | None, limit: int, signature_name: str) -> None:
        self.body = body
        self.limit = limit
        self.signature_name = signature_name  # the one signature the experiment serves
        self.row_format = False

    def __call__(self, signature: Signature | None) -> PredictRequest:
        if self.body is None:
            raise too_large(self.limit)
        document = json_codec.parse_body(self.body)
        configured = self.signature_name
        # Fast path: plain row format that fits the signature keeps its rows (no numpy; see PredictCall).
        if (signature is not None and type(document) is dict and "instances" in document
                and document.keys() <= {"instances", "signature_name"}
                and document.get("signature_name") in (None, "", configured)
                and type(document["instances"]) is list and document["instances"]
                and rows_fit(document["instances"], signature)):
            self.row_format = True
            return PredictRequest(rows=document["instances"], signature_name=configured, rows_fit_signature=signature)
        name, inputs, self.row_format = parse_predict_body(document, None if signature is None else signature.input_dtypes)
        if name not in (None, "", configured):
            raise errors.NotFound(f"unknown signature {name!r}; the model serves {configured!r}")
        return PredictRequest(inputs, signature_name=configured)


def encode(prediction: Prediction, row_format: bool) -> bytes:
    """TF Serving's REST answer for `prediction`: `predictions` for a row-format request, else `outputs`."""
    outputs = prediction.outputs
    if isinstance(outputs, ColumnOutputs):  # a legacy answer, already JSON numbers: no numpy
        return json_codec.dumps(format_columns(outputs.columns, row_format))
    return json_codec.dumps(format_predict_response(outputs, row_format))


def _echo(forward: tuple[tuple[str, str], ...]) -> bytes:
    """The client's X-Request-Id as a header line, as sent: printable ASCII (`forwardable` drops any other value)."""
    for name, value in forward:
        if name == "x-request-id":
            return b"x-request-id: %s\r\n" % value.encode()
    return b""


async def answer_predict(router: Router, name: str, unit_id: str | None, body: bytes | None,
                         forward: tuple[tuple[str, str], ...] = ()) -> tuple[int, bytes, bytes]:
    """One REST predict: (status, JSON body, extra header lines). `body` None: refused at the server's body limit.

    The header lines (each `name: value` and CRLF, names in lower case) go into the answer as
    they are: formatted once here rather than built as pairs and joined by the server.

    `forward`: the client's `X-Request-Id` and W3C trace context (`traceparent`, `tracestate`),
    passed on to whichever backends answer; `X-Request-Id` is echoed on every answer, errors too.
    """
    cfg = router.state.config
    decode = RestDecoder(body, cfg.router.max_body_bytes, cfg.arms.model.backend.signature_name)
    try:
        if forward:
            with forwarding(forward):
                served: Served = await router.predict(name, unit_id, decode, "http")
        else:  # most requests carry no trace header: no context manager's three calls on every request
            served = await router.predict(name, unit_id, decode, "http")
    except errors.UserFacingError as err:
        lines = _echo(forward) if forward else b""
        if isinstance(err, CircuitOpen):  # held off by a breaker: when trying again can help
            lines += b"retry-after: %d\r\n" % err.retry_after
        return err.http_status, json.dumps({"error": str(err)}).encode(), lines
    lines = _SERVED_LINES % (served.arm.encode(), served.request_id.encode())
    if forward:
        lines += _echo(forward)
    return 200, encode(served.prediction, decode.row_format), lines
