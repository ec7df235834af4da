"""The router's HTTP front (FastAPI): TF Serving's REST API plus outcomes, experiments, metrics, probes.

Thin by design: parse JSON into a `decode` callable, call `Router.predict`, format the answer or
the error (`{"error": message}` with the error's `http_status`, as TF Serving does). The process
serves this app with `router.rest.server`, which calls `answer_predict` directly for predict;
the ASGI fast path below does the same under any ASGI server (tests use Starlette's TestClient).
"""

from __future__ import annotations

import hmac
import json
import re

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from router.backends import ColumnOutputs, PredictCall
from router.core import Router, Served
from router.metrics import CONTENT_TYPE
from router.reload import put_weights
from router.rest import json_codec
from router.signature import Signature, rows_fit
from serving.tfserving import errors
from serving.tfserving.rest_format import (
    format_columns,
    format_predict_response,
    parse_predict_body,
)

_PREDICT_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "description": "TF Serving REST predict body: `instances` (rows) or `inputs` (columns), optional `signature_name`.",
    "example": {"instances": [{"state": "KS", "area_code": "area_code_415", "international_plan": "no", "voice_mail_plan": "yes",
                               "account_length": 128, "number_vmail_messages": 25, "total_day_minutes": 265.1}]}}}}},
    "parameters": [{"name": "X-Unit-Id", "in": "header", "required": False, "schema": {"type": "string"},
                    "description": "The randomisation unit (e.g. user id); without it the request is randomised on its own."}]}


def _error(err: errors.UserFacingError) -> JSONResponse:
    return JSONResponse({"error": str(err)}, status_code=err.http_status)


async def read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is larger than `limit` bytes (stops reading there)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes | None, limit: int) -> object:
    if body is None:
        raise errors.PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
    try:
        return json_codec.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise errors.InvalidArgument(f"malformed JSON in request body: {err}") from None


def rest_decoder(body: bytes | None, limit: int, configured_signature: str, seen: dict):
    """The `decode` callable for one REST predict body; records the body's format in `seen["row_format"]`."""

    def decode(signature: Signature | None) -> PredictCall:
        document = parse_json(body, limit)
        # Fast path: plain row format that fits the signature keeps its rows (no numpy; see PredictCall).
        if (signature is not None and type(document) is dict and "instances" in document
                and document.keys() <= {"instances", "signature_name"}
                and document.get("signature_name") in (None, "", configured_signature)
                and type(document["instances"]) is list and document["instances"]
                and rows_fit(document["instances"], signature)):
            seen["row_format"] = True
            call = PredictCall(rows=document["instances"], signature_name=configured_signature)
            call.rows_fit_signature = signature
            return call
        name, inputs, seen["row_format"] = parse_predict_body(document, None if signature is None else signature.input_dtypes)
        if name not in (None, "", configured_signature):
            raise errors.NotFound(f"unknown signature {name!r}; the model serves {configured_signature!r}")
        return PredictCall(inputs, signature_name=configured_signature)

    return decode


PREDICT_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/\d+|/labels/[^/:]+)?:predict$")


async def answer_predict(router: Router, name: str, unit_id: str | None, body: bytes | None) -> tuple[int, bytes, dict[str, str]]:
    """One REST predict: (status, JSON body, extra headers). Shared by the fast path and the FastAPI routes."""
    cfg = router.state.config
    seen: dict = {}
    decode = rest_decoder(body, cfg.router.max_body_bytes, cfg.arms["model"].backend.signature_name, seen)
    try:
        served: Served = await router.predict(name, unit_id, decode, "http")
    except errors.UserFacingError as err:
        return err.http_status, json.dumps({"error": str(err)}).encode(), {}
    outputs = served.prediction.outputs
    if isinstance(outputs, ColumnOutputs):  # a legacy answer, already JSON numbers: no numpy
        content = json_codec.dumps(format_columns(outputs.columns, seen["row_format"]))
    else:
        content = json_codec.dumps(format_predict_response(outputs, seen["row_format"]))
    return 200, content, {"X-Modelramp-Arm": served.arm, "X-Request-Id": served.request_id}


class PredictFastPath:
    """ASGI wrapper that answers `POST /v1/models/...:predict` itself and passes everything else to FastAPI.

    The predict routes are also declared in FastAPI (OpenAPI docs, same handler), but FastAPI's
    routing, dependency solving and Request/Response objects cost about as much CPU as the rest
    of a forwarded request together, and predict is the only hot path.
    """

    def __init__(self, app: FastAPI, router: Router):
        self.app = app
        self.router = router

    async def __call__(self, scope, receive, send) -> None:
        match = PREDICT_PATH.match(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        unit_id = declared = None
        for key, value in scope["headers"]:
            if key == b"x-unit-id":
                unit_id = value.decode("latin-1")
            elif key == b"content-length":
                declared = value
        limit = self.router.state.config.router.max_body_bytes
        body = None if declared is not None and declared.isdigit() and int(declared) > limit else await _receive_body(receive, limit)
        status, content, extra = await answer_predict(self.router, match.group(1), unit_id, body)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
        headers.extend((k.lower().encode(), v.encode()) for k, v in extra.items())
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})


