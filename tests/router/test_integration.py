"""The router as a real process between the real model server and the real legacy system, on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from scipy import stats

from router.assignment import assign
from router.signing import Signer
from serving.tfserving import protos
from serving.tfserving.grpc_client import build_predict_request
from tests.conftest import start_model_server
from tests.router.stack import (
    ROW,
    SIGNING_KEY,
    TOKEN,
    experiment,
    grpc_inputs,
    start_router,
)
from tests.support.binaries import require_binary
from tests.support.processes import free_port, wait_until

PREDICT = "/v1/models/churn:predict"


@pytest.fixture()
def make_router(tmp_path, model_server, legacy_server):
    started = []

    def make(model_weight: float, model_target: str | None = None, **extra):
        router = start_router(tmp_path, experiment(legacy_server.url, model_target or model_server.grpc_target, model_weight, **extra))
        started.append(router)
        return router

    yield make
    for router in started:
        router.process.stop()


def arms_of(client: httpx.Client, units, body=None) -> dict[str, str]:
    out = {}
    for unit in units:
        r = client.post(PREDICT, json=body or {"instances": [ROW]}, headers={"X-Unit-Id": unit})
        assert r.status_code == 200, r.text
        out[unit] = r.headers["X-Modelramp-Arm"]
    return out


def test_split_matches_weights_and_assignment(make_router):
    router = make_router(0.2)
    units = [f"user-{i}" for i in range(1500)]
    with httpx.Client(base_url=router.url) as client:
        arms = arms_of(client, units)
    expected = {u: assign("it-salt", u, {"legacy": 0.8, "model": 0.2}) for u in units}
    assert arms == expected, "every replica computes the same pure assignment"
    k = sum(a == "model" for a in arms.values())
    assert stats.binomtest(k, len(units), 0.2).pvalue > 0.001
    assert router.metric("modelramp_requests_total", arm="model", code="200") == k
    assert router.metric("modelramp_traffic_weight", arm="model") == 0.2


def test_sticky_and_nested_across_hot_reloads(make_router, legacy_server, model_server):
    router = make_router(0.05)
    units = [f"u-{i}" for i in range(400)]
    with httpx.Client(base_url=router.url) as client:
        at_5 = arms_of(client, units)
        assert arms_of(client, units) == at_5, "sticky: the same unit gets the same arm"

        # PUT with the bearer token, no restart
        r = client.put("/v1/experiments/churn-it/weights", json={"weights": {"model": 0.2}}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200
        at_20 = arms_of(client, units)
        assert {u for u, a in at_5.items() if a == "model"} <= {u for u, a in at_20.items() if a == "model"}

        # the file changes (as the ramp controller writes it), no restart
        router.write_config(experiment(legacy_server.url, model_server.grpc_target, 0.5))
        wait_until(lambda: router.weights()["model"] == 0.5, timeout=10, what="file reload")
        at_50 = arms_of(client, units)
        assert {u for u, a in at_20.items() if a == "model"} <= {u for u, a in at_50.items() if a == "model"}
        assert sum(a == "model" for a in at_50.values()) > sum(a == "model" for a in at_20.values())

        # an invalid file is rejected; the last good config stays and traffic flows
        router.config_path.write_text("name: churn-it\narms: {}\n")
        wait_until(lambda: router.metric("modelramp_config_reloads_total", source="file", result="rejected") >= 1, timeout=10, what="rejection")
        assert router.weights()["model"] == 0.5
        assert arms_of(client, units[:50]) == {u: at_50[u] for u in units[:50]}
    assert router.process.proc.poll() is None
    log = router.process.log()
    assert "model 0.05->0.2" in log and "model 0.2->0.5" in log and "rejected" in log


def test_fallback_when_the_model_server_dies_mid_load(make_router, models_dir, tmp_path):
    own = start_model_server(models_dir, tmp_path)  # our own: killing it must not hurt other tests
    try:
        router = make_router(0.5, model_target=own.grpc_target)
        answers, failures, stop = [], [], threading.Event()

        def rest_user(n: int) -> None:
            with httpx.Client(base_url=router.url, timeout=5) as client:
                i = 0
                while not stop.is_set():
                    r = client.post(PREDICT, json={"instances": [ROW]}, headers={"X-Unit-Id": f"t{n}-{i}"})
                    (answers if r.status_code == 200 else failures).append((r.status_code, r.text[:200]))
                    i += 1

        def grpc_user() -> None:
            with grpc.insecure_channel(router.grpc_target) as channel:
                predict = channel.unary_unary(protos.PREDICT_METHOD, request_serializer=protos.PredictRequest.SerializeToString,
                                              response_deserializer=protos.PredictResponse.FromString)
                request = build_predict_request("churn", grpc_inputs())
                i = 0
                while not stop.is_set():
                    try:
                        predict(request, metadata=(("x-unit-id", f"g-{i}"),), timeout=5)
                        answers.append((200, "grpc"))
                    except grpc.RpcError as err:
                        failures.append((err.code().name, err.details()))
                    i += 1

        users = [threading.Thread(target=rest_user, args=(n,)) for n in range(3)] + [threading.Thread(target=grpc_user)]
        for t in users:
            t.start()
        try:
            wait_until(lambda: router.metric("modelramp_requests_total", arm="model") >= 50, timeout=60, what="model-arm traffic")
            own.process.kill()  # mid-load, no warning
            before = len(answers)
            wait_until(lambda: router.metric("modelramp_fallbacks_total", arm="model") >= 50 and len(answers) > before + 200,
                       timeout=60, what="fallback traffic after the kill")
        finally:
            stop.set()
            for t in users:
                t.join()
        assert failures == [], failures[:5]
        assert router.metric("modelramp_backend_errors_total", arm="model") >= 1
        assert router.metric("modelramp_requests_total", arm="model", code="OK") >= 1  # gRPC clients saw no error either
    finally:
        own.process.stop()


def test_outcomes_forged_tampered_expired(make_router):
    router = make_router(0.5, router={"outcome_ttl_seconds": 1.0})
    with httpx.Client(base_url=router.url) as client:
        rid = client.post(PREDICT, json={"instances": [ROW]}, headers={"X-Unit-Id": "o1"}).headers["X-Modelramp-Outcome-Id"]
        arm = rid.split(".")[1]
        assert client.post("/v1/outcomes", json={"request_id": rid, "success": True}).json() == {"accepted": 1, "duplicates": 0}
        assert client.post("/v1/outcomes", json={"request_id": rid, "success": True}).json() == {"accepted": 0, "duplicates": 1}
        other = "legacy" if arm == "model" else "model"
        assert client.post("/v1/outcomes", json={"request_id": rid.replace(f".{arm}.", f".{other}."), "success": True}).status_code == 403
        assert client.post("/v1/outcomes", json={"request_id": Signer(b"attacker").issue("churn-it", "model"), "success": True}).status_code == 403
        assert client.post("/v1/outcomes", json={"request_id": "churn-it.model.0.1.t.x.y", "success": True}).status_code == 403
        replica = Signer(SIGNING_KEY.encode())  # the right key, experiment and salt
        replica.follow(lambda: ("churn-it", "it-salt"))
        fresh = replica.issue("churn-it", "model", now=0)  # long expired
        r = client.post("/v1/outcomes", json={"request_id": fresh, "success": True})
        assert r.status_code == 403 and "expired" in r.json()["error"]
        # and our own id expires too: poll until the window has passed
        wait_until(lambda: client.post("/v1/outcomes", json={"request_id": rid, "success": False}).status_code == 403, timeout=10, what="expiry")
    assert router.metric("modelramp_outcomes_total", arm=arm, outcome="success") == 1
    assert router.metric("modelramp_outcomes_total", outcome="failure") == 0


BAD_REST = [
    ("malformed JSON", b'{"instances": [', 400),
    ("not an object", b"[]", 400),
    ("wrong feature name", json.dumps({"instances": [{**{k: v for k, v in ROW.items() if k != "state"}, "stat": "KS"}]}).encode(), 400),
    ("missing feature", json.dumps({"instances": [{k: v for k, v in ROW.items() if k != "state"}]}).encode(), 400),
    ("string for a number", json.dumps({"instances": [{**ROW, "total_day_minutes": "many"}]}).encode(), 400),
    ("number for a string", json.dumps({"instances": [{**ROW, "state": 7}]}).encode(), 400),
    ("nested value", json.dumps({"instances": [{**ROW, "total_day_minutes": [1, 2]}]}).encode(), 400),
    ("oversized batch", json.dumps({"instances": [ROW] * 300}).encode(), 400),
    ("oversized body", b'{"instances": [' + b" " * 2_000_000 + b"]}", 413),
    ("both formats", json.dumps({"instances": [ROW], "inputs": {}}).encode(), 400),
]


def test_bad_inputs_get_4xx_over_rest_and_grpc(make_router):
    router = make_router(0.5)
    with httpx.Client(base_url=router.url) as client:
        for what, body, status in BAD_REST:
            r = client.post(PREDICT, content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == status, (what, r.status_code, r.text)
            assert r.json()["error"], what
        assert client.post("/v1/models/other:predict", json={"instances": [ROW]}).status_code == 404
        # An integer no tensor can hold, on both arms (ten units, weight 0.5): a 400, never a 500.
        huge = json.dumps({"instances": [{**ROW, "total_day_minutes": 10**400}]}).encode()
        for unit in range(10):
            r = client.post(PREDICT, content=huge, headers={"Content-Type": "application/json", "X-Unit-Id": f"huge-{unit}"})
            assert r.status_code == 400 and "total_day_minutes" in r.json()["error"], (r.status_code, r.text)
    assert router.metric("modelramp_requests_total", protocol="http", code="400") == 19
    assert router.metric("modelramp_requests_total", protocol="http", code="413") == 1
    assert router.metric("modelramp_requests_total", protocol="http", code="500") == 0

    good = grpc_inputs()
    bad_grpc = {
        "missing input": build_predict_request("churn", {k: v for k, v in good.items() if k != "state"}),
        "wrong dtype": build_predict_request("churn", {**good, "total_day_minutes": np.array([1.0], np.float64)}),
        "unknown input": build_predict_request("churn", {**good, "colour": np.array([b"red"], dtype=object)}),
        "batch mismatch": build_predict_request("churn", {**good, "state": np.array([b"KS", b"NY"], dtype=object)}),
    }
    with grpc.insecure_channel(router.grpc_target) as channel:
        predict = channel.unary_unary(protos.PREDICT_METHOD, request_serializer=protos.PredictRequest.SerializeToString,
                                      response_deserializer=protos.PredictResponse.FromString)
        for what, request in bad_grpc.items():
            with pytest.raises(grpc.RpcError) as err:
                predict(request, timeout=5)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, what
        with pytest.raises(grpc.RpcError) as err:
            predict(build_predict_request("other", good), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert router.metric("modelramp_requests_total", protocol="grpc", code="INVALID_ARGUMENT") == 4


def test_official_tensorflow_serving_client_works_unchanged(make_router):
    """The test process uses TF Serving's own stubs (with TensorFlow); the router stays TensorFlow-free."""
    tf = pytest.importorskip("tensorflow")
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    router = make_router(0.5)
    seen = {}
    with grpc.insecure_channel(router.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "churn"
        request.model_spec.signature_name = "serving_default"
        for name, value in ROW.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto([value], dtype=tf.string if isinstance(value, str) else tf.float32))
        for i in range(30):
            response, call = stub.Predict.with_call(request, metadata=(("x-unit-id", f"tf-{i}"),), timeout=10)
            trailing = dict(call.trailing_metadata())
            probability = tf.make_ndarray(response.outputs["probability"])
            assert probability.shape == (1,) and 0.0 <= probability[0] <= 1.0
            seen[trailing["x-modelramp-arm"]] = (sorted(response.outputs), response.model_spec.name, response.model_spec.version.value)
            assert Signer(SIGNING_KEY.encode()).verify(trailing["x-modelramp-outcome-id"]).arm == trailing["x-modelramp-arm"]
        meta_request = get_model_metadata_pb2.GetModelMetadataRequest()
        meta_request.model_spec.name = "churn"
        meta_request.metadata_field.append("signature_def")
        meta = stub.GetModelMetadata(meta_request, timeout=10)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        meta.metadata["signature_def"].Unpack(sig_map)
        assert len(sig_map.signature_def["serving_default"].inputs) == 19
    assert set(seen) == {"legacy", "model"} and seen["legacy"] == seen["model"], "the arms look the same to a client"


