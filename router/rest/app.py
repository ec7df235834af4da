"""The router's FastAPI app: every REST route but predict and outcomes (model status and metadata, experiments, weights, metrics, probes, docs).

The process serves it with `router.rest.server`, which answers predict and outcome reports itself
(`router.rest.predict`, `router.rest.outcomes`) and hands every other request to this app through a small ASGI bridge,
with the body already read and bounded by the server's one body limit; so the handlers here
take `request.body()` as it is. Predict has no FastAPI route (FastAPI's routing, dependency
solving and Request/Response objects cost about as much CPU as the rest of a forwarded request
together, and predict is the only hot path), but it is documented: the OpenAPI document
(`router.rest.openapi`, and so /docs) carries the three predict paths and the outcomes path. Every error, unknown
routes and methods included, is TF Serving's `{"error": message}`, never FastAPI's `{"detail": ...}`.

`GET /v1/experiments` and `/v1/experiments/{name}` are unauthenticated (dashboards and people
read the weights and counts), so they leave out what would let a client game or reach around
the experiment: the salt (with it and the weights anyone can compute every unit's arm and choose
theirs), the backends' addresses and their static headers (which may be credentials for the
legacy system). The answer lists what it left out under `redacted`; with the admin bearer token
(the one `PUT .../weights` takes) it is whole and `redacted` is empty. A wrong token is 401, a
token sent to a router with none 403, as for the weights route: a client that asked for the
fields is told why it has none. Nothing in `experiments/` reads these routes (the analyzer and
the controller take the salt and weights from the experiment file or the weight store).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from router import tfserving_api
from router.core import Router
from router.ledger import LedgerUnavailable
from router.metrics import CONTENT_TYPE
from router.reload import ConfigFile, put_weights
from router.rest import openapi
from router.rest.json_codec import parse_body
from router.signature import Signature, TensorSpec
from serving.tfserving import errors
from serving.tfserving.tensors import dtype_name


class RouterApp(FastAPI):
    """FastAPI with the predict paths, which `router.rest.server` answers outside FastAPI, in its OpenAPI schema."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            openapi.finish(super().openapi())  # generated once and kept by FastAPI, completed once
        assert self.openapi_schema is not None
        return self.openapi_schema


def _error(err: errors.UserFacingError) -> JSONResponse:
    # The ledger down or behind: 503 with when to retry (nothing was counted, so the retry is safe).
    headers = {"Retry-After": str(err.retry_after)} if isinstance(err, LedgerUnavailable) else None
    return JSONResponse({"error": str(err)}, status_code=err.http_status, headers=headers)


async def _refuse(request: Request) -> Response:
    """Classify and regress: 501, naming what the router serves (`router.tfserving_api`)."""
    return _error(tfserving_api.not_served(f"POST {request.url.path}", rest=True))


# Paths into `Router.describe()` whose values only the admin token may read (see the docstring).
_SECRET_CONFIG = ("salt",)
_SECRET_BACKEND = ("url", "target", "headers")


def redacted(described: dict[str, Any]) -> dict[str, Any]:
    """`described` (a `Router.describe()`) without the salt and the backends' addresses and headers, and which it left out."""
    config = dict(described["config"])
    left_out = []
    for key in _SECRET_CONFIG:
        if key in config:
            config[key] = None
            left_out.append(f"config.{key}")
    arms = {}
    for arm, spec in config.get("arms", {}).items():
        backend = dict(spec["backend"])
        for key in _SECRET_BACKEND:
            if key in backend:
                backend[key] = None
                left_out.append(f"config.arms.{arm}.backend.{key}")
        arms[arm] = {**spec, "backend": backend}
    config["arms"] = arms
    return {**described, "config": config, "redacted": left_out}


