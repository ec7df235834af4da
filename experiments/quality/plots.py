"""Plots of the problem patterns database: each problem's accuracy across versions, and per-pattern grids.

The first is the graph of "Machine Learning in Real Life, part 2" ("performance of models over time, on different identified
problems"); the second is its drill-down: one row per pattern, one column per version, so a
pattern that flipped shows as a change of colour along its row. matplotlib's object API (no
pyplot state), so plotting is safe from any thread.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np


def plot_problems(rows: list[dict[str, Any]], versions: list[int], path: Path, model_name: str) -> Path:
    """One line per problem: share of its patterns answered right, per version (`Evaluation.table()` rows)."""
    from matplotlib.figure import Figure  # noqa: PLC0415 - matplotlib only when a plot is drawn

    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for row in rows:
        points = [(v, row["versions"][str(v)]["accuracy"]) for v in versions if row["versions"].get(str(v))]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        style = "-" if row["regression"] else "--"
        label = row["problem"] + (" (regression test)" if row["regression"] else "")
        ax.plot(xs, [100 * y for y in ys], style, marker="o", label=label)
    ax.set_xticks(versions, [f"v{v}" for v in versions])
    ax.set_ylim(-5, 105)
    ax.set_xlabel("model version")
    ax.set_ylabel("patterns answered right (%)")
    ax.set_title(f"{model_name}: known problems across versions")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def plot_pattern_grid(problem: str, patterns: list[dict[str, Any]], versions: list[int], path: Path) -> Path:
    """Patterns x versions: green right, red wrong, the churn score written in each cell.

    `patterns` rows: {"id", "expected", "note", "results": {version: {"score", "correct"} or None}}.
    """
    from matplotlib.colors import ListedColormap  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    # -1 not evaluated, 0 wrong, 1 right
    grid = np.array([[-1 if p["results"].get(v) is None else int(p["results"][v]["correct"]) for v in versions]
                     for p in patterns], dtype=float)
    height = 1.2 + 0.32 * len(patterns)
    fig = Figure(figsize=(2.2 + 1.1 * len(versions) + 3.0, height), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(grid, cmap=ListedColormap(["#dddddd", "#e06666", "#6aa84f"]), vmin=-1, vmax=1, aspect="auto")
    for i, p in enumerate(patterns):
        for j, v in enumerate(versions):
            result = p["results"].get(v)
            ax.text(j, i, "-" if result is None else f"{result['score']:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(versions)), [f"v{v}" for v in versions])
    ax.set_yticks(range(len(patterns)),
                  [f"#{p['id']} {'churn' if p['expected'] else 'stay'} {p['note'][:28]}".rstrip() for p in patterns],
                  fontsize=8)
    ax.set_title(f"{problem}: each pattern per version (green right, red wrong; churn score)", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def file_name(problem: str) -> str:
    """A file-system-safe name for a problem's plot."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", problem).strip("-").lower() or "problem"
