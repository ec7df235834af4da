"""The training feature baseline written beside each exported model version.

Per numeric feature: missing rate, range, moments, quantiles and a histogram over fixed bins
taken from training deciles; per categorical feature: value frequencies and missing rate; and the
model's score distribution on the validation split (for prediction drift). The router's live
sketches reuse exactly these bins, so live and training histograms compare bin for bin.

Bin convention: `bin_edges` are interior edges e_0 < ... < e_k-1; a value x falls in bin
`numpy.searchsorted(bin_edges, x, side="right")`, so there are k+1 bins and the outer two are
open-ended (below e_0, at or above e_k-1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from serving.training.dataset import CATEGORICAL, NUMERIC

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
SCORE_EDGES = [round(0.1 * i, 1) for i in range(1, 10)]


def _numeric(values: np.ndarray) -> dict:
    present = values[~np.isnan(values)]
    edges = np.unique(np.quantile(present, np.linspace(0.1, 0.9, 9)))
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)
    return {
        "kind": "numeric", "dtype": "DT_FLOAT",
        "count": int(len(values)), "missing_rate": float(1 - len(present) / len(values)),
        "min": float(present.min()), "max": float(present.max()),
        "mean": float(present.mean()), "std": float(present.std()),
        "quantiles": {str(q): float(np.quantile(present, q)) for q in QUANTILES},
        "bin_edges": edges.tolist(), "bin_counts": counts.tolist(),
    }


def _categorical(values: pd.Series) -> dict:
    present = values[values.notna() & (values.astype(str) != "")].astype(str)
    counts = present.value_counts().sort_index()
    return {
        "kind": "categorical", "dtype": "DT_STRING",
        "count": int(len(values)), "missing_rate": float(1 - len(present) / len(values)),
        "frequencies": {k: float(v / len(present)) for k, v in counts.items()},
        "value_counts": {k: int(v) for k, v in counts.items()},
    }


def score_histogram(scores: np.ndarray) -> dict:
    counts = np.bincount(np.searchsorted(SCORE_EDGES, scores, side="right"), minlength=len(SCORE_EDGES) + 1)
    return {"bin_edges": SCORE_EDGES, "bin_counts": counts.tolist(), "count": int(len(scores)), "mean": float(np.mean(scores))}


def compute_baseline(train: pd.DataFrame, validation_scores: np.ndarray) -> dict:
    """The baseline document (JSON-ready) for one model version."""
    features = {c: _numeric(train[c].to_numpy(dtype=np.float64)) for c in NUMERIC}
    features.update({c: _categorical(train[c]) for c in CATEGORICAL})
    return {
        "split": "train", "rows": int(len(train)),
        "features": {c: features[c] for c in (*CATEGORICAL, *NUMERIC)},
        "prediction": {"split": "validation", **score_histogram(validation_scores)},
    }
