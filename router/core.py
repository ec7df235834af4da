"""The router's decision logic, free of HTTP and gRPC: assign, validate, answer, fall back, count.

Each request is counted per arm (`modelramp_requests_total`) and per (arm, analysis bucket)
(`modelramp_bucket_exposures_total`, router/buckets.py); its signed request id carries the bucket,
so its outcome is counted in the same bucket.

Each backend is called through its arm's circuit breaker (router/breaker.py). A model-arm request
the model cannot answer is answered by the legacy system (`fallback.policy: legacy`); a legacy-arm
request the legacy system cannot answer gets its error, at once while the legacy breaker is open,
or with `fallback.to_model` the model's answer within that section's cap. Either way it stays its
assigned arm's request, exposure and outcome, counted in `modelramp_fallbacks_total{arm=...}`: by
intention to treat, since dropping or moving the requests a backend failed would make the arms
differ by when backends fail, not by what answers.

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
from router.breaker import CircuitBreaker, CircuitOpen
from router.buckets import analysis_bucket
from router.config import RouterConfig
from router.ledger import OutcomeLedger
from router.metrics import PROTOCOLS, RouterMetrics, status_code
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
_OK = {protocol: status_code(protocol, None) for protocol in PROTOCOLS}  # the `code` label of a success, per front


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
    """One applied configuration with its backends and breakers (replaced whole on every change)."""

    config: RouterConfig
    backends: dict[str, Backend]
    breaker: CircuitBreaker  # the model arm's
    legacy_breaker: CircuitBreaker
    assign: Assigner  # the arm of a unit id (None: a fresh draw) under this configuration
    qa: Mapping[str, str] | None = None  # QA units pinned to an arm, counted apart (router/qa.py); None: none
    counts: dict[str, dict[str, int]] = field(default_factory=lambda: {a: {"requests": 0, "fallbacks": 0} for a in (LEGACY, MODEL)})

    @property
    def weights(self) -> dict[str, float]:
        return self.config.weights

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        return {LEGACY: self.legacy_breaker, MODEL: self.breaker}


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
        self._rerouted = 0  # legacy-arm requests being answered by the model now (fallback.to_model.max_in_flight)
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
                               CircuitBreaker(config.fallback.legacy_circuit_breaker, LEGACY),
                               Assigner(config.salt, config.weights), qa=pinned_units(config.qa))

    def _publish(self, state: ExperimentState, old: ExperimentState | None) -> None:
        if old is not None and old.config.name != state.config.name:
            self.metrics.forget_experiment(old.config.name, (LEGACY, MODEL))
        self.metrics.set_weights(state.config.name, state.weights)
        for arm, breaker in state.breakers.items():
            # Read at each scrape: an open breaker turns half-open by the clock, not by a request.
            self.metrics.circuit_open.labels(state.config.name, arm).set_function(breaker.gauge)

    def apply(self, config: RouterConfig, source: str) -> bool:
        """Put a validated configuration in force; logs old -> new. Returns False if nothing changed."""
        old = self.state
        if config == old.config:
            return False
        new = self._build(config, old)
        if old.config.model_name != config.model_name or old.config.arms[MODEL].backend != config.arms[MODEL].backend:
            self.metadata = None  # another model: its signature must be fetched again
        for arm, breaker in old.breakers.items():
            if breaker.open:
                log.warning("circuit breaker for the %s arm closed by a new configuration (%s)", arm, source)
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
            metadata = self.metadata
            signature = metadata.signature if metadata is not None else None
            call = validate_request(decode(signature), signature, cfg.router.max_batch_size)
            budget = timeout if timeout is not None else cfg.router.request_timeout_ms / 1000.0
            if arm == LEGACY and not cfg.fallback.to_model.enabled:  # most requests: no fallback to weigh, one coroutine less
                prediction, served_by = await self._legacy(state, call, max(start + budget - time.perf_counter(), 0.001),
                                                           experiment), LEGACY
            else:
                prediction, served_by = await self._answer(state, arm, call, start + budget, experiment)
            served = Served(arm, self.signer.issue(experiment, arm, bucket=bucket), prediction, served_by, model_name,
                            call.signature_name or cfg.arms[MODEL].backend.signature_name)
            if pinned is None and (self.sinks or cfg.shadow.enabled):  # the common case calls nothing more
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
            metrics = self.metrics
            metrics.requests.record(experiment, arm, protocol, status_code(protocol, error) if error is not None else _OK[protocol],
                                    time.perf_counter() - start)
            metrics.buckets.expose(experiment, arm, bucket)  # every request (count_exposure), as modelramp_requests_total
            if pinned is None:
                state.counts[arm]["requests"] += 1

    async def _answer(self, state: ExperimentState, arm: str, call: PredictCall, deadline: float,
                      experiment: str) -> tuple[Prediction, str]:
        cfg = state.config
        if arm == MODEL:
            try:
                # Half of what remains at most, so the legacy fallback still fits in the deadline.
                return await self._model(state, call, (deadline - time.perf_counter()) / 2, experiment), MODEL
            except CircuitOpen:
                pass  # an open breaker sends the arm to the fallback whatever the policy: the model is known to fail
            except errors.UserFacingError:
                if cfg.fallback.policy != "legacy":
                    raise
            self.metrics.fallbacks.labels(experiment, MODEL).inc()
            if experiment == cfg.name:
                state.counts[MODEL]["fallbacks"] += 1
            return await self._legacy(state, call, max(deadline - time.perf_counter(), 0.001), experiment), LEGACY
        reverse = cfg.fallback.to_model
        try:
            # With the reverse fallback on, legacy gets half of what remains, as the model does forwards.
            budget = (deadline - time.perf_counter()) / (2 if reverse.enabled else 1)
            return await self._legacy(state, call, max(budget, 0.001), experiment), LEGACY
        except errors.InvalidArgument:
            raise  # the client's input: the model would refuse it too
        except errors.UserFacingError as err:
            if not reverse.enabled or self._rerouted >= reverse.max_in_flight or (reverse.share < 1 and self._rng.random() >= reverse.share):
                raise
            ticket = state.breaker.admit()
            if ticket is None:
                raise  # the model is failing too
            failure = err
        # Counted as the legacy arm's fallback, as a model-arm request answered by legacy is the
        # model arm's: the request stays the legacy arm's exposure and outcome (intention to treat).
        self.metrics.fallbacks.labels(experiment, LEGACY).inc()
        if experiment == cfg.name:
            state.counts[LEGACY]["fallbacks"] += 1
        self._rerouted += 1
        try:
            return await self._model(state, call, max(deadline - time.perf_counter(), 0.001), experiment, ticket), MODEL
        except errors.UserFacingError:
            raise failure from None  # the assigned arm's error; the model's is counted as its backend error
        finally:
            self._rerouted -= 1

    async def _model(self, state: ExperimentState, call: PredictCall, timeout: float, experiment: str,
                     ticket: int | None = None) -> Prediction:
        """The model backend's answer through its breaker; CircuitOpen when the breaker holds the call off."""
        breaker = state.breaker
        if ticket is None:
            ticket = breaker.admit()
            if ticket is None:
                raise CircuitOpen(f"the model arm's circuit breaker is open: {breaker.opened_reason}", breaker.seconds_to_probe())
        try:
            prediction = await state.backends[MODEL].predict(call, timeout)
            check_finite(prediction)  # a NaN score is a failed answer: fall back, count, trip the breaker
        except errors.UserFacingError as err:
            self._backend_failed(state, MODEL, err, experiment, ticket)
            raise
        except BaseException:
            breaker.abandon(ticket)  # cancelled, or the router's own bug: no verdict on the backend
            raise
        breaker.record(True, ticket)
        if prediction.model_version is None and self.signature is not None:
            prediction.model_version = self.signature.model_version
        return prediction

    async def _legacy(self, state: ExperimentState, call: PredictCall, timeout: float, experiment: str) -> Prediction:
        """The legacy backend's answer through its breaker: CircuitOpen at once, not a wait, while it is open."""
        breaker = state.legacy_breaker
        ticket = breaker.admit()
        if ticket is None:
            raise CircuitOpen(f"the legacy system is failing and held off by its circuit breaker: {breaker.opened_reason}",
                              breaker.seconds_to_probe())
        try:
            prediction = await state.backends[LEGACY].predict(call, timeout)
        except errors.InvalidArgument:
            breaker.abandon(ticket)  # the client's input, not the legacy system's failure
            raise
        except errors.UserFacingError as err:
            self._backend_failed(state, LEGACY, err, experiment, ticket)
            raise
        except BaseException:
            breaker.abandon(ticket)
            raise
        breaker.record(True, ticket)
        # Same shape as the model's answer: legacy responses claim the model version they stand in for.
        metadata = self.metadata
        prediction.model_version = metadata.signature.model_version if metadata is not None else None
        return prediction

    def _backend_failed(self, state: ExperimentState, arm: str, err: errors.UserFacingError, experiment: str,
                        ticket: int | None = None) -> None:
        self.metrics.backend_errors.labels(experiment, arm, failure_reason(err)).inc()
        log.warning("%s arm backend failed (%s): %s", arm, failure_reason(err), err)
        state.breakers[arm].record(False, ticket)

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
        # Not while the model's breaker is open: shadow calls would load the backend it holds off.
        if (arm == LEGACY and served.served_by == LEGACY and cfg.shadow.enabled and cfg.shadow.share > 0
                and not state.breaker.open and self._rng.random() < cfg.shadow.share):
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
        """Ready while this replica can answer: the model's signature is known and either arm's backend answers.

        `GET /readyz` (`router.rest.app`) and gRPC health (`router.grpc_services`). Readiness is about
        this replica, not about a backend every replica shares: with the legacy system down and the
        model healthy, the model arm's requests (and, with `fallback.to_model`, some of the legacy
        arm's) are still answered and the others get a fast 503, whereas a 503 here takes every
        replica out of the Service at once and turns all of it into connection errors. A failing
        backend shows in `modelramp_circuit_open`, `modelramp_backend_errors_total` and the alerts.
        The signature is needed to validate any request, so without it nothing can be answered.
        """
        state = self.state
        legacy_ok, model_ok = await asyncio.gather(state.backends[LEGACY].ready(timeout), state.backends[MODEL].ready(timeout))
        if model_ok and self.metadata is None:
            await self.refresh_metadata(timeout)
        return {"ready": bool((legacy_ok or model_ok) and self.metadata is not None),
                "backends": {LEGACY: legacy_ok, MODEL: model_ok}, "signature_known": self.metadata is not None,
                "circuit_breakers": {arm: breaker.state for arm, breaker in state.breakers.items()}}

    def describe(self) -> dict[str, Any]:
        """The experiment as `GET /v1/experiments/{name}` shows it: config, weights, live counts."""
        state = self.state
        return {"name": state.config.name, "model_name": state.config.model_name, "weights": state.weights,
                "circuit_breaker": state.breaker.stats(), "legacy_circuit_breaker": state.legacy_breaker.stats(), "counts": state.counts,
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
