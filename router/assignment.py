"""Deterministic, uniform, nested assignment of units to arms: a pure function of (salt, unit id, weights).

The hash, exactly, so any client or language can reproduce it (golden cases in
`tests/data/assignment_cases.json`):

    digest = SHA-256( UTF-8(salt) + b"\\x00" + UTF-8(unit_id) )
    u      = int.from_bytes(digest[:8], "big") / 2**64          # uniform in [0, 1)
    arm    = the first arm in ARM_ORDER ("model", "legacy") whose cumulative weight exceeds u

So the unit is in the model arm iff u < weight(model). Raising the model weight from 1% to 5%
to 20% only widens the interval [0, weight): every unit already in the model arm stays there
(nesting), and no unit is ever reshuffled between stages. A new salt draws new u's: a new
experiment. A request without a unit id gets an independent uniform draw instead of a hash.

One implementation: `Assigner` (what the router keeps per configuration, the intervals worked
out once). `assign` and `arm_at` are the same rule as one-off calls, for tests and tools.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from router._sha256 import sha256

# The model arm is first so that its interval is [0, w_model): that is what makes ramps nested.
ARM_ORDER = ("model", "legacy")
_SCALE = float(2**64)
_DRAWS = random.Random()  # draws for `assign` without a unit id when the caller passes no generator


def unit_position(salt: str, unit_id: str) -> float:
    """The unit's fixed position u in [0, 1) for this salt (see the module docstring)."""
    return _position(salt.encode() + b"\x00", unit_id)


def _position(prefix: bytes, unit_id: str) -> float:
    return int.from_bytes(sha256(prefix + unit_id.encode()).digest()[:8], "big") / _SCALE


class Assigner:
    """The assignment rule for one (salt, weights): the arms' cumulative intervals worked out once.

    The router assigns every request, so the intervals are not rebuilt from the configuration
    each time; a new configuration makes a new Assigner.
    """

    __slots__ = ("salt", "_prefix", "_bounds", "_last")

    def __init__(self, salt: str, weights: Mapping[str, float]) -> None:
        self.salt = salt
        self._prefix = salt.encode() + b"\x00"
        bounds: list[tuple[float, str]] = []  # (cumulative weight, arm) for the arms with weight
        cumulative = 0.0
        for arm in ARM_ORDER:
            weight = weights.get(arm, 0.0)
            if weight > 0.0:
                cumulative += weight
                bounds.append((cumulative, arm))
        if not bounds:
            raise ValueError(f"no arm has a positive weight: {dict(weights)}")
        self._bounds = tuple(bounds)
        self._last = bounds[-1][1]

    def __call__(self, unit_id: str | None, rng: random.Random) -> str:
        """The arm of `unit_id`; without one (None or ""), of an independent draw from `rng`."""
        return self.arm_at(_position(self._prefix, unit_id) if unit_id else rng.random())

    def arm_at(self, position: float) -> str:
        """The arm whose cumulative-weight interval (in ARM_ORDER) contains `position` in [0, 1)."""
        for bound, arm in self._bounds:
            if position < bound:
                return arm
        return self._last  # rounding can leave the sum a hair under 1: the last arm with weight takes the rest


def assign(salt: str, unit_id: str | None, weights: Mapping[str, float], rng: random.Random | None = None) -> str:
    """The arm for a unit; deterministic in (salt, unit id), an independent draw without a unit id."""
    return Assigner(salt, weights)(unit_id, _DRAWS if rng is None else rng)


def arm_at(position: float, weights: Mapping[str, float]) -> str:
    """The arm whose cumulative-weight interval (in ARM_ORDER) contains `position`."""
    return Assigner("", weights).arm_at(position)
