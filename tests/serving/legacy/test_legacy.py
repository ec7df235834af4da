"""The legacy system: a sensible rule, served over HTTP with clear 4xx errors."""

import httpx
import numpy as np

from serving.legacy import rule as legacy_rule
from serving.training import dataset


def test_rule_is_a_real_baseline(models_dir):
    val = dataset.read_split(models_dir / "data", "validation")
    flagged = np.array([legacy_rule.predict(r)["churn"] for r in dataset.to_instances(val)])
    accuracy = (flagged == val[dataset.LABEL].astype(bool)).mean()
    majority = 1 - val[dataset.LABEL].mean()
    assert accuracy > majority + 0.01  # better than always answering "no churn"
    assert legacy_rule.predict(dict(number_customer_service_calls=5, total_day_minutes=100, international_plan="no",
                                    total_intl_minutes=5))["reasons"] == ["5 customer service calls (>= 4)"]


def test_service_answers_and_rejects_bad_input(legacy_server, models_dir):
    rows = dataset.to_instances(dataset.read_split(models_dir / "data", "live").head(3))
    with httpx.Client(base_url=legacy_server.url, timeout=5) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        preds = http.post("/v1/predict", json={"instances": rows}).json()["predictions"]
        assert [p["churn"] for p in preds] == [legacy_rule.predict(r)["churn"] for r in rows]
        assert all(p["probability"] in (0.0, 1.0) for p in preds)
        for body, words in [
            (b"{", "not valid JSON"),
            (b'{"instances": []}', "at least one"),
            (b'{"instances": [5]}', "instance 0"),
            (b'{"instances": [{"total_day_minutes": 1}]}', "missing feature"),
        ]:
            r = http.post("/v1/predict", content=body)
            assert r.status_code == 400 and words in r.json()["error"], r.text
        bad = dict(rows[0], number_customer_service_calls="many")
        r = http.post("/v1/predict", json={"instances": [rows[0], bad]})
        assert r.status_code == 400 and "instance 1" in r.json()["error"] and "number_customer_service_calls" in r.json()["error"]
        r = http.post("/v1/predict", content=b" " * (5 * 1024 * 1024))
        assert r.status_code == 413


def test_the_foreign_api_answers_the_same_rule_in_its_own_shape_and_guards_predict(tmp_path, models_dir):
    from tests.support.processes import Process, free_port, port_open, wait_until

    rows = dataset.to_instances(dataset.read_split(models_dir / "data", "live").head(20))
    key = tmp_path / "key"
    key.write_text("s3cret\n")
    port = free_port()
    proc = Process(["legacy", "--api", "foreign", "--host", "127.0.0.1", "--port", str(port), "--api-key-file", str(key),
                    "--require-header", "X-Tenant"], tmp_path / "foreign.log")
    try:
        wait_until(lambda: port_open(port), timeout=60, what="foreign legacy system listening", proc=proc.proc)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            assert http.get("/status").json() == {"state": "up"}, "health needs no key (probes have none)"
            assert http.get("/healthz").status_code == 404 and "error" not in http.get("/healthz").json()
            guard = {"X-Api-Key": "s3cret", "X-Tenant": "acme"}
            results = http.post("/api/v2/score", json={"customers": rows}, headers=guard).json()["results"]
            assert [r["churn_score"] for r in results] == [legacy_rule.predict(r)["probability"] for r in rows]
            assert [r["at_risk"] for r in results] == [legacy_rule.predict(r)["churn"] for r in rows]
            for headers, words in [({"X-Tenant": "acme"}, "X-Api-Key"), ({"X-Api-Key": "wrong", "X-Tenant": "acme"}, "X-Api-Key"),
                                   ({"X-Api-Key": "s3cret"}, "X-Tenant")]:
                r = http.post("/api/v2/score", json={"customers": rows}, headers=headers)
                assert r.status_code == 401 and words in r.json()["message"], r.text
            r = http.post("/api/v2/score", json={"instances": rows}, headers=guard)
            assert r.status_code == 400 and "customers" in r.json()["message"]
            assert http.post("/v1/predict", json={"instances": rows}, headers=guard).status_code == 404
    finally:
        proc.stop()


def test_tls_flags_go_together(tmp_path):
    import subprocess
    import sys

    from tests.support.processes import REPO

    done = subprocess.run([sys.executable, "-m", "experiments.cli", "legacy", "--port", "1", "--tls-cert", str(tmp_path / "c.pem")],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode != 0 and "--tls-cert and --tls-key go together" in done.stderr, done.stderr