def test_real_router_metrics_footprint_and_no_tensorflow(make_router):
    promtool = require_binary("promtool")
    router = make_router(0.5)
    with httpx.Client(base_url=router.url) as client:
        for i in range(200):
            rid = client.post(PREDICT, json={"instances": [ROW]}, headers={"X-Unit-Id": f"m{i}"}).headers["X-Modelramp-Outcome-Id"]
            client.post("/v1/outcomes", json={"request_id": rid, "success": i % 3 == 0})
        text = client.get("/metrics").content
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    pid = router.process.proc.pid
    maps = Path(f"/proc/{pid}/maps").read_text()
    assert "tensorflow" not in maps, "the router process must not load TensorFlow"
    rss_kb = int(next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS")).split()[1])
    assert rss_kb < 150 * 1024, f"router RSS {rss_kb / 1024:.0f} MB"


@pytest.mark.slow
def test_locustfile_runs_headless(make_router, tmp_path):
    """The locust scenario (HTTP and gRPC users, outcome reports) against a real router, as a subprocess (NOTES.md)."""
    import os
    import shutil

    locust = shutil.which("locust", path=str(Path(sys.executable).parent)) or shutil.which("locust")
    if locust is None:
        pytest.skip("locust is not installed")
    router = make_router(0.5)
    result = subprocess.run([locust, "-f", "loadtests/locustfile.py", "--headless", "--host", router.url, "-u", "6", "-r", "6",
                             "-t", "5s", "--only-summary"], cwd=Path(__file__).parents[2], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "ROUTER_GRPC": router.grpc_target,
                                              # latency is for `make loadtest`, not a timed test on a shared machine
                                              "MODELRAMP_LOCUST_MAX_P99_MS": "10000"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert router.metric("modelramp_requests_total", protocol="grpc", code="OK") > 0
    assert router.metric("modelramp_requests_total", protocol="http", code="200") > 0
    assert router.metric("modelramp_outcomes_total") > 0


def test_rest_rows_take_the_rest_port_and_grpc_tensors_stay_on_grpc(tmp_path, model_server, legacy_server):
    """`tfserving_grpc` with `rest_port`: REST clients' rows go to TF Serving's REST API, gRPC clients' tensors over gRPC.

    The second router's `rest_port` leads nowhere: its REST rows fail over to the legacy system
    (the model arm's fallback), while its gRPC clients are still answered by the model. Were the
    rows sent over gRPC, both kinds would be answered by the model alike.
    """
    def router_with(rest_port: int):
        doc = experiment(legacy_server.url, model_server.grpc_target, 1.0)
        doc["arms"]["model"]["backend"]["rest_port"] = rest_port
        return start_router(tmp_path, doc)

    def grpc_predict(router) -> None:
        with grpc.insecure_channel(router.grpc_target) as channel:
            predict = channel.unary_unary(protos.PREDICT_METHOD, request_serializer=protos.PredictRequest.SerializeToString,
                                          response_deserializer=protos.PredictResponse.FromString)
            _, call = predict.with_call(build_predict_request("churn", grpc_inputs()), metadata=(("x-unit-id", "g-1"),), timeout=10)
            assert dict(call.trailing_metadata())["x-modelramp-arm"] == "model"

    right, wrong = router_with(model_server.rest_port), router_with(free_port())
    try:
        for body in ({"instances": [ROW]}, {"instances": [ROW, {**ROW, "state": "NY", "total_day_minutes": 310.5}]}):
            via = httpx.post(f"{right.url}{PREDICT}", json=body, headers={"X-Unit-Id": "rest-1"}, timeout=10)
            direct = httpx.post(f"{model_server.rest_url}{PREDICT}", json=body, timeout=10)
            assert (via.status_code, via.headers["X-Modelramp-Arm"], via.json()) == (200, "model", direct.json())
        grpc_predict(right)
        assert right.metric("modelramp_fallbacks_total") == 0

        r = httpx.post(f"{wrong.url}{PREDICT}", json={"instances": [ROW]}, headers={"X-Unit-Id": "rest-1"}, timeout=10)
        assert r.status_code == 200 and r.headers["X-Modelramp-Arm"] == "model"  # the arm assigned, answered by legacy
        assert wrong.metric("modelramp_fallbacks_total", arm="model") == 1
        assert wrong.metric("modelramp_backend_errors_total", arm="model", reason="unavailable") == 1
        grpc_predict(wrong)
        assert wrong.metric("modelramp_fallbacks_total", arm="model") == 1  # the gRPC call did not need one
    finally:
        right.process.stop()
        wrong.process.stop()


def test_model_arm_over_tf_serving_rest(tmp_path, model_server, legacy_server):
    """The REST model backend: the signature from /metadata, answers from :predict, no fallback needed."""
    doc = experiment(legacy_server.url, model_server.grpc_target, 1.0)
    doc["arms"]["model"]["backend"] = {"kind": "tfserving_rest", "url": model_server.rest_url, "model_name": "churn"}
    router = start_router(tmp_path, doc)
    try:
        with httpx.Client(base_url=router.url) as client:
            r = client.post(PREDICT, json={"instances": [ROW, ROW]}, headers={"X-Unit-Id": "rest-1"})
            assert r.status_code == 200 and r.headers["X-Modelramp-Arm"] == "model"
            predictions = r.json()["predictions"]
            assert len(predictions) == 2 and 0.0 <= predictions[0] <= 1.0 and predictions[0] not in (0.0, 1.0)
            # Rows go on as rows and the scores come back as the model server wrote them (no numpy between).
            other = {**ROW, "total_day_minutes": 310.5, "state": "NY"}
            for body in ({"instances": [ROW, other]}, {"instances": [{**ROW, "total_intl_minutes": float("nan")}]},
                         {"inputs": {k: [v, other[k]] for k, v in ROW.items()}}):
                via = client.post(PREDICT, content=json.dumps(body), headers={"X-Unit-Id": "rest-1", "Content-Type": "application/json"})
                direct = httpx.post(f"{model_server.rest_url}{PREDICT}", content=json.dumps(body), timeout=10)
                assert (via.status_code, via.headers["X-Modelramp-Arm"], via.json()) == (200, "model", direct.json()), body
            columnar = client.post(PREDICT, json={"inputs": {k: [v] for k, v in ROW.items()}}).json()
            assert list(columnar) == ["outputs"]
        assert router.metric("modelramp_fallbacks_total") == 0
    finally:
        router.process.stop()
