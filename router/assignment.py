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
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from router._sha256 import sha256

# The model arm is first so that its interval is [0, w_model): that is what makes ramps nested.
ARM_ORDER = ("model", "legacy")
_SCALE = float(2**64)


def unit_position(salt: str, unit_id: str) -> float:
    """The unit's fixed position u in [0, 1) for this salt (see the module docstring)."""
    digest = sha256(salt.encode() + b"\x00" + unit_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def arm_at(position: float, weights: Mapping[str, float]) -> str:
    """The arm whose cumulative-weight interval (in ARM_ORDER) contains `position`."""
    cumulative = 0.0
    last = None
    for arm in ARM_ORDER:
        weight = weights.get(arm, 0.0)
        if weight <= 0.0:
            continue
        cumulative += weight
        last = arm
        if position < cumulative:
            return arm
    # Rounding can leave the sum a hair under 1; the last arm with weight takes the rest.
    if last is None:
        raise ValueError(f"no arm has a positive weight: {dict(weights)}")
    return last


def assign(salt: str, unit_id: str | None, weights: Mapping[str, float], rng: random.Random | None = None) -> str:
    """The arm for a unit; deterministic in (salt, unit id), an independent draw without a unit id."""
    if unit_id is None or unit_id == "":
        position = (rng or random).random()
    else:
        position = unit_position(salt, unit_id)
    return arm_at(position, weights)


class Assigner:
    """`assign` for one experiment state: the salt and the arms' intervals worked out once.

    The router assigns every request; `assign` would rebuild the weights from the configuration
    and walk them each time. Same hash, same intervals, same rounding rule as `arm_at`
    (tests/router/test_assignment.py checks that the two agree).
    """

    def __init__(self, salt: str, weights: Mapping[str, float]):
        self.salt = salt
        self._bounds: list[tuple[float, str]] = []  # (cumulative weight, arm) for the arms with weight
        cumulative = 0.0
        for arm in ARM_ORDER:
            weight = weights.get(arm, 0.0)
            if weight > 0.0:
                cumulative += weight
                self._bounds.append((cumulative, arm))
        if not self._bounds:
            raise ValueError(f"no arm has a positive weight: {dict(weights)}")
        self._last = self._bounds[-1][1]

    def __call__(self, unit_id: str | None, rng: random.Random) -> str:
        position = unit_position(self.salt, unit_id) if unit_id else rng.random()
        for bound, arm in self._bounds:
            if position < bound:
                return arm
        return self._last  # rounding can leave the sum a hair under 1
