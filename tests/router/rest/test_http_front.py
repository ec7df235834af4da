"""The HTTP front through the router's own HTTP server on loopback: TF Serving bodies, headers, errors, outcomes, weights API, docs.

Every request goes over real HTTP (httpx) to `router.rest.server.HttpServer`, the one way into
the router's REST API, with in-test backends behind it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from router.core import Router
from router.rest.app import create_app
from router.rest.server import HttpServer
from router.signing import Signer
from tests.router.fakes import fake_factory, make_config
from tests.support.processes import free_port

TOKEN = "s3cret"
ROW = {"state": "KS", "total_day_minutes": 120.5}
PREDICT_PATHS = ("/v1/models/{name}:predict", "/v1/models/{name}/versions/{version}:predict", "/v1/models/{name}/labels/{label}:predict")


@contextmanager
def serve(router: Router, admin_token: str | None) -> Iterator[httpx.Client]:
    """An httpx client of an `HttpServer` over `router`, served on its own event loop in a thread."""
    loop = asyncio.new_event_loop()
    server = HttpServer(router, create_app(router, admin_token), "127.0.0.1", free_port())
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10), "the HTTP server did not start"
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client:
            client.router_ = router  # type: ignore[attr-defined]
            yield client
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(grace=1), loop).result(10)
        asyncio.run_coroutine_threadsafe(router.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture()
def client():
    router = Router(make_config(0.5, router={"max_body_bytes": 2048, "max_batch_size": 8}), signer=Signer(b"k"), backend_factory=fake_factory)
    with serve(router, TOKEN) as c:
        c.get("/readyz")  # fetches the signature
        yield c


def test_predict_row_and_columnar_formats(client):
    for path in ("/v1/models/churn:predict", "/v1/models/churn/versions/2:predict", "/v1/models/churn/labels/stable:predict"):
        r = client.post(path, json={"instances": [ROW, ROW]}, headers={"X-Unit-Id": "user-7"})
        assert r.status_code == 200, r.text
        arm = r.headers["X-Modelramp-Arm"]
        assert arm == client.router_.assign("user-7")
        assert r.json() == {"predictions": [0.25, 0.25] if arm == "model" else [1.0, 1.0]}
        assert client.router_.signer.verify(r.headers["X-Modelramp-Outcome-Id"]).arm == arm
    r = client.post("/v1/models/churn:predict", json={"inputs": {"state": ["KS"], "total_day_minutes": [1.0]}})
    assert r.status_code == 200 and list(r.json()) == ["outputs"]


def test_both_arms_answer_in_the_same_shape(client):
    shapes = {}
    for i in range(40):
        r = client.post("/v1/models/churn:predict", json={"instances": [ROW]}, headers={"X-Unit-Id": f"u{i}"})
        shapes[r.headers["X-Modelramp-Arm"]] = (sorted(r.json()), type(r.json()["predictions"][0]), sorted(r.headers.keys()))
    assert len(shapes) == 2 and shapes["legacy"] == shapes["model"]


@pytest.mark.parametrize("body, status, message", [
    (b"{not json", 400, "malformed JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (json.dumps({"instances": [{"state": "KS"}]}).encode(), 400, "missing input"),
    (json.dumps({"instances": [{**ROW, "color": "red"}]}).encode(), 400, "unknown input"),
    (json.dumps({"instances": [{**ROW, "total_day_minutes": "lots"}]}).encode(), 400, "expects numbers"),
    (json.dumps({"instances": [{**ROW, "state": 5}]}).encode(), 400, "expects strings"),
    (json.dumps({"instances": [ROW] * 9}).encode(), 400, "larger than the limit of 8"),
    (json.dumps({"instances": []}).encode(), 400, "non-empty"),
    (json.dumps({"instances": [ROW], "signature_name": "other"}).encode(), 404, "unknown signature"),
    (json.dumps({"instances": [ROW] * 2, "pad": "x" * 3000}).encode(), 413, "larger than the limit of 2048"),
])
def test_bad_inputs_get_4xx_and_are_counted(client, body, status, message):
    r = client.post("/v1/models/churn:predict", content=body, headers={"Content-Type": "application/json", "X-Unit-Id": "u1"})
    assert r.status_code == status and message in r.json()["error"]
    metrics = client.get("/metrics").text
    assert 'protocol="http"' in metrics and f'code="{status}"' in metrics


def test_unknown_model_is_404(client):
    assert client.post("/v1/models/nope:predict", json={"instances": [ROW]}).status_code == 404


def test_outcomes_accept_signed_and_reject_forged(client):
    rid = client.post("/v1/models/churn:predict", json={"instances": [ROW]}).headers["X-Modelramp-Outcome-Id"]
    assert client.post("/v1/outcomes", json={"request_id": rid, "success": True}).json() == {"accepted": 1, "duplicates": 0}
    assert client.post("/v1/outcomes", json=[{"request_id": rid, "success": True}]).json() == {"accepted": 0, "duplicates": 1}
    tampered = rid.replace(".model.", ".legacy.") if ".model." in rid else rid.replace(".legacy.", ".model.")
    assert client.post("/v1/outcomes", json={"request_id": tampered, "success": True}).status_code == 403
    assert client.post("/v1/outcomes", json={"request_id": "made-up", "success": True}).status_code == 400
    assert client.post("/v1/outcomes", content=b"nope").status_code == 400


def test_weights_api_needs_the_token_and_validates(client):
    url = "/v1/experiments/churn-test/weights"
    assert client.put(url, json={"weights": {"model": 0.2}}).status_code == 401
    assert client.put(url, json={"weights": {"model": 0.2}}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.put(url, json={"weights": {"model": 1.5}}, headers=auth).status_code == 400
    assert client.put(url, json={"weights": {"legacy": 0.5, "model": 0.6}}, headers=auth).status_code == 400
    assert client.put("/v1/experiments/other/weights", json={"weights": {"model": 0.2}}, headers=auth).status_code == 404
    # This app has no files to write through (tests/router/test_weights_api.py has): 409, nothing changed.
    r = client.put(url, json={"weights": {"model": 0.2}}, headers=auth)
    assert r.status_code == 409 and "modelramp ramp" in r.json()["error"]
    assert client.get("/v1/experiments/churn-test").json()["weights"]["model"] == 0.5


def test_weights_api_off_without_token():
    router = Router(make_config(0.5), signer=Signer(b"k"), backend_factory=fake_factory)
    with serve(router, None) as c:
        assert c.put("/v1/experiments/churn-test/weights", json={"weights": {"model": 0.2}}, headers={"Authorization": "Bearer x"}).status_code == 403


def test_experiments_probes_docs_metadata(client):
    listing = client.get("/v1/experiments").json()["experiments"]
    assert listing[0]["name"] == "churn-test" and "counts" in listing[0] and "config" in listing[0]
    assert client.get("/v1/experiments/nope").status_code == 404
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["signature_known"]
    assert "/v1/models/{name}:predict" in client.get("/openapi.json").json()["paths"]
    meta = client.get("/v1/models/churn/metadata").json()
    assert meta["model_spec"]["version"] == "2"
    assert meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]["state"]["dtype"] == "DT_STRING"


def test_ready_while_either_backend_answers(client):
    """Readiness is "this replica can answer" (router.core.Router.readiness): the model arm still answers without legacy."""
    client.get("/readyz")  # fetches the signature
    client.router_.state.backends["legacy"].fail = RuntimeError("down")
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["backends"] == {"legacy": False, "model": True}
    client.router_.state.backends["model"].fail = RuntimeError("down")
    assert client.get("/readyz").status_code == 503


def test_openapi_documents_predict(client):
    """Predict is answered outside FastAPI but documented with the other routes (/docs shows it)."""
    schema = client.get("/openapi.json").json()
    for path in PREDICT_PATHS:
        operation = schema["paths"][path]["post"]
        assert operation["tags"] == ["predict"]
        assert {(p["name"], p["in"]) for p in operation["parameters"]} >= {("name", "path"), ("X-Unit-Id", "header")}
        assert operation["requestBody"]["required"] and "instances" in operation["requestBody"]["content"]["application/json"]["schema"]["example"]
        assert {"200", "400", "413"} <= operation["responses"].keys()
    assert {"/v1/outcomes", "/v1/experiments/{name}/weights", "/metrics", "/readyz"} <= schema["paths"].keys()
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text


def test_one_body_limit_for_every_route(client):
    """The server's limit answers 413 for routes FastAPI serves too, declared or chunked, before any handler runs."""
    big = json.dumps({"request_id": "x" * 3000, "success": True}).encode()
    r = client.post("/v1/outcomes", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "larger than the limit of 2048" in r.json()["error"]
    chunked = client.post("/v1/outcomes", content=iter([big[:1000], big[1000:]]))  # no Content-Length: counted as it arrives
    assert chunked.status_code == 413 and "larger than the limit of 2048" in chunked.json()["error"]
    weights = client.put("/v1/experiments/churn-test/weights", content=b" " * 3000, headers={"Authorization": f"Bearer {TOKEN}"})
    assert weights.status_code == 413
    r = client.post("/v1/models/churn:predict", content=iter([b'{"instances": [', b" " * 3000, b"]}"]))
    assert r.status_code == 413 and "larger than the limit of 2048" in r.json()["error"]
    # Just under the limit is read whole, and the connection goes on.
    assert client.post("/v1/outcomes", content=b" " * 2000 + b'{"request_id": "made-up", "success": true}').status_code == 400
    assert client.get("/v1/experiments/churn-test").json()["weights"]["model"] == 0.5


def test_request_id_echoed_and_trace_context_passed_to_the_backend(client):
    """X-Request-Id comes back as sent; it and W3C trace context reach the arm's backend; the signed id has its own header."""
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    router = client.router_
    for i in range(20):  # both arms
        r = client.post("/v1/models/churn:predict", json={"instances": [ROW]},
                        headers={"X-Unit-Id": f"u{i}", "X-Request-Id": f"client-{i}", "traceparent": traceparent, "tracestate": "a=1"})
        assert r.status_code == 200 and r.headers["X-Request-Id"] == f"client-{i}"
        backend = router.state.backends[r.headers["X-Modelramp-Arm"]]
        assert backend.forwarded[-1] == {"x-request-id": f"client-{i}", "traceparent": traceparent, "tracestate": "a=1"}
        assert router.signer.verify(r.headers["X-Modelramp-Outcome-Id"]).arm == r.headers["X-Modelramp-Arm"]
    assert all(b.forwarded for b in router.state.backends.values()), "both arms were called with them"
    plain = client.post("/v1/models/churn:predict", json={"instances": [ROW]})
    assert "X-Request-Id" not in plain.headers, "no id is made up"
    assert router.state.backends[plain.headers["X-Modelramp-Arm"]].forwarded[-1] == {}, "nothing left over from earlier requests"
    bad = client.post("/v1/models/churn:predict", json={"nonsense": 1}, headers={"X-Request-Id": "err-1"})
    assert bad.status_code == 400 and bad.headers["X-Request-Id"] == "err-1", "errors echo it too"
    # An id that is not printable ASCII is dropped, not refused and not echoed garbled: the prediction is answered.
    odd = client.post("/v1/models/churn:predict", json={"instances": [ROW]}, headers={"X-Request-Id": "caf\xe9-1".encode("latin-1")})
    assert odd.status_code == 200 and "X-Request-Id" not in odd.headers
    assert router.state.backends[odd.headers["X-Modelramp-Arm"]].forwarded[-1] == {}


def test_outcome_report_is_503_with_retry_after_while_the_ledger_is_down(client):
    ledger = client.router_.outcomes.ledger
    rid = client.post("/v1/models/churn:predict", json={"instances": [ROW]}).headers["X-Modelramp-Outcome-Id"]
    ledger.failing = "database restarting"
    r = client.post("/v1/outcomes", json={"request_id": rid, "success": True})
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1 and "unavailable" in r.json()["error"]
    assert client.get("/readyz").status_code == 200, "readiness does not depend on the ledger"
    ledger.failing = None
    assert client.post("/v1/outcomes", json={"request_id": rid, "success": True}).json() == {"accepted": 1, "duplicates": 0}
