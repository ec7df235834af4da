"""The ramp controller: look, record, analyze, and apply ramp / ship / rollback under a lease.

One `step()` is one look: hold the lease, read the source, extend the history kept in the audit
database, call `analyze`, and write the new weights when the decision asks for it. Every step ends
in exactly one audit row, applied or not. Anything doubtful (source unreachable, no counters yet, a
router restart, the lease lost to another controller, weights changed under us, the analyzer
failing, the model arm warming up) ends in `hold` with the reason, never in a ramp.

The warm-up (`experiments.live.warmup`) is the analysis service's: while a new version's TF Serving
pods start, every model-arm request falls back, and those fallbacks are the rollout's, not the
model's; the controller holds until the model has answered, then analyses the history from there
(or, past `WARMUP_LIMIT_SECONDS`, all of it, so a model arm that never answers is rolled back).
That hold is exported with reason code `warming_up`, every other hold of its own as `controller_hold`.

After every step the decision is exported as `modelramp_decision_*` gauges when the controller is
given a `DecisionMetrics` and a `publish` callback (`experiments.live.decision_metrics`: a push to a
Pushgateway, since a CronJob's process is gone before Prometheus would scrape it, or a textfile).

The controller keeps no state of its own between steps: history, raw counters and the lease all
live in the database, so a restarted controller, or the one that takes the lease over, continues
where the last one stopped.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from experiments.config import ExperimentConfig
from experiments.live.analysis import Analysis, analyze
from experiments.live.decision_metrics import DecisionMetrics
from experiments.live.history import History, dump_history, parse_history
from experiments.live.sources import Recorder, RecorderError, Source, SourceError
from experiments.live.sources.base import utc_now
from experiments.live.warmup import counted_history, warming_reason, warmup
from experiments.live.weights import (
    NopWeightStore,
    WeightStore,
    WeightStoreError,
    same_weights,
)
from experiments.store import DecisionRecord, Store

log = logging.getLogger(__name__)

ACTIONS = ("ramp", "ship", "rollback")


def default_holder() -> str:
    """Who this controller is, for the lease and the audit log: user@host:pid."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}:{os.getpid()}"


def candidate(config: ExperimentConfig) -> dict[str, Any]:
    """The model arm's candidate: model name and pinned version or label (both None: the server's latest).

    Recorded with every decision (in `statistics`, so existing audit databases keep their schema),
    so `modelramp versions` can tell which version a live result belongs to.
    """
    backend = config.arms["model"].backend
    return {"model_name": getattr(backend, "model_name", None), "version": getattr(backend, "version", None),
            "version_label": getattr(backend, "version_label", None), "backend": backend.kind}


