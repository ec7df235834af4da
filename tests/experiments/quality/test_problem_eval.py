"""`modelramp evaluate` and the gate's canary tests against the real model server serving versions 1 and 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from experiments.cli import main
from experiments.quality import problems as db
from experiments.quality.gate import score
from experiments.store import Store
from serving.tfserving.grpc_client import PredictionClient
from serving.training import dataset

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def disagreements(models_dir, model_server):
    """Live rows that version 1 gets right and version 2 wrong, and the other way round (real scores)."""
    frame = dataset.read_split(models_dir / "data", "live")
    with PredictionClient(model_server.grpc_target, timeout=10) as client:
        right = {v: (score(client, "churn", frame, version=v)[0] >= 0.5) == frame[dataset.LABEL].to_numpy()
                 for v in (1, 2)}
    both = np.flatnonzero(right[1] & right[2])
    only_v1, only_v2 = np.flatnonzero(right[1] & ~right[2]), np.flatnonzero(~right[1] & right[2])
    assert len(only_v1) >= 4 and len(only_v2) >= 4 and len(both) >= 12, "the two versions should disagree"
    return frame, only_v1[:6], only_v2[:6], both


def pattern_lines(frame, rows, problem: str, note: str) -> list[dict]:
    instances = dataset.to_instances(frame.iloc[rows])
    return [{"problem": problem, "instance": inst, "expected": int(frame[dataset.LABEL].iloc[r]), "source": "production",
             "note": f"{note} row {r}"} for inst, r in zip(instances, rows, strict=True)]


@pytest.fixture
def patterns_db(tmp_path, capsys, disagreements) -> str:
    """Two problems of 12 patterns: one version 2 broke (6 patterns), one it fixed (6 patterns)."""
    frame, only_v1, only_v2, both = disagreements
    lines = (pattern_lines(frame, only_v1, "broken by v2", "v1 only") + pattern_lines(frame, both[:12 - len(only_v1)], "broken by v2", "both")
             + pattern_lines(frame, only_v2, "fixed by v2", "v2 only") + pattern_lines(frame, both[-(12 - len(only_v2)):], "fixed by v2", "both"))
    path = tmp_path / "patterns.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    database = str(tmp_path / "audit.db")
    assert main(["problems", "import", str(path), "--db", database]) == 0
    assert main(["problems", "import", str(path), "--db", database]) == 0
    assert "0 pattern(s) added, 12 already present" in capsys.readouterr().out
    return database


def run_json(capsys, *args: str) -> tuple[int, dict]:
    code = main([*args, "--json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else {"stderr": err})


def test_evaluate_reruns_earlier_versions_stores_answers_and_finds_the_flips(patterns_db, model_server, tmp_path,
                                                                            capsys, disagreements):
    _, only_v1, only_v2, _ = disagreements
    code, doc = run_json(capsys, "evaluate", "--version", "2", "--target", model_server.grpc_target, "--db", patterns_db,
                         "--plots", str(tmp_path / "plots"))
    assert code == 0, doc
    assert doc["versions"] == [1, 2] and doc["candidate"] == 2
    rows = {r["problem"]: r for r in doc["problems"]}
    broken, fixed = rows["broken by v2"], rows["fixed by v2"]
    assert broken["versions"]["1"]["correct"] == 12 and broken["versions"]["2"]["correct"] == 12 - len(only_v1)
    assert fixed["versions"]["2"]["correct"] == 12 and fixed["versions"]["1"]["correct"] == 12 - len(only_v2)
    assert broken["flips"] == {"from": 1, "fixed": 0, "broken": len(only_v1)}
    assert fixed["flips"] == {"from": 1, "fixed": len(only_v2), "broken": 0}
    assert len(doc["plots"]) == 3
    for plot in map(Path, doc["plots"]):
        assert plot.read_bytes().startswith(PNG) and plot.stat().st_size > 5_000
    # The drill-down names exactly the patterns that flipped.
    code, shown = run_json(capsys, "problems", "show", "broken by v2", "--flips", "1", "2", "--db", patterns_db,
                           "--plot", str(tmp_path / "grid.png"))
    assert code == 0
    assert sorted(f["note"] for f in shown["flips"]["patterns"]) == sorted(f"v1 only row {r}" for r in only_v1)
    assert {f["change"] for f in shown["flips"]["patterns"]} == {"broken"}
    assert (tmp_path / "grid.png").read_bytes().startswith(PNG)
    # The table form prints problem x version.
    assert main(["evaluate", "--version", "2", "--target", model_server.grpc_target, "--db", patterns_db,
                 "--plots", str(tmp_path / "plots")]) == 0
    out = capsys.readouterr().out
    assert "broken by v2" in out and f"{12 - len(only_v1)}/12" in out and f"{len(only_v1)} broken since v1" in out


def test_evaluate_an_earlier_version_alone_and_refuse_an_absent_one(patterns_db, model_server, capsys, tmp_path):
    code, doc = run_json(capsys, "evaluate", "--version", "1", "--target", model_server.grpc_target, "--db", patterns_db,
                         "--plots", str(tmp_path / "plots"))
    assert code == 0 and doc["versions"] == [1] and "flips" not in doc["problems"][0]
    code, doc = run_json(capsys, "evaluate", "--version", "7", "--target", model_server.grpc_target, "--db", patterns_db)
    assert code == 2 and "version 7 is not available on the model server (available: 1, 2)" in doc["stderr"]


def gate(capsys, models_dir, model_server, database, *extra) -> tuple[int, dict]:
    return run_json(capsys, "gate", "--models", str(models_dir), "--target", model_server.grpc_target, "--db", database,
                    "--version", "2", *extra)


def test_a_candidate_worse_on_a_regression_problem_fails_the_gate_and_keeps_the_test_set(
        patterns_db, models_dir, model_server, capsys):
    assert main(["problems", "add", "broken by v2", "--regression", "--db", patterns_db]) == 0
    code, result = gate(capsys, models_dir, model_server, patterns_db)
    assert code == 1 and result["verdict"] == "FAIL" and result["test_set_used"] is False
    assert "'broken by v2'" in result["reason"] and "for version 1" in result["reason"]
    assert result["canary"]["reference_version"] == 1
    store = Store.open(patterns_db)
    try:
        assert store.gate_runs() == []  # the pristine test set was not spent on a failed canary
        problem = db.get_problem(store, "churn", "broken by v2")
        assert {v for _, v in db.latest_pattern_results(store, problem)} == {1, 2}  # the canary run is stored too
    finally:
        store.close()
    # The table form names the problem too.
    assert main(["gate", "--models", str(models_dir), "--target", model_server.grpc_target, "--db", patterns_db,
                 "--version", "2"]) == 1
    assert "broken by v2" in capsys.readouterr().out


def test_a_candidate_better_on_every_regression_problem_goes_on_to_the_test_set(
        patterns_db, models_dir, model_server, capsys):
    assert main(["problems", "add", "fixed by v2", "--regression", "--min-accuracy", "0.9", "--db", patterns_db]) == 0
    code, result = gate(capsys, models_dir, model_server, patterns_db)
    assert code == 0 and result["verdict"] == "PASS"
    assert result["canary"]["passed"] and [r["problem"] for r in result["canary"]["problems"]] == ["fixed by v2"]
    # Its own minimum fails a candidate even with no earlier version to compare with.
    assert main(["problems", "add", "broken by v2", "--regression", "--min-accuracy", "1.0", "--db", patterns_db]) == 0
    code, result = run_json(capsys, "gate", "--models", str(models_dir), "--target", model_server.grpc_target,
                            "--db", patterns_db, "--version", "1", "--allow-reuse")
    assert code == 1 and result["canary"]["reference_version"] is None
    assert "below its minimum 0.90" in result["reason"] and "'fixed by v2'" in result["reason"]
