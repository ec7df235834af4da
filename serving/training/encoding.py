"""Feature encoding fitted on the training split: standardised numbers and one-hot categories.

The same encoding runs twice: in numpy to train the Keras network, and as TensorFlow ops inside
the exported SavedModel (`serving.training.export`). A test checks the two agree, because a mismatch
between them is exactly the training-serving skew the project exists to catch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from serving.training.dataset import CATEGORICAL, NUMERIC


@dataclass(frozen=True)
class Encoder:
    means: dict[str, float]
    stds: dict[str, float]
    vocabularies: dict[str, list[str]]

    @classmethod
    def fit(cls, train: pd.DataFrame) -> Encoder:
        means = {c: float(train[c].mean()) for c in NUMERIC}
        # A constant column would divide by zero; its standardised value is 0 anyway.
        stds = {c: float(train[c].std(ddof=0)) or 1.0 for c in NUMERIC}
        vocab = {c: sorted(train[c].astype(str).unique().tolist()) for c in CATEGORICAL}
        return cls(means, stds, vocab)

    @property
    def width(self) -> int:
        return len(NUMERIC) + sum(len(v) for v in self.vocabularies.values())

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Rows -> float32 matrix [numeric standardised..., one-hot per category...].

        A missing number (NaN) becomes the training mean; an unseen category encodes as all
        zeros (no column lights up), the same as the exported graph does.
        """
        parts = []
        for c in NUMERIC:
            x = frame[c].to_numpy(dtype=np.float64)
            x = np.where(np.isnan(x), self.means[c], x)
            parts.append(((x - self.means[c]) / self.stds[c])[:, None])
        for c in CATEGORICAL:
            values = frame[c].astype(str).to_numpy()
            parts.append((values[:, None] == np.array(self.vocabularies[c])[None, :]).astype(np.float64))
        return np.concatenate(parts, axis=1).astype(np.float32)

    def to_dict(self) -> dict:
        return asdict(self)
