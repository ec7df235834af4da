"""TF Serving (or `modelramp serve-model`) over its REST API: deployments that expose only REST, and `tfserving_grpc`'s REST rows.

It speaks through the same keep-alive HTTP/1.1 client as the legacy backend (`router.backends.http1`),
so the router has one HTTP client on its request path.

A REST client's row-format request (`PredictCall.rows`, already checked against the signature) is
sent on as TF Serving's row format, and the `predictions` that come back become the answer's
columns as JSON numbers (`ColumnOutputs`), as a legacy answer does: no numpy on either side unless
something asks for arrays. Anything else (gRPC clients' tensors, columnar bodies, outputs that are
not one finite number per row) takes the array path, TF Serving's columnar format.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import numpy as np
from google.protobuf import json_format

from router.backends.base import (
    Backend,
    BadResponse,
    ColumnOutputs,
    ModelMetadata,
    PredictCall,
    Prediction,
    forwarded,
)
from router.backends.http1 import Http1Pool
from router.config import TfServingRestSpec
from router.rest import json_codec
from router.signature import Signature, TensorSpec
from serving.tfserving import errors, protos
from serving.tfserving.rest_format import format_predict_response
from serving.tfserving.tensors import NUMPY_BY_DTYPE


class TfServingRestBackend(Backend):
    kind = "tfserving_rest"

    def __init__(self, config: TfServingRestSpec, max_connections: int = 256):
        self.config = config
        self.timeout = config.timeout_ms / 1000.0
        base = f"/v1/models/{config.model_name}"
        if config.version is not None:
            base += f"/versions/{config.version}"
        elif config.version_label is not None:
            base += f"/labels/{config.version_label}"
        self._base = base
        self._max_connections = max_connections
        self._pool: Http1Pool | None = None
        Http1Pool(config.url)  # a URL the client cannot use is a configuration error now, not at the first request

    def _client(self) -> Http1Pool:
        if self._pool is None:
            self._pool = Http1Pool(self.config.url, self._max_connections)
        return self._pool

    async def _request(self, method: str, path: str, timeout: float, body: bytes = b"") -> dict[str, Any]:
        extra = forwarded()
        # Header values came from the client's request as parsed by httptools: no CR or LF in them.
        lines = b"".join(b"%s: %s\r\n" % (k.encode("latin-1"), v.encode("latin-1")) for k, v in extra) if extra else b""
        try:
            status, payload = await self._client().request(method, path, body, timeout, lines)
        except (asyncio.TimeoutError, TimeoutError):
            raise errors.DeadlineExceeded("model server (REST) did not answer in time") from None
        except OSError as err:  # refused, reset, closed (ConnectionError is an OSError)
            raise errors.Unavailable(f"model server (REST) unreachable: {err}") from None
        try:
            answer = json_codec.loads(payload)
        except ValueError:
            raise BadResponse(f"model server (REST) answered HTTP {status} with a body that is not JSON") from None
        if status != 200:
            raise errors.from_http_status(status, f"model server: {answer.get('error', '') if isinstance(answer, dict) else answer}")
        if not isinstance(answer, dict):
            raise BadResponse("model server (REST) answered a JSON value that is not an object")
        return answer

    async def predict(self, call: PredictCall, timeout: float) -> Prediction:
        if call.rows is not None and call.outputs:
            return await self._predict_rows(call, call.rows, call.outputs, timeout)
        # Columnar format: one list per input, so one JSON array per feature instead of per row.
        columns = format_predict_response(dict(call.inputs), row_format=False)["outputs"]
        if not isinstance(columns, dict):
            columns = {next(iter(call.inputs)): columns}
        body = {"signature_name": self.config.signature_name, "inputs": columns}
        answer = await self._request("POST", f"{self._base}:predict", min(timeout, self.timeout), json.dumps(body).encode())
        outputs = answer.get("outputs")
        if outputs is None:
            raise BadResponse("model server (REST) answer has no 'outputs'")
        if not isinstance(outputs, dict):
            if call.outputs is None or len(call.outputs) != 1:
                raise BadResponse("model server (REST) answered one unnamed output; the signature is unknown")
            outputs = {next(iter(call.outputs)): outputs}
        specs = call.outputs or {}
        try:
            return Prediction({name: np.asarray(value, dtype=NUMPY_BY_DTYPE.get(specs[name].dtype) if name in specs else None)
                               for name, value in outputs.items()})
        except (TypeError, ValueError) as err:
            raise BadResponse(f"model server (REST) outputs do not fit the signature: {err}") from None

    async def _predict_rows(self, call: PredictCall, rows: list[Any], specs: Mapping[str, TensorSpec], timeout: float) -> Prediction:
        body = json_codec.dumps({"signature_name": self.config.signature_name, "instances": rows})
        answer = await self._request("POST", f"{self._base}:predict", min(timeout, self.timeout), body)
        predictions = answer.get("predictions")
        if not isinstance(predictions, list) or len(predictions) != len(rows):
            raise BadResponse(f"model server (REST) must answer {len(rows)} prediction(s) under 'predictions'")
        names = list(specs)
        if len(names) == 1:  # TF Serving's row format: a value per row for a single output ...
            columns = {names[0]: predictions}
        else:  # ... an object of outputs per row for several
            try:
                columns = {name: [p[name] for p in predictions] for name in names}
            except (KeyError, TypeError):
                raise BadResponse(f"model server (REST) predictions are not objects of the outputs {names}") from None
        dtypes = {name: NUMPY_BY_DTYPE.get(spec.dtype) for name, spec in specs.items()}
        floats = {name: dtype for name, dtype in dtypes.items() if dtype is not None and dtype.kind == "f"}
        if len(floats) == len(dtypes):
            fast = ColumnOutputs.from_numbers(columns, floats)  # one finite number per row and output: no numpy
            if fast is not None:
                return Prediction(fast)
        try:
            return Prediction({name: np.asarray(values, dtype=dtypes[name]) for name, values in columns.items()})
        except (TypeError, ValueError) as err:
            raise BadResponse(f"model server (REST) predictions do not fit the signature: {err}") from None

    async def metadata(self, timeout: float) -> ModelMetadata:
        answer = await self._request("GET", f"{self._base}/metadata", timeout)
        try:
            version = int(answer["model_spec"]["version"]) if answer.get("model_spec", {}).get("version") else None
            defs = answer["metadata"]["signature_def"]["signature_def"]
            parsed = {name: {"inputs": _tensors(sig.get("inputs", {})), "outputs": _tensors(sig.get("outputs", {}))}
                      for name, sig in defs.items()}
        except (KeyError, TypeError, ValueError) as err:
            raise BadResponse(f"model server (REST) metadata is not TF Serving's: {err!r}") from None
        return ModelMetadata(Signature.from_metadata(parsed, self.config.signature_name, version))

    async def model_status(self, version: int | None, label: str | None, timeout: float) -> Any:
        # The client's version or label, not the pinned one: TF Serving answers for what was asked.
        path = f"/v1/models/{quote(self.config.model_name, safe='')}"
        if version is not None:
            path += f"/versions/{version}"
        elif label is not None:
            path += f"/labels/{quote(label, safe='')}"
        answer = await self._request("GET", path, timeout)
        try:
            return json_format.ParseDict(answer, protos.GetModelStatusResponse(), ignore_unknown_fields=True)
        except json_format.ParseError as err:
            raise BadResponse(f"model server (REST) status is not TF Serving's: {err}") from None

    async def close(self) -> None:
        self.close_now()

    def close_now(self) -> None:
        """Close the kept-alive connections (no await needed: nothing is flushed)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def _tensors(infos: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """TF Serving's JSON TensorInfo map -> {name: {"dtype": "DT_FLOAT", "shape": [-1] or None}}."""
    out: dict[str, dict[str, Any]] = {}
    for name, info in infos.items():
        shape = info.get("tensor_shape", {})
        dims = None if shape.get("unknown_rank") else [int(d.get("size", 0)) for d in shape.get("dim", [])]
        out[name] = {"dtype": info["dtype"], "shape": dims}
    return out
