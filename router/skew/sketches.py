"""Fixed-size streaming sketches of live features on the training baseline's bins, and schema anomalies.

One sketch per feature holds cumulative counts in the baseline's bins (`serving.training.baseline`):
numeric features in its histogram bins (interior edges, `searchsorted(side="right")`) plus a
missing bin; categorical features per training category, up to `max_unseen` unseen names (none
by default; each at most `MAX_LABEL_CHARS` of valid Unicode), an `__other__` bucket for every
other unseen value, and a missing bin. Memory is fixed whatever the
traffic. Updates are batched: `add` takes many values at once as numpy arrays or lists, so the
request path only queues (see `router.skew.sink`) and the per-value work is vectorised.

Value conventions: a number is missing when NaN, a category when "" (as in the baseline); a value
of the wrong type is an `unexpected_type` anomaly and counts as missing in the distribution.
Numbers are compared in float32, the model's input type, so a training value sits in the same bin
and range live as it did in training.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any

import numpy as np

MISSING, OTHER = "__missing__", "__other__"
# An unseen category is kept by name (up to `max_unseen` of them) only when it can be a metric label
# value as it is: at most this many characters of valid Unicode, and not one of the reserved names.
# Anything else a client sends is counted under OTHER, so no request can make /metrics unencodable
# or grow it by more than `max_unseen` short names per feature.
MAX_LABEL_CHARS = 64
ANOMALY_KINDS = ("missing", "unexpected_type", "out_of_range", "unseen_category")
PREDICTION = "__prediction__"  # the `feature` label of the model's output score (alert rules and dashboards agree)


class NumericSketch:
    """Histogram of a numeric feature on the baseline's bins, with a missing bin; counts range anomalies."""

    kind = "numeric"

    def __init__(self, name: str, edges: Sequence[float], bin_counts: Sequence[int], missing: int = 0,
                 low: float | None = None, high: float | None = None):
        self.name = name
        self.edges = np.asarray(edges, dtype=np.float32)
        self.low = None if low is None else np.float32(low)
        self.high = None if high is None else np.float32(high)
        self.counts = np.zeros(len(self.edges) + 2, dtype=np.int64)  # k + 1 bins, then missing
        self.baseline = np.array([*bin_counts, missing], dtype=np.float64)
        self.labels = [str(i) for i in range(len(self.edges) + 1)] + [MISSING]

    def add(self, values: Sequence[object] | np.ndarray) -> dict[str, int]:
        """Count a batch of values; returns anomaly counts by kind (only kinds that occurred)."""
        anomalies: dict[str, int] = {}
        arr = np.asarray(values) if not isinstance(values, np.ndarray) else values
        if arr.dtype.kind not in "fiu":
            arr, bad = _as_float32(arr)
            if bad:
                anomalies["unexpected_type"] = bad
        else:
            arr = arr.astype(np.float32, copy=False)
        nan = np.isnan(arr)
        n_nan = int(nan.sum())
        present = arr[~nan] if n_nan else arr
        bad = anomalies.get("unexpected_type", 0)
        if n_nan > bad:
            anomalies["missing"] = n_nan - bad
        self.counts[-1] += n_nan
        if present.size:
            self.counts[:-1] += np.bincount(np.searchsorted(self.edges, present, side="right"), minlength=len(self.edges) + 1)
            out = 0
            if self.low is not None:
                out += int(np.count_nonzero(present < self.low))
            if self.high is not None:
                out += int(np.count_nonzero(present > self.high))
            if out:
                anomalies["out_of_range"] = out
        return anomalies

    def live(self) -> np.ndarray:
        """Cumulative counts in the comparison bins (the baseline's bins, then missing)."""
        return self.counts.astype(np.float64)

    def bins(self) -> list[tuple[str, int]]:
        """(label, cumulative count) per bin, for the exported counter."""
        return list(zip(self.labels, self.counts.tolist(), strict=True))

    def from_bins(self, counts: Mapping[str, float]) -> np.ndarray:
        """Exported (label -> count) back into comparison bins, e.g. summed over replicas."""
        return np.array([float(counts.get(label, 0.0)) for label in self.labels])

    def bin_names(self) -> list[str]:
        """Readable names of the comparison bins: '< e0', '[e0, e1)', ..., '>= e_last', 'missing'."""
        e = [f"{x:g}" for x in self.edges.tolist()]
        inner = [f"[{a}, {b})" for a, b in pairwise(e)]
        return [f"< {e[0]}", *inner, f">= {e[-1]}", "missing"] if e else ["all", "missing"]


def _as_float32(arr: np.ndarray) -> tuple[np.ndarray, int]:
    # Slow path, only for unvalidated input: keep real numbers, turn the rest into NaN and count them.
    out = np.empty(arr.size, dtype=np.float32)
    bad = 0
    for i, v in enumerate(arr.ravel().tolist()):
        if type(v) in (int, float) or isinstance(v, np.number) and not isinstance(v, np.bool_):
            out[i] = v
        elif v is None:  # JSON null: missing, not mistyped
            out[i] = np.nan
        else:
            out[i] = np.nan
            bad += 1
    return out, bad


