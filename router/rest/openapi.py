"""The router's OpenAPI document: every route's real status codes and bodies, predict's paths, the weights route's bearer scheme.

FastAPI documents the routes it serves from their decorators, which take their `responses`
from here; predict and outcome reports, answered by `router.rest.server` outside FastAPI, are
added by hand (`PREDICT_OPENAPI_PATHS`, `OUTCOMES_OPENAPI_PATH`). Every error is TF Serving's `{"error": message}` (`ErrorBody`), never
FastAPI's `{"detail": ...}`: the app's exception handlers answer that body for unknown routes
(404), wrong methods (405) and unparseable path parameters (400), so FastAPI's generated 422
entries, which no request ever gets, are taken out of the document (`finish`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

BEARER = "bearerToken"  # the security scheme's name in components.securitySchemes
_ERROR_REF = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}


class ErrorBody(BaseModel):
    """TF Serving's error body, on every error of every route."""

    error: str


class VersionStatusBody(BaseModel):
    error_code: str
    error_message: str


class ModelVersionStatus(BaseModel):
    version: str  # an int64, which protobuf's JSON mapping writes as a string
    state: Literal["UNKNOWN", "START", "LOADING", "AVAILABLE", "UNLOADING", "END"]
    status: VersionStatusBody


class ModelStatusBody(BaseModel):
    """TF Serving's GetModelStatusResponse in its JSON mapping, as the model arm's server answered it."""

    model_version_status: list[ModelVersionStatus]


class OutcomesAccepted(BaseModel):
    accepted: int
    duplicates: int


class Readiness(BaseModel):
    ready: bool
    backends: dict[str, bool]
    signature_known: bool


