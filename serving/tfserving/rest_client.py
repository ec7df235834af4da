"""Blocking REST client for TF Serving's REST API (and anything that speaks it: the router).

One pooled httpx connection pool per base URL; a deadline per call; a failed connection (the
request never reached a server) is retried, a timeout or an HTTP error never is.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import httpx
import numpy as np

from serving.tfserving import errors

RETRY_BACKOFF_S = 0.05


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [v.decode() if isinstance(v, bytes) else v for v in value.tolist()] if value.dtype == object else value.tolist()
    return value


def _path(model_name: str, version: int | None, version_label: str | None) -> str:
    if version is not None and version_label is not None:
        raise errors.InvalidArgument("give a model version or a version label, not both")
    path = f"/v1/models/{model_name}"
    if version is not None:
        path += f"/versions/{int(version)}"
    elif version_label is not None:
        path += f"/labels/{version_label}"
    return path


class RestClient:
    """TF Serving REST calls against `base_url` (e.g. http://127.0.0.1:8501)."""

    def __init__(self, base_url: str, timeout: float = 2.0, retries: int = 2, headers: Mapping[str, str] | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=dict(headers or {}))

    def _send(self, method: str, path: str, timeout: float | None, **kwargs: Any) -> httpx.Response:
        """The response, retrying refused connections within the deadline."""
        deadline = time.monotonic() + (timeout or self.timeout)
        attempt = 0
        while True:
            try:
                return self._http.request(method, path, timeout=max(deadline - time.monotonic(), 0.001), **kwargs)
            except httpx.ConnectError as err:
                if attempt == self.retries or deadline - time.monotonic() <= RETRY_BACKOFF_S:
                    raise errors.Unavailable(f"cannot connect to {self.base_url}: {err}") from None
                attempt += 1
                time.sleep(RETRY_BACKOFF_S * attempt)
            except httpx.TimeoutException:
                raise errors.DeadlineExceeded(f"{method} {self.base_url}{path} took longer than {timeout or self.timeout:g}s") from None

    def _request(self, method: str, path: str, timeout: float | None = None, **kwargs: Any) -> httpx.Response:
        response = self._send(method, path, timeout, **kwargs)
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise errors.from_http_status(response.status_code, message)
        return response

    def predict_json(self, model_name: str, body: Mapping[str, Any], *, version: int | None = None,
                     version_label: str | None = None, timeout: float | None = None, headers: Mapping[str, str] | None = None) -> httpx.Response:
        """POST a ready-made TF Serving body; returns the raw response (headers included)."""
        return self._request("POST", _path(model_name, version, version_label) + ":predict", timeout, json=body, headers=headers)

    def predict(self, model_name: str, instances: list | None = None, *, inputs: Mapping[str, Any] | None = None,
                signature_name: str | None = None, **spec) -> Any:
        """Row format (`instances`) returns `predictions`; columnar (`inputs`) returns `outputs`."""
        if (instances is None) == (inputs is None):
            raise errors.InvalidArgument("give instances (row format) or inputs (columnar format)")
        if inputs is not None:
            inputs = {k: _jsonable(v) for k, v in inputs.items()}
        body: dict[str, Any] = {"instances": instances} if instances is not None else {"inputs": inputs}
        if signature_name:
            body["signature_name"] = signature_name
        data = self.predict_json(model_name, body, **spec).json()
        return data["predictions"] if instances is not None else data["outputs"]

    def status(self, model_name: str, version: int | None = None, version_label: str | None = None) -> list[dict[str, Any]]:
        body: dict[str, list[dict[str, Any]]] = self._request("GET", _path(model_name, version, version_label)).json()
        return body["model_version_status"]

    def metadata(self, model_name: str, version: int | None = None, version_label: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = self._request("GET", _path(model_name, version, version_label) + "/metadata").json()
        return body

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
