"""Classification quality of 0/1 predictions: accuracy, precision, recall, F1, confusion, AUC.

Pure numpy over labels and scores, shared by training (validation metrics), the launch gate
and per-slice error analysis, so every report computes the same numbers the same way.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

THRESHOLD = 0.5


def classification_report(labels, scores, threshold: float = THRESHOLD) -> dict:
    """Metrics of `scores >= threshold` against 0/1 `labels` (JSON-ready)."""
    y = np.asarray(labels).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    pred = (s >= threshold).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    n = len(y)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "n": n, "correct": tp + tn, "accuracy": (tp + tn) / n if n else float("nan"),
        "precision": precision, "recall": recall, "f1": f1,
        "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
        "roc_auc": roc_auc(y, s), "positive_rate": float(y.mean()) if n else float("nan"),
    }


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) identity; NaN with one class."""
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