def errors(**codes: str) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses` for error codes (`e400="..."`), each with TF Serving's error body."""
    return {int(code[1:]): {"description": text, "model": ErrorBody} for code, text in codes.items()}


def ok(model: type[BaseModel], description: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"description": description, "model": model}}


_ROW_EXAMPLE = {"state": "KS", "area_code": "area_code_415", "international_plan": "no", "voice_mail_plan": "yes",
                "account_length": 128, "number_vmail_messages": 25, "total_day_minutes": 265.1}
_PREDICT_BODY = {"type": "object", "description": "TF Serving REST predict body: `instances` (rows) or `inputs` (columns), "
                                                  "optional `signature_name`.",
                 "properties": {"instances": {"type": "array", "items": {}}, "inputs": {}, "signature_name": {"type": "string"}},
                 "example": {"instances": [_ROW_EXAMPLE]}}
_PREDICT_ANSWER = {"type": "object", "description": "`predictions` (rows) for an `instances` body, `outputs` (columns) for `inputs`.",
                   "properties": {"predictions": {"type": "array", "items": {}}, "outputs": {}}}


OUTCOME = {"type": "object", "required": ["request_id", "success"], "additionalProperties": False,
           "properties": {"request_id": {"type": "string", "maxLength": 256, "description": "The predict answer's X-Modelramp-Outcome-Id"},
                          "success": {"type": "boolean"}}}
OUTCOMES_BODY = {"description": "One outcome or a list of them (at most 10,000, all or nothing)",
                 "oneOf": [OUTCOME, {"type": "array", "items": OUTCOME, "minItems": 1, "maxItems": 10_000}],
                 "example": {"request_id": "...", "success": True}}
WEIGHTS_BODY = {"type": "object", "required": ["weights"],
                "properties": {"weights": {"type": "object", "description": "Arm weights; one given, the other is its complement",
                                           "properties": {"legacy": {"type": "number"}, "model": {"type": "number"}}}},
                "example": {"weights": {"legacy": 0.95, "model": 0.05}}}
EXPERIMENT = {"type": "object", "required": ["name", "model_name", "weights", "counts", "config"],
              "properties": {"name": {"type": "string"}, "model_name": {"type": "string"},
                             "weights": {"type": "object", "additionalProperties": {"type": "number"}},
                             "circuit_breaker": {"type": "object"}, "counts": {"type": "object"},
                             "signature": {"type": ["object", "null"]}, "config": {"type": "object"},
                             "redacted": {"type": "array", "items": {"type": "string"},
                                          "description": "Paths into the answer whose values were left out (null): the salt and "
                                                         "backend addresses and headers, without the admin bearer token"}}}


def _predict_operation(summary: str, operation_id: str, extra_path_parameters: list[dict[str, Any]]) -> dict[str, Any]:
    """The OpenAPI operation of one predict path, as `router.rest.predict` answers it."""
    return {"post": {
        "tags": ["predict"], "summary": summary, "operationId": operation_id,
        "parameters": [
            NAME, *extra_path_parameters,
            {"name": "X-Unit-Id", "in": "header", "required": False, "schema": {"type": "string"},
             "description": "The randomisation unit (e.g. user id); without it the request is randomised on its own."},
            {"name": "X-Request-Id", "in": "header", "required": False, "schema": {"type": "string"},
             "description": "The client's correlation id: echoed, and passed on to the arm's backend (as are `traceparent` "
                            "and `tracestate`)."},
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _PREDICT_BODY}}},
        "responses": {
            "200": {"description": "TF Serving's answer. Headers `X-Modelramp-Arm` (the assigned arm), `X-Modelramp-Outcome-Id` "
                                   "(signed; report the outcome with it) and the client's `X-Request-Id`, echoed.",
                    "content": {"application/json": {"schema": _PREDICT_ANSWER}}},
            "400": {"description": "The body does not fit the model's signature, or is not JSON", "content": _ERROR_REF},
            "404": {"description": "Unknown model or signature", "content": _ERROR_REF},
            "413": {"description": "The body is larger than `router.max_body_bytes`", "content": _ERROR_REF},
            "500": {"description": "An error in the router", "content": _ERROR_REF},
            "503": {"description": "No arm could answer; held off by a circuit breaker, with `Retry-After` (seconds until "
                                   "the breaker probes its backend again)", "content": _ERROR_REF,
                    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds before a retry can help "
                                                                                             "(only from an open breaker)"}}},
            "504": {"description": "No answer within the deadline", "content": _ERROR_REF},
        }}}


NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "title": "Name"}}
VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "integer", "title": "Version"}}
LABEL = {"name": "label", "in": "path", "required": True, "schema": {"type": "string", "title": "Label"}}
PREDICT_OPENAPI_PATHS: dict[str, dict[str, Any]] = {
    "/v1/models/{name}:predict": _predict_operation(
        "Predict (TF Serving REST), assigned to an arm by X-Unit-Id", "predict_latest", []),
    "/v1/models/{name}/versions/{version}:predict": _predict_operation(
        "Predict; the experiment decides the version that answers", "predict_version", [VERSION]),
    "/v1/models/{name}/labels/{label}:predict": _predict_operation(
        "Predict; the experiment decides the version that answers", "predict_label", [LABEL]),
}


OUTCOMES_OPENAPI_PATH: dict[str, dict[str, Any]] = {"/v1/outcomes": {"post": {
    "tags": ["outcomes"], "summary": "Report outcomes for signed request ids (X-Modelramp-Outcome-Id)", "operationId": "outcomes",
    "requestBody": {"required": True, "content": {"application/json": {"schema": OUTCOMES_BODY}}},
    "responses": {
        "200": {"description": "Recorded: how many were new, how many already recorded",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OutcomesAccepted"}}}},
        "400": {"description": "Not a report: bad JSON, fields, list size or request id", "content": _ERROR_REF},
        "403": {"description": "A request id that is forged, expired, dated beyond the clock-skew allowance ahead, of another "
                               "experiment, or issued under another salt (the message names the outcome and why; nothing of the "
                               "report is counted)", "content": _ERROR_REF},
        "413": {"description": "The body is larger than `router.max_body_bytes`", "content": _ERROR_REF},
        "500": {"description": "An error in the router", "content": _ERROR_REF},
        "503": {"description": "The outcome ledger cannot be written now: nothing was counted, retry after `Retry-After` "
                               "seconds", "content": _ERROR_REF,
                "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying"}}},
    }}}}


def finish(schema: dict[str, Any]) -> None:
    """Complete FastAPI's document in place: predict's and outcomes' paths, the bearer scheme, no 422 that never happens."""
    schema["paths"] = {**PREDICT_OPENAPI_PATHS, **OUTCOMES_OPENAPI_PATH, **schema["paths"]}
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["OutcomesAccepted"] = OutcomesAccepted.model_json_schema()
    components.setdefault("securitySchemes", {})[BEARER] = {
        "type": "http", "scheme": "bearer", "description": "The router's admin token (`--admin-token-file` or MODELRAMP_WEIGHTS_TOKEN)"}
    for path in schema["paths"].values():
        for operation in path.values():
            operation["responses"].pop("422", None)
    for name in ("HTTPValidationError", "ValidationError"):
        components.get("schemas", {}).pop(name, None)
