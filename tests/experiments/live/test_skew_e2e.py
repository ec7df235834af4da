"""Skew monitors end to end on loopback: real model server, legacy system and routers, then `modelramp skew`.

Two routers with the skew sketches on (one takes the baseline from its config, one from
`--baseline`) receive the test split's rows over REST: the first as they are (no alarm), the
second with a deliberate skew: `total_day_minutes` scaled by 60 (minutes sent as seconds), the
category `area_code_415` renamed `415`, and `number_vmail_messages` missing. Missing numbers are
sent as NaN (JSON `NaN`, which TF Serving's REST API and the router accept): a request that omits
an input altogether is rejected by the router's signature check with 400 before any sketch sees
it. The model imputes a missing number with its training mean, so the requests are answered.
"""

from __future__ import annotations

import functools
import itertools
import json
import subprocess
import sys
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from serving.training.dataset import CATEGORICAL, NUMERIC, read_split, to_instances
from tests.support.processes import REPO, Process, free_port, wait_until

pytestmark = pytest.mark.slow

SCALED, RENAMED, MISSING = "total_day_minutes", "area_code", "number_vmail_messages"
RENAME = ("area_code_415", "415")
PREDICTION = "__prediction__"
RULE_LIMITS = {"psi": 0.2, "js_distance": 0.1, "linf": 0.1}  # the default skew.thresholds (no per-feature limits here)
BATCH = 5  # rows per predict request
UNITS = itertools.count(1)


def skewed(row: dict) -> dict:
    row = dict(row)
    row[SCALED] = row[SCALED] * 60
    if row[RENAMED] == RENAME[0]:
        row[RENAMED] = RENAME[1]
    row[MISSING] = float("nan")
    return row


def _ready(port: int) -> bool:
    return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200


@pytest.fixture(scope="module")
def stack(models_dir, model_server, legacy_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("skew-e2e")
    baseline = models_dir / "churn" / "2" / "modelramp" / "baseline.json"
    doc: dict[str, Any] = {"name": "skew-e2e", "salt": "skew-salt", "model_name": "churn",
           "arms": {"legacy": {"weight": 0.5, "backend": {"kind": "legacy_http", "url": legacy_server.url}},
                    "model": {"weight": 0.5, "backend": {"kind": "tfserving_grpc", "target": model_server.grpc_target,
                                                         "model_name": "churn", "version": 2}}},
           # Test-sized: judge every 0.2 s once 300 values are in (production: 1,000 values, every 15 s);
           # unseen names kept by name (off by default: every unseen value is __other__).
           "skew": {"baseline": str(baseline), "min_sample": 300, "interval_seconds": 0.2, "max_unseen_categories": 5}}
    config = tmp / "experiment.yaml"
    config.write_text(yaml.safe_dump(doc))
    bare = tmp / "experiment-no-baseline.yaml"
    bare.write_text(yaml.safe_dump({**doc, "skew": {k: v for k, v in doc["skew"].items() if k != "baseline"}}))
    routers = {}
    try:
        for name, path, extra in (("clean", config, []), ("skewed", bare, ["--baseline", str(baseline)])):
            port = free_port()
            proc = Process(["router", "--config", str(path), "--host", "127.0.0.1", "--http-port", str(port),
                            "--grpc-port", str(free_port()), *extra], tmp / f"router-{name}.log",
                           env={"MODELRAMP_SIGNING_KEY": "skew-e2e-key"})
            routers[name] = (proc, f"http://127.0.0.1:{port}")
            wait_until(functools.partial(_ready, port), timeout=60, what=f"{name} router ready", proc=proc.proc)
        yield {"baseline": baseline, "config": config, "routers": {k: url for k, (_, url) in routers.items()},
               "rows": to_instances(read_split(models_dir / "data", "test"))}
    except Exception:
        for proc, _ in routers.values():
            print(proc.log())
        raise
    finally:
        for proc, _ in routers.values():
            proc.stop()


def samples(url: str) -> list:
    return [s for f in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=5).text) for s in f.samples]


