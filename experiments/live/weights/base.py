"""The weight-store interface: where the experiment config (and so the arm weights) lives and is changed.

The controller decides weights; routers watching the config apply them (the Flagger split). Every
store reads the whole experiment config and writes it back with new weights only, as a
compare-and-swap: `apply(new, expected=old)` refuses if somebody else changed the weights since
the controller looked, so a decision made on stale weights is never written.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping

from experiments.config import ExperimentConfig


class WeightStoreError(RuntimeError):
    """The store cannot be read or written (unreachable, forbidden, malformed); the message says why."""


class WeightConflict(WeightStoreError):
    """The weights changed under us (another writer); nothing was written."""


def same_weights(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    """Equal arm by arm up to float noise from YAML round trips."""
    return set(a) == set(b) and all(math.isclose(a[k], b[k], abs_tol=1e-9) for k in a)


def check_expected(current: ExperimentConfig, expected: Mapping[str, float] | None, where: str) -> None:
    """Raise WeightConflict if `expected` is given and the current weights differ."""
    if expected is not None and not same_weights(current.weights, expected):
        raise WeightConflict(
            f"weights in {where} are {current.weights}, not {dict(expected)} as when the decision was made; "
            f"somebody else changed them, nothing written"
        )


class WeightStore(ABC):
    """Reads the experiment config and writes new arm weights into it."""

    #: Where the config lives, for messages and the audit log.
    description: str = "weight store"

    @abstractmethod
    def load(self) -> ExperimentConfig:
        """The experiment config as it is now (raise WeightStoreError if it cannot be read)."""

    @abstractmethod
    def apply(self, weights: Mapping[str, float], expected: Mapping[str, float] | None = None) -> ExperimentConfig:
        """Write `weights` (validated like a file); with `expected`, only if the current weights equal it.

        Returns the config as written. Raises WeightConflict or WeightStoreError, writing nothing.
        """
