"""`modelramp gate` against a real model server: verdicts, numbers, slices, single use, refusals."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from statsmodels.stats.proportion import proportions_ztest

from experiments.cli import main
from experiments.config import EXAMPLE_CONFIG
from experiments.store import Store
from serving.legacy import rule as legacy_rule
from serving.tfserving.grpc_client import PredictionClient
from serving.training import dataset
from tests.support.processes import free_port


def gate_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["gate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def config_file(tmp_path: Path, **gate) -> Path:
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    data["gate"].update(gate)
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@dataclass
class GateRunner:
    """`modelramp gate` on a model server with its own SQLite database (`db`)."""

    capsys: pytest.CaptureFixture[str]
    models_dir: Path
    grpc_target: str
    db: Path

    def __call__(self, *args: str, data: Path | None = None, target: str | None = None) -> tuple[int, str, str]:
        return gate_cli(self.capsys, "--models", str(self.models_dir), "--data", str(data or self.models_dir / "data"),
                        "--target", target or self.grpc_target, "--db", str(self.db), *args)


@pytest.fixture
def run_gate(capsys, tmp_path, models_dir, model_server):
    """Run the gate on the session's model server with a fresh SQLite database per test."""
    return GateRunner(capsys, models_dir, model_server.grpc_target, tmp_path / "audit.db")


def stored_runs(db: Path):
    store = Store.open(db)
    try:
        return store.gate_runs()
    finally:
        store.close()


