"""QA override: pinned unit ids are answered by their arm and counted under `<experiment>:qa`, never in the experiment's counts."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from router.config import ConfigError, parse_config
from router.signing import Signer
from tests.router.fakes import config_dict
from tests.router.stack import ROW, SIGNING_KEY, experiment, start_router

PREDICT = "/v1/models/churn:predict"


@pytest.mark.parametrize("qa, field", [
    ({"units": {"tester": "candidate"}}, "qa.units.tester"),
    ({"units": {"": "model"}}, "qa.units"),
    ({"unit": {"tester": "model"}}, "qa.unit"),
])
def test_a_bad_qa_section_is_refused_at_load_naming_the_field(qa: dict, field: str):
    with pytest.raises(ConfigError) as err:
        parse_config(config_dict(0.5, qa=qa))
    assert field in str(err.value)


def test_pinned_units_are_answered_by_their_arm_and_counted_apart(tmp_path: Path, model_server, legacy_server):
    # A generous deadline: the model's own answer is compared, never a fallback on a busy machine.
    doc = experiment(legacy_server.url, model_server.grpc_target, 0.0, qa={"units": {"qa-model": "model", "qa-legacy": "legacy"}},
                     router={"request_timeout_ms": 20_000})
    for arm in ("legacy", "model"):
        doc["arms"][arm]["backend"]["timeout_ms"] = 5_000
    router = start_router(tmp_path, doc)
    try:
        with httpx.Client(base_url=router.url, timeout=10) as client:
            answers = {unit: client.post(PREDICT, json={"instances": [ROW]}, headers={"X-Unit-Id": unit})
                       for unit in ("qa-model", "qa-legacy", "qa-model", "user-1")}
            assert all(r.status_code == 200 for r in answers.values())
            arms = {unit: r.headers["X-Modelramp-Arm"] for unit, r in answers.items()}
            assert arms == {"qa-model": "model", "qa-legacy": "legacy", "user-1": "legacy"}, "pinned, whatever the weights (model 0)"
            own = httpx.post(f"{model_server.rest_url}{PREDICT}", json={"instances": [ROW]}, timeout=10).json()
            assert answers["qa-model"].json() == own, "answered by the model itself"
            signer = Signer(SIGNING_KEY.encode())
            assert signer.verify(answers["qa-model"].headers["X-Modelramp-Outcome-Id"]).experiment == "churn-it:qa"
            assert signer.verify(answers["user-1"].headers["X-Modelramp-Outcome-Id"]).experiment == "churn-it"

            report = [{"request_id": answers[u].headers["X-Modelramp-Outcome-Id"], "success": True} for u in ("qa-model", "user-1")]
            assert client.post("/v1/outcomes", json=report).json() == {"accepted": 2, "duplicates": 0}
            counts = client.get("/v1/experiments/churn-it").json()["counts"]
        # Three QA requests (qa-model twice), one of the experiment's.
        assert router.metric("modelramp_requests_total", experiment="churn-it") == 1
        assert router.metric("modelramp_requests_total", experiment="churn-it:qa") == 3
        assert router.metric("modelramp_requests_total", experiment="churn-it:qa", arm="model") == 2
        assert router.metric("modelramp_fallbacks_total", experiment="churn-it") == 0
        assert router.metric("modelramp_bucket_exposures_total", experiment="churn-it") == 1
        assert router.metric("modelramp_bucket_exposures_total", experiment="churn-it:qa") == 3
        assert router.metric("modelramp_outcomes_total", experiment="churn-it") == 1
        assert router.metric("modelramp_outcomes_total", experiment="churn-it:qa", arm="model") == 1
        assert router.metric("modelramp_bucket_outcomes_total", experiment="churn-it", arm="model") == 0
        assert counts == {"legacy": {"requests": 1, "fallbacks": 0}, "model": {"requests": 0, "fallbacks": 0}}
    finally:
        router.process.stop()
