"""The weights document: `{experiment, salt?, weights}` beside the experiment file, overriding its arm weights.

On Kubernetes the experiment file is a ConfigMap that Helm (or kustomize, Argo CD, Flux) owns and
writes back on every upgrade or sync, so a ramp kept there would be undone. The ramp state lives
in a second, small document that no release renders: the ramp controller writes it (the
`<release>-weights` ConfigMap, `experiments.live.weights.configmap`) and the routers read it
(`modelramp router --weights FILE`, an optional ConfigMap volume)::

    experiment: churn-v2          # must name the experiment of the config file
    salt: 6c1f...                 # optional; when given, must be the config's salt
    weights: {legacy: 0.95, model: 0.05}

A document for another experiment, or for another salt (an experiment restarted under a new
salt), does not apply: the config's own weights do, which are the starting point of a ramp.
YAML or JSON (JSON is YAML). Both arms are given and sum to 1, validated like the config.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml

from router.config import ARMS, ConfigError, RouterConfig, parse_yaml

C = TypeVar("C", bound=RouterConfig)

KEYS = ("experiment", "salt", "weights")


@dataclass(frozen=True)
class Weights:
    """One weights document, parsed: the experiment it is for, optionally its salt, and the arm weights."""

    experiment: str
    weights: Mapping[str, float]
    salt: str | None = None

    def mismatch(self, config: RouterConfig) -> str | None:
        """Why this document does not apply to `config` (another experiment or salt), or None if it does."""
        if self.experiment != config.name:
            return f"it is for experiment {self.experiment!r}, the config runs {config.name!r}"
        if self.salt is not None and self.salt != config.salt:
            return "it is for another salt than the config's (an earlier run of the experiment)"
        return None

    def apply_to(self, config: C) -> C:
        """`config` with these weights (ConfigError if the document is for another experiment or salt, or invalid)."""
        why = self.mismatch(config)
        if why is not None:
            raise ConfigError(f"weights not applied: {why}")
        return config.with_weights(dict(self.weights))

    def dump(self) -> str:
        """The document as YAML, in the order of KEYS."""
        doc: dict[str, object] = {"experiment": self.experiment}
        if self.salt is not None:
            doc["salt"] = self.salt
        doc["weights"] = {arm: float(self.weights[arm]) for arm in ARMS}
        return yaml.safe_dump(doc, sort_keys=False)


def weights_of(config: RouterConfig) -> Weights:
    """The document that puts `config`'s weights in force, with its experiment and salt."""
    return Weights(config.name, dict(config.weights), config.salt)


def parse_weights(data: bytes | str, where: str) -> Weights:
    """Parse a weights document; ConfigError naming `where` and the problem for anything wrong."""
    doc = parse_yaml(data, where)
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: a weights document is a mapping {{experiment, salt?, weights}}, got {type(doc).__name__}")
    unknown = sorted(str(k) for k in doc if k not in KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; a weights document has {list(KEYS)}")
    experiment, salt, weights = doc.get("experiment"), doc.get("salt"), doc.get("weights")
    if not isinstance(experiment, str) or not experiment:
        raise ConfigError(f"{where}: experiment must name the experiment (a non-empty string)")
    if salt is not None and (not isinstance(salt, str) or not salt):
        raise ConfigError(f"{where}: salt, when given, must be a non-empty string")
    if not isinstance(weights, dict) or set(weights) != set(ARMS):
        raise ConfigError(f"{where}: weights must give both arms {list(ARMS)}, got {weights!r}")
    out: dict[str, float] = {}
    for arm, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or not 0.0 <= w <= 1.0:
            raise ConfigError(f"{where}: weights.{arm} must be a number from 0 to 1, got {w!r}")
        out[str(arm)] = float(w)
    if not math.isclose(sum(out.values()), 1.0, abs_tol=1e-6):
        raise ConfigError(f"{where}: weights must sum to 1, got {sum(out.values())}")
    return Weights(experiment, out, salt)


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` by a temporary file renamed over it (a reader never sees half; OSError if not writable)."""
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # the new weights survive a crash right after the rename
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
