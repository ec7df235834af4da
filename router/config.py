"""The part of the experiment file the router reads: arms and their backends, fallback, shadow, limits, skew.

One YAML file describes an experiment (docs/architecture.md, "The experiment file"). The router
owns the sections below and ignores the others (criteria, gate, ramp, guardrails), which
`experiments.config.ExperimentConfig` adds on top of `RouterConfig` and validates strictly; the
ramp controller validates the whole file before it writes one, so routers only ever read files
that passed full validation (or hand edits, whose router part is still strict). Each arm has its
own type, so a model arm with a legacy backend cannot be written. Config classes are named
`*Spec` so they never collide with the runtime classes they configure (`router.breaker.CircuitBreaker`
is configured by `CircuitBreakerSpec`). This module stays light: no numpy, TensorFlow or statsmodels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, overload

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    ValidationError,
    field_validator,
    model_validator,
)

from router.grpc_target import FORMS, parse_target

# The legacy backend's section, in a module of its own, re-exported (`router.config.LegacyHttpSpec`).
from router.legacy_spec import HeaderFileSpec as HeaderFileSpec
from router.legacy_spec import LegacyHealthSpec as LegacyHealthSpec
from router.legacy_spec import LegacyHttpSpec as LegacyHttpSpec
from router.legacy_spec import LegacyTlsSpec as LegacyTlsSpec
from router.legacy_spec import compile_jmespath as compile_jmespath
from router.qa import QaSpec

LEGACY, MODEL = "legacy", "model"
ARMS = (LEGACY, MODEL)
Statistic = Literal["psi", "js_distance", "linf"]
#: Drift limits per effect-size statistic when the file names none (the alert rules use the same numbers).
DEFAULT_DRIFT_THRESHOLDS: dict[Statistic, float] = {"psi": 0.2, "js_distance": 0.1, "linf": 0.1}


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the field and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: What each kind of feature is judged on (router.skew.drift explains the choice).
JUDGED: dict[str, tuple[Statistic, ...]] = {"numeric": ("psi", "js_distance"), "categorical": ("psi", "linf")}


def judged_thresholds(kind: str, defaults: Mapping[Statistic, float] | None = None,
                      override: Mapping[Statistic, float] | None = None) -> dict[str, float]:
    """The statistics judged for a feature of `kind`, with limits: `JUDGED[kind]` plus any the override names."""
    base: dict[Statistic, float] = {**DEFAULT_DRIFT_THRESHOLDS, **(defaults or {})}
    limits: dict[str, float] = {s: base[s] for s in JUDGED[kind]}
    limits.update((override or {}).items())
    return limits


class TfServingGrpcSpec(_Strict):
    """TF Serving (or `modelramp serve-model`) over gRPC PredictionService/Predict."""

    kind: Literal["tfserving_grpc"] = "tfserving_grpc"
    target: str = Field("127.0.0.1:8500", description=f"The gRPC endpoint: {FORMS}.")
    model_name: str = Field(..., description="Model name as TF Serving knows it.")
    version: int | None = Field(None, ge=0, description="Pin a version; default: the server's latest.")
    version_label: str | None = Field(None, description="Pin a version label instead of a number.")
    signature_name: str = "serving_default"
    timeout_ms: float = Field(200.0, gt=0, description="Per-request deadline.")
    rest_port: int | None = Field(None, ge=1, le=65535, description=(
        "TF Serving's REST port on the same servers (its --rest_api_port). Set: a REST client's row-format request "
        "goes to the REST API of the server the target's round robin picks (the rows pass on as they came, which costs "
        "the router less than a gRPC call); gRPC clients' tensors, columnar bodies and the model's metadata stay on "
        "gRPC. None: every call over gRPC."))

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        parse_target(value)  # its ValueError names the forms
        return value


class TfServingRestSpec(_Strict):
    """TF Serving (or `modelramp serve-model`) over its REST API."""

    kind: Literal["tfserving_rest"] = "tfserving_rest"
    url: str = Field("http://127.0.0.1:8501", description="Base URL of the REST endpoint.")
    model_name: str = Field(..., description="Model name as TF Serving knows it.")
    version: int | None = Field(None, ge=0)
    version_label: str | None = None
    signature_name: str = "serving_default"
    timeout_ms: float = Field(200.0, gt=0)


ModelBackendSpec = Annotated[TfServingGrpcSpec | TfServingRestSpec, Field(discriminator="kind")]
BackendSpec = LegacyHttpSpec | TfServingGrpcSpec | TfServingRestSpec


class LegacyArmSpec(_Strict):
    weight: float = Field(..., ge=0.0, le=1.0, description="Share of units sent to the legacy system.")
    backend: LegacyHttpSpec


class ModelArmSpec(_Strict):
    weight: float = Field(..., ge=0.0, le=1.0, description="Share of units sent to the model.")
    backend: ModelBackendSpec


ArmSpec = LegacyArmSpec | ModelArmSpec


class ArmsSpec(_Strict):
    """The two arms, `legacy` and `model`; read like a mapping (`arms["model"]`), as in the file."""

    legacy: LegacyArmSpec
    model: ModelArmSpec

    @model_validator(mode="before")
    @classmethod
    def _exactly_two(cls, data: Any) -> Any:
        if isinstance(data, dict) and sorted(data) != sorted(ARMS):
            raise ValueError(f"arms must be exactly {list(ARMS)}, got {sorted(data)}")
        return data

    @model_validator(mode="after")
    def _weights_sum_to_one(self) -> ArmsSpec:
        total = self.legacy.weight + self.model.weight
        if not math.isclose(total, 1.0, abs_tol=1e-9):
            raise ValueError(f"arm weights must sum to 1, got {total:g}")
        return self

    @overload
    def __getitem__(self, name: Literal["legacy"]) -> LegacyArmSpec: ...
    @overload
    def __getitem__(self, name: Literal["model"]) -> ModelArmSpec: ...
    @overload
    def __getitem__(self, name: str) -> ArmSpec: ...
    def __getitem__(self, name: str) -> ArmSpec:
        if name == LEGACY:
            return self.legacy
        if name == MODEL:
            return self.model
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return name in ARMS

    def items(self) -> list[tuple[str, ArmSpec]]:
        return [(LEGACY, self.legacy), (MODEL, self.model)]

    def values(self) -> list[ArmSpec]:
        return [self.legacy, self.model]


class CircuitBreakerSpec(_Strict):
    """Holds an arm's traffic off its backend while the backend's error rate passes the limit, then probes it (router/breaker.py)."""

    enabled: bool = True
    max_error_rate: float = Field(0.2, gt=0.0, le=1.0)
    min_requests: int = Field(20, ge=1, description="Requests in the window before the rate counts.")
    window_seconds: float = Field(30.0, gt=0)
    open_seconds: float | None = Field(30.0, gt=0, description="How long the breaker stays open before it lets probe requests "
                                                               "through (half-open); null: open until the configuration changes.")
    max_open_seconds: float = Field(300.0, gt=0, description="Each failed probe round doubles the open period, up to this (never "
                                                             "less than open_seconds).")
    half_open_probes: int = Field(3, ge=1, le=1000, description="Requests let through while half-open; all succeeding closes the "
                                                                "breaker, one failing reopens it.")


class LegacyCircuitBreakerSpec(CircuitBreakerSpec):
    """The legacy arm's breaker: opens only on a system that is mostly failing, and probes soon.

    The legacy arm has no fallback unless `fallback.to_model` is on, so an open breaker turns every
    one of its requests into an error: it must open only when most calls fail anyway (down, or
    slower than its timeout), where a fast 503 beats a wait for the same error. Hystrix's defaults
    (50% over 10 s, 20 requests, probe after 5 s).
    """

    max_error_rate: float = Field(0.5, gt=0.0, le=1.0)
    window_seconds: float = Field(10.0, gt=0)
    open_seconds: float | None = Field(5.0, gt=0, description="How long the breaker stays open before it lets probe requests "
                                                              "through (half-open); null: open until the configuration changes.")
    max_open_seconds: float = Field(60.0, gt=0, description="Each failed probe round doubles the open period, up to this (never "
                                                            "less than open_seconds).")


class ReverseFallbackSpec(_Strict):
    """Legacy-arm requests the legacy system cannot answer, answered by the model instead, within a capacity limit.

    Off by default: it puts model answers into the legacy arm (they are counted as that arm's
    fallbacks, as model-arm requests answered by legacy are counted as the model arm's), which
    changes what the experiment compares. The model server is sized for the model arm's share, so
    at most `max_in_flight` such calls run at once and only `share` of the failing requests are
    tried; the others get the legacy system's error, fast while its breaker is open.
    """

    enabled: bool = False
    share: float = Field(1.0, gt=0.0, le=1.0, description="Share of the legacy-arm requests the legacy system failed (or its "
                                                          "breaker held off) that are tried on the model.")
    max_in_flight: int = Field(16, ge=1, description="Most rerouted calls to the model at once, per router replica; beyond "
                                                     "it the legacy error is the answer, never a queue.")


class FallbackSpec(_Strict):
    """What the router does when an arm's backend fails: the model arm falls back to legacy within the deadline."""

    policy: Literal["legacy", "error"] = "legacy"
    circuit_breaker: CircuitBreakerSpec = CircuitBreakerSpec()
    legacy_circuit_breaker: LegacyCircuitBreakerSpec = Field(default_factory=LegacyCircuitBreakerSpec,
                                                             description="The legacy arm's breaker: a dead or too slow legacy "
                                                                         "system's errors are served fast.")
    to_model: ReverseFallbackSpec = Field(default_factory=ReverseFallbackSpec, description="Reverse fallback: legacy-arm "
                                                                                           "requests answered by the model.")


class ShadowSpec(_Strict):
    """Also send a share of legacy-arm requests to the model in the background (answers discarded)."""

    enabled: bool = False
    share: float = Field(0.0, ge=0.0, le=1.0)


class HttpLimitsSpec(_Strict):
    """What one HTTP/1.1 client may hold of the router (router/rest/server.py).

    Defaults are near Envoy's and nginx's: 60 KiB and 100 headers are Envoy's
    `max_request_headers_kb` and `max_headers_count`; the read and send deadlines are shorter than
    nginx's 60 s because the router's clients are services on a cluster network, not browsers.
    Every limit is answered with its status (431, 408, 413) and a closed connection.
    """

    max_header_bytes: int = Field(61_440, ge=1024, description="Most bytes of request line and headers together; more get 431.")
    max_headers: int = Field(100, ge=8, description="Most header lines in one request; more get 431.")
    header_timeout_seconds: float = Field(10.0, gt=0, description="From a request's first byte to the end of its headers; slower gets 408.")
    body_timeout_seconds: float = Field(30.0, gt=0, description="From the end of the headers to the end of the body; slower gets 408.")
    send_timeout_seconds: float = Field(10.0, gt=0, description="How long a client may leave an answer unread before it is disconnected.")
    keep_alive_seconds: float = Field(5.0, gt=0, description="Idle keep-alive connections are closed after this (uvicorn's default).")


class RouterOptionsSpec(_Strict):
    """Request limits and bookkeeping of the router (`modelramp router`); every replica reads the same."""

    request_timeout_ms: float = Field(1000.0, gt=0, description="Deadline of one client request when the client sets none (gRPC deadlines are "
                                                                "honoured); the model arm gets at most half of what remains, so the legacy "
                                                                "fallback still fits.")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest accepted request body (REST) or message (gRPC); larger ones get 413 "
                                                                "/ INVALID_ARGUMENT.")
    max_batch_size: int = Field(256, ge=1, description="Most examples (rows) in one predict request; more get 400 / INVALID_ARGUMENT.")
    outcome_ttl_seconds: float = Field(86_400.0, gt=0, description="How long after a prediction its outcome is accepted; older request ids "
                                                                   "are rejected as expired.")
    outcome_dedup_entries: int = Field(200_000, ge=1, description="Ignored: repeated outcomes are recognised by the outcome ledger, "
                                                                  "across replicas and restarts, for outcome_ttl_seconds. Still "
                                                                  "accepted so that existing files load.")
    feature_sample_share: float = Field(0.0, ge=0.0, le=1.0, description="Share of requests whose decoded input features are passed to the "
                                                                         "feature sinks (the skew sketches); 0 turns sampling off.")
    shadow_max_in_flight: int = Field(64, ge=1, description="Most shadow calls running at once; further shadow calls are dropped (and "
                                                            "counted), never queued, so shadowing cannot slow the router.")
    analysis_buckets: int = Field(64, ge=1, le=1024, description="Analysis buckets B: each unit id hashes to one of B buckets, independent "
                                                                 "of its arm (router/buckets.py); exposures and outcomes are counted per "
                                                                 "(arm, bucket), so the analyzer treats a unit's repeated requests as one "
                                                                 "cluster. 6B series per experiment and router; every replica must use the "
                                                                 "same B. 1 counts request-level only.")
    http: HttpLimitsSpec = Field(default_factory=HttpLimitsSpec, description="Limits on one HTTP/1.1 client: header size and count, "
                                                                         "read and send deadlines, keep-alive.")


