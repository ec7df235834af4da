"""`modelramp analyze`: the table, --json, --report, and exit code 2 with one clear line on bad input."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from matplotlib import dates

from experiments.cli import main
from experiments.config import load_config
from experiments.live import report
from experiments.live.analysis import analyze
from experiments.live.history import load_history, parse_history
from experiments.live.report import bare_reason, headline, replay, shorten, summary_rows, write_report

DATA = Path(__file__).parents[2] / "data" / "histories"
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


def _rows(name: str) -> dict[str, str]:
    return dict(summary_rows(analyze(load_history(DATA / f"{name}.json"), load_config(CONFIG))))


def test_summary_words_durations_counts_and_waits_readably() -> None:
    hold, ship, missing = _rows("hold"), _rows("ship"), _rows("blocked_missing_outcomes")
    assert hold["stage"] == "1% (#1), 30 min, 500 model-arm exposures"  # not "0.50 h"
    assert missing["stage"].startswith("1% (#1), 0 s, ")  # not "0.00 h"
    assert ", 1 stratum, " in hold["difference (model - legacy)"] and ", 4 strata, " in ship["difference (model - legacy)"]
    assert hold["power at MDE"].endswith("needed, about 2.0 h more")
    # No measured rate: the wait is said to be unknown, not "about n/a more".
    assert ship["power at MDE"].endswith("needed, no estimate yet of the time to it")
    for rows in (hold, ship, missing):
        assert "n/a more" not in rows["power at MDE"] and "inf needed" not in rows["power at MDE"]
    assert "always-valid CI not bounded yet" in missing["difference (model - legacy)"]
    # The decision row says the word; the reason beside it does not repeat it.
    assert hold["decision"] == "HOLD" and not hold["reason"].startswith("hold:")


def test_headline_says_the_decision_once_and_bare_reason_drops_it() -> None:
    assert headline("hold", "hold: 5 of 900 exposures") == "hold: 5 of 900 exposures"
    assert headline("ramp", "ramp to 5%: no harm") == "ramp to 5%: no harm"
    assert headline("rollback", "model significantly worse") == "rollback: model significantly worse"
    assert bare_reason("hold", "hold: 5 of 900 exposures") == "5 of 900 exposures"
    assert bare_reason("ramp", "ramp to 5%: no harm") == "ramp to 5%: no harm"
    assert bare_reason("hold", "holding: x") == "holding: x"


def test_shorten_keeps_whole_words_and_phrases() -> None:
    text = "model significantly worse than legacy: difference -5.03 pp, always-valid 95% CI [-8.18 pp, +0.51 pp], harm bound"
    assert shorten(text, 500) == text
    for width in range(20, len(text)):
        short = shorten(text, width)
        assert len(short) <= width and short.endswith(" …")
        assert text.startswith(short[:-2]) and text[len(short) - 2] in " ;,"  # ends where a word ends
    assert shorten(text, 80) == "model significantly worse than legacy: difference -5.03 pp …"  # not inside the bracket
    assert shorten("a (long detail here), b (more), c", 20) == "a (…), b (more), c"  # the longest detail goes first


# --- the plots: a stage axis with 0%, decision and fault markers, the clipped interval said -------------------

FAULT = "model server killed"


def _steps(name: str):
    history = load_history(DATA / f"{name}.json")
    config = load_config(CONFIG)
    return history, replay(history, config), config


def _legend_texts(ax) -> list[str]:
    legend = ax.get_legend()
    assert legend is not None
    return [t.get_text() for t in legend.get_texts()]


def _vlines(ax) -> dict[str, list[float]]:
    """Vertical lines (axvline: two points at one x spanning the axes) by legend label, their x in date numbers."""
    out: dict[str, list[float]] = {}
    labels = {t.get_text(): h for h, t in zip(ax.get_legend().legend_handles, ax.get_legend().get_texts(), strict=True)}
    for line in ax.get_lines():
        x = line.get_xdata()
        if len(x) == 2 and x[0] == x[1] and list(line.get_ydata()) == [0, 1]:
            label = line.get_label()
            if label == "_nolegend_":  # a repeat of a labelled decision: find its label by colour
                label = next(k for k, h in labels.items() if getattr(h, "get_color", lambda: None)() == line.get_color())
            out.setdefault(label, []).append(float(dates.date2num(x[0])))
    return out


def test_weights_plot_draws_stages_on_a_readable_axis_where_a_rollback_reaches_0() -> None:
    history, steps, config = _steps("rollback")
    ax = report._plot_weights(history, steps, config).axes[0]
    assert ax.get_yscale() == "linear"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0%", "1%", "5%", "20%", "50%", "100%"]
    low, high = ax.get_ylim()
    assert low < 0 < high  # row 0 is 0%
    (tail,) = [line for line in ax.get_lines() if line.get_label() == "weights written by the last rollback"]
    assert np.asarray(tail.get_ydata()).tolist() == [1, 0, 0]  # from the 1% row down to the 0% row
    assert "decision: rollback" in _vlines(ax)


def test_every_plot_marks_each_decision_taken_and_the_injected_fault() -> None:
    history, steps, config = _steps("ship")
    fault = report.Event(history.looks[3].time, FAULT)
    figures = [report._plot_rates(history, steps, [fault]), report._plot_weights(history, steps, config, [fault]),
               report._plot_sequential(history, steps, config.criteria.non_inferiority_margin, [fault])]
    taken = [(look.time, s.decision) for look, s in zip(history.looks, steps, strict=True) if s.decision in ("ramp", "ship")]
    axes = [ax for fig in figures for ax in fig.axes]
    assert len(axes) == 4
    for ax in axes:
        lines = _vlines(ax)
        assert lines[f"injected fault: {FAULT}"] == [float(dates.date2num(fault.time))]
        assert sorted(lines["decision: ramp"]) == [float(dates.date2num(t)) for t, d in taken if d == "ramp"]
        assert lines["decision: ship"] == [float(dates.date2num(t)) for t, d in taken if d == "ship"]
        assert {"decision: ramp", "decision: ship", f"injected fault: {FAULT}"} <= set(_legend_texts(ax))
    assert len(taken) == 5  # four ramps and the ship, one line each


def test_a_clipped_interval_is_said_on_the_plot() -> None:
    # Few outcomes: the early always-valid interval is far wider than the axis (or unbounded).
    looks = [{"time": f"2026-11-23T10:0{i}:00Z", "weights": {"legacy": 0.99, "model": 0.01},
              "arms": {"legacy": {"exposures": 990 * n, "successes": 880 * n}, "model": {"exposures": 10 * n, "successes": 9 * n}}}
             for i, n in enumerate((1, 2, 40, 400))]
    history = parse_history({"experiment": "clf-v2-vs-legacy", "looks": looks})
    config = load_config(CONFIG)
    steps = replay(history, config)
    first = steps[0].difference
    assert first is not None and (not all(np.isfinite(first.ci)) or abs(first.ci[0]) > 0.25)
    bottom = report._plot_sequential(history, steps, 0.01).axes[1]
    assert "CI clipped at ±25 pp (wider or unbounded)" in _legend_texts(bottom)
    _, ship_steps, _ = _steps("ship")
    ship_bottom = report._plot_sequential(load_history(DATA / "ship.json"), ship_steps, 0.01).axes[1]
    assert not any("clipped" in text for text in _legend_texts(ship_bottom))


def test_report_text_says_where_the_interval_is_clipped(tmp_path: Path) -> None:
    looks = [{"time": f"2026-11-23T10:0{i}:00Z", "weights": {"legacy": 0.99, "model": 0.01},
              "arms": {"legacy": {"exposures": 990 * n, "successes": 880 * n}, "model": {"exposures": 10 * n, "successes": 9 * n}}}
             for i, n in enumerate((1, 2, 40, 400))]
    history = parse_history({"experiment": "clf-v2-vs-legacy", "looks": looks})
    text = write_report(history, load_config(CONFIG), tmp_path).read_text()
    assert "always-valid interval reaches beyond ±25 pp or is unbounded" in text and "clips it there, hatched" in text
    assert "clips it" not in write_report(load_history(DATA / "ship.json"), load_config(CONFIG), tmp_path / "ship").read_text()


def test_report_names_the_injected_fault_and_what_followed(tmp_path: Path) -> None:
    history, _, config = _steps("rollback_guardrail")
    fault = report.Event(history.looks[0].time + timedelta(minutes=30), FAULT)
    text = write_report(history, config, tmp_path, [fault]).read_text()
    assert f"**Injected fault: {FAULT}** at 2026-11-23T11:30:00+00:00 (model weight 1%)" in text
    assert "The first decision after it: **rollback** at 2026-11-23T12:00:00+00:00, 30 min later: guardrail breached" in text
    assert "the dash-dotted black line is the injected fault" in text
    assert "Injected fault" not in write_report(history, config, tmp_path / "none").read_text()


def test_replaying_a_demo_run_folder_names_its_fault(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # The demo writes history.json and summary.json side by side; `analyze --history` finds the fault there.
    run = tmp_path / "demo-1-fault"
    run.mkdir()
    (run / "history.json").write_text((DATA / "rollback_guardrail.json").read_text())
    (run / "summary.json").write_text(json.dumps({"experiment": "clf-v2-vs-legacy", "inject_fault": True,
                                                  "fault_injected_at": "2026-11-23T11:30:00+00:00"}))
    code, _, err = analyze_cli(capsys, "--history", str(run / "history.json"), "--config", CONFIG, "--json",
                               "--report", str(run / "report"))
    assert code == 0, err
    assert f"**Injected fault: {FAULT}**" in (run / "report" / "report.md").read_text()


def test_report_explains_why_its_arm_counts_differ_from_the_routers(tmp_path: Path) -> None:
    history, _, config = _steps("ship")
    text = write_report(history, config, tmp_path).read_text()
    last = history.looks[-1].arms["model"]
    assert f"The router's counters at the last look: legacy {history.looks[-1].arms['legacy'].exposures} exposures" in text
    assert f"model {last.exposures} exposures and {last.outcomes} outcomes (the analysis counts " in text
    assert "belongs to neither period and is left out" in text
    # One period of constant weights: nothing left out, so nothing to explain.
    hold, _, _ = _steps("hold")
    assert "router's counters" not in write_report(hold, config, tmp_path / "hold").read_text()