class CategoricalSketch:
    """Frequencies of a categorical feature: training categories, bounded unseen names, other, missing."""

    kind = "categorical"

    def __init__(self, name: str, value_counts: Mapping[str, int], missing: int = 0, max_unseen: int = 0):
        self.name = name
        self.categories = list(value_counts)
        self.index: dict[object, int] = {}
        for i, c in enumerate(self.categories):
            self.index[c] = self.index[c.encode()] = i  # requests carry bytes (arrays) or str (JSON rows)
        self.max_unseen = max_unseen
        self.unseen: list[str] = []
        self.counts = np.zeros(len(self.categories) + max_unseen + 2, dtype=np.int64)  # ..., other, missing
        self.baseline = np.array([*value_counts.values(), 0, missing], dtype=np.float64)

    def add(self, values: Sequence[object] | np.ndarray) -> dict[str, int]:
        """Count a batch of values; returns anomaly counts by kind (only kinds that occurred)."""
        anomalies: dict[str, int] = {}
        items = values.tolist() if isinstance(values, np.ndarray) else values
        try:
            tally = Counter(items)
        except TypeError:  # unhashable values (lists in unvalidated JSON): none of them is a category
            tally = Counter(v if isinstance(v, (str, bytes)) else None for v in items)
        k = len(self.categories)
        for value, n in tally.items():
            slot = self.index.get(value)
            if slot is None:
                slot = self._place(value, anomalies, n)
            elif slot >= k:  # an unseen name met before: still an anomaly every time
                anomalies["unseen_category"] = anomalies.get("unseen_category", 0) + n
            self.counts[slot] += n
        return anomalies

    def _place(self, value: object, anomalies: dict[str, int], n: int) -> int:
        missing_slot, other_slot = len(self.counts) - 1, len(self.counts) - 2
        if value is None or value == "" or value == b"":
            anomalies["missing"] = anomalies.get("missing", 0) + n
            return missing_slot
        if isinstance(value, bytes):
            text = value.decode("utf-8", "replace")
        elif isinstance(value, str):
            text = value
        else:
            anomalies["unexpected_type"] = anomalies.get("unexpected_type", 0) + n
            return missing_slot
        anomalies["unseen_category"] = anomalies.get("unseen_category", 0) + n
        slot = self.index.get(text)  # seen before in the other form (str in rows, bytes in arrays)
        if slot is None and len(self.unseen) < self.max_unseen and _label_safe(text):
            slot = len(self.categories) + len(self.unseen)
            self.unseen.append(text)
            self.index[text] = slot
        if slot is not None:
            self.index[value] = slot
            return slot
        return other_slot

    def live(self) -> np.ndarray:
        """Cumulative counts in the comparison bins: training categories, all unseen together, missing."""
        k = len(self.categories)
        c = self.counts.astype(np.float64)
        return np.concatenate([c[:k], [c[k:-1].sum()], c[-1:]])

    def bins(self) -> list[tuple[str, int]]:
        """(label, cumulative count) per used bin, for the exported counter (names bounded by max_unseen)."""
        labels = self.categories + self.unseen
        out = [(label, int(self.counts[i])) for i, label in enumerate(labels)]
        out += [(OTHER, int(self.counts[-2])), (MISSING, int(self.counts[-1]))]
        return out

    def from_bins(self, counts: Mapping[str, float]) -> np.ndarray:
        """Exported (label -> count) back into comparison bins: any label not a training category is unseen."""
        known = set(self.categories)
        unseen = sum(float(v) for k, v in counts.items() if k not in known and k != MISSING)
        return np.array([*(float(counts.get(c, 0.0)) for c in self.categories), unseen, float(counts.get(MISSING, 0.0))])

    def bin_names(self) -> list[str]:
        """Readable names of the comparison bins: the categories, 'unseen', 'missing'."""
        return [*self.categories, "unseen", "missing"]


def _label_safe(text: str) -> bool:
    """Whether an unseen name may be a label value: short, encodable as UTF-8, not a reserved bin name."""
    if len(text) > MAX_LABEL_CHARS or text in (OTHER, MISSING):
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: prometheus_client could not write the exposition
        return False
    return True


Sketch = NumericSketch | CategoricalSketch


def sketches_from_baseline(baseline: Mapping[str, Any], max_unseen: int = 0) -> dict[str, Sketch]:
    """One empty sketch per feature of a `baseline.json` document, plus `PREDICTION` for the score."""
    out: dict[str, Sketch] = {}
    for name, f in baseline["features"].items():
        missing = int(round(f.get("missing_rate", 0.0) * f.get("count", 0)))
        if f["kind"] == "numeric":
            out[name] = NumericSketch(name, f["bin_edges"], f["bin_counts"], missing, f.get("min"), f.get("max"))
        else:
            out[name] = CategoricalSketch(name, f["value_counts"], missing, max_unseen)
    p = baseline.get("prediction")
    if p:
        out[PREDICTION] = NumericSketch(PREDICTION, p["bin_edges"], p["bin_counts"], 0, None, None)
    return out
