"""`modelramp analyze --serve`: the analysis over HTTP, one JSON document per experiment, as a delivery gate.

Shaped for the tools teams already run (example manifests in `k8s/progressive-delivery/`):

- Argo Rollouts' `web` metric provider reads `GET /v1/analysis/{experiment}` (always 200 with the
  document) and gates on it, e.g. `successCondition: result.go` and
  `failureCondition: result.rollback`; hold and blocked are neither, so the measurement is
  inconclusive;
- Flagger's webhooks only look at the status code (2xx or not); each gate answers 200 when the
  decision opens it, otherwise 412, with the document either way (Flagger logs the body):
  `/v1/gates/{experiment}/continue` (every decision but rollback: `confirm-rollout`, `pre-rollout`,
  `rollout`), `/v1/gates/{experiment}/ship` (ship only: `confirm-promotion`),
  `/v1/gates/{experiment}/rollback` (rollback only: Flagger's `rollback` hook, whose 2xx rolls the
  canary back) and `/v1/gates/{experiment}/promote` (ramp or ship).

While the model arm warms up the gates answer `wait`. A new model version's pods start after its
experiment does (a `helm upgrade` changes both; Argo Rollouts or Flagger then starts the pods), and
until one is ready the routers' model arm has no endpoint: every model-arm request is answered by the
fallback (legacy). Those fallbacks are the rollout's doing, not the model's, so they must not count
against it. The warm-up runs from the experiment's first look to the first look at which the model
arm has answered at least once itself (cumulative exposures above fallbacks), when that look still
carries fallbacks. Until that look exists the decision is `wait` (the analysis's own decision kept in
`analysis_decision`): `/continue` is open (a warming canary is no reason to stop, and Flagger's
`confirm-rollout` must let the canary start, or it would never warm up), `/ship`, `/promote` and
`/rollback` are closed, and Argo's jsonPath reads neither ship nor rollback (an inconclusive
measurement). From then on the analysis is of the history after the warm-up: every count rebased on
that look, which becomes the experiment's start (`warmup_end` in the document); no fallback, exposure
or outcome of the warm-up is counted, for either arm. An experiment whose model answered without a
fallback before its first answer (the usual case) is analysed whole, and so is one whose warm-up
lasts longer than `WARMUP_LIMIT_SECONDS` (15 minutes, the rollout tools' progress deadline): a model
arm that still only falls back then is broken, and its guardrails roll it back.

`GET /metrics` is the same decisions for Prometheus: the `modelramp_decision_*` gauges of every
served experiment (`experiments.live.decision_metrics`), computed at scrape time, so scraping
the service is how Prometheus gets them while it runs.

Every answer is computed by `analyze` at request time from the experiment's history. A live history
whose last look is older than `max_age_seconds` answers `hold`: a gate must not open on stale data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from experiments.config import ExperimentConfig
from experiments.live.analysis import Analysis, analyze
from experiments.live.decision_metrics import DecisionMetrics
from experiments.live.history import BUCKET_FIELDS, ArmCounts, Buckets, History, HistoryError, Look
from experiments.live.sources.base import utc_now

GO = ("ramp", "ship")
#: The decision the gates give while the model arm warms up (see the module docstring).
WAIT = "wait"


@dataclass(frozen=True)
class Feed:
    """Where one experiment's config and history come from, read afresh on every request."""

    config: Callable[[], ExperimentConfig]
    history: Callable[[], History]
    #: Live feeds are judged at the request time; a replayed file at its last look.
    live: bool = True
    #: A live history whose last look is older than this answers hold (None: no limit).
    max_age_seconds: float | None = None


def analysis_document(feed: Feed, now: datetime) -> dict[str, Any]:
    """The JSON document of one experiment: the analysis plus `go`, `rollback` and data age."""
    return _analysed(feed, now)[1]


def _zeroed(counts: ArmCounts) -> ArmCounts:
    buckets = counts.buckets
    zero_buckets = None if buckets is None else Buckets(*((0,) * buckets.count for _ in BUCKET_FIELDS))
    return ArmCounts(0, 0, None if counts.failures is None else 0, 0, 0, counts.p99_latency_seconds, zero_buckets)