async def _receive_body(receive, limit: int) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None  # stop reading: an oversized body is refused, not buffered
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def create_app(router: Router, admin_token: str | None = None) -> PredictFastPath:
    """The router's ASGI application; `admin_token` guards the weights API (None disables it)."""
    app = FastAPI(title="modelramp router", version="1",
                  description="TF-Serving-compatible traffic splitter between a legacy system and a model.")
    app.state.router = router

    async def predict(request: Request, name: str) -> Response:
        body = await read_body(request, router.state.config.router.max_body_bytes)
        status, content, headers = await answer_predict(router, name, request.headers.get("x-unit-id"), body)
        return Response(content, status_code=status, media_type="application/json", headers=headers)

    @app.post("/v1/models/{name}:predict", tags=["predict"], openapi_extra=_PREDICT_BODY,
              summary="Predict (TF Serving REST), assigned to an arm by X-Unit-Id")
    async def predict_latest(request: Request, name: str) -> Response:
        return await predict(request, name)

    @app.post("/v1/models/{name}/versions/{version}:predict", tags=["predict"], openapi_extra=_PREDICT_BODY,
              summary="Predict; the experiment decides the version that answers")
    async def predict_version(request: Request, name: str, version: int) -> Response:
        return await predict(request, name)

    @app.post("/v1/models/{name}/labels/{label}:predict", tags=["predict"], openapi_extra=_PREDICT_BODY,
              summary="Predict; the experiment decides the version that answers")
    async def predict_label(request: Request, name: str, label: str) -> Response:
        return await predict(request, name)

    @app.get("/v1/models/{name}/metadata", tags=["predict"], summary="The model's signature (TF Serving REST metadata)")
    async def metadata(name: str) -> Response:
        cfg = router.state.config
        if name != cfg.model_name:
            return _error(errors.NotFound(f"unknown model {name!r}; this router serves {cfg.model_name!r}"))
        if router.signature is None and not await router.refresh_metadata():
            return _error(errors.Unavailable("the model's signature is not known yet"))
        return JSONResponse(rest_metadata(name, router.signature))

    @app.post("/v1/outcomes", tags=["outcomes"], summary="Report outcomes for signed request ids",
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                  "description": '{"request_id": str, "success": bool} or a list of them', "example": {"request_id": "...", "success": True}}}}}})
    async def outcomes(request: Request) -> Response:
        limit = router.state.config.router.max_body_bytes
        try:
            result = router.outcomes.report(parse_json(await read_body(request, limit), limit))
        except errors.UserFacingError as err:
            return _error(err)
        return JSONResponse({"accepted": result.accepted, "duplicates": result.duplicates})

    @app.get("/v1/experiments", tags=["experiments"], summary="Experiments with weights and live counts")
    async def experiments() -> dict:
        return {"experiments": [router.describe()]}

    @app.get("/v1/experiments/{name}", tags=["experiments"], summary="One experiment: config, weights, live counts")
    async def experiment(name: str) -> Response:
        if name != router.state.config.name:
            return _error(errors.NotFound(f"unknown experiment {name!r}"))
        return JSONResponse(router.describe())

    @app.put("/v1/experiments/{name}/weights", tags=["experiments"], summary="Change arm weights (bearer token)",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                 "example": {"weights": {"legacy": 0.95, "model": 0.05}}}}}}})
    async def weights(request: Request, name: str) -> Response:
        if admin_token is None:
            return _error(errors.PermissionDenied("the weights API is disabled: start the router with an admin token"))
        given = request.headers.get("authorization", "")
        if not given.startswith("Bearer ") or not hmac.compare_digest(given[7:].encode(), admin_token.encode()):
            return JSONResponse({"error": "a valid bearer token is required"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        try:
            limit = router.state.config.router.max_body_bytes
            put_weights(router, name, parse_json(await read_body(request, limit), limit))
        except errors.UserFacingError as err:
            return _error(err)
        return JSONResponse(router.describe())

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(router.metrics.exposition(), media_type=CONTENT_TYPE)

    @app.get("/healthz", tags=["operations"], summary="Liveness: the process answers")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Readiness: the legacy system answers and the model's signature is known")
    async def readyz() -> Response:
        status = await router.readiness()
        return JSONResponse(status, status_code=200 if status["ready"] else 503)

    return PredictFastPath(app, router)


def rest_metadata(name: str, signature: Signature) -> dict:
    """TF Serving's REST metadata document for the one signature the experiment serves."""
    from serving.tfserving.tensors import dtype_name

    def tensors(specs):
        return {n: {"dtype": dtype_name(s.dtype), "name": n,
                    "tensor_shape": {"unknown_rank": s.shape is None, "dim": [{"size": str(d), "name": ""} for d in (s.shape or ())]}}
                for n, s in specs.items()}

    version = "" if signature.model_version is None else str(signature.model_version)
    return {"model_spec": {"name": name, "signature_name": "", "version": version},
            "metadata": {"signature_def": {"signature_def": {signature.name: {
                "inputs": tensors(signature.inputs), "outputs": tensors(signature.outputs), "method_name": "tensorflow/serving/predict"}}}}}
