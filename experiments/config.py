"""The experiment configuration: one YAML file, validated once, shared by router, analyzer and controller.

The launch criteria (metric, alpha, power, effect size, margin, stages, guardrails) live here and
are committed before the experiment starts (seed 001), so nobody picks them after seeing the data.
This module must stay light: the router imports it and must not pull in TensorFlow or statsmodels.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError, field_validator, model_validator

ARMS = ("legacy", "model")
DEFAULT_STAGES_PERCENT = (1, 5, 20, 50, 100)
EXAMPLE_CONFIG = Path(__file__).with_name("example_experiment.yaml")


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the field and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LegacyHttpBackend(_Strict):
    """The legacy system's HTTP JSON API (`modelramp legacy`, or production's own)."""

    kind: Literal["legacy_http"] = "legacy_http"
    url: str = Field("http://127.0.0.1:8081", description="Base URL of the legacy system.")
    timeout_ms: float = Field(500.0, gt=0, description="Per-request deadline.")


class TfServingGrpcBackend(_Strict):
    """TF Serving (or `modelramp serve-model`) over gRPC PredictionService/Predict."""

    kind: Literal["tfserving_grpc"] = "tfserving_grpc"
    target: str = Field("127.0.0.1:8500", description="host:port of the gRPC endpoint.")
    model_name: str = Field(..., description="Model name as TF Serving knows it.")
    version: int | None = Field(None, ge=0, description="Pin a version; default: the server's latest.")
    version_label: str | None = Field(None, description="Pin a version label instead of a number.")
    signature_name: str = "serving_default"
    timeout_ms: float = Field(200.0, gt=0, description="Per-request deadline.")


class TfServingRestBackend(_Strict):
    """TF Serving (or `modelramp serve-model`) over its REST API."""

    kind: Literal["tfserving_rest"] = "tfserving_rest"
    url: str = Field("http://127.0.0.1:8501", description="Base URL of the REST endpoint.")
    model_name: str = Field(..., description="Model name as TF Serving knows it.")
    version: int | None = Field(None, ge=0)
    version_label: str | None = None
    signature_name: str = "serving_default"
    timeout_ms: float = Field(200.0, gt=0)


Backend = Annotated[
    Union[LegacyHttpBackend, TfServingGrpcBackend, TfServingRestBackend],
    Field(discriminator="kind"),
]


class Arm(_Strict):
    weight: float = Field(..., ge=0.0, le=1.0, description="Share of units sent to this arm.")
    backend: Backend


class CircuitBreaker(_Strict):
    """Stops sending traffic to the model arm when its error rate passes the guardrail."""

    enabled: bool = True
    max_error_rate: float = Field(0.2, gt=0.0, le=1.0)
    min_requests: int = Field(20, ge=1, description="Requests in the window before the rate counts.")
    window_seconds: float = Field(30.0, gt=0)


class Fallback(_Strict):
    """What the router does when the model arm fails: answer from legacy within the deadline."""

    policy: Literal["legacy", "error"] = "legacy"
    circuit_breaker: CircuitBreaker = CircuitBreaker()


class Shadow(_Strict):
    """Also send a share of legacy-arm requests to the model in the background (answers discarded)."""

    enabled: bool = False
    share: float = Field(0.0, ge=0.0, le=1.0)


class Criteria(_Strict):
    """Launch criteria of the live experiment, fixed before it starts."""

    primary_metric: Literal["success_rate"] = "success_rate"
    minimum_detectable_effect: float = Field(0.03, gt=0.0, lt=1.0, description="Absolute difference in success rate.")
    alpha: float = Field(0.05, gt=0.0, lt=0.5)
    power: float = Field(0.8, gt=0.5, lt=1.0)
    non_inferiority_margin: float = Field(0.01, ge=0.0, lt=1.0, description="How much worse than legacy is still acceptable.")
    srm_p_value: float = Field(0.001, gt=0.0, lt=0.5, description="Sample ratio mismatch threshold (blocks decisions).")


class Slice(_Strict):
    """A named subset of rows for per-slice metrics (the gate and `modelramp slices`).

    A feature condition (`values` for categories or numbers, or a numeric range: `min` inclusive,
    `max` exclusive) and/or a true-label condition (`label: 1`, the churners: the rare class),
    all of which must hold. The shape is checked here; feature names and kinds are checked against
    the data schema where slices are applied (experiments.slicing), so this module stays light.
    """

    name: str = Field(..., min_length=1, description="Shown in tables and plots; unique within the list.")
    feature: str | None = Field(None, description="The feature the condition is on (a column of the data set).")
    min: float | None = Field(None, description="Lowest value in the slice (inclusive; numeric features).")
    max: float | None = Field(None, description="Values below this are in the slice (exclusive; numeric features).")
    values: list[str | int | float] | None = Field(None, min_length=1, description="The categories or exact numbers in the slice.")
    label: Literal[0, 1] | None = Field(None, description="Only rows whose true label is this (1: churners, the rare class).")

    @model_validator(mode="after")
    def _defined(self) -> "Slice":
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


class Gate(_Strict):
    """Offline launch gate on the pristine test split (seed 000)."""

    target_accuracy: float = Field(0.80, gt=0.0, lt=1.0)
    alpha: float = Field(0.05, gt=0.0, lt=0.5)
    slices: list[Slice] = Field([], description="Slices reported by the gate and analysed by `modelramp slices`.")

    @field_validator("slices")
    @classmethod
    def _unique_names(cls, slices: list[Slice]) -> list[Slice]:
        names = [s.name for s in slices]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"slice names must be unique, repeated: {', '.join(twice)}")
        return slices


class Stage(_Strict):
    percent: float = Field(..., gt=0.0, le=100.0)
    min_duration_seconds: float = Field(3600.0, ge=0.0)
    min_samples: int = Field(1000, ge=0, description="Model-arm exposures needed before leaving the stage.")


class Ramp(_Strict):
    stages: list[Stage] = [Stage(percent=p) for p in DEFAULT_STAGES_PERCENT]

    @field_validator("stages")
    @classmethod
    def _increasing(cls, stages: list[Stage]) -> list[Stage]:
        if not stages:
            raise ValueError("at least one stage is needed")
        shares = [s.percent for s in stages]
        if any(b <= a for a, b in zip(shares, shares[1:])):
            raise ValueError(f"stage percents must increase strictly, got {shares}")
        return stages


class Guardrails(_Strict):
    """Serving health limits for the model arm; a breach means rollback."""

    max_error_rate: float = Field(0.05, ge=0.0, le=1.0)
    max_p99_latency_ms: float = Field(250.0, gt=0.0)
    max_fallback_rate: float = Field(0.05, ge=0.0, le=1.0)


class RouterOptions(_Strict):
    """Request limits and bookkeeping of the router (`modelramp router`); every replica reads the same."""

    request_timeout_ms: float = Field(1000.0, gt=0, description="Deadline of one client request when the client sets none (gRPC deadlines are honoured); the model arm gets at most half of what remains, so the legacy fallback still fits.")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest accepted request body (REST) or message (gRPC); larger ones get 413 / INVALID_ARGUMENT.")
    max_batch_size: int = Field(256, ge=1, description="Most examples (rows) in one predict request; more get 400 / INVALID_ARGUMENT.")
    outcome_ttl_seconds: float = Field(86_400.0, gt=0, description="How long after a prediction its outcome is accepted; older request ids are rejected as expired.")
    outcome_dedup_entries: int = Field(200_000, ge=1, description="Request ids remembered per router to count a repeated outcome once (about 100 bytes each); the idempotence window is this many ids or outcome_ttl_seconds, whichever is shorter.")
    feature_sample_share: float = Field(0.0, ge=0.0, le=1.0, description="Share of requests whose decoded input features are passed to the feature sinks (skew sketches, issue 5); 0 turns sampling off.")
    shadow_max_in_flight: int = Field(64, ge=1, description="Most shadow calls running at once; further shadow calls are dropped (and counted), never queued, so shadowing cannot slow the router.")


class Skew(_Strict):
    """Training-serving skew and drift monitors (issue 5): live feature sketches against the model's baseline.

    The router sketches sampled requests on the baseline's bins and judges each feature every
    `interval_seconds` over the last `window_seconds` (see `experiments.drift` for the statistics
    and why a verdict needs `min_sample` values and significance at `alpha` as well as an effect
    over its threshold). Read once when the router starts; `modelramp skew` reads the same section.
    Missing values are NaN for numbers and "" for categories (a request that omits an input is
    rejected by the signature check before any sketch sees it).
    """

    enabled: bool = Field(True, description="Build the sketches when a baseline is known (this file's `baseline` or `modelramp router --baseline`).")
    baseline: str | None = Field(None, description="Path of the model version's `modelramp/baseline.json` (relative to the working directory); `--baseline` overrides it.")
    sample_share: float = Field(1.0, ge=0.0, le=1.0, description="Share of requests sketched, unless `router.feature_sample_share` is set explicitly (that one wins). Default 1: every request; the sketch costs a few microseconds (loadtests/bench_sketches.py).")
    thresholds: dict[Literal["psi", "js_distance", "linf"], PositiveFloat] = Field(
        {"psi": 0.2, "js_distance": 0.1, "linf": 0.1},
        description="Default limit per effect-size statistic (the alert rules use the same numbers); numeric features and the score are judged on psi and js_distance, categorical ones on psi and linf.")
    features: dict[str, dict[Literal["psi", "js_distance", "linf"], PositiveFloat]] = Field(
        {}, description="Per-feature limits (feature name, or __prediction__ for the score); naming a statistic also judges the feature on it.")
    min_sample: int = Field(1000, ge=1, description="Live values in the window before a feature is judged (fewer: verdict too_few, no drift gauge exported).")
    alpha: float = Field(0.01, gt=0.0, lt=0.5, description="Significance of the chi-square test that must also reject 'same distribution' for a drift verdict.")
    window_seconds: float = Field(3600.0, gt=0, description="Drift is computed over the values sketched in this trailing window.")
    interval_seconds: float = Field(15.0, gt=0, description="How often the router folds pending values into the sketches and recomputes drift (off the request path).")
    max_unseen_categories: int = Field(20, ge=0, description="Unseen category names kept by name per feature; further ones are counted together as __other__.")
    max_pending: int = Field(100_000, ge=1, description="Sampled requests waiting to be folded in; beyond that new ones are dropped (and counted), so memory stays bounded.")
    prediction_output: str | None = Field(None, description="The model output holding the score (default: the only output).")

    def thresholds_for(self, feature: str, kind: str) -> dict[str, float]:
        """The statistics this feature is judged on, with their limits (kind: numeric or categorical)."""
        from experiments.drift import judged_thresholds  # noqa: PLC0415 - keeps this module free of numpy

        return judged_thresholds(kind, self.thresholds, self.features.get(feature))


class ExperimentConfig(_Strict):
    """One experiment: who is compared, how traffic is split, and what decides the launch."""

    name: str = Field(..., pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", description="DNS-label style name.")
    salt: str = Field(..., min_length=1, description="Assignment salt; a new salt starts a new experiment.")
    model_name: str = Field(..., min_length=1, description="The name clients use in /v1/models/<name>:predict.")
    unit_key: str = Field("user_id", description="What the unit id identifies (documentation; sent as X-Unit-Id).")
    arms: dict[str, Arm]
    fallback: Fallback = Fallback()
    shadow: Shadow = Shadow()
    criteria: Criteria = Criteria()
    gate: Gate = Gate()
    ramp: Ramp = Ramp()
    guardrails: Guardrails = Guardrails()
    router: RouterOptions = RouterOptions()
    skew: Skew = Skew()

    @model_validator(mode="before")
    @classmethod
    def _skew_sampling(cls, data: object) -> object:
        # The sketches see only sampled requests: unless the file sets router.feature_sample_share
        # itself, a configured skew monitor takes its own sample_share (default 1, "all at low traffic").
        if isinstance(data, dict) and isinstance(data.get("skew"), dict) and data["skew"].get("enabled", True):
            router = data.get("router") or {}
            if isinstance(router, dict) and "feature_sample_share" not in router:
                data = {**data, "router": {**router, "feature_sample_share": data["skew"].get("sample_share", 1.0)}}
        return data

    @field_validator("arms")
    @classmethod
    def _two_arms(cls, arms: dict[str, Arm]) -> dict[str, Arm]:
        if sorted(arms) != sorted(ARMS):
            raise ValueError(f"arms must be exactly {list(ARMS)}, got {sorted(arms)}")
        total = sum(a.weight for a in arms.values())
        if not math.isclose(total, 1.0, abs_tol=1e-9):
            raise ValueError(f"arm weights must sum to 1, got {total:g}")
        return arms

    @model_validator(mode="after")
    def _backends_fit_arms(self) -> "ExperimentConfig":
        if self.arms["legacy"].backend.kind != "legacy_http":
            raise ValueError("arms.legacy.backend.kind must be legacy_http")
        return self

    @property
    def weights(self) -> dict[str, float]:
        return {name: arm.weight for name, arm in self.arms.items()}

    def with_weights(self, weights: dict[str, float]) -> "ExperimentConfig":
        """A copy with new arm weights, validated like a file would be."""
        data = self.model_dump(mode="json")
        for name, w in weights.items():
            if name not in data["arms"]:
                raise ConfigError(f"unknown arm {name!r}; arms are {list(ARMS)}")
            data["arms"][name]["weight"] = w
        return parse_config(data)


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"{where}: {e['msg']}")
    return "; ".join(lines)


def parse_config(data: object) -> ExperimentConfig:
    """Validate a parsed YAML/JSON document; raise ConfigError naming each bad field."""
    if not isinstance(data, dict):
        raise ConfigError(f"experiment config must be a mapping, got {type(data).__name__}")
    body = data.get("experiment", data) if set(data) == {"experiment"} else data
    try:
        return ExperimentConfig.model_validate(body)
    except ValidationError as err:
        raise ConfigError(f"invalid experiment config: {_describe(err)}") from None


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiment YAML file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read experiment config {path}: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    try:
        return parse_config(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def dump_config(config: ExperimentConfig) -> str:
    """The config as YAML (what the ramp controller writes back)."""
    return yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), sort_keys=False)
