"""Experiment tracking: version records from training files and the audit store; the controller names its candidate."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from experiments.cli import main
from experiments.live.controller import Controller
from experiments.live.sources import RouterMetricsSource
from experiments.live.weights import FileWeightStore
from experiments.quality.tracking import collect
from experiments.store import DecisionRecord, Store
from tests.support.experiment import write_config
from tests.support.prometheus import RouterExporter

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
EXP = "churn-v2-vs-legacy"
STAGES = {"stages": [{"percent": 1, "min_duration_seconds": 0, "min_samples": 50},
                     {"percent": 5, "min_duration_seconds": 0, "min_samples": 50},
                     {"percent": 100, "min_duration_seconds": 0, "min_samples": 50}]}


def arms(**model_backend) -> dict:
    return {"legacy": {"weight": 0.99, "backend": {"kind": "legacy_http"}},
            "model": {"weight": 0.01, "backend": {"kind": "tfserving_grpc", "model_name": "churn", **model_backend}}}


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "audit.db")
    yield s
    s.close()


@pytest.fixture
def models(tmp_path, models_dir) -> Path:
    """Versions 1 and 2 with their real training records, 3 with none, 4 with a broken training.json."""
    out = tmp_path / "models"
    for v in (1, 2):
        shutil.copytree(models_dir / "churn" / str(v) / "modelramp", out / "churn" / str(v) / "modelramp")
    (out / "churn" / "3").mkdir(parents=True)
    (out / "churn" / "4" / "modelramp").mkdir(parents=True)
    (out / "churn" / "4" / "modelramp" / "training.json").write_text("{not json")
    (out / "data").mkdir()  # not a model: no version folders
    return out


def decision(experiment: str, minute: int, decision: str = "hold", candidate: dict | None = None, **kw) -> DecisionRecord:
    return DecisionRecord(experiment=experiment, decision=decision, reason="r", applied=kw.pop("applied", False),
                          applied_by="test", time=T0 + timedelta(minutes=minute),
                          statistics=None if candidate is None else {"candidate": candidate}, **kw)


def test_the_controller_records_its_candidate_and_versions_attributes_it(tmp_path, store, models) -> None:
    config = write_config(tmp_path / "experiment.yaml", EXP, 0.01, ramp=STAGES,
                          criteria={"non_inferiority_margin": 0.05}, arms=arms(version=2))
    router = RouterExporter()
    clock = iter(T0 + timedelta(minutes=m) for m in range(1, 100))
    try:
        ctl = Controller(RouterMetricsSource([router.url]), FileWeightStore(config), store, holder="t",
                         lease_ttl_seconds=600, clock=lambda: next(clock))
        held = ctl.step()  # no traffic yet: a hold, still naming what it held
        want = {"model_name": "churn", "version": 2, "version_label": None, "backend": "tfserving_grpc"}
        assert held.decision == "hold" and held.statistics == {"candidate": want}
        router.serve(EXP, "legacy", 118_800, successes=95_040, failures=23_760)
        router.serve(EXP, "model", 1_200, successes=960, failures=240)
        ramped = ctl.step()
        assert ramped.decision == "ramp" and ramped.applied, ramped.reason
        assert ramped.statistics is not None
        assert ramped.statistics["candidate"] == want and "srm" in ramped.statistics  # beside the analysis
    finally:
        router.close()
    assert [d.statistics["candidate"]["version"] for d in store.decisions(EXP)] == [2, 2]

    doc = collect(models, store)
    by = {r["version"]: r for r in doc["versions"]}
    assert by[1]["live"] == [] and "no live experiment" in by[1]["missing"]
    (live,) = by[2]["live"]
    assert live["experiment"] == EXP and live["decisions"] == 2 and live["outcome"] == "in progress"
    assert live["last_decision"] == "ramp" and live["max_model_weight"] == pytest.approx(0.05)
    assert [a["decision"] for a in live["applied"]] == ["ramp"]
    assert live["success_rate"] == {"legacy": pytest.approx(0.8), "model": pytest.approx(0.8)}
    assert doc["unattributed_live"] == []


def test_records_from_files_and_store(store, models, models_dir) -> None:
    store.record_gate_run("sha256:t", "churn", 2, {"verdict": "PASS", "model": {"accuracy": 0.91, "n": 1250}}, True,
                          time=T0)
    store.record_gate_run("sha256:t", "churn", 2, {"verdict": "PASS", "model": {"accuracy": 0.91, "n": 1250}}, False,
                          time=T0 + timedelta(hours=1))
    store.record_gate_run("sha256:t", "other", 1, {"verdict": "FAIL", "model": {"accuracy": 0.5}}, True, time=T0)
    one = {"model_name": "churn", "version": 1, "version_label": None, "backend": "tfserving_grpc"}
    store.record_decision(decision("v1-exp", 0, candidate=one))
    store.record_decision(decision("v1-exp", 1, "rollback", candidate=one, applied=True,
                                   weights_before={"legacy": 0.95, "model": 0.05}, weights_after={"legacy": 1.0, "model": 0.0}))
    store.record_decision(decision("old-exp", 0))  # recorded before candidates were
    store.record_decision(decision("label-exp", 0, candidate={**one, "version": None, "version_label": "canary"}))

    doc = collect(models, store)
    by = {r["version"]: r for r in doc["versions"]}
    assert sorted(by) == [1, 2, 3, 4]  # the data folder is no model
    training = json.loads((models_dir / "churn" / "2" / "modelramp" / "training.json").read_text())
    t = by[2]["training"]
    assert t["code_version"] == training["code_version"] and t["seed"] == training["seed"]
    assert t["recipe"] == training["recipe"] and t["data"]["fingerprints"] == training["data"]["fingerprints"]
    metrics = json.loads((models_dir / "churn" / "2" / "modelramp" / "metrics.json").read_text())
    assert by[2]["metrics"] == {"train": metrics["train"], "validation": metrics["validation"]}
    assert [(g["verdict"], g["honest"], g["accuracy"]) for g in by[2]["gate_runs"]] == [("PASS", True, 0.91), ("PASS", False, 0.91)]
    assert by[1]["gate_runs"] == [] and "no gate run" in by[1]["missing"]
    (live,) = by[1]["live"]
    assert (live["outcome"], live["decisions"], live["max_model_weight"]) == ("rolled back", 2, 0.05)
    assert by[3]["training"] is None and by[3]["metrics"] is None
    assert {"no training.json", "no metrics.json", "no gate run", "no live experiment"} <= set(by[3]["missing"])
    assert any(m.startswith("training.json unreadable") for m in by[4]["missing"])
    why = {u["experiment"]: u["why"] for u in doc["unattributed_live"]}
    assert "before candidates were tracked" in why["old-exp"] and "label 'canary'" in why["label-exp"]

    assert [r["version"] for r in collect(models, store, version=4)["versions"]] == [4]
    with pytest.raises(ValueError, match="no version 9 under .*versions are churn 1, churn 2, churn 3, churn 4"):
        collect(models, store, version=9)
    without = collect(models, None)["versions"][0]
    assert without["gate_runs"] is None and without["live"] is None and "no gate run" not in without["missing"]


def test_versions_command_after_a_real_gate_run(capsys, tmp_path, models_dir, model_server) -> None:
    db = tmp_path / "audit.db"
    assert main(["gate", "--models", str(models_dir), "--target", model_server.grpc_target, "--db", str(db),
                 "--version", "2", "--json"]) == 0
    gate = json.loads(capsys.readouterr().out)
    assert main(["versions", "--models", str(models_dir), "--db", str(db), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    by = {r["version"]: r for r in doc["versions"]}
    (run,) = by[2]["gate_runs"]
    assert run["id"] == gate["gate_run_id"] and run["accuracy"] == gate["model"]["accuracy"] and run["honest"] is True
    assert run["test_set_fingerprint"] == gate["test_set"]["fingerprint"] and by[1]["gate_runs"] == []

    assert main(["versions", "--models", str(models_dir), "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "churn/1" in out and "churn/2" in out and "PASS" in out
    assert main(["versions", "--models", str(models_dir), "--db", str(db), "--version", "2"]) == 0
    out = capsys.readouterr().out
    assert f"#{gate['gate_run_id']}" in out and "hyperparameters" in out and "validation metrics" in out


def test_versions_command_missing_pieces(capsys, models, tmp_path) -> None:
    nowhere = tmp_path / "nowhere.db"
    assert main(["versions", "--models", str(models), "--db", str(nowhere)]) == 0
    out = capsys.readouterr().out
    assert "churn/3" in out and "no audit database at" in out and "no database" in out
    assert not nowhere.exists()  # a read-only command creates no database
    assert main(["versions", "--models", str(models), "--db", str(nowhere), "--version", "3"]) == 0
    assert "no training.json" in capsys.readouterr().out
    assert main(["versions", "--models", str(models), "--version", "9", "--db", str(nowhere)]) == 2
    assert "no version 9" in capsys.readouterr().err
    assert main(["versions", "--models", str(tmp_path / "absent")]) == 2
    assert "no model folder" in capsys.readouterr().err