def metric(url: str, name: str, **labels) -> dict[str, float]:
    """feature -> value of one metric's samples matching `labels`."""
    return {s.labels["feature"]: s.value for s in samples(url)
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())}


def drive(url: str, rows: list[dict]) -> int:
    """Send the rows in predict requests; returns how many rows the model itself answered."""
    by_model = 0
    with httpx.Client(base_url=url, timeout=10) as client:
        for i in range(0, len(rows), BATCH):
            batch = rows[i:i + BATCH]
            r = client.post("/v1/models/churn:predict", content=json.dumps({"instances": batch}),
                            headers={"X-Unit-Id": f"u{next(UNITS)}", "Content-Type": "application/json"})
            assert r.status_code == 200, r.text
            by_model += len(batch) if r.headers["X-Modelramp-Arm"] == "model" else 0
    return by_model


def settle(url: str, rows: int, scores: int) -> None:
    """Poll until the background job has folded every row and score and judged them."""
    def done() -> bool:
        window = metric(url, "modelramp_feature_window_values")
        return window.get("state") == rows and window.get(PREDICTION) == scores
    wait_until(done, timeout=30, what="sketches folded and judged")


def expected_anomalies(rows: list[dict], baseline: dict) -> dict[tuple[str, str], int]:
    """Anomalies counted directly from the rows sent: NaN, out of the training range (float32), unseen category."""
    out: dict[tuple[str, str], int] = {}
    for name in NUMERIC:
        f = baseline["features"][name]
        x = np.array([r[name] for r in rows], dtype=np.float32)
        present = x[~np.isnan(x)]
        out[(name, "missing")] = int(np.isnan(x).sum())
        out[(name, "out_of_range")] = int(((present < np.float32(f["min"])) | (present > np.float32(f["max"]))).sum())
    for name in CATEGORICAL:
        known = set(baseline["features"][name]["value_counts"])
        out[(name, "unseen_category")] = sum(r[name] not in known and r[name] != "" for r in rows)
        out[(name, "missing")] = sum(r[name] == "" for r in rows)
    return {k: v for k, v in out.items() if v}


def anomalies(url: str) -> dict[tuple[str, str], int]:
    return {(s.labels["feature"], s.labels["kind"]): int(s.value) for s in samples(url)
            if s.name == "modelramp_feature_anomalies_total"}


def over_rule_limits(url: str) -> set[str]:
    """Features whose exported drift statistics cross the default limits (the alerts fire on the router's verdict)."""
    out = set()
    for s in samples(url):
        if s.name == "modelramp_feature_drift" and s.labels["statistic"] in RULE_LIMITS:
            if s.value > RULE_LIMITS[s.labels["statistic"]]:
                out.add(s.labels["feature"])
    return out


def skew_cli(stack, url: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.cli", "skew", "--metrics-url", url, "--config", str(stack["config"]),
                           "--baseline", str(stack["baseline"]), *extra], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_clean_traffic_raises_no_alarm(stack):
    url, rows = stack["routers"]["clean"], stack["rows"]
    scores = drive(url, rows)
    settle(url, len(rows), scores)
    drifted = metric(url, "modelramp_feature_drifted")
    assert set(drifted) >= {"state", SCALED, RENAMED}, "judged: enough values"
    assert {f for f, v in drifted.items() if v} == set()
    assert over_rule_limits(url) == set(), "no alert rule would fire"
    baseline = json.loads(stack["baseline"].read_text())
    assert anomalies(url) == expected_anomalies(rows, baseline), "only the test split's own values outside training's range"

    report = skew_cli(stack, url, "--json")
    assert report.returncode == 0, report.stderr
    doc = json.loads(report.stdout)
    assert doc["drifted"] == []
    assert {f["feature"]: f["n"] for f in doc["features"]}["state"] == len(rows)