class Controller:
    """Ramps one experiment. `weights` says where its config lives; a NopWeightStore makes it a dry run."""

    def __init__(self, source: Source, weights: WeightStore, store: Store, *, holder: str | None = None,
                 lease_ttl_seconds: float = 120.0, clock: Callable[[], datetime] = utc_now,
                 metrics: DecisionMetrics | None = None, publish: Callable[[DecisionMetrics], None] | None = None):
        self.source, self.weights, self.store = source, weights, store
        self.metrics = metrics if metrics is not None or publish is None else DecisionMetrics()
        self.publish = publish
        self.holder = holder or default_holder()
        self.lease_ttl_seconds = lease_ttl_seconds
        self.clock = clock
        self.dry_run = isinstance(weights, NopWeightStore)
        self._analysis: Analysis | None = None
        self.experiment = weights.load().name  # fails loudly at start if the config cannot be read

    @property
    def lease_name(self) -> str:
        return f"ramp/{self.experiment}"

    def step(self) -> DecisionRecord:
        """Take one look and decide; returns the audit row written for it (and exports the decision, if asked)."""
        self._analysis = None
        record = self._step()
        if self.metrics is not None:
            analysis = self._analysis
            if analysis is not None:
                self.metrics.update(analysis)
            if analysis is None or record.decision != analysis.decision:
                self.metrics.held(self.experiment, record.time)
            if self.publish is not None:
                try:
                    self.publish(self.metrics)
                except Exception as err:  # noqa: BLE001 - exporting must never stop the ramp
                    log.warning("%s: could not publish the decision metrics: %s", self.experiment, err)
        return record

    def _step(self) -> DecisionRecord:
        now = self.clock()
        try:
            config = self.weights.load()
        except WeightStoreError as err:
            return self._hold(now, None, f"cannot read the experiment config: {err}")
        if not self.store.acquire_lease(self.lease_name, self.holder, self.lease_ttl_seconds, now):
            return self._hold(now, config, f"another controller holds the lease: {self._lease_text(now)}; "
                                           "this one only watches")
        try:
            reading = self.source.read(self.experiment, now)
        except SourceError as err:
            return self._hold(now, config, f"cannot read counters: {err}")
        if reading.empty:
            return self._hold(now, config, f"no counters for experiment {self.experiment!r} in "
                                           f"{self.source.description} yet (no traffic, or routers not scraped)")
        try:
            recorder = self._recorder()
            step = recorder.add(reading, config.weights, config.router.analysis_buckets)
        except (RecorderError, ValueError) as err:
            return self._hold(now, config, f"cannot extend the history: {err}")
        look_doc = dump_history(History(self.experiment, (step.look,)))["looks"][0]
        self.store.append_look(self.experiment, now, look_doc, recorder.state())
        counts = look_doc["arms"]
        warming, end = warmup(recorder.history)
        try:
            analysis = analyze(counted_history(recorder.history, warming, end), config, now)
        except Exception as err:
            log.exception("analysis failed")
            return self._hold(now, config, f"the analysis failed ({err.__class__.__name__}: {err})", counts)
        warmup_end = recorder.history.looks[end].time.isoformat() if end is not None else None
        if warming:
            # A hold of the analysis' own (code warming_up), not a controller_hold: the controller is
            # working, and ModelrampControllerFailing must not fire for a rollout that is starting.
            reason = f"hold: {warming_reason(recorder.history, analysis.decision)}"
            self._analysis = replace(analysis, decision="hold", reason=reason, code="warming_up", next_weights=None)
            log.warning("%s: %s", self.experiment, reason)
            stats = {**self._analysis.to_dict(), "analysis_decision": analysis.decision, "warmup_end": warmup_end}
            return self._record(now, config, "hold", reason, counts, stats)
        self._analysis = analysis
        stats = {**analysis.to_dict(), "warmup_end": warmup_end}
        if step.resets:
            return self._hold(now, config, f"counters reset on {', '.join(step.resets)} (router restart); the counts "
                                           f"are folded in, holding this look (analysis said {analysis.decision})",
                              counts, stats)
        if analysis.decision not in ACTIONS:
            return self._record(now, config, analysis.decision, analysis.reason, counts, stats)
        return self._act(now, config, analysis, counts, stats)

    def _act(self, now: datetime, config: ExperimentConfig, analysis: Analysis, counts: Any, stats: Any) -> DecisionRecord:
        target = analysis.next_weights or {}
        if same_weights(target, config.weights):
            return self._record(now, config, analysis.decision, f"{analysis.reason} (weights already in force)",
                                counts, stats)
        if self.dry_run:
            self.weights.apply(target, expected=config.weights)  # validates; writes nothing
            return self._record(now, config, analysis.decision, f"{analysis.reason} (dry run: would write {target})",
                                counts, stats, weights_after=target)
        # Renew right before writing: a controller that was paused past its lease must not write.
        if not self.store.acquire_lease(self.lease_name, self.holder, self.lease_ttl_seconds, self.clock()):
            return self._hold(now, config, f"lost the lease before applying {analysis.decision} "
                                           f"({self._lease_text(now)}); nothing written", counts, stats)
        try:
            written = self.weights.apply(target, expected=config.weights)
        except WeightStoreError as err:
            return self._hold(now, config, f"could not apply {analysis.decision} to {self.weights.description}: {err}",
                              counts, stats)
        log.info("%s: applied %s, weights %s -> %s", self.experiment, analysis.decision, config.weights, written.weights)
        return self._record(now, config, analysis.decision, analysis.reason, counts, stats,
                            applied=True, weights_after=written.weights)

    def _recorder(self) -> Recorder:
        stored = self.store.looks(self.experiment)
        history = parse_history({"experiment": self.experiment, "looks": [s.look for s in stored]}, allow_resets=True)
        return Recorder(self.experiment, history, stored[-1].source_state if stored else None)

    def _lease_text(self, now: datetime) -> str:
        held = self.store.lease_holder(self.lease_name, now)
        return f"{held[0]} until {held[1].isoformat()}" if held else "nobody now"

    def _hold(self, now: datetime, config: ExperimentConfig | None, reason: str, counts: Any = None,
              stats: Any = None) -> DecisionRecord:
        log.warning("%s: hold: %s", self.experiment, reason)
        return self._record(now, config, "hold", f"hold: {reason}", counts, stats)

    def _record(self, now: datetime, config: ExperimentConfig | None, decision: str, reason: str, counts: Any,
                stats: Any, *, applied: bool = False, weights_after: Mapping[str, float] | None = None) -> DecisionRecord:
        before = config.weights if config else None
        if config is not None:
            stats = {**(stats or {}), "candidate": candidate(config)}
        return self.store.record_decision(DecisionRecord(
            experiment=self.experiment, time=now, decision=decision, reason=reason, applied=applied,
            applied_by=f"dry-run:{self.holder}" if self.dry_run else self.holder,
            stage_percent=100 * before["model"] if before else None, weights_before=before,
            weights_after=weights_after, counts=counts, statistics=stats,
        ))

    def release(self) -> None:
        """Give the lease back (at exit) so another controller need not wait for it to expire."""
        self.store.release_lease(self.lease_name, self.holder)

    def run(self, interval_seconds: float, stop: threading.Event | None = None, max_steps: int | None = None,
            on_step: Callable[[DecisionRecord], None] | None = None) -> None:
        """Step every `interval_seconds` until `stop` is set or `max_steps` were taken; releases the lease."""
        stop = stop or threading.Event()
        steps = 0
        try:
            while not stop.is_set():
                try:
                    record = self.step()
                except Exception:
                    log.exception("%s: step failed; nothing applied", self.experiment)
                else:
                    if on_step:
                        on_step(record)
                steps += 1
                if max_steps is not None and steps >= max_steps:
                    break
                stop.wait(interval_seconds)
        finally:
            try:
                self.release()
            except Exception:  # noqa: BLE001 - the lease expires on its own anyway
                log.warning("could not release the lease %s", self.lease_name)
