"""Locust load for the router: HTTP users (TF Serving REST) and gRPC users (PredictionService), both reporting outcomes.

    ROUTER_GRPC=127.0.0.1:8090 locust -f loadtests/locustfile.py --headless \\
        --host http://127.0.0.1:8080 -u 50 -r 10 -t 60s

Hosts come from the environment: `--host` (or LOCUST_HOST) for HTTP, ROUTER_GRPC for gRPC,
MODEL_NAME (default churn). Each simulated user is one unit (`X-Unit-Id` / `x-unit-id`), so its
arm is sticky; about half of the answers get an outcome report. Thresholds below fail the run
(exit code 1). Never import this module in the pytest process: locust monkey-patches with
gevent (see NOTES.md); run it as a subprocess.
"""

from __future__ import annotations

import os
import random
import sys
import time
import uuid
from pathlib import Path

import grpc
import grpc.experimental.gevent as grpc_gevent
import numpy as np
from locust import FastHttpUser, User, between, events, task

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serving.tfserving import protos
from serving.tfserving.grpc_client import build_predict_request

grpc_gevent.init_gevent()  # grpc's C core must cooperate with gevent's loop

MODEL = os.environ.get("MODEL_NAME", "churn")
GRPC_TARGET = os.environ.get("ROUTER_GRPC", "127.0.0.1:8090")
OUTCOME_SHARE = 0.5

# Thresholds: no client errors at all (the model arm may fail, clients must not see it),
# and the router's answers stay fast on loopback. MODELRAMP_LOCUST_MAX_P99_MS overrides the
# latency one (the test suite's 5-second smoke run checks the scenario, not the machine's speed).
MAX_FAIL_RATIO = 0.0
MAX_P99_MS = float(os.environ.get("MODELRAMP_LOCUST_MAX_P99_MS", "50"))

ROWS = [
    {"state": "KS", "area_code": "area_code_415", "international_plan": "no", "voice_mail_plan": "yes", "account_length": 128,
     "number_vmail_messages": 25, "total_day_minutes": 265.1, "total_day_calls": 110, "total_day_charge": 45.07,
     "total_eve_minutes": 197.4, "total_eve_calls": 99, "total_eve_charge": 16.78, "total_night_minutes": 244.7,
     "total_night_calls": 91, "total_night_charge": 11.01, "total_intl_minutes": 10.0, "total_intl_calls": 3,
     "total_intl_charge": 2.7, "number_customer_service_calls": 1},
    {"state": "NY", "area_code": "area_code_408", "international_plan": "yes", "voice_mail_plan": "no", "account_length": 84,
     "number_vmail_messages": 0, "total_day_minutes": 299.4, "total_day_calls": 71, "total_day_charge": 50.9,
     "total_eve_minutes": 61.9, "total_eve_calls": 88, "total_eve_charge": 5.26, "total_night_minutes": 196.9,
     "total_night_calls": 89, "total_night_charge": 8.86, "total_intl_minutes": 6.6, "total_intl_calls": 7,
     "total_intl_charge": 1.78, "number_customer_service_calls": 2},
    {"state": "OH", "area_code": "area_code_510", "international_plan": "no", "voice_mail_plan": "no", "account_length": 75,
     "number_vmail_messages": 0, "total_day_minutes": 166.7, "total_day_calls": 113, "total_day_charge": 28.34,
     "total_eve_minutes": 148.3, "total_eve_calls": 122, "total_eve_charge": 12.61, "total_night_minutes": 186.9,
     "total_night_calls": 121, "total_night_charge": 8.41, "total_intl_minutes": 10.1, "total_intl_calls": 3,
     "total_intl_charge": 2.73, "number_customer_service_calls": 5},
]


def grpc_request(row: dict):
    inputs = {k: np.array([v.encode()], dtype=object) if isinstance(v, str) else np.array([v], dtype=np.float32) for k, v in row.items()}
    return build_predict_request(MODEL, inputs)


