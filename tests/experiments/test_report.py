"""`modelramp analyze`: the table, --json, --report, and exit code 2 with one clear line on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.cli import main
from experiments.config import load_config
from experiments.live.history import load_history
from experiments.live.report import replay, write_report

DATA = Path(__file__).parents[1] / "data" / "histories"
CONFIG = str(DATA / "experiment.yaml")


def analyze_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["analyze", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("name", "decision"), [("ship", "ship"), ("blocked_srm", "blocked"), ("counter_reset", "blocked")])
def test_json_output_carries_decision_and_reason(capsys: pytest.CaptureFixture[str], name: str, decision: str) -> None:
    code, out, err = analyze_cli(capsys, "--history", str(DATA / f"{name}.json"), "--config", CONFIG, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["decision"] == decision
    assert doc["reason"]


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = analyze_cli(capsys, "--history", str(DATA / "rollback.json"), "--config", CONFIG)
    assert code == 0
    assert "ROLLBACK" in out and "significantly worse" in out


def test_without_config_uses_a_default(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = analyze_cli(capsys, "--history", str(DATA / "ramp.json"), "--json")
    assert code == 0
    assert json.loads(out)["decision"] in ("ramp", "hold")


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: ["--history", str(d / "absent.json")], "cannot read history"),
        (lambda d: ["--history", str(_write(d / "bad.json", "{oops"))], "not valid JSON"),
        (lambda d: ["--history", str(_write(d / "neg.json", json.dumps(_negative())))], "looks[0].arms.model.successes: negative count"),
        (lambda d: ["--history", str(DATA / "ship.json"), "--config", str(_write(d / "c.yaml", "name: x\n"))], "invalid experiment config"),
        (lambda d: ["--history", str(DATA / "ship.json"), "--config", str(_other_config(d))], "configures 'another'"),
        (lambda d: [], "no data source"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path, setup, message: str) -> None:
    code, out, err = analyze_cli(capsys, *setup(tmp_path))
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("modelramp analyze: error:")
    assert message in err


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _negative() -> dict:
    doc = json.loads((DATA / "ramp.json").read_text())
    doc["looks"][0]["arms"]["model"]["successes"] = -5
    return doc


def _other_config(tmp: Path) -> Path:
    return _write(tmp / "other.yaml", (DATA / "experiment.yaml").read_text().replace("name: clf-v2-vs-legacy", "name: another"))


def test_report_writes_markdown_and_plots(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = analyze_cli(capsys, "--history", str(DATA / "ship.json"), "--config", CONFIG, "--json",
                               "--report", str(tmp_path / "rep"))
    assert code == 0 and json.loads(out)["decision"] == "ship"
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "**Decision: ship**" in report
    for png in ("rates.png", "weights.png", "sequential.png"):
        assert f"]({png})" in report
        assert (tmp_path / "rep" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # One row per look, replayed: the ramp decisions are in the table.
    assert report.count("| ramp |") == 4


def test_report_on_blocked_and_short_histories(tmp_path: Path) -> None:
    config = load_config(CONFIG)
    for name in ("counter_reset", "blocked_missing_outcomes", "hold"):
        path = write_report(load_history(DATA / f"{name}.json", allow_resets=True), config, tmp_path / name)
        assert "Decision:" in path.read_text()


def test_replay_matches_per_look_analysis() -> None:
    history = load_history(DATA / "ship.json")
    steps = replay(history, load_config(CONFIG))
    assert len(steps) == len(history.looks)
    assert [s.looks for s in steps] == list(range(1, len(history.looks) + 1))
