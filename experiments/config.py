"""The whole experiment file: the router's part (`router.config.RouterConfig`) plus the launch criteria.

The launch criteria (metric, alpha, power, effect size, margin, stages, guardrails) live here and
are committed before the experiment starts, so nobody picks them after seeing the data
(Kohavi, Tang & Xu, *Trustworthy Online Controlled Experiments*, ch. 3). The analyzer, the
controller, the gate and the demo read this class; the router reads only `RouterConfig`, and the
ramp controller validates the whole file with this class before it writes one.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from router.config import ConfigError, RouterConfig, _Strict, dump_config
from router.config import load_config as _load
from router.config import parse_config as _parse

__all__ = ["ConfigError", "ExperimentConfig", "dump_config", "load_config", "parse_config"]

DEFAULT_STAGES_PERCENT = (1, 5, 20, 50, 100)
EXAMPLE_CONFIG = Path(__file__).with_name("example_experiment.yaml")


class CriteriaSpec(_Strict):
    """Launch criteria of the live experiment, fixed before it starts."""

    primary_metric: Literal["success_rate"] = "success_rate"
    minimum_detectable_effect: float = Field(0.03, gt=0.0, lt=1.0, description="Absolute difference in success rate.")
    alpha: float = Field(0.05, gt=0.0, lt=0.5)
    power: float = Field(0.8, gt=0.5, lt=1.0)
    non_inferiority_margin: float = Field(0.01, ge=0.0, lt=1.0, description="How much worse than legacy is still acceptable.")
    srm_p_value: float = Field(0.001, gt=0.0, lt=0.5, description="Sample ratio mismatch threshold (blocks decisions).")


class SliceSpec(_Strict):
    """A named subset of rows for per-slice metrics (the gate and `modelramp slices`).

    A feature condition (`values` for categories or numbers, or a numeric range: `min` inclusive,
    `max` exclusive) and/or a true-label condition (`label: 1`, the churners: the rare class),
    all of which must hold. The shape is checked here; feature names and kinds are checked against
    the data schema where slices are applied (experiments.quality.slicing), so this module stays light.
    """

    name: str = Field(..., min_length=1, description="Shown in tables and plots; unique within the list.")
    feature: str | None = Field(None, description="The feature the condition is on (a column of the data set).")
    min: float | None = Field(None, description="Lowest value in the slice (inclusive; numeric features).")
    max: float | None = Field(None, description="Values below this are in the slice (exclusive; numeric features).")
    values: list[str | int | float] | None = Field(None, min_length=1, description="The categories or exact numbers in the slice.")
    label: Literal[0, 1] | None = Field(None, description="Only rows whose true label is this (1: churners, the rare class).")

    @model_validator(mode="after")
    def _defined(self) -> SliceSpec:
        condition = self.values is not None or self.min is not None or self.max is not None
        if self.feature is None and condition:
            raise ValueError(f"slice {self.name!r}: values, min and max need a feature")
        if self.feature is not None and not condition:
            raise ValueError(f"slice {self.name!r}: feature {self.feature!r} needs values, min or max")
        if self.feature is None and self.label is None:
            raise ValueError(f"slice {self.name!r} is empty: give a feature with values, min or max, and/or a label")
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"slice {self.name!r}: min {self.min:g} must be below max {self.max:g} (max is exclusive)")
        return self


class GateSpec(_Strict):
    """Offline launch gate on the pristine test split (the "Deep Learning Walkthrough" talk, step 9)."""

    target_accuracy: float = Field(0.80, gt=0.0, lt=1.0)
    alpha: float = Field(0.05, gt=0.0, lt=0.5)
    slices: list[SliceSpec] = Field([], description="Slices reported by the gate and analysed by `modelramp slices`.")

    @field_validator("slices")
    @classmethod
    def _unique_names(cls, slices: list[SliceSpec]) -> list[SliceSpec]:
        names = [s.name for s in slices]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"slice names must be unique, repeated: {', '.join(twice)}")
        return slices


class StageSpec(_Strict):
    percent: float = Field(..., gt=0.0, le=100.0)
    min_duration_seconds: float = Field(3600.0, ge=0.0)
    min_samples: int = Field(1000, ge=0, description="Model-arm exposures needed before leaving the stage.")


class RampSpec(_Strict):
    stages: list[StageSpec] = [StageSpec(percent=p) for p in DEFAULT_STAGES_PERCENT]

    @field_validator("stages")
    @classmethod
    def _increasing(cls, stages: list[StageSpec]) -> list[StageSpec]:
        if not stages:
            raise ValueError("at least one stage is needed")
        shares = [s.percent for s in stages]
        if any(b <= a for a, b in pairwise(shares)):
            raise ValueError(f"stage percents must increase strictly, got {shares}")
        return stages


class GuardrailsSpec(_Strict):
    """Serving health limits for the model arm; a breach means rollback."""

    max_error_rate: float = Field(0.05, ge=0.0, le=1.0)
    max_p99_latency_ms: float = Field(250.0, gt=0.0)
    max_fallback_rate: float = Field(0.05, ge=0.0, le=1.0)


class ExperimentConfig(RouterConfig):
    """One experiment: the router's part, and what decides the launch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    criteria: CriteriaSpec = CriteriaSpec()
    gate: GateSpec = GateSpec()
    ramp: RampSpec = RampSpec()
    guardrails: GuardrailsSpec = GuardrailsSpec()


def parse_config(data: object) -> ExperimentConfig:
    """Validate a parsed YAML/JSON document as a whole experiment; raise ConfigError naming each bad field."""
    return _parse(data, ExperimentConfig)


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiment YAML file as a whole experiment."""
    return _load(path, ExperimentConfig)
