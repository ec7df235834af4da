"""Small valid experiment configs for the experiments package's tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from experiments.config import ExperimentConfig, parse_config


def config_dict(name: str = "clf-v2-vs-legacy", model_weight: float = 0.01, **overrides: Any) -> dict[str, Any]:
    """A minimal experiment document with the model arm at `model_weight`; `overrides` replace top-level keys."""
    doc: dict[str, Any] = {
        "name": name, "salt": "test-salt", "model_name": "churn",
        "arms": {"legacy": {"weight": round(1 - model_weight, 12), "backend": {"kind": "legacy_http"}},
                 "model": {"weight": model_weight, "backend": {"kind": "tfserving_grpc", "model_name": "churn"}}},
    }
    doc.update(overrides)
    return doc


def make_config(name: str = "clf-v2-vs-legacy", model_weight: float = 0.01, **overrides: Any) -> ExperimentConfig:
    return parse_config(config_dict(name, model_weight, **overrides))


def write_config(path: Path, name: str = "clf-v2-vs-legacy", model_weight: float = 0.01, **overrides: Any) -> Path:
    path.write_text(yaml.safe_dump(config_dict(name, model_weight, **overrides), sort_keys=False))
    return path