GRPC_REQUESTS = [grpc_request(r) for r in ROWS]


class RestClientUser(FastHttpUser):
    """A TF Serving REST client pointed at the router."""

    wait_time = between(0.01, 0.05)

    def on_start(self) -> None:
        self.unit = f"http-{uuid.uuid4().hex[:12]}"

    @task
    def predict(self) -> None:
        with self.client.post(f"/v1/models/{MODEL}:predict", json={"instances": [random.choice(ROWS)]},
                              headers={"X-Unit-Id": self.unit}, name="predict (REST)", catch_response=True) as r:
            if r.status_code != 200 or "predictions" not in (r.json() or {}):
                r.failure(f"HTTP {r.status_code}: {r.text[:200]}")
                return
            request_id = r.headers.get("X-Modelramp-Outcome-Id")
        if request_id and random.random() < OUTCOME_SHARE:
            self.client.post("/v1/outcomes", json={"request_id": request_id, "success": random.random() < 0.8}, name="outcome")


class GrpcClientUser(User):
    """A TF Serving gRPC client pointed at the router (locust has no gRPC user: requests are reported by hand)."""

    wait_time = between(0.01, 0.05)

    def on_start(self) -> None:
        self.unit = f"grpc-{uuid.uuid4().hex[:12]}"
        self.channel = grpc.insecure_channel(GRPC_TARGET)
        self.predict_rpc = self.channel.unary_unary(protos.PREDICT_METHOD, request_serializer=protos.PredictRequest.SerializeToString,
                                                    response_deserializer=protos.PredictResponse.FromString)
        self.outcomes = self.environment.host or os.environ.get("LOCUST_HOST", "http://127.0.0.1:8080")

    def on_stop(self) -> None:
        self.channel.close()

    @task
    def predict(self) -> None:
        start = time.perf_counter()
        error: Exception | None = None
        trailing = {}
        try:
            response, call = self.predict_rpc.with_call(random.choice(GRPC_REQUESTS), metadata=(("x-unit-id", self.unit),), timeout=5)
            trailing = dict(call.trailing_metadata())
            size = response.ByteSize()
        except grpc.RpcError as err:
            error, size = err, 0
        events.request.fire(request_type="grpc", name="Predict (gRPC)", response_time=(time.perf_counter() - start) * 1000,
                            response_length=size, exception=error, context={})
        request_id = trailing.get("x-modelramp-outcome-id")  # str: bytes only under a "-bin" key
        if isinstance(request_id, str) and request_id and random.random() < OUTCOME_SHARE:
            import urllib.request  # noqa: PLC0415

            body = f'{{"request_id": "{request_id}", "success": {"true" if random.random() < 0.8 else "false"}}}'.encode()
            start = time.perf_counter()
            error = None
            try:
                urllib.request.urlopen(urllib.request.Request(f"{self.outcomes}/v1/outcomes", data=body,
                                                              headers={"Content-Type": "application/json"}), timeout=5).read()
            except OSError as err:
                error = err
            events.request.fire(request_type="POST", name="outcome (after gRPC)", response_time=(time.perf_counter() - start) * 1000,
                                response_length=0, exception=error, context={})


@events.quitting.add_listener
def check_thresholds(environment, **_) -> None:
    """Fail the run (exit code 1) when a threshold above is crossed."""
    total = environment.stats.total
    if total.num_requests == 0:
        environment.process_exit_code = 1
        print("threshold: no requests were made")
        return
    p99 = total.get_response_time_percentile(0.99)
    if total.fail_ratio > MAX_FAIL_RATIO or p99 > MAX_P99_MS:
        environment.process_exit_code = 1
        print(f"threshold crossed: fail ratio {total.fail_ratio:.4f} (max {MAX_FAIL_RATIO}), p99 {p99:.1f} ms (max {MAX_P99_MS})")
