"""The experiments routes on a real router: without the admin token no salt, no backend address and
no backend header value (each listed in `redacted`); with it, the whole configuration."""

from __future__ import annotations

import httpx

from tests.router.stack import TOKEN, experiment, start_router
from tests.support.processes import free_port

SECRET_HEADER = "Bearer legacy-credential"


def test_salt_and_backends_only_with_the_admin_token(tmp_path):
    legacy, model = f"http://127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    doc = experiment(legacy, model, 0.5)
    doc["arms"]["legacy"]["backend"]["headers"] = {"Authorization": SECRET_HEADER}
    router = start_router(tmp_path, doc, ready_path="/healthz")
    try:
        with httpx.Client(base_url=router.url, timeout=10) as client:
            for answer in (client.get("/v1/experiments").json()["experiments"][0], client.get("/v1/experiments/churn-it").json()):
                text = str(answer)
                assert "it-salt" not in text and legacy not in text and model not in text and SECRET_HEADER not in text, text
                assert answer["config"]["salt"] is None and answer["weights"] == {"legacy": 0.5, "model": 0.5}
                assert sorted(answer["redacted"]) == sorted([
                    "config.salt", "config.arms.legacy.backend.url", "config.arms.legacy.backend.headers",
                    "config.arms.model.backend.target"])
            auth = {"Authorization": f"Bearer {TOKEN}"}
            whole = client.get("/v1/experiments/churn-it", headers=auth).json()
            assert whole["redacted"] == [] and whole["config"]["salt"] == "it-salt"
            assert whole["config"]["arms"]["legacy"]["backend"]["url"] == legacy
            assert whole["config"]["arms"]["model"]["backend"]["target"] == model
            assert client.get("/v1/experiments", headers=auth).json()["experiments"][0]["config"]["salt"] == "it-salt"
            wrong = client.get("/v1/experiments/churn-it", headers={"Authorization": "Bearer wrong"})
            assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer" and "it-salt" not in wrong.text
            assert client.get("/v1/experiments", headers={"Authorization": "Basic x"}).status_code == 401
            assert client.get("/v1/experiments/nope").status_code == 404
            security = client.get("/openapi.json").json()["paths"]["/v1/experiments/{name}"]["get"]["security"]
            assert {} in security and {"bearerToken": []} in security
    finally:
        router.process.stop()
