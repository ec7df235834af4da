"""The router in front of a legacy system with a foreign API, over mutual TLS, through the file's mappings only.

Real processes on loopback: `modelramp legacy --api foreign` over HTTPS (a CA made at test time,
client certificates required), insisting on an API key and a tenant header (401 otherwise); the
model server; and routers whose `legacy_http` backend maps the two APIs onto each other.
"""

from __future__ import annotations

import grpc
import httpx
import pytest

from serving.tfserving import protos
from serving.tfserving.grpc_client import build_predict_request
from serving.tfserving.tensors import from_tensor_proto
from serving.training import dataset
from tests.conftest import Server
from tests.router.stack import ROW, experiment, grpc_inputs, start_router
from tests.support.processes import Process, free_port, wait_until
from tests.support.tls import Pki, make_test_pki

PREDICT = "/v1/models/churn:predict"
API_KEY = "k-3f9a-test-only"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("secret") / "api-key"
    path.write_text(API_KEY + "\n")  # as a Secret mounted from `kubectl create secret --from-file` often ends
    return path


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory, pki: Pki, key_file):
    port = free_port()
    proc = Process(["legacy", "--api", "foreign", "--host", "127.0.0.1", "--port", str(port),
                    "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key), "--tls-client-ca", str(pki.ca),
                    "--api-key-file", str(key_file), "--require-header", "X-Tenant"],
                   tmp_path_factory.mktemp("logs") / f"foreign-{port}.log")
    server = Server(proc, http_port=port)
    context = pki.client_context()
    try:
        wait_until(lambda: httpx.get(f"https://127.0.0.1:{port}/status", verify=context, timeout=2).status_code == 200,
                   timeout=60, what="foreign legacy system ready", proc=proc.proc)
    except Exception:
        print(proc.log())
        proc.stop()
        raise
    yield server
    proc.stop()


def mapped_backend(port: int, pki: Pki, key_file, **override) -> dict:
    backend = {"kind": "legacy_http", "url": f"https://127.0.0.1:{port}", "path": "/api/v2/score", "method": "POST",
               "health": {"path": "/status", "expect_status": 200},
               "headers": {"X-Api-Key": {"file": str(key_file)}, "X-Client": "modelramp"},
               "forward_headers": ["X-Tenant"],
               "tls": {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)},
               "request": "{customers: instances}",
               "response": {"probability": "results[*].churn_score"},
               "timeout_ms": 2000}
    backend.update(override)
    return backend


def direct_score(foreign: Server, pki: Pki, row: dict) -> float:
    r = httpx.post(f"https://127.0.0.1:{foreign.http_port}/api/v2/score", json={"customers": [row]},
                   headers={"X-Api-Key": API_KEY, "X-Tenant": "acme"}, verify=pki.client_context(), timeout=5)
    return r.json()["results"][0]["churn_score"]


def legacy_only(model_server, backend: dict) -> dict:
    doc = experiment("http://unused", model_server.grpc_target, 0.0)
    doc["arms"]["legacy"]["backend"] = backend
    return doc


@pytest.fixture()
def rows(models_dir):
    live = dataset.read_split(models_dir / "data", "live")
    picked = dataset.to_instances(live.head(40))
    assert {r["number_customer_service_calls"] >= 4 for r in picked} == {True, False}, "both answers of the rule are asked for"
    return picked