class SkewSpec(_Strict):
    """Training-serving skew and drift monitors: live feature sketches against the model's baseline.

    The router sketches sampled requests on the baseline's bins and judges each feature every
    `interval_seconds` over the last `window_seconds` (see `router.skew.drift` for the statistics
    and why a verdict needs `min_sample` values and significance at `alpha` as well as an effect
    over its threshold). Read once when the router starts; `modelramp skew` reads the same section.
    Missing values are NaN for numbers and "" for categories (a request that omits an input is
    rejected by the signature check before any sketch sees it).
    """

    enabled: bool = Field(True, description="Build the sketches when a baseline is known (this file's `baseline` or `modelramp router --baseline`).")
    baseline: str | None = Field(None, description="Path of the model version's `modelramp/baseline.json` (relative to the working "
                                                   "directory); `--baseline` overrides it.")
    sample_share: float = Field(1.0, ge=0.0, le=1.0, description="Share of requests sketched, unless `router.feature_sample_share` is set "
                                                                 "explicitly (that one wins). Default 1: every request; the sketch costs a "
                                                                 "few microseconds (loadtests/bench_sketches.py).")
    thresholds: dict[Statistic, PositiveFloat] = Field(
        default_factory=lambda: dict(DEFAULT_DRIFT_THRESHOLDS),
        description="Default limit per effect-size statistic (the alert rules use the same numbers); numeric features and the score are "
                    "judged on psi and js_distance, categorical ones on psi and linf.")
    features: dict[str, dict[Statistic, PositiveFloat]] = Field(
        {}, description="Per-feature limits (feature name, or __prediction__ for the score); naming a statistic also judges the feature on it.")
    min_sample: int = Field(1000, ge=1, description="Live values in the window before a feature is judged (fewer: verdict too_few, no drift "
                                                    "gauge exported).")
    alpha: float = Field(0.01, gt=0.0, lt=0.5, description="Significance of the chi-square test that must also reject 'same distribution' for "
                                                           "a drift verdict.")
    window_seconds: float = Field(3600.0, gt=0, description="Drift is computed over the values sketched in this trailing window.")
    interval_seconds: float = Field(15.0, gt=0, description="How often the router folds pending values into the sketches and recomputes drift "
                                                            "(off the request path).")
    max_unseen_categories: int = Field(0, ge=0, le=100, description="Unseen category names kept by name (as label values) per feature, "
                                                                    "each at most 64 characters of valid Unicode; every other value not "
                                                                    "among the baseline's categories is counted as __other__.")
    max_pending: int = Field(100_000, ge=1, description="Sampled requests waiting to be folded in; beyond that new ones are dropped (and "
                                                        "counted), so memory stays bounded.")
    prediction_output: str | None = Field(None, description="The model output holding the score (default: the only output).")

    def thresholds_for(self, feature: str, kind: str) -> dict[str, float]:
        """The statistics this feature is judged on, with their limits (kind: numeric or categorical)."""
        return judged_thresholds(kind, self.thresholds, self.features.get(feature))


