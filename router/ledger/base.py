"""The outcome ledger's contract: what a verified outcome is, what recording one returns, and its errors.

One table keyed by the request id's signature decides, for every router replica and across
restarts, whether an outcome is new; only the rows it reports as inserted may be counted. The
contract is small and async so `router/outcomes.py` can await it between verifying a report and
answering 200, and its errors are `UserFacingError`s so the fronts map them without new code:
`InvalidOutcome` is a 400 (a bug in the caller, never a crash), `LedgerUnavailable` a 503 whose
`retry_after` goes into `Retry-After` (nothing was counted, so the client's retry is safe).
"""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from serving.tfserving.errors import InvalidArgument, Unavailable

# Counts survive pruning as per-hour totals (see LedgerCounts); `since` is honoured to the hour.
ROLLUP_MS = 3_600_000
MAX_BATCH = 10_000  # the intake's MAX_BATCH: one report is one all-or-nothing write
MAX_NAME = 63  # experiment names are DNS labels; arms are short words
# Rows are pruned this long after their id expires, so replicas whose clocks disagree by less
# never see a pruned id as new (one accepts ids up to ttl + ACCEPT_SLACK old, all prune after
# ttl + PRUNE_MARGIN); the slack covers the time between verifying an id and writing it.
ACCEPT_SLACK_SECONDS = 60.0
PRUNE_MARGIN_SECONDS = 900.0
FUTURE_SLACK_SECONDS = 86_400.0  # an id "issued" further ahead means a broken clock, not an outcome

OnInserted = Callable[[list["Outcome"]], None]


class InvalidOutcome(InvalidArgument):
    """The batch handed to the ledger is malformed; nothing of it was written."""


class LedgerUnavailable(Unavailable):
    """The ledger cannot write now (database down, queue full, closed); nothing of the batch was counted."""

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))  # whole seconds, as Retry-After wants


class LedgerConfigError(ValueError):
    """The ledger URL cannot be used (unknown scheme, missing driver); raised at startup."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One verified outcome: `signature` (the signed id's 16 bytes) is the unique key."""

    signature: bytes
    experiment: str
    arm: str
    bucket: int  # the unit's analysis bucket, 0..B-1
    success: bool
    issued_at: float  # seconds since the epoch, from the signed id


@dataclass(frozen=True, slots=True)
class BucketCount:
    arm: str
    bucket: int
    successes: int
    failures: int