def test_mapped_answers_equal_the_foreign_systems_own(tmp_path, model_server, foreign, pki, key_file, rows):
    base = f"https://127.0.0.1:{foreign.http_port}"
    with httpx.Client(verify=pki.client_context(), timeout=5) as direct:
        own = direct.post(f"{base}/api/v2/score", json={"customers": rows}, headers={"X-Api-Key": API_KEY, "X-Tenant": "acme"})
        assert own.status_code == 200, own.text
        expected = [r["churn_score"] for r in own.json()["results"]]
        assert set(expected) == {0.0, 1.0}
        # The system checks what the router must send: without either header it refuses.
        assert direct.post(f"{base}/api/v2/score", json={"customers": rows}, headers={"X-Tenant": "acme"}).status_code == 401
        assert direct.post(f"{base}/api/v2/score", json={"customers": rows}, headers={"X-Api-Key": API_KEY}).status_code == 401
    with pytest.raises(httpx.TransportError):  # and over TLS only with a client certificate (TLS 1.3: refused after the handshake)
        httpx.get(f"{base}/status", verify=pki.client_context(with_certificate=False), timeout=5)

    router = start_router(tmp_path, legacy_only(model_server, mapped_backend(foreign.http_port, pki, key_file)))
    try:
        with httpx.Client(base_url=router.url, timeout=10) as client:
            r = client.post(PREDICT, json={"instances": rows}, headers={"X-Unit-Id": "u-1", "X-Tenant": "acme"})
            assert r.status_code == 200, r.text
            assert r.headers["X-Modelramp-Arm"] == "legacy"
            assert r.json()["predictions"] == expected
            row_score = client.post(PREDICT, json={"instances": [ROW]}, headers={"X-Unit-Id": "u-0", "X-Tenant": "acme"}).json()["predictions"][0]
            assert row_score == direct_score(foreign, pki, ROW)
            # Row by row too: the mapping holds for a batch of one.
            for row, score in zip(rows[:5], expected[:5], strict=True):
                one = client.post(PREDICT, json={"instances": [row]}, headers={"X-Unit-Id": "u-2", "X-Tenant": "acme"})
                assert one.json()["predictions"] == [score]
            # The tenant is the client's to give: without it the foreign system refuses the router's call.
            refused = client.post(PREDICT, json={"instances": rows[:1]}, headers={"X-Unit-Id": "u-3"})
            assert refused.status_code == 401, refused.text
            assert "missing header" in refused.json()["error"]

        # gRPC front: the tenant arrives as metadata and is forwarded the same way.
        with grpc.insecure_channel(router.grpc_target) as channel:
            predict = channel.unary_unary(protos.PREDICT_METHOD, request_serializer=protos.PredictRequest.SerializeToString,
                                          response_deserializer=protos.PredictResponse.FromString)
            answer = predict(build_predict_request("churn", grpc_inputs(2)), metadata=(("x-unit-id", "g-1"), ("x-tenant", "acme")), timeout=10)
            assert from_tensor_proto(answer.outputs["probability"]).tolist() == [row_score, row_score]
    finally:
        router.process.stop()


def test_an_answer_that_does_not_map_is_a_502_naming_the_expression(tmp_path, model_server, foreign, pki, key_file, rows):
    doc = legacy_only(model_server, mapped_backend(foreign.http_port, pki, key_file))
    router = start_router(tmp_path, doc)
    cases = {"scores": "gave nothing (null)",  # a missing field
             "results[*].churn_probability": "gave 0 value(s)",  # a projection drops what is missing: a wrong count
             "results[0].churn_score": "not a list of 3",  # one value for three rows
             "results[*].at_risk": "not a float32 value",  # the wrong type
             "results[*].reasons": "not a float32 value"}  # lists for an output of one number per row
    try:
        with httpx.Client(base_url=router.url, timeout=10) as client:
            for n, (expression, words) in enumerate(cases.items(), start=1):
                doc["arms"]["legacy"]["backend"]["response"] = {"probability": expression}
                router.write_config(doc)  # hot reload: a new backend with the new mapping
                wait_until(lambda n=n: router.metric("modelramp_config_reloads_total", result="applied") == n, timeout=30, what="reload")
                r = client.post(PREDICT, json={"instances": rows[:3]}, headers={"X-Unit-Id": "u", "X-Tenant": "acme"})
                assert r.status_code == 502, r.text
                assert expression in r.json()["error"] and words in r.json()["error"], r.text
                assert router.metric("modelramp_backend_errors_total", arm="legacy", reason="bad_response") == n
                assert client.get("/healthz").status_code == 200, "the router is still up"
        log = router.process.log()
        assert all(expression in log for expression in cases), log[-2000:]
    finally:
        router.process.stop()


def test_a_router_whose_secret_file_is_missing_does_not_start(tmp_path, model_server, foreign, pki, key_file):
    backend = mapped_backend(foreign.http_port, pki, key_file, headers={"X-Api-Key": {"file": str(tmp_path / "absent")}})
    with pytest.raises(RuntimeError):
        start_router(tmp_path, legacy_only(model_server, backend), ready_path="/healthz")
    logs = "".join(p.read_text() for p in tmp_path.glob("router-*.log"))
    assert "arms.legacy.backend.headers.X-Api-Key.file" in logs and "absent" in logs
