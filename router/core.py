"""The router's decision logic, free of HTTP and gRPC: assign, validate, answer, fall back, count.

Each request is counted per arm (`modelramp_requests_total`) and per (arm, analysis bucket)
(`modelramp_bucket_exposures_total`, router/buckets.py); its signed request id carries the bucket,
so its outcome is counted in the same bucket.

Fronts (`router.rest.predict`, `router.grpc`) parse their protocol into a `decode` callable
(signature -> `PredictRequest`), call `Router.predict`, and format the `Served` result or the
`serving.tfserving.errors` error it raises. The core validates the decoded request into the
`PredictCall` the backends receive.
Requests read one immutable `ExperimentState` snapshot, so a configuration change in the middle
of a request never mixes two configurations.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from router.assignment import Assigner
from router.backends import (
    Backend,
    ModelMetadata,
    PredictCall,
    Prediction,
    PredictRequest,
    check_finite,
    failure_reason,
    make_backend,
)
from router.breaker import CircuitBreaker
from router.buckets import analysis_bucket
from router.config import RouterConfig
from router.ledger import OutcomeLedger
from router.metrics import RouterMetrics, status_code
from router.outcomes import OutcomeIntake
from router.qa import pinned_units, qa_label
from router.shadow import Shadow
from router.signature import Signature, validate_request
from router.signing import Signer
from router.skew.features import FeatureSink
from serving.tfserving import errors

log = logging.getLogger("router")

MODEL: Final = "model"  # Final: a Literal type, so `config.arms[MODEL]` is the model arm's spec
LEGACY: Final = "legacy"
METADATA_REFRESH_S = 30.0


@dataclass
class Served:
    """A successful answer: the assigned arm, its signed request id, outputs, and who answered."""

    arm: str
    request_id: str
    prediction: Prediction
    served_by: str
    model_name: str
    signature_name: str


@dataclass
class ExperimentState:
    """One applied configuration with its backends and breaker (replaced whole on every change)."""

    config: RouterConfig
    backends: dict[str, Backend]
    breaker: CircuitBreaker
    assign: Assigner  # the arm of a unit id (None: a fresh draw) under this configuration
    qa: Mapping[str, str] | None = None  # QA units pinned to an arm, counted apart (router/qa.py); None: none
    counts: dict[str, dict[str, int]] = field(default_factory=lambda: {a: {"requests": 0, "fallbacks": 0} for a in (LEGACY, MODEL)})

    @property
    def weights(self) -> dict[str, float]:
        return self.config.weights


class Router:
    """One experiment's router: shared by both fronts of a process."""

    def __init__(self, config: RouterConfig, *, signer: Signer | None = None, metrics: RouterMetrics | None = None,
                 sinks: Iterable[FeatureSink] = (), backend_factory: Callable[[object], Backend] = make_backend,
                 rng: random.Random | None = None, ledger: OutcomeLedger | None = None):
        self.metrics = metrics or RouterMetrics()
        self.signer = signer or Signer(ttl_seconds=config.router.outcome_ttl_seconds)
        self.signer.ttl_seconds = config.router.outcome_ttl_seconds
        self.outcomes = OutcomeIntake(self.signer, self.metrics, ledger)
        self.sinks = list(sinks)
        self._factory = backend_factory
        self._rng = rng or random.Random()
        self.metadata: ModelMetadata | None = None
        self.state = self._build(config, previous=None)
        self.shadow = Shadow(self.metrics, config.router.shadow_max_in_flight)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._publish(self.state, None)

    # ---- configuration -------------------------------------------------------------------
    def _build(self, config: RouterConfig, previous: ExperimentState | None) -> ExperimentState:
        backends = {}
        for arm in (LEGACY, MODEL):
            old = previous.config.arms[arm].backend if previous else None
            new = config.arms[arm].backend
            # Keep warm connections when an arm's backend did not change (the common case: weights).
            backends[arm] = previous.backends[arm] if previous and old == new else self._factory(new)
        return ExperimentState(config, backends, CircuitBreaker(config.fallback.circuit_breaker, MODEL),
                               Assigner(config.salt, config.weights), qa=pinned_units(config.qa))

    def _publish(self, state: ExperimentState, old: ExperimentState | None) -> None:
        if old is not None and old.config.name != state.config.name:
            self.metrics.forget_experiment(old.config.name, (LEGACY, MODEL))
        self.metrics.set_weights(state.config.name, state.weights)
        for arm in (LEGACY, MODEL):
            self.metrics.circuit_open.labels(state.config.name, arm).set(0)

    def apply(self, config: RouterConfig, source: str) -> bool:
        """Put a validated configuration in force; logs old -> new. Returns False if nothing changed."""
        old = self.state
        if config == old.config:
            return False
        new = self._build(config, old)
        if old.config.model_name != config.model_name or old.config.arms[MODEL].backend != config.arms[MODEL].backend:
            self.metadata = None  # another model: its signature must be fetched again
        if old.breaker.open:
            log.warning("circuit breaker for the model arm closed by a new configuration (%s)", source)
        self.state = new
        self.signer.ttl_seconds = config.router.outcome_ttl_seconds
        self.shadow.max_in_flight = config.router.shadow_max_in_flight
        self._publish(new, old)
        self.metrics.config_reloads.labels(source, "applied").inc()
        log.info("configuration changed (%s): %s", source, describe_change(old.config, config))
        for arm, backend in old.backends.items():
            if new.backends[arm] is not backend:
                self._spawn(self._close_later(backend, old.config))
        if self.metadata is None:
            self._spawn(self.refresh_metadata())
        return True

    def reject(self, source: str, reason: str) -> None:
        """Record a configuration that failed validation; the one in force stays."""
        self.metrics.config_reloads.labels(source, "rejected").inc()
        log.error("configuration change rejected (%s), keeping the one in force: %s", source, reason)

    async def _close_later(self, backend: Backend, config: RouterConfig) -> None:
        # Requests that started on the old state may still use it: wait out their deadline.
        await asyncio.sleep(config.router.request_timeout_ms / 1000.0 + 1.0)
        await backend.close()

    # ---- the model's signature -----------------------------------------------------------
    @property
    def signature(self) -> Signature | None:
        return self.metadata.signature if self.metadata else None

    async def refresh_metadata(self, timeout: float = 2.0) -> bool:
        """Fetch the model arm's signature (GetModelMetadata); keeps the last one on failure."""
        state = self.state
        try:
            metadata = await state.backends[MODEL].metadata(timeout)
        except errors.UserFacingError as err:
            log.debug("model metadata not available yet: %s", err)
            return False
        if metadata is not None and self.state is state:
            if self.metadata is None or self.metadata.signature != metadata.signature:
                log.info("model signature %r (version %s): inputs %s", metadata.signature.name,
                         metadata.signature.model_version, sorted(metadata.signature.inputs))
            self.metadata = metadata
        return metadata is not None

    async def keep_metadata_fresh(self) -> None:
        """Background loop: fetch the signature until it is known, then refresh it now and then."""
        while True:
            ok = await self.refresh_metadata()
            await asyncio.sleep(METADATA_REFRESH_S if ok else 0.5)

    # ---- requests ------------------------------------------------------------------------
    def assign(self, unit_id: str | None) -> str:
        return self.state.assign(unit_id, self._rng)

    async def predict(self, model_name: str, unit_id: str | None, decode: Callable[[Signature | None], PredictRequest],
                      protocol: str, timeout: float | None = None) -> Served:
        """Answer one predict request; raises a `serving.tfserving.errors` error for the front to map."""
        start = time.perf_counter()
        state = self.state
        cfg = state.config
        pinned = state.qa.get(unit_id) if state.qa is not None and unit_id is not None else None
        experiment = cfg.name if pinned is None else qa_label(cfg.name)  # a QA unit is counted apart
        arm = pinned or state.assign(unit_id, self._rng)
        bucket = analysis_bucket(unit_id, cfg.router.analysis_buckets, self._rng)
        error: BaseException | None = None
        try:
            if model_name != cfg.model_name:
                raise errors.NotFound(f"unknown model {model_name!r}; this router serves {cfg.model_name!r}")
            signature = self.signature
            call = validate_request(decode(signature), signature, cfg.router.max_batch_size)
            budget = timeout if timeout is not None else cfg.router.request_timeout_ms / 1000.0
            prediction, served_by = await self._answer(state, arm, call, start + budget, experiment)
            served = Served(arm, self.signer.issue(experiment, arm, bucket=bucket), prediction, served_by, model_name,
                            call.signature_name or cfg.arms[MODEL].backend.signature_name)
            if pinned is None:
                self._after(state, arm, call, served)
            return served
        except errors.UserFacingError as err:
            error = err
            raise
        except Exception as err:
            error = err
            log.exception("unexpected error answering a predict request")
            raise errors.UserFacingError("internal error in the router") from None
        finally:
            self.metrics.requests.record(experiment, arm, protocol, status_code(protocol, error), time.perf_counter() - start)
            self.metrics.count_exposure(experiment, arm, bucket)  # every request, as modelramp_requests_total
            if pinned is None:
                state.counts[arm]["requests"] += 1

    async def _answer(self, state: ExperimentState, arm: str, call: PredictCall, deadline: float,
                      experiment: str) -> tuple[Prediction, str]:
        cfg = state.config
        if arm == MODEL:
            if state.breaker.allow():
                # Half of what remains at most, so the legacy fallback still fits in the deadline.
                budget = (deadline - time.perf_counter()) / 2
                try:
                    prediction = await state.backends[MODEL].predict(call, budget)
                    check_finite(prediction)  # a NaN score is a failed answer: fall back, count, trip the breaker
                    state.breaker.record(True)
                    if prediction.model_version is None and self.signature is not None:
                        prediction.model_version = self.signature.model_version
                    return prediction, MODEL
                except errors.UserFacingError as err:
                    self._backend_failed(state, MODEL, err, experiment)
                    if cfg.fallback.policy != "legacy":
                        raise
            self.metrics.fallbacks.labels(experiment, MODEL).inc()
            if experiment == cfg.name:
                state.counts[MODEL]["fallbacks"] += 1
        try:
            prediction = await state.backends[LEGACY].predict(call, max(deadline - time.perf_counter(), 0.001))
        except errors.InvalidArgument:
            raise  # the client's input, not the legacy system's failure
        except errors.UserFacingError as err:
            self._backend_failed(state, LEGACY, err, experiment)
            raise
        # Same shape as the model's answer: legacy responses claim the model version they stand in for.
        prediction.model_version = self.signature.model_version if self.signature else None
        return prediction, LEGACY

    def _backend_failed(self, state: ExperimentState, arm: str, err: errors.UserFacingError, experiment: str) -> None:
        cfg = state.config
        self.metrics.backend_errors.labels(experiment, arm, failure_reason(err)).inc()
        log.warning("%s arm backend failed (%s): %s", arm, failure_reason(err), err)
        if arm == MODEL and state.breaker.record(False):
            self.metrics.circuit_open.labels(cfg.name, MODEL).set(1)

    def _after(self, state: ExperimentState, arm: str, call: PredictCall, served: Served) -> None:
        """Work that must not delay the response: feature sampling and shadow calls."""
        cfg = state.config
        if self.sinks and cfg.router.feature_sample_share > 0 and self._rng.random() < cfg.router.feature_sample_share:
            for sink in self.sinks:
                try:
                    # Optional sink methods (router.skew.features): REST rows as they came (no numpy), model outputs.
                    observe_rows = getattr(sink, "observe_rows", None)
                    if observe_rows is not None and call.rows is not None:
                        observe_rows(cfg.name, arm, call.rows)
                    else:
                        sink.observe(cfg.name, arm, call.inputs)
                    observe_outputs = getattr(sink, "observe_outputs", None)
                    if observe_outputs is not None and served.served_by == MODEL:
                        observe_outputs(cfg.name, served.prediction.outputs)
                except Exception:
                    log.exception("feature sink %r failed", sink)
        if (arm == LEGACY and cfg.shadow.enabled and cfg.shadow.share > 0
                and self._rng.random() < cfg.shadow.share):
            task = self.shadow.start(cfg.name, state.backends[MODEL], call, served.prediction,
                                     cfg.arms[MODEL].backend.timeout_ms / 1000.0)
            if task is not None:
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no loop (configuration applied from a plain test): run nothing
            coro.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- inspection ----------------------------------------------------------------------
    async def readiness(self, timeout: float = 1.0) -> dict[str, Any]:
        """Ready when the legacy system answers and the model's signature is known (`GET /readyz`, `router.rest.app`)."""
        state = self.state
        legacy_ok, model_ok = await asyncio.gather(state.backends[LEGACY].ready(timeout), state.backends[MODEL].ready(timeout))
        if model_ok and self.metadata is None:
            await self.refresh_metadata(timeout)
        return {"ready": bool(legacy_ok and self.metadata is not None),
                "backends": {LEGACY: legacy_ok, MODEL: model_ok}, "signature_known": self.metadata is not None}

    def describe(self) -> dict[str, Any]:
        """The experiment as `GET /v1/experiments/{name}` shows it: config, weights, live counts."""
        state = self.state
        return {"name": state.config.name, "model_name": state.config.model_name, "weights": state.weights,
                "circuit_breaker": state.breaker.stats(), "counts": state.counts,
                "signature": None if self.signature is None else {"name": self.signature.name, "model_version": self.signature.model_version,
                                                                  "inputs": sorted(self.signature.inputs)},
                "config": state.config.model_dump(mode="json")}

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for backend in self.state.backends.values():
            await backend.close()


def describe_change(old: RouterConfig, new: RouterConfig) -> str:
    """A one-line account of what changed, weights first: 'weights legacy 0.99->0.95, model 0.01->0.05'."""
    parts = []
    if old.weights != new.weights:
        parts.append("weights " + ", ".join(f"{a} {old.weights[a]:g}->{new.weights[a]:g}" for a in (LEGACY, MODEL)))
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    for key in a:
        if key != "arms" and a[key] != b[key]:
            parts.append(f"{key} {a[key]}->{b[key]}")
    for arm in (LEGACY, MODEL):
        if a["arms"][arm]["backend"] != b["arms"][arm]["backend"]:
            parts.append(f"arms.{arm}.backend {a['arms'][arm]['backend']}->{b['arms'][arm]['backend']}")
    return "; ".join(parts) or "no effective change"
