"""The demo's terminal view: stage, per-arm counts, the statistic against its boundary, decisions.

On a terminal it is a live panel redrawn at each look; elsewhere (CI logs, pipes) each look is
one plain line, so the progress is readable either way.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from experiments.live.report import bare_reason, headline, shorten
from experiments.local.simulated_users import UserStats

if TYPE_CHECKING:
    from experiments.store import DecisionRecord

#: The longest reason a plain line shows: one look stays one line in a CI log.
LINE_REASON_CHARS = 140

COLOURS = {"ramp": "green", "ship": "bold green", "rollback": "bold red", "blocked": "yellow", "hold": "white"}


class Display:
    def __init__(self, console: Console, users: UserStats, margin: float) -> None:
        self.console = console
        self.users = users
        self.margin = margin
        self.notes: list[str] = []
        self.record: DecisionRecord | None = None
        self.live = Live(console=console, refresh_per_second=4, transient=False) if console.is_terminal else None

    def __enter__(self) -> Display:
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live:
            self.live.update(self._render())
            self.live.__exit__(*exc)

    def note(self, text: str) -> None:
        self.notes.append(text)
        if not self.live:
            self.console.print(text, soft_wrap=True)

    def update(self, record) -> None:
        self.record = record
        if record.applied:
            self.note(f"[{COLOURS.get(record.decision, 'white')}]{record.decision.upper()}[/] "
                      f"{_weights(record.weights_before)} -> {_weights(record.weights_after)}: "
                      f"{escape(_after_target(bare_reason(record.decision, record.reason)))}")
        if self.live:
            self.live.update(self._render())
        else:
            # No markup in the line: rich would read "[n/a, n/a]" as a tag and drop it.
            self.console.print(self._line(record), highlight=False, soft_wrap=True, markup=False)

    def _line(self, record) -> str:
        stats = record.statistics or {}
        diff = stats.get("difference") or {}
        ci = diff.get("ci") or [None, None]
        u = self.users
        return (f"model {100 * (record.weights_before or {}).get('model', 0):g}% | "
                f"requests {u.requests} (errors {u.client_errors}) | "
                + " | ".join(f"{a} {t.requests} req {t.correct / t.requests:.3f} right" for a, t in u.arms.items() if t.requests)
                + (f" | diff {diff['estimate']:+.3f} {_ci(ci)}" if diff.get("estimate") is not None else "")
                + f" | {shorten(headline(record.decision, record.reason), LINE_REASON_CHARS)}")

    def _render(self) -> Group:
        r = self.record
        table = Table(title="modelramp demo", show_header=True, expand=False)
        for col in ("arm", "requests (clients)", "right", "outcomes reported", "exposures (router)", "successes (router)"):
            table.add_column(col, justify="right")
        counts = (r.counts or {}) if r else {}
        for arm, t in self.users.arms.items():
            c = counts.get(arm, {})
            table.add_row(arm, str(t.requests), f"{t.correct / t.requests:.3f}" if t.requests else "-", str(t.reported),
                          str(c.get("exposures", "-")), str(c.get("successes", "-")))
        lines = []
        if r:
            stats = r.statistics or {}
            diff = stats.get("difference") or {}
            stage = stats.get("stage") or {}
            lines.append(Text.from_markup(f"stage: model weight [bold]{100 * (r.weights_before or {}).get('model', 0):g}%[/]"
                                          + (f", {stage.get('model_exposures', 0)} model exposures in stage" if stage else "")))
            if diff.get("estimate") is not None:
                ci = diff.get("ci") or [None, None]
                lines.append(Text(f"difference model - legacy {diff['estimate']:+.4f}, always-valid {_ci(ci)}; "
                                  f"z {_num(diff.get('z'))} vs boundary {_num(diff.get('boundary'))}; "
                                  f"non-inferiority needs the CI above {-self.margin:+.3f}"))
            text = headline(r.decision, r.reason)
            word = len(r.decision) if text.lower().startswith(r.decision) else 0
            lines.append(Text.assemble("decision: ", (text[:word], COLOURS.get(r.decision, "white")), text[word:]))
        p99 = self.users.p99_ms()
        lines.append(Text(f"clients: {self.users.requests} answered, {self.users.client_errors} errors, "
                          f"{self.users.skipped} skipped" + ("" if p99 is None else f", p99 {_num(p99)} ms")))
        return Group(table, *lines, *(Text.from_markup(n) for n in self.notes[-8:]))


def _after_target(reason: str) -> str:
    """A ramp's reason without its "ramp to 5%: " opening: the note shows the weights already."""
    return re.sub(r"^ramp to [\d.]+%: ", "", reason)


def _ci(ci) -> str:
    """The interval, or that it is not bounded yet (the JSON statistics hold an infinite bound as null)."""
    if any(b is None or not math.isfinite(b) for b in ci):
        return "CI not bounded yet"
    return f"CI [{_num(ci[0])}, {_num(ci[1])}]"


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _weights(w) -> str:
    return "-" if not w else f"model {100 * w.get('model', 0):g}%"
