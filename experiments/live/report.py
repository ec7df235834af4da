"""Presenting an analysis: the terminal table (rich) and the Markdown report with PNG plots.

The report replays `analyze` at every look of the history, so the plots show what the analyzer
would have said at each moment: rates with their intervals, weights with the decisions taken,
and the observed statistic against the sequential boundary. Plots use matplotlib's object API
(`Figure`, rendered by Agg), never pyplot, so nothing global is touched.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from experiments.config import ExperimentConfig
from experiments.live.analysis import Analysis, analyze
from experiments.live.history import History

MARKERS = {"hold": ("o", "grey"), "ramp": ("^", "tab:green"), "ship": ("*", "tab:blue"),
           "rollback": ("v", "tab:red"), "blocked": ("x", "black")}


def _fmt(x: float | None, pct: bool = False, digits: int = 3) -> str:
    if x is None or x != x:  # None or NaN
        return "n/a"
    return f"{100 * x:.2f}%" if pct else f"{x:.{digits}g}"


def summary_rows(a: Analysis) -> list[tuple[str, str]]:
    """The analysis as (label, value) rows: shared by the terminal table and the Markdown report."""
    rows = [("decision", a.decision.upper()), ("reason", a.reason)]
    if a.stage:
        s = a.stage
        rows.append(("stage", f"{s.percent:g}% (#{s.index + 1}{', final' if s.final else ''}), "
                              f"{s.duration_seconds / 3600:.2f} h, {s.model_exposures} model-arm exposures"))
    if a.next_weights:
        rows.append(("next weights", ", ".join(f"{k} {v:g}" for k, v in a.next_weights.items())))
    for name, arm in a.arms.items():
        ci = f" [{_fmt(arm.ci[0], True)}, {_fmt(arm.ci[1], True)}]" if arm.ci else ""
        rows.append((f"{name} arm", f"{arm.successes}/{arm.outcomes} = {_fmt(arm.rate, True)}{ci} "
                                    f"({arm.exposures} exposures)"))
    if a.difference:
        d = a.difference
        counted = (f"by unit ({d.buckets} buckets, design effect {_fmt(d.design_effect)})" if d.counted_by == "unit"
                   else "request-level (no buckets)")
        rows += [("difference (model - legacy)", f"{_fmt(d.estimate, True)}, always-valid CI "
                                                 f"[{_fmt(d.ci[0], True)}, {_fmt(d.ci[1], True)}], {d.strata} strata, {counted}"),
                 ("harm / non-inferiority", f"harm upper bound {_fmt(d.harm_upper_bound, True)} (p = {_fmt(d.harm_p_value)}); "
                                            f"non-inferiority lower bound {_fmt(d.non_inferiority_lower_bound, True)} "
                                            f"(p = {_fmt(d.non_inferiority_p_value)})"),
                 ("sequential test", f"z = {_fmt(d.z)} vs boundary {_fmt(d.boundary)}, "
                                     f"always-valid p = {_fmt(d.always_valid_p_value)}"),
                 ("fixed-horizon (reference)", f"stratified p = {_fmt(d.fixed_horizon_p_value)}; pooled "
                                               f"z-test p = {_fmt(a.pooled_ztest['p_value'] if a.pooled_ztest else None)}")]
    if a.power:
        p = a.power
        eta = "n/a" if p.seconds_to_needed is None else f"{p.seconds_to_needed / 3600:.1f} h"
        rows.append(("power at MDE", f"{_fmt(p.power, True)} (fixed horizon, MDE {_fmt(p.mde, True)}, "
                                     f"n_eff {p.effective_sample:.0f}); the pending {p.pending.replace('_', '-')} test has "
                                     f"{_fmt(p.sequential_power, True)} power now, information {p.information:.0f} of "
                                     f"{p.needed_information:.0f} needed, about {eta} more"))
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


def _plot_rates(history: History, steps: list[Analysis], path: Path) -> None:
    from matplotlib.figure import Figure  # noqa: PLC0415 - matplotlib only when a report is drawn

    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.add_subplot()
    for arm, colour in (("legacy", "tab:grey"), ("model", "tab:blue")):
        pts = [(look.time, a.rate, a.ci) for look, s in zip(history.looks, steps, strict=True)
               if (a := s.arms.get(arm)) is not None and a.rate is not None and a.ci is not None]
        if not pts:
            continue
        when = _times(t for t, _, _ in pts)
        ax.plot(when, [rate for _, rate, _ in pts], marker="o", color=colour, label=arm)
        ax.fill_between(when, [ci[0] for _, _, ci in pts], [ci[1] for _, _, ci in pts], color=colour, alpha=0.2)
    ax.set_ylabel("success rate (cumulative, Wilson CI)")
    ax.set_title("Success rate per arm")
    ax.legend()
    fig.autofmt_xdate()
    fig.savefig(path, dpi=100)


def _plot_weights(history: History, steps: list[Analysis], path: Path) -> None:
    from matplotlib.figure import Figure  # noqa: PLC0415 - matplotlib only when a report is drawn

    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.step(_times(look.time for look in history.looks), [100 * look.weights["model"] for look in history.looks], where="post",
            color="tab:blue")
    for decision, (marker, colour) in MARKERS.items():
        pts = [(look.time, 100 * look.weights["model"]) for look, s in zip(history.looks, steps, strict=True) if s.decision == decision]
        if pts:
            ax.scatter(_times(t for t, _ in pts), [w for _, w in pts], marker=marker, color=colour, s=80, label=decision, zorder=3)
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylabel("model arm weight (%)")
    ax.set_title("Traffic weight and the decision at each look")
    ax.legend()
    fig.autofmt_xdate()
    fig.savefig(path, dpi=100)


def _plot_sequential(history: History, steps: list[Analysis], margin: float, path: Path) -> None:
    from matplotlib.figure import Figure  # noqa: PLC0415 - matplotlib only when a report is drawn

    fig = Figure(figsize=(8, 6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    pts = [(look.time, s.difference) for look, s in zip(history.looks, steps, strict=True) if s.difference]
    t = [p[0] for p in pts]
    top.plot(t, [d.z for _, d in pts], marker="o", label="observed z (stratified)")
    top.plot(t, [d.boundary for _, d in pts], "r--", label="mixture SPRT boundary")
    top.plot(t, [-d.boundary for _, d in pts], "r--")
    top.set_ylabel("z")
    top.set_title("Sequential test: observed statistic against the always-valid boundary")
    top.legend()
    bottom.plot(t, [100 * d.estimate for _, d in pts], marker="o", label="model - legacy")
    # Early looks can have an unbounded interval; clip it so the axis shows the informative part.
    bottom.fill_between(t, [max(100 * d.ci[0], -25) for _, d in pts], [min(100 * d.ci[1], 25) for _, d in pts],
                        alpha=0.2, label="always-valid CI")
    bottom.axhline(-100 * margin, color="tab:orange", linestyle=":", label="-margin")
    bottom.axhline(0, color="black", linewidth=0.5)
    bottom.set_ylabel("difference (pp)")
    bottom.legend()
    fig.autofmt_xdate()
    fig.savefig(path, dpi=100)


def write_report(history: History, config: ExperimentConfig, out_dir: str | Path) -> Path:
    """Write `report.md` and its PNG plots to `out_dir`; return the report's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = replay(history, config)
    lines = [f"# modelramp analysis: {history.experiment}", ""]
    if not steps:
        lines += ["The history has no looks: nothing to analyse.", ""]
    else:
        final = steps[-1]
        lines += [f"**Decision: {final.decision}** at {final.time.isoformat() if final.time else 'n/a'}", "",
                  "| | |", "| --- | --- |"]
        lines += [f"| {label} | {value.replace('|', '/')} |" for label, value in summary_rows(final)]
        lines += ["", "## Decisions at each look", "", "| look | time | model weight | decision | reason |",
                  "| --- | --- | --- | --- | --- |"]
        for i, (look, s) in enumerate(zip(history.looks, steps, strict=True)):
            lines.append(f"| {i} | {look.time.isoformat()} | {100 * look.weights['model']:g}% | {s.decision} | "
                         f"{s.reason.replace('|', '/')} |")
        _plot_rates(history, steps, out / "rates.png")
        _plot_weights(history, steps, out / "weights.png")
        _plot_sequential(history, steps, config.criteria.non_inferiority_margin, out / "sequential.png")
        lines += ["", "## Plots", "", "![Success rate per arm](rates.png)", "",
                  "![Traffic weight and decisions](weights.png)", "", "![Sequential test](sequential.png)", "",
                  "Method: Mantel-Haenszel difference over periods of constant weights, by unit when the "
                  "history has analysis buckets (cluster-robust variance), judged with always-valid "
                  "sequences (harm, non-inferiority at the margin, two-sided CI); see docs/statistics.md.", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