def test_deliberate_skew_is_caught_on_the_right_features_only(stack):
    url, rows = stack["routers"]["skewed"], [skewed(r) for r in stack["rows"]]
    scores = drive(url, rows)
    settle(url, len(rows), scores)
    injected = {SCALED, RENAMED, MISSING}
    drifted = metric(url, "modelramp_feature_drifted")
    # The model's score moves too: it sees day minutes 60 times larger than any it was trained on.
    assert {f for f, v in drifted.items() if v} == injected | {PREDICTION}
    assert over_rule_limits(url) == injected | {PREDICTION}, "the alert rules fire on exactly these"

    baseline = json.loads(stack["baseline"].read_text())
    counted, expected = anomalies(url), expected_anomalies(rows, baseline)
    assert counted == expected
    assert counted[(MISSING, "missing")] == len(rows)
    assert counted[(RENAMED, "unseen_category")] == sum(r[RENAMED] == RENAME[0] for r in stack["rows"]) > 0
    assert counted[(SCALED, "out_of_range")] > 0.9 * len(rows)
    values = {s.labels["bin"]: s.value for s in samples(url)
              if s.name == "modelramp_feature_values_total" and s.labels["feature"] == RENAMED}
    assert values[RENAME[1]] == counted[(RENAMED, "unseen_category")], "the unseen name is kept by name"

    report = skew_cli(stack, url, "--json")
    assert report.returncode == 0, report.stderr
    doc = json.loads(report.stdout)
    assert set(doc["drifted"]) == injected | {PREDICTION}
    by_feature = {f["feature"]: f for f in doc["features"]}
    assert by_feature[RENAMED]["largest_shift"]["bin"] in (RENAME[0], "unseen")
    assert by_feature[MISSING]["largest_shift"] == {"bin": "missing", "baseline": 0.0, "live": 1.0}
    assert by_feature[MISSING]["anomalies"] == {"missing": len(rows)}

    table = skew_cli(stack, url)
    assert table.returncode == 0, table.stderr
    lines = {line.split("│")[1].strip(): line for line in table.stdout.splitlines() if line.count("│") > 5}
    assert all("drift" in lines[f] for f in injected) and "drift" not in lines["state"]


def test_router_metrics_with_skew_pass_promtool(stack):
    from tests.support.binaries import require_binary

    promtool = require_binary("promtool")
    text = httpx.get(f"{stack['routers']['skewed']}/metrics", timeout=5).text
    assert "modelramp_feature_values_total" in text
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_skew_report_from_prometheus_matches_the_router_endpoint(stack):
    """`modelramp skew --prometheus` reads the same sketches through a real Prometheus scraping the router."""
    from tests.support.prometheus import PrometheusServer

    url = stack["routers"]["skewed"]
    rows = [skewed(r) for r in stack["rows"]]
    def state_total() -> float:
        return sum(s.value for s in samples(url) if s.name == "modelramp_feature_values_total" and s.labels["feature"] == "state")

    before = state_total()
    drive(url, rows)  # this test stands alone: it adds its own rows to whatever the router holds
    wait_until(lambda: state_total() == before + len(rows), timeout=30, what="every row folded into the sketches")
    prometheus = PrometheusServer([url.removeprefix("http://")])
    try:
        final = {}

        def scraped_everything() -> bool:
            # Both sides must see the same cumulative counts: poll until a scrape of the idle router landed.
            router_state = state_total()
            result = prometheus.query('sum(modelramp_feature_values_total{feature="state"})')
            final["state"] = router_state
            return bool(result) and float(result[0]["value"][1]) == router_state

        wait_until(scraped_everything, timeout=60, what="Prometheus holds the router's final sketch counts")
        direct = json.loads(skew_cli(stack, url, "--json").stdout)
        via = subprocess.run([sys.executable, "-m", "experiments.cli", "skew", "--prometheus", prometheus.url,
                              "--config", str(stack["config"]), "--baseline", str(stack["baseline"]), "--json"],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
        assert via.returncode == 0, via.stderr
        doc = json.loads(via.stdout)
        assert set(doc["drifted"]) == set(direct["drifted"]) >= {SCALED, RENAMED, MISSING}
        n_direct = {f["feature"]: f["n"] for f in direct["features"]}
        assert {f["feature"]: f["n"] for f in doc["features"]} == n_direct
        assert n_direct["state"] == final["state"]
    finally:
        prometheus.stop()