def _minus(counts: ArmCounts, base: ArmCounts) -> ArmCounts:
    """Counts gained since `base` (same arm, earlier look); the p99 gauge is the later one's."""
    buckets = None
    if counts.buckets is not None and base.buckets is not None:
        buckets = Buckets(*(tuple(a - b for a, b in zip(getattr(counts.buckets, f), getattr(base.buckets, f), strict=True))
                            for f in BUCKET_FIELDS))
    failures = None if counts.failures is None else counts.failures - (base.failures or 0)
    return ArmCounts(counts.exposures - base.exposures, counts.successes - base.successes, failures,
                     counts.errors - base.errors, counts.fallbacks - base.fallbacks, counts.p99_latency_seconds, buckets)


#: The longest warm-up not counted against the model: the chart's Canary `progressDeadlineSeconds`
#: (Flagger's and Argo Rollouts' own default is 600), by which pods that are not ready are the rollout
#: tool's failure. A model arm whose every request still falls back after that is a broken arm (a model
#: that errs on every request looks the same in the counters), so the history is analysed whole and
#: its guardrails roll back.
WARMUP_LIMIT_SECONDS = 900.0


def warmup(history: History, limit_seconds: float = WARMUP_LIMIT_SECONDS) -> tuple[bool, int | None]:
    """(warming up now, index of the look that ends the warm-up or None).

    The warm-up ends at the first look at which the model arm has answered itself (exposures above
    fallbacks), if that look has fallbacks; it is still on while every model-arm exposure so far fell
    back. One that lasts longer than `limit_seconds` is none (the history is analysed whole), and so
    is a history whose counters went down (the analyzer blocks it).
    """
    try:
        history.check_counters()
    except HistoryError:
        return False, None
    if not history.looks:
        return False, None
    first = history.looks[0].time
    for i, look in enumerate(history.looks):
        model = look.arms["model"]
        if model.exposures > model.fallbacks:
            if not model.fallbacks or (look.time - first).total_seconds() > limit_seconds:
                return False, None
            return i == len(history.looks) - 1, i
    last = history.looks[-1]
    return last.arms["model"].exposures > 0 and (last.time - first).total_seconds() <= limit_seconds, None


def after_warmup(history: History, end: int) -> History:
    """The history from look `end` on, every count rebased on that look (which becomes a look of zeros)."""
    base = history.looks[end]
    looks = [Look(base.time, base.weights, {arm: _zeroed(c) for arm, c in base.arms.items()})]
    looks += [Look(look.time, look.weights, {arm: _minus(c, base.arms[arm]) for arm, c in look.arms.items()})
              for look in history.looks[end + 1:]]
    return History(history.experiment, tuple(looks))


def _analysed(feed: Feed, now: datetime) -> tuple[Analysis, dict[str, Any]]:
    config, history = feed.config(), feed.history()
    warming, end = warmup(history)
    counted = after_warmup(history, end) if end is not None and not warming else history
    analysis = analyze(counted, config, now if feed.live else None)
    result = analysis.to_dict()
    result["warmup_end"] = history.looks[end].time.isoformat() if end is not None else None
    if warming:
        model = history.looks[-1].arms["model"]
        result["analysis_decision"] = result["decision"]
        result["decision"] = WAIT
        result["reason"] = (f"wait: the model arm is warming up ({model.fallbacks} of its {model.exposures} requests "
                            f"fell back, {model.exposures - model.fallbacks} answered by the model): no TF Serving pod "
                            "of this version was ready yet; these fallbacks are not counted against the model "
                            f"(the analysis of the whole history said {result['analysis_decision']})")
    last = history.looks[-1].time if history.looks else None
    age = (now - last).total_seconds() if last and feed.live else None
    if age is not None and feed.max_age_seconds is not None and age > feed.max_age_seconds:
        result.setdefault("analysis_decision", result["decision"])
        result["decision"] = "hold"
        result["reason"] = (f"hold: the last look is {age:.0f} s old (limit {feed.max_age_seconds:g} s); is the "
                            f"recorder running? (the analysis of that look said {result['analysis_decision']})")
    result["go"] = result["decision"] in GO
    result["rollback"] = result["decision"] == "rollback"
    result["data_age_seconds"] = age
    return analysis, result