def create_app(router: Router, admin_token: str | None = None, source: ConfigFile | None = None) -> FastAPI:
    """The router's FastAPI app (served by `router.rest.server`); `admin_token` guards the weights API (None disables it).

    `source`: the files the router reads, which `PUT .../weights` writes through (`ConfigFile.write_weights`);
    None, or files that cannot be written: the route answers 409.
    """
    app = RouterApp(title="modelramp router", version="1",
                    description="TF-Serving-compatible traffic splitter between a legacy system and a model. Every error, "
                                'unknown routes (404) and methods (405) included, is TF Serving\'s `{"error": message}`.')
    app.state.router = router

    @app.exception_handler(StarletteHTTPException)
    async def unknown_route(request: Request, err: StarletteHTTPException) -> Response:
        return JSONResponse({"error": f"Malformed request: {request.method} {request.url.path}"}, status_code=err.status_code,
                            headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, err: RequestValidationError) -> Response:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": f"Malformed request: {request.method} {request.url.path}: {where}: {first.get('msg', '')}"},
                            status_code=400)

    status_responses = {**openapi.ok(openapi.ModelStatusBody, "TF Serving's model status, as the model arm's server answers it"),
                        **openapi.errors(e400="A version that is not a number", e404="Unknown model, version or label",
                                         e503="The model server cannot be reached", e504="The model server did not answer in time")}

    async def status(name: str, version: int | None = None, label: str | None = None) -> Response:
        timeout = router.state.config.router.request_timeout_ms / 1000.0
        try:
            return JSONResponse(tfserving_api.status_json(await tfserving_api.model_status(router, name, version, label, timeout)))
        except errors.UserFacingError as err:
            return _error(err)

    @app.get("/v1/models/{name}", tags=["predict"], summary="The model's version status (TF Serving REST)",
             responses=status_responses, response_model=None)
    async def model_status(name: str) -> Response:
        return await status(name)

    @app.get("/v1/models/{name}/versions/{version}", tags=["predict"], summary="One version's status (TF Serving REST)",
             responses=status_responses, response_model=None)
    async def version_status(name: str, version: int) -> Response:
        return await status(name, version=version)

    @app.get("/v1/models/{name}/labels/{label}", tags=["predict"], summary="The status of a labelled version (TF Serving REST)",
             responses=status_responses, response_model=None)
    async def label_status(name: str, label: str) -> Response:
        return await status(name, label=label)

    not_served = openapi.errors(e501="Not served by this router (the legacy arm answers predict only); the message names what is")
    for verb in ("classify", "regress"):
        for path, parameters in (("/v1/models/{name}", []), ("/v1/models/{name}/versions/{version}", [openapi.VERSION]),
                                 ("/v1/models/{name}/labels/{label}", [openapi.LABEL])):
            app.post(f"{path}:{verb}", tags=["predict"], summary=f"TF Serving's {verb}: not served (501)", status_code=501, responses=not_served,
                     response_model=None, openapi_extra={"parameters": [openapi.NAME, *parameters]})(_refuse)

    @app.get("/v1/models/{name}/metadata", tags=["predict"], summary="The model's signature (TF Serving REST metadata)",
             responses={200: {"description": "TF Serving's metadata document for the served signature"},
                        **openapi.errors(e404="Unknown model", e503="The model's signature is not known yet")}, response_model=None)
    async def metadata(name: str) -> Response:
        cfg = router.state.config
        if name != cfg.model_name:
            return _error(errors.NotFound(f"unknown model {name!r}; this router serves {cfg.model_name!r}"))
        if router.signature is None and not await router.refresh_metadata():
            return _error(errors.Unavailable("the model's signature is not known yet"))
        signature = router.signature
        assert signature is not None  # known once refresh_metadata succeeded
        return JSONResponse(rest_metadata(name, signature))

    def refused(request: Request, without_token: str) -> Response | None:
        """None if the request carries the admin token; else the 401, or the 403 `without_token` when there is none."""
        if admin_token is None:
            return _error(errors.PermissionDenied(without_token))
        given = request.headers.get("authorization", "")
        if not given.startswith("Bearer ") or not hmac.compare_digest(given[7:].encode(), admin_token.encode()):
            return JSONResponse({"error": "a valid bearer token is required"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        return None

    def described(request: Request) -> dict[str, Any] | Response:
        """The experiment, whole with the admin token, redacted without one; the 401/403 for a token that is not it."""
        if "authorization" not in request.headers:
            return redacted(router.describe())
        denied = refused(request, "this router has no admin token: the salt and backend addresses are never shown")
        return denied if denied is not None else {**router.describe(), "redacted": []}

    read_errors = openapi.errors(e401="A bearer token that is not the router's (answered with `WWW-Authenticate: Bearer`)",
                                 e403="A bearer token sent to a router started without an admin token")
    optional_token: dict[str, Any] = {"security": [{}, {openapi.BEARER: []}]}

    @app.get("/v1/experiments", tags=["experiments"], summary="Experiments with weights and live counts",
             responses={200: {"description": "The experiment this router runs, as `GET /v1/experiments/{name}` shows it"},
                        **read_errors}, response_model=None, openapi_extra=optional_token)
    async def experiments(request: Request) -> Response:
        answer = described(request)
        return answer if isinstance(answer, Response) else JSONResponse({"experiments": [answer]})

    @app.get("/v1/experiments/{name}", tags=["experiments"], summary="One experiment: config, weights, live counts",
             responses={200: {"description": "Name, weights, circuit breaker, live counts, signature and configuration; "
                                             "without the admin bearer token the salt and the backends' addresses and "
                                             "headers are null and listed in `redacted`",
                              "content": {"application/json": {"schema": openapi.EXPERIMENT}}},
                        **openapi.errors(e404="Not the experiment this router runs"), **read_errors},
             response_model=None, openapi_extra=optional_token)
    async def experiment(request: Request, name: str) -> Response:
        if name != router.state.config.name:
            return _error(errors.NotFound(f"unknown experiment {name!r}"))
        answer = described(request)
        return answer if isinstance(answer, Response) else JSONResponse(answer)

    @app.put("/v1/experiments/{name}/weights", tags=["experiments"], summary="Change arm weights (bearer token)",
             response_model=None,
             responses={200: {"description": "The experiment with its new weights",
                              "content": {"application/json": {"schema": openapi.EXPERIMENT}}},
                        **openapi.errors(e400="Not a weights document, or weights that do not sum to 1",
                                         e401="No bearer token, or not the router's (answered with `WWW-Authenticate: Bearer`)",
                                         e403="The weights API is off: the router was started without an admin token",
                                         e404="Not the experiment this router runs",
                                         e409="The router cannot write its weights store (a read-only ConfigMap mount on "
                                              "Kubernetes): change the weights with `modelramp ramp` or in the weights ConfigMap",
                                         e413="The body is larger than `router.max_body_bytes`")},
             openapi_extra={"security": [{openapi.BEARER: []}],
                            "requestBody": {"required": True, "content": {"application/json": {"schema": openapi.WEIGHTS_BODY}}}})
    async def weights(request: Request, name: str) -> Response:
        denied = refused(request, "the weights API is disabled: start the router with an admin token")
        if denied is not None:
            return denied
        try:
            put_weights(router, name, parse_body(await request.body()), source)
        except errors.UserFacingError as err:
            return _error(err)
        return JSONResponse({**router.describe(), "redacted": []})

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_model=None,
             responses={200: {"description": "Prometheus text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def metrics() -> Response:
        return Response(router.metrics.exposition(), media_type=CONTENT_TYPE)

    @app.get("/healthz", tags=["operations"], summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Readiness: the legacy system answers and the model's signature is known",
             response_model=None, responses={**openapi.ok(openapi.Readiness, "Ready"),
                                             503: {"description": "Not ready (the same document, `ready` false)", "model": openapi.Readiness}})
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
