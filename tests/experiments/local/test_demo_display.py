"""The demo's plain one-line-per-look text: the decision said once, reasons shortened at phrase boundaries."""

from __future__ import annotations

import io
from datetime import datetime, timezone
from types import SimpleNamespace

from rich.console import Console

from experiments.local.demo_display import LINE_REASON_CHARS, Display
from experiments.local.simulated_users import UserStats

HOLD = ("hold: stage 1% has run 2 s of 10 s; 8 of 900 model-arm exposures in this stage; about 8 min to go at the "
        "current rate (difference +11.25 pp, always-valid 95% CI [-inf pp, +inf pp], harm bound +inf pp, by unit (64 buckets))")
RAMP = ("ramp to 5%: no significant harm (difference +4.88 pp, always-valid 95% CI [+0.88 pp, +9.16 pp], harm bound "
        "+8.75 pp, by unit (64 buckets); harm p = 1), no guardrail breached, stage 1% minimums met (5 min, 905 model-arm exposures)")


def _record(decision: str, reason: str, *, applied: bool = False, ci=(None, None)) -> SimpleNamespace:
    return SimpleNamespace(decision=decision, reason=reason, applied=applied, time=datetime.now(timezone.utc),
                           weights_before={"legacy": 0.99, "model": 0.01},
                           weights_after={"legacy": 0.95, "model": 0.05} if applied else None,
                           statistics={"difference": {"estimate": 0.1125, "ci": list(ci)}}, counts={})


def _plain_lines(*records: SimpleNamespace) -> list[str]:
    out = io.StringIO()
    display = Display(Console(file=out, width=300), UserStats(), 0.01)  # not a terminal: one plain line per look
    for record in records:
        display.update(record)
    return out.getvalue().splitlines()


def test_the_decision_word_is_printed_once() -> None:
    (line,) = _plain_lines(_record("hold", HOLD))
    assert "hold: hold:" not in line
    assert line.count("hold") == 1


def test_a_long_reason_ends_at_a_phrase_boundary() -> None:
    (line,) = _plain_lines(_record("hold", HOLD))
    reason = line.split(" | ")[-1]
    assert len(reason) <= LINE_REASON_CHARS
    # The whole first phrases, the parenthesised detail elided visibly, no word cut.
    assert reason == "hold: stage 1% has run 2 s of 10 s; 8 of 900 model-arm exposures in this stage; about 8 min to go at the current rate (…)"


def test_an_unbounded_interval_is_said_not_dropped() -> None:
    # "[n/a, n/a]" used to vanish as a rich markup tag.
    (line,) = _plain_lines(_record("hold", HOLD))
    assert "CI not bounded yet" in line
    (bounded,) = _plain_lines(_record("hold", HOLD, ci=(-0.02, 0.2)))
    assert "CI [-0.02, 0.2]" in bounded


def test_an_applied_ramp_names_its_weights_once() -> None:
    note, line = _plain_lines(_record("ramp", RAMP, applied=True))
    assert note.startswith("RAMP model 1% -> model 5%: no significant harm")
    assert "ramp: ramp" not in line and " | ramp to 5%: no significant harm (…), no guardrail breached" in line