def create_app(feeds: Mapping[str, Feed], clock: Callable[[], datetime] = utc_now) -> FastAPI:
    """The FastAPI app serving `feeds` (experiment name -> Feed)."""
    app = FastAPI(title="modelramp analysis", description=__doc__)

    def document(experiment: str) -> dict[str, Any]:
        feed = feeds.get(experiment)
        if feed is None:
            raise HTTPException(404, f"no experiment {experiment!r}; served: {sorted(feeds)}")
        try:
            return analysis_document(feed, clock())
        except (OSError, ValueError, RuntimeError) as err:
            # Unreadable config or history: an error for Argo (counts toward its error limit),
            # a halt for Flagger; never a go.
            raise HTTPException(503, f"cannot analyse {experiment!r}: {err}") from None

    @app.get("/metrics", response_class=Response)
    def metrics() -> Response:
        """`modelramp_decision_*` gauges of every experiment that can be analysed now (Prometheus text format)."""
        gauges = DecisionMetrics()
        now = clock()
        for name in sorted(feeds):
            try:
                analysis, doc = _analysed(feeds[name], now)
            except (OSError, ValueError, RuntimeError):
                continue  # its timestamp gauge is absent: the alert on missing decisions fires
            gauges.update(analysis)
            if doc["decision"] != analysis.decision:  # stale data (hold) or warm-up (wait): no decision of its own
                gauges.held(analysis.experiment, now)
        return Response(gauges.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/analysis")
    def all_experiments() -> dict[str, Any]:
        """One document per experiment (an experiment that cannot be analysed carries its error)."""
        out = []
        for name in sorted(feeds):
            try:
                out.append(document(name))
            except HTTPException as err:
                out.append({"experiment": name, "error": err.detail})
        return {"experiments": out}

    @app.get("/v1/analysis/{experiment}")
    def one_experiment(experiment: str) -> dict[str, Any]:
        """The decision and its statistics (Argo Rollouts `web` provider: always 200)."""
        return document(experiment)

    async def gate(experiment: str, request: Request, opens: Callable[[dict[str, Any]], bool]) -> JSONResponse:
        if request.method == "POST":
            await request.body()  # Flagger's payload (name, namespace, phase, metadata): not needed
        doc = document(experiment)
        return JSONResponse(doc, status_code=200 if opens(doc) else 412)

    @app.api_route("/v1/gates/{experiment}/promote", methods=["GET", "POST"])
    async def promote(experiment: str, request: Request) -> JSONResponse:
        """200 when the decision is ramp or ship (`go`: a step forward, for a confirm-traffic-increase hook)."""
        return await gate(experiment, request, lambda d: d["go"])

    @app.api_route("/v1/gates/{experiment}/rollback", methods=["GET", "POST"])
    async def rollback(experiment: str, request: Request) -> JSONResponse:
        """200 when the decision is rollback (Flagger rollback hook: 2xx rolls the canary back)."""
        return await gate(experiment, request, lambda d: d["rollback"])

    @app.api_route("/v1/gates/{experiment}/ship", methods=["GET", "POST"])
    async def ship(experiment: str, request: Request) -> JSONResponse:
        """200 only when the decision is ship (Flagger confirm-promotion: promote only what modelramp shipped)."""
        return await gate(experiment, request, lambda d: d["decision"] == "ship")

    @app.api_route("/v1/gates/{experiment}/continue", methods=["GET", "POST"])
    async def proceed(experiment: str, request: Request) -> JSONResponse:
        """200 unless the decision is rollback (Flagger confirm-rollout, pre-rollout, rollout: keep going)."""
        return await gate(experiment, request, lambda d: not d["rollback"])

    return app
