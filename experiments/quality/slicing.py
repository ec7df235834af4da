"""Slices of the churn data: which rows a configured slice holds, its rule in words, and its schema check.

A slice is a feature condition (categories or numbers given by `values`, or a numeric range with
`min` inclusive and `max` exclusive) and/or a true-label condition (`label: 1`, the churners, the
rare class), all of which must hold. `experiments.config.Slice` checks the shape of a definition;
the feature names and kinds are checked here, against the data schema, because the config module
is imported by the router and must not pull in pandas. Shared by the launch gate and `modelramp
slices`, so both cut the data the same way.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from experiments.config import SliceSpec
from serving.training import dataset


class SliceError(ValueError):
    """A slice that cannot be applied to this data; the message names the slice and the problem."""


def check_slice(s: SliceSpec) -> None:
    """Refuse a slice whose feature is unknown or whose condition does not fit the feature's kind."""
    if s.feature is None:
        return
    where = f"slice {s.name!r}"
    if s.feature not in dataset.FEATURES:
        raise SliceError(f"{where}: unknown feature {s.feature!r}; features are {', '.join(dataset.FEATURES)}")
    if s.feature in dataset.CATEGORICAL:
        if s.min is not None or s.max is not None:
            raise SliceError(f"{where}: {s.feature} is categorical; give values, not min/max")
    elif s.values is not None:
        bad = [v for v in s.values if isinstance(v, bool) or not isinstance(v, (int, float))]
        if bad:
            raise SliceError(f"{where}: {s.feature} is numeric; values must be numbers, got {bad}")


def check_slices(slices: Iterable[SliceSpec]) -> None:
    """Check every slice up front, so a typo fails before any model is scored."""
    for s in slices:
        check_slice(s)


def slice_rule(s: SliceSpec) -> str:
    """The slice's condition in words, e.g. `total_day_minutes >= 250 and churn = 1`."""
    parts = []
    if s.values is not None:
        parts.append(f"{s.feature} in {{{', '.join(str(v) for v in s.values)}}}")
    if s.min is not None:
        parts.append(f"{s.feature} >= {s.min:g}")
    if s.max is not None:
        parts.append(f"{s.feature} < {s.max:g}")  # half-open, so adjacent ranges never share a row
    if s.label is not None:
        parts.append(f"{dataset.LABEL} = {s.label}")
    return " and ".join(parts)


def slice_mask(frame: pd.DataFrame, s: SliceSpec) -> np.ndarray:
    """Rows in the slice: all of its conditions hold (values, min inclusive, max exclusive, label)."""
    check_slice(s)
    mask = np.ones(len(frame), dtype=bool)
    if s.feature is not None:
        if s.feature not in frame:
            raise SliceError(f"slice {s.name!r}: these rows have no {s.feature!r} column")
        column = frame[s.feature]
        if s.values is not None:
            if s.feature in dataset.CATEGORICAL:
                mask &= column.isin([str(v) for v in s.values]).to_numpy()
            else:
                mask &= column.isin([float(v) for v in s.values]).to_numpy()
        if s.min is not None:
            mask &= (column >= s.min).to_numpy()
        if s.max is not None:
            mask &= (column < s.max).to_numpy()
    if s.label is not None:
        if dataset.LABEL not in frame:
            raise SliceError(f"slice {s.name!r} selects by true label, but these rows have no {dataset.LABEL!r} column")
        mask &= (frame[dataset.LABEL] == s.label).to_numpy()
    return mask
