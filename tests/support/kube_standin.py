"""A stand-in for the Kubernetes API server, ConfigMaps only, because no real API server can run here.

It speaks the part of the Kubernetes REST API that the ConfigMap weight store uses, closely enough
for the official `kubernetes` Python client to talk to it unchanged (pointed at it with
`Configuration(host=...)`):

- `GET   /api/v1/namespaces/{ns}/configmaps/{name}`: the object, or a 404 `Status`;
- `PATCH /api/v1/namespaces/{ns}/configmaps/{name}` with `application/merge-patch+json` or
  `application/strategic-merge-patch+json` (for a ConfigMap's string maps the two merge alike):
  applies the patch, bumps `metadata.resourceVersion`, and answers 409 Conflict when the patch
  carries a `metadata.resourceVersion` that is no longer current, as the real server does;
  other patch types get 415;
- `POST  /api/v1/namespaces/{ns}/configmaps`: creates the object in the body (its namespace must be
  the path's), answering 201, or 409 AlreadyExists when one of that name exists, as the real server does;
- a bearer token, when configured, is required (401 otherwise).

It is not a Kubernetes: no watch, no admission, no validation beyond what this test needs.
Requests are kept in `requests` so tests can check what the client sent.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.processes import free_port

_PATH = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/configmaps/(?P<name>[^/?]+)(\?.*)?$")
_COLLECTION = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/configmaps/?(\?.*)?$")
PATCH_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge key by key, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class KubeStandin:
    """The stand-in API server on a free loopback port; `url` is what `Configuration(host=)` takes."""

    def __init__(self, token: str | None = None):
        self.token = token
        self.configmaps: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._version = 100
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        # A short poll interval: close() returns promptly instead of after half a second.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def put_configmap(self, namespace: str, name: str, data: dict[str, str], labels: dict[str, str] | None = None,
                      annotations: dict[str, str] | None = None) -> dict[str, Any]:
        """Create or replace a ConfigMap directly (test set-up, a `helm upgrade` writing its objects, another writer racing us)."""
        with self._lock:
            obj: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "data": dict(data),
                   "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{namespace}-{name}",
                                "resourceVersion": self._next_version(),
                                "creationTimestamp": "2026-11-23T09:00:00Z"}}
            if labels:
                obj["metadata"]["labels"] = dict(labels)
            if annotations:
                obj["metadata"]["annotations"] = dict(annotations)
            self.configmaps[(namespace, name)] = obj
            return obj

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                standin.requests.append({"method": self.command, "path": self.path,
                                         "content_type": self.headers.get("Content-Type"),
                                         "authorization": self.headers.get("Authorization")})
                if standin.token and self.headers.get("Authorization") != f"Bearer {standin.token}":
                    self._send(401, _status(401, "Unauthorized", "Unauthorized"))
                    return False
                return True

            def _route(self) -> tuple[str, str] | None:
                if not self._authorized():
                    return None
                match = _PATH.match(self.path)
                if not match:
                    self._send(404, _status(404, "NotFound", f"the server could not find the requested resource {self.path}"))
                    return None
                return match["ns"], match["name"]

            def do_GET(self) -> None:
                key = self._route()
                if key is None:
                    return
                with standin._lock:
                    obj = standin.configmaps.get(key)
                if obj is None:
                    self._send(404, _status(404, "NotFound", f'configmaps "{key[1]}" not found'))
                else:
                    self._send(200, obj)

            def do_POST(self) -> None:
                if not self._authorized():
                    return
                match = _COLLECTION.match(self.path)
                if not match:
                    self._send(404, _status(404, "NotFound", f"the server could not find the requested resource {self.path}"))
                    return
                try:
                    obj = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                    name = obj["metadata"]["name"]
                except (ValueError, KeyError, TypeError):
                    self._send(400, _status(400, "BadRequest", "body is not a ConfigMap with metadata.name"))
                    return
                if obj["metadata"].get("namespace", match["ns"]) != match["ns"]:
                    self._send(400, _status(400, "BadRequest",
                                            "the namespace of the provided object does not match the namespace sent on the request"))
                    return
                with standin._lock:
                    if (match["ns"], name) in standin.configmaps:
                        self._send(409, _status(409, "AlreadyExists", f'configmaps "{name}" already exists'))
                        return
                    obj["metadata"].update({"namespace": match["ns"], "uid": f"uid-{match['ns']}-{name}",
                                            "resourceVersion": standin._next_version(), "creationTimestamp": "2026-11-23T09:00:00Z"})
                    standin.configmaps[(match["ns"], name)] = obj
                self._send(201, obj)

            def do_PATCH(self) -> None:
                key = self._route()
                if key is None:
                    return
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
                if content_type not in PATCH_TYPES:
                    self._send(415, _status(415, "UnsupportedMediaType", f"the stand-in does not take {content_type!r}"))
                    return
                try:
                    patch = json.loads(raw)
                except ValueError:
                    self._send(400, _status(400, "BadRequest", "patch body is not JSON"))
                    return
                with standin._lock:
                    obj = standin.configmaps.get(key)
                    if obj is None:
                        self._send(404, _status(404, "NotFound", f'configmaps "{key[1]}" not found'))
                        return
                    wanted = (patch.get("metadata") or {}).get("resourceVersion")
                    if wanted is not None and wanted != obj["metadata"]["resourceVersion"]:
                        self._send(409, _status(409, "Conflict", f'Operation cannot be fulfilled on configmaps "{key[1]}": '
                                                "the object has been modified; please apply your changes to the latest version and try again"))
                        return
                    updated = merge_patch(obj, patch)
                    updated["metadata"]["resourceVersion"] = standin._next_version()
                    standin.configmaps[key] = updated
                self._send(200, updated)

        return Handler
