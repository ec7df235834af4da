"""The experiment history: per-arm cumulative counts at each look, as value objects and as JSON.

This is the analyzer's input. A recorded file (`modelramp analyze --history FILE`) and the live
sources (Prometheus, routers' `/metrics`) both produce a `History`, so any experiment can be saved
with `dump_history` and replayed later. The JSON shape (docs/architecture.md, "Experiment history"):

    {"experiment": "...",
     "looks": [{"time": "2026-11-23T10:00:00Z",
                "weights": {"legacy": 0.99, "model": 0.01},
                "arms": {"legacy": {"exposures": 9901, "successes": 8712}, "model": {...}}}]}

An arm may also carry `"buckets": {"exposures": [...], "successes": [...], "failures": [...]}`:
the same cumulative counts per analysis bucket (router/buckets.py), each a list of B integers
whose sums equal the arm's `exposures`, `successes` and `failures` (which must then be given).
Within a look both arms have buckets or neither, and every look with buckets has the same B.
The analyzer counts by unit (buckets as clusters) when every look has them, and request-level
otherwise.

Counters are cumulative since the experiment started. `weights` are the configured shares in force
at that look; the analyzer takes the counts gained between the previous look and this one as
collected under this look's weights.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from router.config import ARMS

#: Weights must sum to 1 within this tolerance (they are written as decimals by people and tools).
WEIGHT_TOLERANCE = 1e-6


class HistoryError(ValueError):
    """A history that cannot be analysed; the message names the look index and the field."""


class CounterResetError(HistoryError):
    """A cumulative counter went down between two looks: a router restarted or a series was reset."""


def _where(look: int | None, fld: str) -> str:
    return fld if look is None else f"looks[{look}].{fld}"


BUCKET_FIELDS = ("exposures", "successes", "failures")


@dataclass(frozen=True)
class Buckets:
    """Cumulative counts of one arm per analysis bucket: three lists of B integers (B >= 1)."""

    exposures: tuple[int, ...]
    successes: tuple[int, ...]
    failures: tuple[int, ...]

    def __post_init__(self) -> None:
        for name in BUCKET_FIELDS:
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self.validate()

    @property
    def count(self) -> int:
        """B, the number of buckets."""
        return len(self.exposures)

    def validate(self, where: str = "buckets") -> None:
        """Raise HistoryError on lists of different or zero length, or a count that is not a non-negative integer."""
        lengths = {name: len(getattr(self, name)) for name in BUCKET_FIELDS}
        if len(set(lengths.values())) != 1 or not lengths["exposures"]:
            raise HistoryError(f"{where}: exposures, successes and failures must be lists of the same length B >= 1, "
                               f"got lengths {lengths}")
        for name in BUCKET_FIELDS:
            for b, value in enumerate(getattr(self, name)):
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise HistoryError(f"{where}.{name}[{b}]: must be a non-negative integer count, got {value!r}")


@dataclass(frozen=True)
class ArmCounts:
    """Cumulative counters of one arm at one look.

    `exposures` counts units (requests) served by the arm. Outcomes arrive later and not always:
    when `failures` is given, the success rate is successes / (successes + failures), i.e. over
    reported outcomes only, so a request whose outcome never came is not counted as a failure.
    When `failures` is None (the short form in docs/architecture.md), every exposure is an outcome and the
    rate is successes / exposures. `errors` and `fallbacks` count backend errors and answers served
    by the fallback; `p99_latency_seconds` is a gauge (the arm's current p99), not cumulative.
    `buckets` holds exposures, successes and failures per analysis bucket (None: not counted by bucket).
    """

    exposures: int
    successes: int
    failures: int | None = None
    errors: int = 0
    fallbacks: int = 0
    p99_latency_seconds: float | None = None
    buckets: Buckets | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, look: int | None = None, arm: str = "") -> None:
        """Raise HistoryError if a count is negative or outcomes exceed exposures."""
        prefix = f"arms.{arm}." if arm else ""
        for name in ("exposures", "successes", "failures", "errors", "fallbacks"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise HistoryError(f"{_where(look, prefix + name)}: must be an integer count, got {value!r}")
            if value < 0:
                raise HistoryError(f"{_where(look, prefix + name)}: negative count {value}")
        reported = self.successes + (self.failures or 0)
        if reported > self.exposures:
            raise HistoryError(
                f"{_where(look, prefix + 'successes')}: {reported} outcomes exceed {self.exposures} exposures"
            )
        p99 = self.p99_latency_seconds
        if p99 is not None and not (isinstance(p99, (int, float)) and math.isfinite(p99) and p99 >= 0):
            raise HistoryError(f"{_where(look, prefix + 'p99_latency_seconds')}: must be a non-negative number, got {p99!r}")
        if self.buckets is not None:
            where = _where(look, prefix + "buckets")
            self.buckets.validate(where)
            if self.failures is None:
                raise HistoryError(f"{where}: buckets need the arm's failures")
            for name in BUCKET_FIELDS:
                total, by_bucket = getattr(self, name), sum(getattr(self.buckets, name))
                if by_bucket != total:
                    raise HistoryError(f"{where}.{name}: the buckets sum to {by_bucket}, the arm's {name} is {total}")

    @property
    def outcomes(self) -> int:
        """Units with a reported outcome: the denominator of the success rate."""
        return self.exposures if self.failures is None else self.successes + self.failures

    @property
    def success_rate(self) -> float | None:
        """successes / outcomes, or None before any outcome."""
        return self.successes / self.outcomes if self.outcomes else None


@dataclass(frozen=True)
class Look:
    """One observation of all arms' cumulative counters, with the weights in force at that time."""

    time: datetime
    weights: Mapping[str, float]
    arms: Mapping[str, ArmCounts]

    def __post_init__(self) -> None:
        # Naive times are taken as UTC so looks from different sources compare.
        if self.time.tzinfo is None:
            object.__setattr__(self, "time", self.time.replace(tzinfo=timezone.utc))
        object.__setattr__(self, "weights", dict(self.weights))
        object.__setattr__(self, "arms", dict(self.arms))

    def validate(self, index: int | None = None) -> None:
        """Raise HistoryError on unknown or missing arms, bad weights or bad counts."""
        for what, names in (("weights", self.weights), ("arms", self.arms)):
            unknown = sorted(set(names) - set(ARMS))
            if unknown:
                raise HistoryError(f"{_where(index, what)}: unknown arm {unknown[0]!r}; arms are {list(ARMS)}")
            missing = sorted(set(ARMS) - set(names))
            if missing:
                raise HistoryError(f"{_where(index, what)}: arm {missing[0]!r} is missing")
        for arm, w in self.weights.items():
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not (0.0 <= w <= 1.0):
                raise HistoryError(f"{_where(index, 'weights.' + arm)}: must be a number in [0, 1], got {w!r}")
        total = sum(self.weights.values())
        if not math.isclose(total, 1.0, abs_tol=WEIGHT_TOLERANCE):
            raise HistoryError(f"{_where(index, 'weights')}: must sum to 1, got {total:g}")
        for arm, counts in self.arms.items():
            counts.validate(index, arm)
        sizes = {arm: None if c.buckets is None else c.buckets.count for arm, c in self.arms.items()}
        if len(set(sizes.values())) != 1:
            raise HistoryError(f"{_where(index, 'arms')}: both arms need buckets of the same B, or neither; got {sizes}")

    @property
    def buckets(self) -> int | None:
        """B if the arms are counted by bucket, else None."""
        counts = self.arms.get(ARMS[0])
        return None if counts is None or counts.buckets is None else counts.buckets.count


@dataclass(frozen=True)
class History:
    """All looks of one experiment, oldest first.

    Construction checks each look and that times increase. Counters going down between looks
    (a reset) is allowed here, because a live source must be able to report what it saw; call
    `check_counters()` (or `parse_history(..., allow_resets=False)`) to reject it. The analyzer
    turns a reset into a `blocked` decision.
    """

    experiment: str
    looks: tuple[Look, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "looks", tuple(self.looks))
        if not isinstance(self.experiment, str) or not self.experiment:
            raise HistoryError("experiment: must be a non-empty string")
        sizes: set[int] = set()
        for i, look in enumerate(self.looks):
            look.validate(i)
            if look.buckets is not None:
                sizes.add(look.buckets)
                if len(sizes) > 1:
                    raise HistoryError(f"looks[{i}].arms: {look.buckets} buckets, earlier looks have {min(sizes - {look.buckets})}; "
                                       "every look must have the same B")
            if i and look.time <= self.looks[i - 1].time:
                raise HistoryError(
                    f"looks[{i}].time: {look.time.isoformat()} is not after looks[{i - 1}].time "
                    f"{self.looks[i - 1].time.isoformat()}; times must increase"
                )

    def check_counters(self) -> None:
        """Raise CounterResetError naming the first look where a cumulative counter went down."""
        for i in range(1, len(self.looks)):
            before, after = self.looks[i - 1], self.looks[i]
            for arm in ARMS:
                for name in ("exposures", "successes", "failures", "errors", "fallbacks"):
                    old, new = getattr(before.arms[arm], name), getattr(after.arms[arm], name)
                    if old is not None and new is not None and new < old:
                        raise CounterResetError(
                            f"looks[{i}].arms.{arm}.{name}: counter went down from {old} to {new} "
                            f"(counter reset, e.g. a router restart)"
                        )
                old_b, new_b = before.arms[arm].buckets, after.arms[arm].buckets
                if old_b is None or new_b is None:
                    continue
                for name in BUCKET_FIELDS:
                    for b, (old, new) in enumerate(zip(getattr(old_b, name), getattr(new_b, name), strict=True)):
                        if new < old:
                            raise CounterResetError(
                                f"looks[{i}].arms.{arm}.buckets.{name}[{b}]: counter went down from {old} to {new} "
                                f"(counter reset, e.g. a router restart)"
                            )

    @property
    def buckets(self) -> int | None:
        """B when every look counts by bucket (the analyzer then counts by unit), else None (request-level)."""
        sizes = {look.buckets for look in self.looks}
        return sizes.pop() if len(sizes) == 1 and None not in sizes else None

    def periods(self) -> list[Period]:
        """Maximal runs of consecutive looks with the same weights, oldest first (the strata)."""
        out: list[Period] = []
        for i, look in enumerate(self.looks):
            if out and _same_weights(out[-1].weights, look.weights):
                out[-1] = Period(out[-1].weights, out[-1].first, i)
            else:
                out.append(Period(dict(look.weights), i, i))
        return out

    def upto(self, n: int) -> History:
        """The history as it was after its first `n` looks (for replaying decisions)."""
        return History(self.experiment, self.looks[:n])


@dataclass(frozen=True)
class Period:
    """Looks `first`..`last` (inclusive indices) taken under the same `weights`.

    The units counted in a period are those gained since the previous period's last look (from
    zero for the first period), because counts gained up to a look are taken as collected under
    that look's weights.
    """

    weights: Mapping[str, float]
    first: int
    last: int


def _same_weights(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    return all(math.isclose(a[arm], b[arm], abs_tol=WEIGHT_TOLERANCE) for arm in ARMS)


def _parse_time(value: Any, index: int) -> datetime:
    if not isinstance(value, str):
        raise HistoryError(f"looks[{index}].time: must be an ISO 8601 string, got {value!r}")
    try:
        # Python 3.10's fromisoformat does not take a trailing Z.
        return datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        raise HistoryError(f"looks[{index}].time: not an ISO 8601 time: {value!r}") from None


def _parse_counts(data: Any, index: int, arm: str) -> ArmCounts:
    where = f"looks[{index}].arms.{arm}"
    if not isinstance(data, dict):
        raise HistoryError(f"{where}: must be an object, got {type(data).__name__}")
    known = {"exposures", "successes", "failures", "errors", "fallbacks", "p99_latency_seconds", "buckets"}
    extra = sorted(set(data) - known)
    if extra:
        raise HistoryError(f"{where}.{extra[0]}: unknown field; fields are {sorted(known)}")
    for required in ("exposures", "successes"):
        if required not in data:
            raise HistoryError(f"{where}.{required}: missing")
    try:
        return ArmCounts(
            exposures=data["exposures"],
            successes=data["successes"],
            failures=data.get("failures"),
            errors=data.get("errors", 0),
            fallbacks=data.get("fallbacks", 0),
            p99_latency_seconds=data.get("p99_latency_seconds"),
            buckets=_parse_buckets(data.get("buckets")),
        )
    except HistoryError as err:
        # The constructor names the field; add where it sits in the document.
        raise HistoryError(f"{where}.{err}") from None


def _parse_buckets(data: Any) -> Buckets | None:
    """The `buckets` object of an arm; errors name `buckets...` (the caller adds where the arm sits)."""
    if data is None:
        return None
    where = "buckets"
    if not isinstance(data, dict):
        raise HistoryError(f"{where}: must be an object of three lists, got {type(data).__name__}")
    if sorted(data) != sorted(BUCKET_FIELDS):
        raise HistoryError(f"{where}: needs exactly the lists {list(BUCKET_FIELDS)}, got {sorted(data)}")
    for name in BUCKET_FIELDS:
        if not isinstance(data[name], list):
            raise HistoryError(f"{where}.{name}: must be a list of counts, got {type(data[name]).__name__}")
    return Buckets(tuple(data["exposures"]), tuple(data["successes"]), tuple(data["failures"]))


def parse_history(data: Any, *, allow_resets: bool = False) -> History:
    """Build a History from a parsed JSON document; raise HistoryError naming the look and field.

    With `allow_resets=False` a counter that goes down between looks raises CounterResetError;
    the analyzer's CLI passes True so that a reset is reported as a `blocked` decision instead.
    """
    if not isinstance(data, dict):
        raise HistoryError(f"history must be a JSON object, got {type(data).__name__}")
    if "looks" not in data or not isinstance(data["looks"], list):
        raise HistoryError("looks: missing or not a list")
    looks = []
    for i, raw in enumerate(data["looks"]):
        if not isinstance(raw, dict):
            raise HistoryError(f"looks[{i}]: must be an object, got {type(raw).__name__}")
        for key in ("time", "weights", "arms"):
            if key not in raw:
                raise HistoryError(f"looks[{i}].{key}: missing")
        if not isinstance(raw["weights"], dict):
            raise HistoryError(f"looks[{i}].weights: must be an object")
        if not isinstance(raw["arms"], dict):
            raise HistoryError(f"looks[{i}].arms: must be an object")
        arms = {arm: _parse_counts(c, i, arm) for arm, c in raw["arms"].items()}
        looks.append(Look(time=_parse_time(raw["time"], i), weights=raw["weights"], arms=arms))
    history = History(experiment=data.get("experiment"), looks=tuple(looks))  # type: ignore[arg-type]
    if not allow_resets:
        history.check_counters()
    return history


def load_history(path: str | Path, *, allow_resets: bool = False) -> History:
    """Read a history JSON file; raise HistoryError (a ValueError) with the path on any problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise HistoryError(f"cannot read history {path}: {err.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise HistoryError(f"{path} is not valid JSON: {err}") from None
    try:
        return parse_history(data, allow_resets=allow_resets)
    except CounterResetError as err:
        raise CounterResetError(f"{path}: {err}") from None
    except HistoryError as err:
        raise HistoryError(f"{path}: {err}") from None


def _dump_counts(c: ArmCounts) -> dict[str, Any]:
    out: dict[str, Any] = {"exposures": c.exposures, "successes": c.successes}
    if c.failures is not None:
        out["failures"] = c.failures
    if c.errors:
        out["errors"] = c.errors
    if c.fallbacks:
        out["fallbacks"] = c.fallbacks
    if c.p99_latency_seconds is not None:
        out["p99_latency_seconds"] = c.p99_latency_seconds
    if c.buckets is not None:
        out["buckets"] = {name: list(getattr(c.buckets, name)) for name in BUCKET_FIELDS}
    return out


def dump_history(history: History) -> dict[str, Any]:
    """The JSON document of a history (the inverse of parse_history)."""
    return {
        "experiment": history.experiment,
        "looks": [
            {
                "time": look.time.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
                "weights": dict(look.weights),
                "arms": {arm: _dump_counts(c) for arm, c in look.arms.items()},
            }
            for look in history.looks
        ],
    }
