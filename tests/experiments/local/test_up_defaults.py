"""`.modelramp/up.json`, without a stack: what the commands say when no `up` runs, a stale file, flags first.

The commands beside a real `up` are run by tests/experiments/local/test_readme_first_request.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.cli import main
from experiments.config import EXAMPLE_CONFIG
from experiments.local.up_state import UpState, read_state, remove_state, state_path, write_state
from tests.support.processes import REPO, free_port


def state(tmp_path: Path, pid: int, **changes: object) -> UpState:
    config = tmp_path / "experiment.yaml"
    config.write_text(EXAMPLE_CONFIG.read_text())
    doc: dict[str, object] = {
        "pid": pid, "experiment": "churn-v2-vs-legacy", "router_url": f"http://127.0.0.1:{free_port()}",
        "router_grpc": f"127.0.0.1:{free_port()}", "prometheus_url": f"http://127.0.0.1:{free_port()}", "config": str(config),
        "baseline": None, "db": str(tmp_path / "audit.db"), "models": str(tmp_path / "models"),
        "outcome_ledger": f"sqlite:///{tmp_path / 'outcomes.db'}", "run_dir": str(tmp_path)}
    return UpState.from_dict({**doc, **changes})


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def folder(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.mark.parametrize(("command", "flags"), [
    ("analyze", "give --metrics-url URL (a router, e.g. --metrics-url http://127.0.0.1:8080), --prometheus URL or --history FILE"),
    ("skew", "give --baseline PATH (a version's models/<model>/<N>/modelramp/baseline.json) and --metrics-url URL (a router)"),
    ("ramp", "the controller needs --config FILE, the experiment file the router watches (`modelramp up` prints it), "
             "or --configmap NAMESPACE/NAME"),
])
def test_without_up_or_flags_the_error_names_the_flag(folder, capsys, command, flags):
    code, out, err = run(capsys, command)
    assert code == 2 and out == ""
    assert err.startswith(f"modelramp {command}: error: ") and flags in err
    assert f"no `modelramp up` runs from this folder (no {folder / '.modelramp' / 'up.json'})" in err
    assert "Traceback" not in err


def test_versions_without_up_lists_versions_and_names_the_db_flag(folder, capsys):
    (folder / "models" / "churn").mkdir(parents=True)
    (folder / "reports" / "demo-2").mkdir(parents=True)
    (folder / "reports" / "demo-2" / "audit.db").touch()
    code, out, err = run(capsys, "versions", "--json")
    assert code == 0 and "from the running" not in err
    note = json.loads(out)["database_note"]
    assert note.startswith("no audit database at modelramp.db: gate and live results unknown; give --db URL")
    assert "the demo's runs: --db reports/demo-2/audit.db" in note and "no `modelramp up` runs from this folder" in note
    assert not (folder / "modelramp.db").exists(), "a read-only command creates no database"


def test_a_stale_file_is_ignored_and_said(folder, capsys):
    pid = dead_pid()
    write_state(state(folder, pid))
    assert read_state()[0] is None
    code, _, err = run(capsys, "analyze")
    assert code == 2 and f"{state_path()} names a `modelramp up` (pid {pid}) that no longer runs" in err


def test_ramp_takes_the_config_and_db_of_a_running_up(folder, capsys):
    up = state(folder, os.getpid())
    write_state(up)
    code, out, err = run(capsys, "ramp", "--log")
    assert code == 0 and out == "no decisions recorded for 'churn-v2-vs-legacy' yet\n"
    assert f"modelramp ramp: from the running `modelramp up` (pid {os.getpid()}, {state_path()}): config {up.config}; " in err
    # Its Prometheus does not answer (nothing listens on the port): the router is the source, and it says so.
    assert (f"source the router's /metrics at {up.router_url} (its Prometheus {up.prometheus_url} does not answer); "
            f"db {up.db}") in err
    assert Path(up.db).exists(), "the up's audit database, not modelramp.db in the working folder"
    assert not (folder / "modelramp.db").exists()


def test_flags_take_nothing_from_a_running_up(folder, capsys):
    write_state(state(folder, os.getpid()))
    other = folder / "other.yaml"
    other.write_text(EXAMPLE_CONFIG.read_text().replace("name: churn-v2-vs-legacy", "name: other-experiment", 1))
    code, out, err = run(capsys, "ramp", "--log", "--config", str(other), "--db", str(folder / "other.db"))
    assert code == 0 and "other-experiment" in out and err == ""


def test_up_removes_only_its_own_file(folder):
    write_state(state(folder, os.getpid()))
    remove_state(os.getpid() + 1)
    assert state_path().exists(), "another up's file stays"
    remove_state(os.getpid())
    assert not state_path().exists() and not state_path().parent.exists()


def test_the_state_folder_is_not_committed():
    ignored = subprocess.run(["git", "check-ignore", "-q", ".modelramp/up.json"], cwd=REPO)
    assert ignored.returncode == 0, ".gitignore leaves .modelramp/ out"
