"""Presenting an analysis: the terminal table (rich) and the Markdown report with PNG plots.

The report replays `analyze` at every look of the history, so the plots show what the analyzer
would have said at each moment: rates with their intervals, weights with the decisions taken,
and the observed statistic against the sequential boundary, each with a line where a decision
changed the weights and where a fault was injected (`Event`: the demo's killed model server), so
a rollback is read next to its cause. Plots use matplotlib's object API (`Figure`, rendered by
Agg), never pyplot, so nothing global is touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console
from rich.table import Table

from experiments.config import ExperimentConfig
from experiments.live.analysis import Analysis, analyze

# Durations worded as in the analyzer's reasons ("45 s", "2 min", "1.5 h"), so the report and its reasons agree.
from experiments.live.analysis import _duration as duration_text
from experiments.live.history import History

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MARKERS = {"hold": ("o", "grey"), "ramp": ("^", "tab:green"), "ship": ("*", "tab:blue"),
           "rollback": ("v", "tab:red"), "blocked": ("x", "black")}


def bare_reason(decision: str, reason: str) -> str:
    """The reason without a leading "<decision>: ", for places that show the decision beside it.

    The analyzer and the controller open some reasons with the decision word ("hold: ...",
    "ship: ...") so that a reason read alone (a log line, an alert) names it; next to a decision
    column that reads "hold: hold: ...".
    """
    lead = f"{decision}: "
    return reason[len(lead):] if reason.lower().startswith(lead.lower()) else reason


def headline(decision: str, reason: str) -> str:
    """The decision and its reason as one phrase, the decision word said once.

    A reason that already opens with the word ("hold: ...", "ramp to 5%: ...") is the phrase.
    """
    word = decision.lower()
    opening = reason[:len(word) + 1].lower()
    return reason if opening in (f"{word}:", f"{word} ") else f"{decision}: {reason}"


def shorten(text: str, width: int) -> str:
    """`text` in at most `width` characters, whole phrases only, never cut mid-word.

    A one-line-per-look log has to stay one line. Parenthesised details go first, longest first,
    each leaving "(…)" so the reader knows there is more (the audit log has it all); if that is
    not enough the text ends at the last phrase boundary ("; " or ", " outside brackets) that fits.
    """
    while len(text) > width:
        groups = _top_level_groups(text)
        if not groups:
            break
        start, end = max(groups, key=lambda g: g[1] - g[0])
        if end - start <= len("(…)"):
            break
        text = text[:start] + "(…)" + text[end:]
    if len(text) <= width:
        return text
    room = width - len(" …")
    depth, phrase, space = 0, 0, 0
    for i, ch in enumerate(text[:room + 1]):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        elif ch == " " and depth == 0:
            space = i
            if text[i - 1] in ";,":
                phrase = i - 1
    cut = phrase or space or text.rfind(" ", 0, room + 1)
    return (text[:cut] if cut > 0 else text[:room]).rstrip(" ;,") + " …"


def _top_level_groups(text: str) -> list[tuple[int, int]]:
    """(start, end) of each outermost "(...)" in `text`, end exclusive."""
    groups, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            if depth == 0:
                start = i
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
            if depth == 0:
                groups.append((start, i + 1))
    return groups


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _fmt(x: float | None, pct: bool = False, digits: int = 3) -> str:
    if x is None or x != x:  # None or NaN
        return "n/a"
    return f"{100 * x:.2f}%" if pct else f"{x:.{digits}g}"


def summary_rows(a: Analysis) -> list[tuple[str, str]]:
    """The analysis as (label, value) rows: shared by the terminal table and the Markdown report."""
    rows = [("decision", a.decision.upper()), ("reason", bare_reason(a.decision, a.reason))]
    if a.stage:
        s = a.stage
        rows.append(("stage", f"{s.percent:g}% (#{s.index + 1}{', final' if s.final else ''}), "
                              f"{duration_text(s.duration_seconds)}, {_plural(s.model_exposures, 'model-arm exposure', 'model-arm exposures')}"))
    if a.next_weights:
        rows.append(("next weights", ", ".join(f"{k} {v:g}" for k, v in a.next_weights.items())))
    for name, arm in a.arms.items():
        ci = f" [{_fmt(arm.ci[0], True)}, {_fmt(arm.ci[1], True)}]" if arm.ci else ""
        rows.append((f"{name} arm", f"{arm.successes}/{arm.outcomes} = {_fmt(arm.rate, True)}{ci} "
                                    f"({_plural(arm.exposures, 'exposure', 'exposures')})"))
    if a.difference:
        d = a.difference
        counted = (f"by unit ({d.buckets} buckets, design effect {_fmt(d.design_effect)})" if d.counted_by == "unit"
                   else "request-level (no buckets)")
        strata = _plural(d.strata, "stratum", "strata")
        bounded = all(np.isfinite(d.ci))
        ci = f"always-valid CI [{_fmt(d.ci[0], True)}, {_fmt(d.ci[1], True)}]" if bounded else "always-valid CI not bounded yet"
        rows += [("difference (model - legacy)", f"{_fmt(d.estimate, True)}, {ci}, {strata}, {counted}"),
                 ("harm / non-inferiority", f"harm upper bound {_fmt(d.harm_upper_bound, True)} (p = {_fmt(d.harm_p_value)}); "
                                            f"non-inferiority lower bound {_fmt(d.non_inferiority_lower_bound, True)} "
                                            f"(p = {_fmt(d.non_inferiority_p_value)})"),
                 ("sequential test", f"z = {_fmt(d.z)} vs boundary {_fmt(d.boundary)}, "
                                     f"always-valid p = {_fmt(d.always_valid_p_value)}"),
                 ("fixed-horizon (reference)", f"stratified p = {_fmt(d.fixed_horizon_p_value)}; pooled "
                                               f"z-test p = {_fmt(a.pooled_ztest['p_value'] if a.pooled_ztest else None)}")]
    if a.power:
        p = a.power
        # No estimate of the wait when no information rate is measured yet (or repeat units cap it): say so.
        if p.seconds_to_needed is None:
            eta = "no estimate yet of the time to it"
        elif p.seconds_to_needed == 0:
            eta = "reached"
        else:
            eta = f"about {duration_text(p.seconds_to_needed)} more"
        needed = (f"{p.needed_information:.0f} needed" if np.isfinite(p.needed_information)
                  else "an amount not known until both arms have outcomes")
        rows.append(("power at MDE", f"{_fmt(p.power, True)} (fixed horizon, MDE {_fmt(p.mde, True)}, "
                                     f"n_eff {p.effective_sample:.0f}); the pending {p.pending.replace('_', '-')} test has "
                                     f"{_fmt(p.sequential_power, True)} power now, information {p.information:.0f} of "
                                     f"{needed}, {eta}"))
    if a.srm:
        rows.append(("sample ratio", f"sequential p = {_fmt(a.srm.p_value)} on units ({'MISMATCH' if a.srm.mismatch else 'ok'}, "
                                     f"threshold {a.srm.threshold:g}); outcomes per exposure p = "
                                     f"{_fmt(a.srm.outcome_rate_p_value)}"))
    for g in a.guardrails:
        rows.append((f"guardrail {g.name}", f"{'BREACHED' if g.breached else 'ok'}: {g.detail}"))
    return rows


def print_table(a: Analysis) -> None:
    """Print the analysis as a two-column rich table on stdout."""
    colour = {"ship": "green", "ramp": "green", "hold": "yellow", "rollback": "red", "blocked": "red"}[a.decision]
    table = Table(title=f"{a.experiment}: {a.looks} looks", show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for label, value in summary_rows(a):
        table.add_row(label, f"[{colour}]{value}[/]" if label == "decision" else value)
    Console(soft_wrap=False).print(table)


def replay(history: History, config: ExperimentConfig) -> list[Analysis]:
    """The analysis as it would have been at each look."""
    return [analyze(history.upto(n), config) for n in range(1, len(history.looks) + 1)]


def _times(times: Iterable[datetime]) -> np.ndarray:
    """Datetimes as an object array: matplotlib puts them on a date axis (its stubs take arrays, not lists of datetimes)."""
    return np.array(list(times), dtype=object)


@dataclass(frozen=True)
class Event:
    """Something done to the system under test that the counts do not show (the demo's injected fault).

    Drawn on every plot and named in the report, so a rollback can be read next to its cause.
    """

    time: datetime
    label: str  # what was done, e.g. "model server killed"


#: What the demo's `--inject-fault` does, as the report names it.
DEMO_FAULT = "model server killed"


def fault_events(summary: Mapping[str, Any]) -> list[Event]:
    """The fault a demo run injected, from its `summary.json` (`fault_injected_at`), as report events."""
    when = summary.get("fault_injected_at")
    return [Event(datetime.fromisoformat(when), DEMO_FAULT)] if when else []


#: Decisions that change the weights: a vertical line where each was first taken.
DECISION_LINES = {"ramp": "tab:green", "rollback": "tab:red", "ship": "tab:blue"}
#: The difference plot's range in percentage points: an unbounded early interval would flatten the rest.
CI_CLIP_PP = 25.0


def _clipped(ci: tuple[float, float]) -> bool:
    """Does the interval reach beyond the difference plot's range (an unbounded one does)?"""
    return bool(100 * ci[0] < -CI_CLIP_PP or 100 * ci[1] > CI_CLIP_PP)


def _decisions_taken(history: History, steps: list[Analysis]) -> list[tuple[datetime, str]]:
    """(time, decision) at each look that decided to change the weights, once per run of the same decision."""
    out: list[tuple[datetime, str]] = []
    previous = None
    for look, s in zip(history.looks, steps, strict=True):
        key = (s.decision, tuple(sorted(look.weights.items())))
        if s.decision in DECISION_LINES and key != previous:
            out.append((look.time, s.decision))
        previous = key
    return out


def _mark(ax, history: History, steps: list[Analysis], events: Sequence[Event]) -> None:
    """Vertical lines for each decision taken and each event, labelled once each for the legend."""
    labelled: set[str] = set()
    for when, decision in _decisions_taken(history, steps):
        ax.axvline(when, color=DECISION_LINES[decision], linestyle="--", linewidth=1.2, alpha=0.9,
                   label=f"decision: {decision}" if decision not in labelled else "_nolegend_")
        labelled.add(decision)
    for event in events:
        ax.axvline(event.time, color="black", linestyle="-.", linewidth=1.8, label=f"injected fault: {event.label}")


def _time_axis(ax) -> None:
    from matplotlib import dates  # noqa: PLC0415 - matplotlib only when a report is drawn

    # Concise labels (the day once, then times): the default repeats "01 14:24" at every tick.
    locator = dates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    clock = ["%Y", "%b", "%d", "%H:%M", "%H:%M", "%H:%M:%S"]  # a time of day at every tick, never a bare "05"
    ax.xaxis.set_major_formatter(dates.ConciseDateFormatter(locator, tz=timezone.utc, formats=clock,
                                                            zero_formats=["", "%Y", "%b", "%b-%d", "%H:%M", "%H:%M"]))
    ax.set_xlabel("time (UTC)")


def _legend(ax) -> None:
    # Outside the axes: the markers sit where the data is, at the start and the end of the run.
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")


def _plot_rates(history: History, steps: list[Analysis], events: Sequence[Event] = ()) -> Figure:
    from matplotlib.figure import Figure  # noqa: PLC0415 - matplotlib only when a report is drawn

    fig = Figure(figsize=(10, 4), layout="constrained")
    ax = fig.add_subplot()
    for arm, colour in (("legacy", "tab:grey"), ("model", "tab:blue")):
        pts = [(look.time, a.rate, a.ci) for look, s in zip(history.looks, steps, strict=True)
               if (a := s.arms.get(arm)) is not None and a.rate is not None and a.ci is not None]
        if not pts:
            continue
        when = _times(t for t, _, _ in pts)
        ax.plot(when, [rate for _, rate, _ in pts], marker="o", markersize=3, color=colour, label=arm)
        ax.fill_between(when, [ci[0] for _, _, ci in pts], [ci[1] for _, _, ci in pts], color=colour, alpha=0.2)
    _mark(ax, history, steps, events)
    ax.set_ylabel("success rate (cumulative, Wilson CI)")
    ax.set_title("Success rate per arm")
    _legend(ax)
    _time_axis(ax)
    return fig


def stage_levels(history: History, steps: list[Analysis], config: ExperimentConfig) -> list[float]:
    """The model weights (percent) the weights plot has a row for: 0 (legacy only), every stage, any other weight seen."""
    seen = [100 * look.weights["model"] for look in history.looks]
    seen += [100 * s.next_weights["model"] for s in steps if s.next_weights]
    return sorted({0.0, *(round(st.percent, 6) for st in config.ramp.stages), *(round(w, 6) for w in seen)})


def _plot_weights(history: History, steps: list[Analysis], config: ExperimentConfig, events: Sequence[Event] = ()) -> Figure:
    from matplotlib.figure import Figure  # noqa: PLC0415 - matplotlib only when a report is drawn

    # One row per stage, evenly spaced: a log axis has no 0 (a rollback's weight) and squeezes 1% and 5%.
    levels = stage_levels(history, steps, config)
    row = {level: i for i, level in enumerate(levels)}

    def at(weights: Mapping[str, float]) -> int:
        return row[round(100 * weights["model"], 6)]

    fig = Figure(figsize=(10, 4), layout="constrained")
    ax = fig.add_subplot()
    when = _times(look.time for look in history.looks)
    ax.step(when, [at(look.weights) for look in history.looks], where="post", color="tab:blue", linewidth=2, zorder=4,
            label="model weight")
    final, last = steps[-1], history.looks[-1]
    if final.next_weights and at(final.next_weights) != at(last.weights):
        # The last look decided new weights that no later look saw in force (the demo stops at ship or
        # rollback): draw where they go, so a rollback visibly reaches 0%.
        span = (last.time - history.looks[0].time) or timedelta(seconds=1)
        tail = _times([last.time, last.time, last.time + span * 0.05])
        ax.plot(tail, [at(last.weights), at(final.next_weights), at(final.next_weights)], color="tab:blue",
                linestyle=(0, (1, 1)), linewidth=2.5, zorder=4, label=f"weights written by the last {final.decision}")
    for decision, (marker, colour) in MARKERS.items():
        pts = [(look.time, at(look.weights)) for look, s in zip(history.looks, steps, strict=True) if s.decision == decision]
        if pts:
            big = decision in DECISION_LINES
            ax.scatter(_times(t for t, _ in pts), [w for _, w in pts], marker=marker, color=colour, s=70 if big else 10,
                       label=f"look says {decision}", zorder=5 if big else 3)
    _mark(ax, history, steps, events)
    ax.set_yticks(range(len(levels)), [f"{level:g}%" for level in levels])
    ax.set_ylim(-0.5, len(levels) - 0.5)
    ax.set_ylabel("model arm weight (stages, not to scale)")
    ax.set_title("Traffic weight and the decision at each look")
    ax.grid(axis="y", alpha=0.3)
    _legend(ax)
    _time_axis(ax)
    return fig


def _plot_sequential(history: History, steps: list[Analysis], margin: float, events: Sequence[Event] = ()) -> Figure:
    from matplotlib.figure import Figure  # noqa: PLC0415 - matplotlib only when a report is drawn

    fig = Figure(figsize=(10, 6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    pts = [(look.time, s.difference) for look, s in zip(history.looks, steps, strict=True) if s.difference]
    t = _times(p[0] for p in pts)
    top.plot(t, [d.z for _, d in pts], marker="o", markersize=3, label="observed z (stratified)")
    top.plot(t, [d.boundary for _, d in pts], "r--", label="mixture SPRT boundary")
    top.plot(t, [-d.boundary for _, d in pts], "r--")
    _mark(top, history, steps, events)
    top.set_ylabel("z")
    top.set_title("Sequential test: observed statistic against the always-valid boundary")
    _legend(top)
    bottom.plot(t, [100 * d.estimate for _, d in pts], marker="o", markersize=3, label="model - legacy")
    low, high = np.array([100 * d.ci[0] for _, d in pts]), np.array([100 * d.ci[1] for _, d in pts])
    clipped = np.array([_clipped(d.ci) for _, d in pts], dtype=bool)
    shown_low, shown_high = np.maximum(low, -CI_CLIP_PP), np.minimum(high, CI_CLIP_PP)
    bottom.fill_between(t, shown_low, shown_high, alpha=0.2, label="always-valid CI")
    if clipped.any():
        # Say where the band is not the interval: there it is wider (or unbounded) than the axis.
        bottom.fill_between(t, shown_low, shown_high, where=clipped, facecolor="none", edgecolor="tab:blue",
                            hatch="//", linewidth=0, label=f"CI clipped at ±{CI_CLIP_PP:g} pp (wider or unbounded)")
    bottom.axhline(-100 * margin, color="tab:orange", linestyle=":", label="-margin")
    bottom.axhline(0, color="black", linewidth=0.5)
    _mark(bottom, history, steps, events)
    bottom.set_ylabel("difference (pp)")
    _legend(bottom)
    _time_axis(bottom)
    return fig


def _event_lines(history: History, steps: list[Analysis], events: Sequence[Event]) -> list[str]:
    """A paragraph per event: when, at which weight, and the first weight-changing decision after it."""
    lines = []
    for event in events:
        before = [look for look in history.looks if look.time <= event.time]
        weight = f"{100 * before[-1].weights['model']:g}%" if before else "before the first look"
        after = [(look, s) for look, s in zip(history.looks, steps, strict=True)
                 if look.time > event.time and s.decision in DECISION_LINES]
        if after:
            look, s = after[0]
            then = (f" The first decision after it: **{s.decision}** at {look.time.isoformat()}, "
                    f"{duration_text((look.time - event.time).total_seconds())} later: {bare_reason(s.decision, s.reason)}.")
        else:
            then = " No look after it decided to change the weights."
        lines += [f"**Injected fault: {event.label}** at {event.time.isoformat()} (model weight {weight}); "
                  f"the dash-dotted black line on every plot.{then}", ""]
    return lines


def _counts_lines(history: History, final: Analysis) -> list[str]:
    """Why the arm rows can differ from the router's counters, with the router's own figures."""
    last = history.looks[-1]
    router = {name: (arm.exposures, arm.outcomes) for name, arm in last.arms.items()}
    analysed = {name: (arm.exposures, arm.outcomes) for name, arm in final.arms.items()}
    if all(router.get(name) == counts for name, counts in analysed.items()):
        return []
    figures = "; ".join(f"{name} {router[name][0]} exposures and {router[name][1]} outcomes "
                        f"(the analysis counts {analysed[name][0]} and {analysed[name][1]})"
                        for name in analysed if name in router)
    return [f"The router's counters at the last look: {figures}. The arm rows above count what the analysis "
            "compares: the sum over periods of constant weights (the strata). What was counted between the last "
            "look of one period and the first look of the next was collected partly under the old weights and "
            "partly under the new, so it belongs to neither period and is left out. Outcomes are counted when "
            "reported, a moment after their request, so a period can hold more outcomes than exposures.", ""]


def write_report(history: History, config: ExperimentConfig, out_dir: str | Path, events: Sequence[Event] = ()) -> Path:
    """Write `report.md` and its PNG plots to `out_dir`; return the report's path.

    `events` (an injected fault) are named in the text and marked on every plot.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = replay(history, config)
    lines = [f"# modelramp analysis: {history.experiment}", ""]
    if not steps:
        lines += ["The history has no looks: nothing to analyse.", ""]
    else:
        final = steps[-1]
        lines += [f"**Decision: {final.decision}** at {final.time.isoformat() if final.time else 'n/a'}", ""]
        lines += _event_lines(history, steps, events)
        lines += ["| | |", "| --- | --- |"]
        lines += [f"| {label} | {value.replace('|', '/')} |" for label, value in summary_rows(final)]
        lines += [""] + _counts_lines(history, final)
        lines += ["## Decisions at each look", "", "| look | time | model weight | decision | reason |",
                  "| --- | --- | --- | --- | --- |"]
        for i, (look, s) in enumerate(zip(history.looks, steps, strict=True)):
            lines.append(f"| {i} | {look.time.isoformat()} | {100 * look.weights['model']:g}% | {s.decision} | "
                         f"{bare_reason(s.decision, s.reason).replace('|', '/')} |")
        for name, fig in (("rates.png", _plot_rates(history, steps, events)),
                          ("weights.png", _plot_weights(history, steps, config, events)),
                          ("sequential.png", _plot_sequential(history, steps, config.criteria.non_inferiority_margin, events))):
            fig.savefig(out / name, dpi=100)
        lines += ["", "## Plots", "",
                  "Dashed vertical lines mark the looks that decided to ramp (green), roll back (red) or ship (blue)"
                  + ("; the dash-dotted black line is the injected fault" if events else "") + ".", "",
                  "![Success rate per arm](rates.png)", "",
                  "![Traffic weight and decisions](weights.png)", "", "![Sequential test](sequential.png)", ""]
        clipped = sum(1 for step in steps if step.difference and _clipped(step.difference.ci))
        if clipped:
            lines += [f"At {_plural(clipped, 'look', 'looks')} the always-valid interval reaches beyond ±{CI_CLIP_PP:g} pp "
                      "or is unbounded (too few outcomes yet); the difference plot clips it there, hatched.", ""]
        lines += ["Method: Mantel-Haenszel difference over periods of constant weights, by unit when the "
                  "history has analysis buckets (cluster-robust variance), judged with always-valid "
                  "sequences (harm, non-inferiority at the margin, two-sided CI); see docs/statistics.md.", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
