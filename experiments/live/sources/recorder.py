"""Turn successive readings into a History whose counters never go down, and save it as JSON.

A router replica that restarts starts its counters again at zero. Summing replicas naively would
then show counts going *down*, or, if the replica vanished from Prometheus for a while and came
back, count its past twice. The recorder keeps the last raw value of every (replica, arm, field)
and adds only increments, exactly as Prometheus's `increase()` treats a counter reset: when a
replica's value drops, or its counters' creation time (`_created`) moves forward, its new value is
all new counts. Replicas that are missing from a reading add nothing and keep their last value for
when they come back.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.live.history import History, Look, dump_history
from experiments.live.sources.base import DEFAULT_BUCKETS, Counters, Reading, look_counts, make_look


class RecorderError(ValueError):
    """A reading that cannot extend the history (e.g. taken before the last look)."""


@dataclass(frozen=True)
class Step:
    """What one reading did to the history: the new look, and the replicas that reset or vanished."""

    look: Look
    resets: tuple[str, ...]
    missing: tuple[str, ...]


class Recorder:
    """Accumulates readings of one experiment into a History (optionally resumed from a saved one)."""

    def __init__(self, experiment: str, history: History | None = None, state: Mapping[str, Any] | None = None):
        self.history = history or History(experiment, ())
        if self.history.experiment != experiment:
            raise RecorderError(f"history is of experiment {self.history.experiment!r}, not {experiment!r}")
        # Last raw value and creation time per replica (see `state()`); without them (a history
        # loaded from a file) the next reading is taken as the new baseline.
        state = state or {}
        self.raw: Counters = {i: {a: dict(c) for a, c in arms.items()} for i, arms in state.get("counters", {}).items()}
        self.started: dict[str, float] = dict(state.get("started", {}))

    def state(self) -> dict[str, Any]:
        """What the next reading is folded against, as plain JSON (the controller stores it per look)."""
        return {"counters": self.raw, "started": self.started}

    def add(self, reading: Reading, weights: Mapping[str, float], buckets: int = DEFAULT_BUCKETS) -> Step:
        """Fold a reading taken under `weights` into the history (B = `buckets` analysis buckets); returns the new look.

        Counts per bucket are folded like the totals (they are keys of the same counters), so a
        restart keeps the buckets' sums equal to the totals.
        """
        last = self.history.looks[-1] if self.history.looks else None
        if last is not None and reading.time <= last.time:
            raise RecorderError(f"reading at {reading.time.isoformat()} is not after the last look at {last.time.isoformat()}")
        resets: list[str] = []
        if last is None or not self.raw:
            totals = reading.totals()
        else:
            totals = look_counts(last)
            for instance, arms in reading.counters.items():
                before = self.raw.get(instance)
                if before is not None and (_went_down(before, arms) or self._restarted(instance, reading)):
                    resets.append(instance)
                for arm, counts in arms.items():
                    for f, value in counts.items():
                        old = (before or {}).get(arm, {}).get(f)
                        # New replica, or a restarted one: everything it counts is new.
                        gained = value if old is None or instance in resets else value - old
                        totals[arm][f] = totals[arm].get(f, 0) + gained
        missing = tuple(sorted(set(self.raw) - set(reading.counters)))
        look = make_look(reading.time, weights, totals, reading.p99_latency_seconds, buckets)
        self.history = History(self.history.experiment, (*self.history.looks, look))
        for instance, arms in reading.counters.items():
            self.raw[instance] = {a: dict(c) for a, c in arms.items()}
        self.started.update(reading.started)
        return Step(look, tuple(resets), missing)

    def _restarted(self, instance: str, reading: Reading) -> bool:
        # Creation times are whole-process facts: a later one means a new router process.
        old, new = self.started.get(instance), reading.started.get(instance)
        return old is not None and new is not None and new > old + 1e-3

    def save(self, path: str | Path) -> Path:
        """Write the history as JSON (docs/architecture.md format) atomically; returns the path."""
        return save_history(self.history, path)


def _went_down(before: Mapping[str, Mapping[str, int]], after: Mapping[str, Mapping[str, int]]) -> bool:
    # A series missing from a replica that answered counts as zero: a restarted router has not
    # created it yet.
    return any(value > after.get(arm, {}).get(f, 0) for arm, counts in before.items() for f, value in counts.items())


def save_history(history: History, path: str | Path) -> Path:
    """Write a history JSON file atomically (temp file + rename), so a reader never sees half of it."""
    path = Path(path)
    text = json.dumps(dump_history(history), indent=1) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
