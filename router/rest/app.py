"""The router's FastAPI app: every REST route but predict (metadata, outcomes, experiments, weights, metrics, probes, docs).

The process serves it with `router.rest.server`, which answers predict itself
(`router.rest.predict`) and hands every other request to this app through a small ASGI bridge,
with the body already read and bounded by the server's one body limit; so the handlers here
take `request.body()` as it is. Predict has no FastAPI route (FastAPI's routing, dependency
solving and Request/Response objects cost about as much CPU as the rest of a forwarded request
together, and predict is the only hot path), but it is documented: the OpenAPI schema (and so
/docs) carries the three predict paths with their body and `X-Unit-Id` header.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from router.core import Router
from router.ledger import LedgerUnavailable
from router.metrics import CONTENT_TYPE
from router.reload import put_weights
from router.rest.json_codec import parse_body
from router.signature import Signature, TensorSpec
from serving.tfserving import errors
from serving.tfserving.tensors import dtype_name

_ROW_EXAMPLE = {"state": "KS", "area_code": "area_code_415", "international_plan": "no", "voice_mail_plan": "yes",
                "account_length": 128, "number_vmail_messages": 25, "total_day_minutes": 265.1}
_ERROR = {"application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}}}


def _predict_operation(summary: str, operation_id: str, extra_path_parameters: list[dict[str, Any]]) -> dict[str, Any]:
    """The OpenAPI operation of one predict path, as `router.rest.predict` answers it."""
    return {"post": {
        "tags": ["predict"], "summary": summary, "operationId": operation_id,
        "parameters": [
            {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "title": "Name"}},
            *extra_path_parameters,
            {"name": "X-Unit-Id", "in": "header", "required": False, "schema": {"type": "string"},
             "description": "The randomisation unit (e.g. user id); without it the request is randomised on its own."},
            {"name": "X-Request-Id", "in": "header", "required": False, "schema": {"type": "string"},
             "description": "The client's correlation id: echoed, and passed on to the arm's backend (as are `traceparent` "
                            "and `tracestate`)."},
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object",
            "description": "TF Serving REST predict body: `instances` (rows) or `inputs` (columns), optional `signature_name`.",
            "example": {"instances": [_ROW_EXAMPLE]}}}}},
        "responses": {
            "200": {"description": "TF Serving's answer: `predictions` for `instances`, `outputs` for `inputs`. Headers "
                                   "`X-Modelramp-Arm` (the assigned arm), `X-Modelramp-Outcome-Id` (signed; report the outcome with it) "
                                   "and the client's `X-Request-Id`, echoed.",
                    "content": {"application/json": {"schema": {"type": "object"}}}},
            "400": {"description": "The body does not fit the model's signature, or is not JSON", "content": _ERROR},
            "404": {"description": "Unknown model or signature", "content": _ERROR},
            "413": {"description": "The body is larger than `router.max_body_bytes`", "content": _ERROR},
            "500": {"description": "An error in the router", "content": _ERROR},
            "503": {"description": "No arm could answer", "content": _ERROR},
            "504": {"description": "No answer within the deadline", "content": _ERROR},
        }}}


PREDICT_OPENAPI_PATHS: dict[str, dict[str, Any]] = {
    "/v1/models/{name}:predict": _predict_operation(
        "Predict (TF Serving REST), assigned to an arm by X-Unit-Id", "predict_latest", []),
    "/v1/models/{name}/versions/{version}:predict": _predict_operation(
        "Predict; the experiment decides the version that answers", "predict_version",
        [{"name": "version", "in": "path", "required": True, "schema": {"type": "integer", "title": "Version"}}]),
    "/v1/models/{name}/labels/{label}:predict": _predict_operation(
        "Predict; the experiment decides the version that answers", "predict_label",
        [{"name": "label", "in": "path", "required": True, "schema": {"type": "string", "title": "Label"}}]),
}


class RouterApp(FastAPI):
    """FastAPI with the predict paths, which `router.rest.server` answers outside FastAPI, in its OpenAPI schema."""

    def openapi(self) -> dict[str, Any]:
        schema = super().openapi()  # generated once and kept by FastAPI; the predict paths are added to that copy
        if not PREDICT_OPENAPI_PATHS.keys() <= schema["paths"].keys():
            schema["paths"] = {**PREDICT_OPENAPI_PATHS, **schema["paths"]}
        return schema


def _error(err: errors.UserFacingError) -> JSONResponse:
    # The ledger down or behind: 503 with when to retry (nothing was counted, so the retry is safe).
    headers = {"Retry-After": str(err.retry_after)} if isinstance(err, LedgerUnavailable) else None
    return JSONResponse({"error": str(err)}, status_code=err.http_status, headers=headers)


def create_app(router: Router, admin_token: str | None = None) -> FastAPI:
    """The router's FastAPI app (served by `router.rest.server`); `admin_token` guards the weights API (None disables it)."""
    app = RouterApp(title="modelramp router", version="1",
                    description="TF-Serving-compatible traffic splitter between a legacy system and a model.")
    app.state.router = router

    @app.get("/v1/models/{name}/metadata", tags=["predict"], summary="The model's signature (TF Serving REST metadata)")
    async def metadata(name: str) -> Response:
        cfg = router.state.config
        if name != cfg.model_name:
            return _error(errors.NotFound(f"unknown model {name!r}; this router serves {cfg.model_name!r}"))
        if router.signature is None and not await router.refresh_metadata():
            return _error(errors.Unavailable("the model's signature is not known yet"))
        signature = router.signature
        assert signature is not None  # known once refresh_metadata succeeded
        return JSONResponse(rest_metadata(name, signature))

    @app.post("/v1/outcomes", tags=["outcomes"], summary="Report outcomes for signed request ids (X-Modelramp-Outcome-Id)",
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                  "description": '{"request_id": str, "success": bool} or a list of them (at most 10,000); request_id is the '
                                 "X-Modelramp-Outcome-Id header of the predict answer",
                  "example": {"request_id": "...", "success": True}}}}},
                  "responses": {"503": {"description": "The outcome ledger cannot be written now: nothing was counted, "
                                                       "retry after `Retry-After` seconds", "content": _ERROR}}})
    async def outcomes(request: Request) -> Response:
        try:
            result = await router.outcomes.report(parse_body(await request.body()))
        except errors.UserFacingError as err:
            return _error(err)
        return JSONResponse({"accepted": result.accepted, "duplicates": result.duplicates})

    @app.get("/v1/experiments", tags=["experiments"], summary="Experiments with weights and live counts")
    async def experiments() -> dict[str, Any]:
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
            put_weights(router, name, parse_body(await request.body()))
        except errors.UserFacingError as err:
            return _error(err)
        return JSONResponse(router.describe())

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(router.metrics.exposition(), media_type=CONTENT_TYPE)

    @app.get("/healthz", tags=["operations"], summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Readiness: the legacy system answers and the model's signature is known")
    async def readyz() -> Response:
        status = await router.readiness()
        return JSONResponse(status, status_code=200 if status["ready"] else 503)

    return app


def rest_metadata(name: str, signature: Signature) -> dict[str, Any]:
    """TF Serving's REST metadata document for the one signature the experiment serves."""
    def tensors(specs: Mapping[str, TensorSpec]) -> dict[str, Any]:
        return {n: {"dtype": dtype_name(s.dtype), "name": n,
                    "tensor_shape": {"unknown_rank": s.shape is None, "dim": [{"size": str(d), "name": ""} for d in (s.shape or ())]}}
                for n, s in specs.items()}

    version = "" if signature.model_version is None else str(signature.model_version)
    return {"model_spec": {"name": name, "signature_name": "", "version": version},
            "metadata": {"signature_def": {"signature_def": {signature.name: {
                "inputs": tensors(signature.inputs), "outputs": tensors(signature.outputs), "method_name": "tensorflow/serving/predict"}}}}}
