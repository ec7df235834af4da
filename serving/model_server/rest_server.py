"""The model server's REST front, following TF Serving's REST API.

`GET /v1/models/{name}[/versions/{v}|/labels/{l}]` (status), `.../metadata`, and
`POST ...:predict` in row (`instances`) and columnar (`inputs`) formats; every error is
`{"error": message}` with TF Serving's HTTP status. Status and metadata bodies are the official
protos rendered with protobuf's JSON mapping, as TF Serving renders them.
"""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from google.protobuf import json_format
from starlette.exceptions import HTTPException as StarletteHTTPException
from tensorflow_serving.apis import get_model_metadata_pb2

from serving.model_server.dataplane import DataPlane
from serving.model_server.grpc_server import status_response
from serving.tfserving.errors import InvalidArgument, UserFacingError
from serving.tfserving.rest_format import format_predict_response, parse_predict_body


def _version(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit():
        raise InvalidArgument(f"version must be a non-negative integer, got {value!r}")
    return int(value)


def _json(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def build_rest_app(plane: DataPlane) -> FastAPI:
    app = FastAPI(title="modelramp model server (TF Serving REST API)", docs_url=None, redoc_url=None)

    @app.exception_handler(UserFacingError)
    async def _user_error(request: Request, err: UserFacingError):
        return JSONResponse({"error": str(err)}, status_code=err.http_status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        return JSONResponse({"error": f"Malformed request: {request.method} {request.url.path}: {err.detail}"}, status_code=err.status_code)

    def status(name: str, version: int | None = None, label: str | None = None):
        if label is not None:
            version = plane.resolve(name, label=label).version
        return _json(status_response(plane, name, version))

    def metadata(name: str, version: int | None = None, label: str | None = None):
        servable = plane.resolve(name, version, label)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for key, sig in servable.signature_defs.items():
            sig_map.signature_def[key].CopyFrom(sig)
        return {"model_spec": {"name": servable.name, "signature_name": "", "version": str(servable.version)},
                "metadata": {"signature_def": _json(sig_map)}}

    async def predict(request: Request, name: str, version: int | None = None, label: str | None = None):
        servable = plane.resolve(name, version, label)
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InvalidArgument(f"JSON Parse error: {err}") from None
        signature_name = body.get("signature_name") if isinstance(body, dict) else None
        _, info = servable.signature(signature_name if isinstance(signature_name, str) else None)
        signature_name, inputs, row_format = parse_predict_body(body, {k: v.dtype for k, v in info.inputs.items()})
        _, outputs = await plane.predict(servable, signature_name, inputs)
        return Response(json.dumps(format_predict_response(outputs, row_format)), media_type="application/json")

    app.get("/v1/models/{name}")(lambda name: status(name))
    app.get("/v1/models/{name}/versions/{version}")(lambda name, version: status(name, _version(version)))
    app.get("/v1/models/{name}/labels/{label}")(lambda name, label: status(name, label=label))
    app.get("/v1/models/{name}/metadata")(lambda name: metadata(name))
    app.get("/v1/models/{name}/versions/{version}/metadata")(lambda name, version: metadata(name, _version(version)))
    app.get("/v1/models/{name}/labels/{label}/metadata")(lambda name, label: metadata(name, label=label))

    @app.post("/v1/models/{name}:predict")
    async def _predict(request: Request, name: str):
        return await predict(request, name)

    @app.post("/v1/models/{name}/versions/{version}:predict")
    async def _predict_version(request: Request, name: str, version: str):
        return await predict(request, name, _version(version))

    @app.post("/v1/models/{name}/labels/{label}:predict")
    async def _predict_label(request: Request, name: str, label: str):
        return await predict(request, name, label=label)

    return app
