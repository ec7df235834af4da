"""Permutation importance of each input feature on held-out rows: does every feature earn its place?

ML Test Score, "all features are beneficial": a feature that adds nothing still costs upkeep,
serving work and skew risk. Shuffling one feature's column breaks its link to the label while
keeping its distribution; the drop in AUC and accuracy on the validation split is what the
model loses without it (Breiman 2001). Recorded with each version at training time; features
whose shuffle costs nothing (within the repeats' spread) are listed as not beneficial.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from serving.training import dataset
from serving.training.quality import THRESHOLD, roc_auc

REPEATS = 3  # shuffles per feature; their spread tells a real drop from shuffle noise


def permutation_importance(score: Callable[[pd.DataFrame], np.ndarray], frame: pd.DataFrame,
                           seed: int = 0, repeats: int = REPEATS) -> dict:
    """Per feature: mean drop in AUC and in accuracy over `repeats` shuffles, and the AUC drop's spread."""
    labels = frame[dataset.LABEL].to_numpy()
    base = np.asarray(score(frame), dtype=np.float64).reshape(-1)
    base_auc, base_acc = roc_auc(labels, base), float(((base >= THRESHOLD) == labels).mean())
    rng = np.random.default_rng(seed)
    features = {}
    for name in dataset.FEATURES:
        auc_drops, acc_drops = [], []
        for _ in range(repeats):
            shuffled = frame.copy()
            shuffled[name] = rng.permutation(shuffled[name].to_numpy())
            s = np.asarray(score(shuffled), dtype=np.float64).reshape(-1)
            auc_drops.append(base_auc - roc_auc(labels, s))
            acc_drops.append(base_acc - float(((s >= THRESHOLD) == labels).mean()))
        features[name] = {"auc_drop": float(np.mean(auc_drops)), "auc_drop_sd": float(np.std(auc_drops)),
                          "accuracy_drop": float(np.mean(acc_drops))}
    not_beneficial = sorted(n for n, f in features.items() if f["auc_drop"] <= f["auc_drop_sd"])
    return {"method": f"permutation importance on the validation split, {repeats} shuffles per feature",
            "baseline_auc": base_auc, "baseline_accuracy": base_acc, "features": features,
            "not_beneficial": not_beneficial}