class RouterConfig(BaseModel):
    """The router's view of one experiment: who is compared, how traffic is split, what the router does.

    Sections the router does not own are ignored here (its sub-sections stay strict); the full
    file is `experiments.config.ExperimentConfig`.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = Field(..., pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", description="DNS-label style name.")
    salt: str = Field(..., min_length=1, description="Assignment salt; a new salt starts a new experiment.")
    model_name: str = Field(..., min_length=1, description="The name clients use in /v1/models/<name>:predict.")
    unit_key: str = Field("user_id", description="What the unit id identifies (documentation; sent as X-Unit-Id).")
    arms: ArmsSpec
    fallback: FallbackSpec = FallbackSpec()
    shadow: ShadowSpec = ShadowSpec()
    qa: QaSpec = Field(default_factory=QaSpec, description="Unit ids pinned to an arm, counted apart from the experiment (router/qa.py).")
    router: RouterOptionsSpec = RouterOptionsSpec()
    skew: SkewSpec = SkewSpec()

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

    @field_validator("arms", mode="before")
    @classmethod
    def _arms_mapping(cls, arms: object) -> object:
        if not isinstance(arms, (dict, ArmsSpec)):
            raise ValueError(f"arms must be a mapping of {list(ARMS)}, got {type(arms).__name__}")
        return arms

    @property
    def weights(self) -> dict[str, float]:
        return {name: arm.weight for name, arm in self.arms.items()}

    def with_weights(self: C, weights: dict[str, float]) -> C:
        """A copy with new arm weights, validated like a file would be."""
        data = self.model_dump(mode="json")
        for name, w in weights.items():
            if name not in data["arms"]:
                raise ConfigError(f"unknown arm {name!r}; arms are {list(ARMS)}")
            data["arms"][name]["weight"] = w
        return parse_config(data, type(self))


C = TypeVar("C", bound=RouterConfig)


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"{where}: {e['msg']}")
    return "; ".join(lines)


def parse_config(data: object, cls: type[C] = RouterConfig) -> C:  # type: ignore[assignment]
    """Validate a parsed YAML/JSON document as `cls`; raise ConfigError naming each bad field."""
    if not isinstance(data, dict):
        raise ConfigError(f"experiment config must be a mapping, got {type(data).__name__}")
    body = data.get("experiment", data) if set(data) == {"experiment"} else data
    try:
        return cls.model_validate(body)
    except ValidationError as err:
        raise ConfigError(f"invalid experiment config: {_describe(err)}") from None


def parse_yaml(data: bytes | str, where: str) -> object:
    """A file's content as a YAML document; ConfigError naming `where` when it is not UTF-8 or not YAML.

    RecursionError and ValueError too: deeply nested flow collections and some malformed scalars
    raise those from the parser, and a file must be rejected, never take the watcher down.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as err:
        raise ConfigError(f"{where} is not UTF-8 text: {err}") from None
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError) as err:
        raise ConfigError(f"{where} is not valid YAML: {err}") from None


def load_config(path: str | Path, cls: type[C] = RouterConfig) -> C:  # type: ignore[assignment]
    """Read and validate an experiment YAML file as `cls`."""
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
        return parse_config(data, cls)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def dump_config(config: RouterConfig) -> str:
    """The config as YAML (what the ramp controller writes back)."""
    return yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), sort_keys=False)
