"""`modelramp legacy`: the legacy system as an HTTP JSON service (port 8081).

API
- `POST /v1/predict` with `{"instances": [{feature: value, ...}, ...]}` (the 19 churn features;
  the rule reads four of them, the others are accepted and ignored) answers
  `{"predictions": [{"churn": bool, "probability": 0.0|1.0, "reasons": [...]}, ...]}`.
- `GET /healthz` answers `{"status": "ok"}`; `GET /v1/rule` describes the rule.
- Bad input gets 400 `{"error": message}` naming the instance and the field; bodies over
  `MAX_BODY_BYTES` get 413; more than `MAX_INSTANCES` rows get 400. A number may be `NaN`, a
  missing value, as the model's signature takes it (TF Serving's REST API reads the literal and
  the exported model imputes the training mean): the router accepts NaN before it assigns an
  arm, so refusing it here made the legacy arm's error rate differ from the model's for the same
  traffic (a NaN in one of the rule's three numbers was 400 here and 200 on the model). An
  infinite number is still 400, as the router answers it on both arms.

`--api foreign` serves the same rule through a differently shaped API, as a team's own system
would (the router fronts it through the mappings of its `legacy_http` backend):
`POST /api/v2/score {"customers": [...]}` answers `{"results": [{"churn_score": 0.0|1.0,
"at_risk": bool, "reasons": [...]}], "rule": "..."}`, errors are `{"message": ...}`, and the
health check is `GET /status`. Either API can require an API key (`X-Api-Key`) and other
headers on predict, answering 401 without them.
"""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.legacy import rule as legacy_rule
from serving.tfserving.errors import InvalidArgument, PayloadTooLarge, UserFacingError

MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_INSTANCES = 10_000


def _check_instance(n: int, instance: object) -> None:
    if not isinstance(instance, dict):
        raise InvalidArgument(f"instance {n} must be an object of features, got {type(instance).__name__}")
    for name, types in legacy_rule.REQUIRED.items():
        if name not in instance:
            raise InvalidArgument(f"instance {n}: missing feature '{name}'")
        value = instance[name]
        if isinstance(value, bool) or not isinstance(value, types):
            want = "a string" if types == (str,) else "a number"
            raise InvalidArgument(f"instance {n}: feature '{name}' must be {want}, got {json.dumps(value)}")
        if isinstance(value, float) and math.isinf(value):  # NaN passes: a missing number (serving.legacy.rule)
            raise InvalidArgument(f"instance {n}: feature '{name}' must be finite (or NaN, a missing number)")


APIS = ("v1", "foreign")
FOREIGN_PATH, FOREIGN_HEALTH = "/api/v2/score", "/status"


def _instances(raw: bytes, key: str) -> list[Any]:
    """The rows under `key` of a predict body, each checked against what the rule reads; InvalidArgument otherwise."""
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"request body of {len(raw)} bytes exceeds {MAX_BODY_BYTES}")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidArgument(f"request body is not valid JSON: {err}") from None
    if not isinstance(body, dict) or not isinstance(body.get(key), list) or not body[key]:
        raise InvalidArgument(f'request body must be {{"{key}": [ {{features}}, ... ]}} with at least one instance')
    instances: list[Any] = body[key]
    if len(instances) > MAX_INSTANCES:
        raise InvalidArgument(f"{len(instances)} instances exceed the limit of {MAX_INSTANCES}")
    for n, instance in enumerate(instances):
        _check_instance(n, instance)
    return instances


def _refusal(request: Request, api_key: str | None, require_headers: Sequence[str]) -> str | None:
    """Why a predict request is not authorised (None: it is)."""
    if api_key is not None and not hmac.compare_digest(request.headers.get("x-api-key", "").encode(), api_key.encode()):
        return "missing or wrong X-Api-Key"
    missing = [name for name in require_headers if not request.headers.get(name)]
    return f"missing header(s) {missing}" if missing else None


def build_legacy_app(api: str = "v1", api_key: str | None = None, require_headers: Sequence[str] = ()) -> FastAPI:
    """The legacy system speaking `api` ("v1": modelramp's own format; "foreign": another team's), optionally guarded."""
    if api not in APIS:
        raise ValueError(f"unknown legacy API {api!r}; choose one of {list(APIS)}")
    app = FastAPI(title="modelramp legacy system", description=__doc__)
    error_key = "error" if api == "v1" else "message"

    @app.exception_handler(UserFacingError)
    async def _user_error(request: Request, err: UserFacingError):
        return JSONResponse({error_key: str(err)}, status_code=err.http_status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        return JSONResponse({error_key: str(err.detail)}, status_code=err.status_code)

    guarded = api_key is not None or bool(require_headers)

    if api == "foreign":
        @app.get(FOREIGN_HEALTH)
        async def status():
            return {"state": "up"}

        @app.post(FOREIGN_PATH)
        async def score(request: Request):
            refused = _refusal(request, api_key, require_headers) if guarded else None
            if refused is not None:
                return JSONResponse({error_key: refused}, status_code=401)
            results = []
            for instance in _instances(await request.body(), "customers"):
                answer = legacy_rule.predict(instance)
                results.append({"churn_score": answer["probability"], "at_risk": answer["churn"], "reasons": answer["reasons"]})
            return Response(json.dumps({"results": results, "rule": "retention-rule-of-thumb"}), media_type="application/json")

        return app

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/v1/rule")
    async def rule():
        return {"description": legacy_rule.__doc__.strip(), "service_calls_at_risk": legacy_rule.SERVICE_CALLS_AT_RISK,
                "day_minutes_at_risk": legacy_rule.DAY_MINUTES_AT_RISK, "intl_minutes_at_risk": legacy_rule.INTL_MINUTES_AT_RISK}

    @app.post("/v1/predict")
    async def predict(request: Request):
        # In the handler, not a middleware: Starlette's HTTP middleware costs every request a task and streams.
        refused = _refusal(request, api_key, require_headers) if guarded else None
        if refused is not None:  # health and the rule's description stay open, as probes need
            return JSONResponse({error_key: refused}, status_code=401)
        instances = _instances(await request.body(), "instances")
        return Response(json.dumps({"predictions": [legacy_rule.predict(i) for i in instances]}), media_type="application/json")

    return app
