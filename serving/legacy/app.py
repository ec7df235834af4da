"""`modelramp legacy`: the legacy system as an HTTP JSON service (port 8081).

API
- `POST /v1/predict` with `{"instances": [{feature: value, ...}, ...]}` (the 19 churn features;
  the rule reads four of them, the others are accepted and ignored) answers
  `{"predictions": [{"churn": bool, "probability": 0.0|1.0, "reasons": [...]}, ...]}`.
- `GET /healthz` answers `{"status": "ok"}`; `GET /v1/rule` describes the rule.
- Bad input gets 400 `{"error": message}` naming the instance and the field; bodies over
  `MAX_BODY_BYTES` get 413; more than `MAX_INSTANCES` rows get 400.
"""

from __future__ import annotations

import json
import math

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
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidArgument(f"instance {n}: feature '{name}' must be finite")


def build_legacy_app() -> FastAPI:
    app = FastAPI(title="modelramp legacy system", description=__doc__)

    @app.exception_handler(UserFacingError)
    async def _user_error(request: Request, err: UserFacingError):
        return JSONResponse({"error": str(err)}, status_code=err.http_status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/v1/rule")
    async def rule():
        return {"description": legacy_rule.__doc__.strip(), "service_calls_at_risk": legacy_rule.SERVICE_CALLS_AT_RISK,
                "day_minutes_at_risk": legacy_rule.DAY_MINUTES_AT_RISK, "intl_minutes_at_risk": legacy_rule.INTL_MINUTES_AT_RISK}

    @app.post("/v1/predict")
    async def predict(request: Request):
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"request body of {len(raw)} bytes exceeds {MAX_BODY_BYTES}")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InvalidArgument(f"request body is not valid JSON: {err}") from None
        if not isinstance(body, dict) or not isinstance(body.get("instances"), list) or not body["instances"]:
            raise InvalidArgument('request body must be {"instances": [ {features}, ... ]} with at least one instance')
        instances = body["instances"]
        if len(instances) > MAX_INSTANCES:
            raise InvalidArgument(f"{len(instances)} instances exceed the limit of {MAX_INSTANCES}")
        for n, instance in enumerate(instances):
            _check_instance(n, instance)
        return Response(json.dumps({"predictions": [legacy_rule.predict(i) for i in instances]}), media_type="application/json")

    return app