def test_v2_passes_and_matches_a_direct_computation(run_gate, models_dir, model_server) -> None:
    code, out, err = run_gate("--version", "2", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["verdict"] == "PASS" and result["passed"] is True
    assert result["model_name"] == "churn" and result["model_version"] == 2 and result["honest"] is True

    # The same numbers computed here, straight from the server and statsmodels.
    frame = dataset.read_split(models_dir / "data", "test")
    labels = frame[dataset.LABEL].to_numpy()
    columns = dataset.to_columns(frame)
    with PredictionClient(model_server.grpc_target, timeout=10) as client:
        scores = np.concatenate([
            np.asarray(client.predict("churn", {k: v[i:i + 300] for k, v in columns.items()}, version=2)["probability"]).reshape(-1)
            for i in range(0, len(frame), 300)])
    correct = int(((scores >= 0.5).astype(int) == labels).sum())
    z, p = proportions_ztest(correct, len(frame), value=0.80, alternative="larger")
    test = result["test"]
    assert (test["n"], test["successes"]) == (len(frame), correct)
    assert result["model"]["accuracy"] == pytest.approx(correct / len(frame))
    assert result["model"]["accuracy"] > 0.88
    assert test["z"] == pytest.approx(z, rel=1e-9) and test["p_value"] == pytest.approx(p, rel=1e-6, abs=1e-300)
    assert test["target_accuracy"] == 0.80 and test["alpha"] == 0.05

    legacy = np.array([legacy_rule.predict(r)["churn"] for r in dataset.to_instances(frame)], dtype=int)
    assert result["baseline"]["accuracy"] == pytest.approx(float((legacy == labels).mean()))
    confusion = result["model"]["confusion"]
    assert sum(confusion.values()) == len(frame) and confusion["tp"] + confusion["tn"] == correct

    # One record: the test set's fingerprint as in the manifest, the version, the result, honest.
    (run,) = stored_runs(run_gate.db)
    manifest = json.loads((models_dir / "data" / "manifest.json").read_text())
    assert run.test_set_fingerprint == manifest["fingerprints"]["test"] == result["test_set"]["fingerprint"]
    assert (run.model_name, run.model_version, run.honest) == ("churn", "2", True)
    assert run.result["verdict"] == "PASS" and run.id == result["gate_run_id"]
    assert result["training_split_verified"] is True


def test_high_target_fails_with_the_reason(run_gate, tmp_path) -> None:
    code, out, err = run_gate("--version", "2", "--config", str(config_file(tmp_path, target_accuracy=0.97)))
    assert code == 1, err
    assert "FAIL" in out and "not significantly above the target 0.97" in out
    assert "legacy rule" in out and "recorded as gate run #1" in out
    (run,) = stored_runs(run_gate.db)
    assert run.result["passed"] is False and run.honest is True


def test_slices_report_metrics_and_supports(run_gate, tmp_path, models_dir) -> None:
    frame = dataset.read_split(models_dir / "data", "test")
    areas = sorted(frame["area_code"].unique())
    slices: list[dict[str, Any]] = [{"name": f"area-{a}", "feature": "area_code", "values": [a]} for a in areas]
    slices += [{"name": "calls-low", "feature": "number_customer_service_calls", "max": 4},
               {"name": "calls-high", "feature": "number_customer_service_calls", "min": 4},
               {"name": "day-mid", "feature": "total_day_minutes", "min": 150, "max": 250}]
    code, out, err = run_gate("--version-label", "canary", "--json",
                              "--config", str(config_file(tmp_path, slices=slices)))
    assert code == 0, err
    result = json.loads(out)
    assert result["model_version"] == 2 and result["requested"] == "label canary"
    by_name = {s["name"]: s for s in result["slices"]}
    assert sum(by_name[f"area-{a}"]["n"] for a in areas) == len(frame)
    assert by_name["calls-low"]["n"] + by_name["calls-high"]["n"] == len(frame)  # half-open ranges do not overlap
    day = frame["total_day_minutes"]
    assert by_name["day-mid"]["n"] == int(((day >= 150) & (day < 250)).sum())
    assert by_name["day-mid"]["rule"] == "total_day_minutes >= 150 and total_day_minutes < 250"
    for s in result["slices"]:
        for side in ("model", "baseline"):
            r = s[side]
            assert r["n"] == s["n"] and sum(r["confusion"].values()) == s["n"]
            assert {"accuracy", "precision", "recall", "f1", "accuracy_ci95"} <= set(r)
    # Per-slice correct counts add up to the overall count for a partition.
    assert sum(by_name[f"area-{a}"]["model"]["correct"] for a in areas) == result["model"]["correct"]


def test_second_run_on_the_same_test_set_is_refused(run_gate) -> None:
    assert run_gate("--version", "1", "--json")[0] in (0, 1)
    code, out, err = run_gate("--version", "2", "--json")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "already used by gate run #1 (churn version 1" in err and "--allow-reuse" in err
    code, _, err = run_gate("--version", "1")  # the same candidate again is no better
    assert code == 2 and "gate run #1" in err
    assert len(stored_runs(run_gate.db)) == 1


def test_allow_reuse_runs_loudly_and_records_not_honest(run_gate) -> None:
    assert run_gate("--version", "2")[0] == 0
    code, out, err = run_gate("--version", "2", "--allow-reuse", "--json")
    assert code == 0
    assert err.startswith("WARNING: --allow-reuse") and "gate run #1" in err and "NOT honest" in err
    result = json.loads(out)
    assert result["honest"] is False and "no longer an honest" in result["honesty_note"]
    first, second = stored_runs(run_gate.db)
    assert (first.honest, second.honest) == (True, False)
    assert second.result["earlier_uses"][0].startswith("gate run #1 (churn version 2")


def test_modified_test_file_is_refused(run_gate, tmp_path, models_dir) -> None:
    data = tmp_path / "data"
    shutil.copytree(models_dir / "data", data)
    test_csv = data / "pristine" / "test.csv"
    lines = test_csv.read_text().splitlines(keepends=True)
    lines[1] = lines[1][:-2] + ("1" if lines[1][-2] == "0" else "0") + "\n"  # flip one label
    test_csv.write_text("".join(lines))
    code, out, err = run_gate("--version", "2", data=data)
    assert code == 2 and out == ""
    assert "fingerprint" in err and "was modified" in err
    assert stored_runs(run_gate.db) == []


def test_version_trained_on_another_split_is_refused(capsys, tmp_path, models_dir, model_server) -> None:
    models = tmp_path / "models"
    meta = models / "churn" / "2" / "modelramp"
    meta.mkdir(parents=True)
    meta.joinpath("training.json").write_text(json.dumps({"data": {"fingerprints": {"test": "sha256:other"}}}))
    code, _, err = gate_cli(capsys, "--models", str(models), "--data", str(models_dir / "data"), "--version", "2",
                            "--target", model_server.grpc_target, "--db", str(tmp_path / "audit.db"))
    assert code == 2 and "may overlap this test set" in err
    assert stored_runs(tmp_path / "audit.db") == []


def test_unreachable_server_is_one_clear_line(run_gate) -> None:
    target = f"127.0.0.1:{free_port()}"
    code, out, err = run_gate("--version", "2", target=target)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and f"no model server answers at {target}" in err
    assert stored_runs(run_gate.db) == []


def test_unknown_version_is_one_clear_line(run_gate) -> None:
    code, _, err = run_gate("--version", "7")
    assert code == 2 and err.count("\n") == 1 and "cannot score churn" in err
    assert stored_runs(run_gate.db) == []


def test_start_server_runs_the_gate_without_a_server(capsys, tmp_path, models_dir) -> None:
    code, out, err = gate_cli(capsys, "--models", str(models_dir), "--version", "1", "--start-server", "--json",
                              "--db", str(tmp_path / "audit.db"))
    assert code in (0, 1), err
    result = json.loads(out)
    assert result["model_version"] == 1 and result["server"].startswith("127.0.0.1:")


def test_unusable_database_is_one_clear_line(capsys, tmp_path, models_dir, model_server) -> None:
    code, out, err = gate_cli(capsys, "--data", str(models_dir / "data"), "--target", model_server.grpc_target,
                              "--db", str(tmp_path / "missing" / "dir" / "audit.db"))
    assert code == 2 and out == "" and err.count("\n") == 1 and "audit database" in err


def test_a_misspelt_slice_is_refused_before_the_test_set_is_used(run_gate, tmp_path) -> None:
    config = config_file(tmp_path, slices=[{"name": "typo", "feature": "international_plna", "values": ["yes"]}])
    code, _, err = run_gate("--config", str(config), "--version", "2")
    assert code == 2 and "unknown feature 'international_plna'" in err
    assert stored_runs(run_gate.db) == []  # the test set is still pristine
