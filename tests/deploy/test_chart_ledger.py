"""The chart wires the routers' outcome ledger: one Secret for every replica (or the audit database's), per-pod SQLite only as the warned default."""

from __future__ import annotations

import pytest
from helm_python import Chart

from tests.deploy.manifests import CHART, pod_specs, render


def containers(values: dict) -> dict[str, dict]:
    out = {}
    for obj in render(values, namespace="modelramp"):
        for pod in pod_specs(obj):
            for c in pod["containers"]:
                if c["name"] in ("router", "ramp-controller"):
                    out[c["name"]] = c
    return out


def ledger_env(container: dict) -> dict | None:
    return next((e for e in container.get("env", []) if e["name"] == "MODELRAMP_OUTCOME_LEDGER"), None)


@pytest.mark.parametrize("values, secret, key", [
    ({"router": {"outcomeLedger": {"existingSecret": "ledger-db", "key": "dsn"}}}, "ledger-db", "dsn"),
    ({"rampController": {"audit": {"type": "postgres", "postgres": {"existingSecret": "audit-db", "key": "url"}}}}, "audit-db", "url"),
])
def test_every_replica_and_the_ramp_controller_read_one_shared_ledger_from_a_secret(values, secret, key):
    c = containers(values)
    for name in ("router", "ramp-controller"):
        env = ledger_env(c[name])
        assert env is not None and env["valueFrom"]["secretKeyRef"] == {"name": secret, "key": key}, name
    assert "--outcome-ledger=$(MODELRAMP_OUTCOME_LEDGER)" in c["ramp-controller"]["args"]


def notes(values: dict) -> str:
    with Chart.load(CHART) as chart:
        rendered = chart.render(values, name="modelramp", namespace="modelramp")
    return next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))


def test_without_a_database_each_pod_keeps_its_own_sqlite_file_and_the_notes_say_so():
    c = containers({})
    assert ledger_env(c["router"]) == {"name": "MODELRAMP_OUTCOME_LEDGER", "value": "sqlite:////tmp/modelramp-outcomes.db"}
    assert ledger_env(c["ramp-controller"]) is None and not any("--outcome-ledger" in a for a in c["ramp-controller"]["args"])
    assert "Outcome ledger: PER POD" in notes({})
    assert "Outcome ledger: shared" in notes({"router": {"outcomeLedger": {"existingSecret": "ledger-db", "key": "url"}}})
