"""REST conformance: plain HTTP and JSON, as a TF Serving REST user would send them."""

import httpx
import numpy as np
import pytest

from serving.training import dataset
from tests.serving.model_server.conformance import external_target


@pytest.fixture(scope="module")
def http(request, models_dir):
    target = external_target()
    url = target[1] if target else request.getfixturevalue("model_server").rest_url
    with httpx.Client(base_url=url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def instances(models_dir):
    return dataset.to_instances(dataset.read_split(models_dir / "data", "validation").head(4))


def test_status_and_metadata(http):
    ok = {"error_code": "OK", "error_message": ""}
    assert http.get("/v1/models/churn").json() == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": ok}, {"version": "2", "state": "AVAILABLE", "status": ok}]}
    assert http.get("/v1/models/churn/labels/stable").json()["model_version_status"][0]["version"] == "1"
    assert http.get("/v1/models/churn/versions/3").status_code == 404
    meta = http.get("/v1/models/churn/metadata").json()
    assert meta["model_spec"]["name"] == "churn" and meta["model_spec"]["version"] == "2"
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["state"]["dtype"] == "DT_STRING" and sig["outputs"]["probability"]["dtype"] == "DT_FLOAT"


def test_row_and_columnar_formats_agree(http, instances):
    rows = http.post("/v1/models/churn:predict", json={"instances": instances})
    assert rows.status_code == 200, rows.text
    predictions = rows.json()["predictions"]
    assert len(predictions) == 4 and all(0 <= p <= 1 for p in predictions)
    columns = {k: [i[k] for i in instances] for k in instances[0]}
    outputs = http.post("/v1/models/churn:predict", json={"inputs": columns}).json()["outputs"]
    np.testing.assert_allclose(outputs, predictions, rtol=1e-6)
    v1 = http.post("/v1/models/churn/versions/1:predict", json={"instances": instances}).json()["predictions"]
    stable = http.post("/v1/models/churn/labels/stable:predict", json={"instances": instances}).json()["predictions"]
    assert v1 == stable and v1 != predictions


def test_rest_and_grpc_give_the_same_answer(model_server, instances, models_dir):
    from serving.tfserving.grpc_client import PredictionClient

    rest = httpx.post(f"{model_server.rest_url}/v1/models/churn:predict", json={"instances": instances}).json()["predictions"]
    frame = dataset.read_split(models_dir / "data", "validation").head(4)
    with PredictionClient(model_server.grpc_target) as client:
        grpc_out = client.predict("churn", dataset.to_columns(frame))["probability"]
    np.testing.assert_allclose(grpc_out, rest, rtol=1e-6)


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 400, "JSON"),
    (b'{"instances": []}', 400, "instances"),
    (b'{"instances": [{"state": "KS"}]}', 400, "missing input"),
    (b'{"instances": [1, 2]}', 400, "several inputs"),
    (b'{"inputs": {}, "instances": []}', 400, "exactly one"),
])
def test_bad_bodies_get_json_errors(http, body, status, words):
    r = http.post("/v1/models/churn:predict", content=body)
    assert r.status_code == status and words in r.json()["error"]


def test_wrong_types_and_unknown_models(http, instances):
    bad = [dict(instances[0], total_day_minutes="lots")]
    r = http.post("/v1/models/churn:predict", json={"instances": bad})
    assert r.status_code == 400 and "total_day_minutes" in r.json()["error"]
    extra = [dict(instances[0], surprise=1.0)]
    r = http.post("/v1/models/churn:predict", json={"instances": extra})
    assert r.status_code == 400 and "surprise" in r.json()["error"]
    r = http.post("/v1/models/nope:predict", json={"instances": instances})
    assert r.status_code == 404 and "nope" in r.json()["error"]
    assert http.get("/v1/models/churn/labels/nightly").status_code == 404