@dataclass(frozen=True)
class LedgerCounts:
    """Exact outcome counts of one experiment, per (arm, bucket).

    `since` is the start actually applied: the requested time floored to the hour, because rows
    past their TTL are pruned and only their per-hour totals remain.
    """

    experiment: str
    since: float | None
    cells: tuple[BucketCount, ...]

    def arm_totals(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for c in self.cells:
            arm = out.setdefault(c.arm, {"successes": 0, "failures": 0})
            arm["successes"] += c.successes
            arm["failures"] += c.failures
        return out

    def buckets(self, n_buckets: int) -> dict[str, dict[str, list[int]]]:
        """Per arm, `{"successes": [...], "failures": [...]}` of length B (the per-bucket lists of the history format, docs/architecture.md)."""
        out: dict[str, dict[str, list[int]]] = {}
        for c in self.cells:
            if not 0 <= c.bucket < n_buckets:
                raise ValueError(f"bucket {c.bucket} of arm {c.arm!r} is outside 0..{n_buckets - 1}: B changed during the experiment?")
            arm = out.setdefault(c.arm, {"successes": [0] * n_buckets, "failures": [0] * n_buckets})
            arm["successes"][c.bucket] += c.successes
            arm["failures"][c.bucket] += c.failures
        return out


def _name_problem(value: object, what: str) -> str | None:
    if not isinstance(value, str):
        return f"{what} must be a string, got {type(value).__name__}"
    if not 0 < len(value) <= MAX_NAME or not value.isprintable():
        return f"{what} must be 1 to {MAX_NAME} printable characters, got {value[:80]!r}"
    return None


def check_batch(outcomes: Iterable[Outcome], *, now: float, ttl_seconds: float, max_buckets: int) -> list[Outcome]:
    """The batch as a list, or InvalidOutcome naming the first bad entry (nothing is written then)."""
    if isinstance(outcomes, (Outcome, str, bytes)):
        raise InvalidOutcome(f"expected a sequence of Outcome, got {type(outcomes).__name__}")
    try:
        items = list(outcomes)
    except TypeError:
        raise InvalidOutcome(f"expected a sequence of Outcome, got {type(outcomes).__name__}") from None
    if len(items) > MAX_BATCH:
        raise InvalidOutcome(f"at most {MAX_BATCH} outcomes per batch, got {len(items)}")
    oldest = now - ttl_seconds - ACCEPT_SLACK_SECONDS
    newest = now + FUTURE_SLACK_SECONDS
    # The common case in one cheap pass: names checked once per distinct (experiment, arm) pair,
    # exact types compared (no subclass of bool, int or float can pass), no message built. Any
    # doubt goes to the full pass below, which names the first bad entry.
    names_ok: set[tuple[str, str]] = set()
    for o in items:
        if type(o) is not Outcome:
            break
        sig, bucket, t = o.signature, o.bucket, o.issued_at
        if (type(sig) is not bytes or not 8 <= len(sig) <= 64 or type(bucket) is not int or not 0 <= bucket < max_buckets
                or type(o.success) is not bool or type(t) is not float or not oldest <= t <= newest):  # NaN fails too
            break
        pair = (o.experiment, o.arm)
        if pair not in names_ok:
            if _name_problem(pair[0], "experiment") or _name_problem(pair[1], "arm"):
                break
            names_ok.add(pair)
    else:
        return items
    for n, o in enumerate(items):
        where = f"outcome {n}: "
        if not isinstance(o, Outcome):
            raise InvalidOutcome(f"{where}expected Outcome, got {type(o).__name__}")
        problem = _name_problem(o.experiment, "experiment") or _name_problem(o.arm, "arm")
        if problem:
            raise InvalidOutcome(where + problem)
        if not isinstance(o.signature, bytes) or not 8 <= len(o.signature) <= 64:
            raise InvalidOutcome(f"{where}signature must be 8 to 64 bytes")
        if not isinstance(o.bucket, int) or isinstance(o.bucket, bool) or not 0 <= o.bucket < max_buckets:
            raise InvalidOutcome(f"{where}bucket must be an integer in 0..{max_buckets - 1}, got {o.bucket!r}")
        if not isinstance(o.success, bool):
            raise InvalidOutcome(f"{where}success must be True or False, got {o.success!r}")
        t = o.issued_at
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            raise InvalidOutcome(f"{where}issued_at must be a finite number of seconds, got {t!r}")
        if t < oldest:
            # Its row may be pruned already, so it could be counted twice: refuse, as the signer does.
            raise InvalidOutcome(f"{where}expired: issued {now - t:.0f}s ago, the ledger keeps ids {ttl_seconds:.0f}s")
        if t > now + FUTURE_SLACK_SECONDS:
            raise InvalidOutcome(f"{where}issued_at is {t - now:.0f}s in the future: a router's clock is wrong")
    return items


class OutcomeLedger(ABC):
    """Records each outcome once across every router sharing the ledger, and counts them exactly."""

    ttl_seconds: float  # settable: the router changes it when its config's outcome_ttl_seconds changes

    @abstractmethod
    async def record(self, outcomes: Sequence[Outcome], on_inserted: OnInserted | None = None) -> list[bool]:
        """Write the batch, all or nothing; per outcome, True if this call inserted it (count it), False if known.

        Returns only after the rows are committed. Raises InvalidOutcome (nothing written) or
        LedgerUnavailable (nothing counted: either rolled back, or at worst committed but never
        reported, which undercounts the counter and never double-counts). `on_inserted`, when
        given, gets the newly inserted outcomes on the caller's event loop once committed, even if
        the awaiting task was cancelled meanwhile (a client hanging up): count there to lose none.
        """

    @abstractmethod
    def counts(self, experiment: str, since: float | None = None) -> LedgerCounts:
        """Exact successes and failures per (arm, bucket), pruned rows included. Blocking (the analyzer's call)."""

    async def acounts(self, experiment: str, since: float | None = None) -> LedgerCounts:
        """`counts` from an event loop, in a thread."""
        return await asyncio.to_thread(self.counts, experiment, since)

    @abstractmethod
    def prune(self, now: float | None = None) -> int:
        """Delete rows whose ids expired (their totals stay in the counts); the number deleted. Blocking.

        The ledger also prunes by itself every few minutes; this is for tests and operators.
        """

    @abstractmethod
    def rows(self) -> int:
        """Rows held now (ids within their TTL): for tests and operators."""

    @property
    @abstractmethod
    def available(self) -> bool:
        """False while writes fail fast with LedgerUnavailable (for readiness and a metric)."""

    @abstractmethod
    def close(self) -> None:
        """Finish queued writes, then release connections; later writes raise LedgerUnavailable. Blocking."""

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)
