"""NaN, a missing number, is answered alike on both arms: 200 whichever arm a unit is in, in any feature,
the legacy rule's three numbers included; infinities are the client's 400 on both arms (real processes)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from serving.tfserving import protos
from serving.tfserving.grpc_client import build_predict_request
from tests.router.stack import experiment, grpc_inputs, start_router
from tests.router.test_hostile_input import codes_by_arm, families, json_row, post

RULE_NUMBERS = ("number_customer_service_calls", "total_day_minutes", "total_intl_minutes")


@pytest.fixture(scope="module")
def half(tmp_path_factory, model_server, legacy_server):
    r = start_router(tmp_path_factory.mktemp("nan"), experiment(legacy_server.url, model_server.grpc_target, 0.5))
    yield r
    r.process.stop()


@pytest.mark.parametrize("features", [RULE_NUMBERS, ("total_intl_charge",), (RULE_NUMBERS[0],)])
def test_nan_is_a_missing_number_on_both_arms(half, features):
    before = codes_by_arm(families(half)[2])
    arms = set()
    for i in range(40):
        r = post(half, json_row(**dict.fromkeys(features, "NaN")), f"nan-{'-'.join(features)}-{i}")
        assert r.status_code == 200, (r.headers.get("X-Modelramp-Arm"), r.text)
        arms.add(r.headers["X-Modelramp-Arm"])
    assert arms == {"legacy", "model"}  # both arms answered it
    after = codes_by_arm(families(half)[2])
    changed = {k for k, v in after.items() if v != before.get(k, 0)}
    assert changed <= {("legacy", "200"), ("model", "200")}, changed


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity"])
def test_an_infinite_rule_number_is_a_400_on_both_arms(half, literal):
    for i in range(30):
        r = post(half, json_row(total_day_minutes=literal), f"inf-rule-{literal}-{i}")
        assert r.status_code == 400 and "finite" in r.text, r.text
    _, _, samples = families(half)
    assert sum(v for lab, v in samples.get("modelramp_backend_errors_total", [])) == 0



def test_grpc_nan_is_a_missing_number_on_both_arms(half):
    """Over gRPC the legacy arm gets the NaN as the JSON literal `NaN`, which the legacy system takes."""
    with grpc.insecure_channel(half.grpc_target) as channel:
        predict = channel.unary_unary(protos.PREDICT_METHOD, request_serializer=protos.PredictRequest.SerializeToString,
                                      response_deserializer=protos.PredictResponse.FromString)
        arms = set()
        for i in range(40):
            inputs = grpc_inputs()
            for name in RULE_NUMBERS:
                inputs[name] = np.array([np.nan], dtype=np.float32)
            response, call = predict.with_call(build_predict_request("churn", inputs), metadata=(("x-unit-id", f"gnan-{i}"),), timeout=10)
            assert response.outputs
            arms.add(dict(call.trailing_metadata())["x-modelramp-arm"])
    assert arms == {"legacy", "model"}
