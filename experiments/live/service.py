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

While the model arm warms up (`experiments.live.warmup`: a new version's TF Serving pods not ready
yet, every model-arm request answered by the fallback) the gates answer `wait`, the analysis's own
decision kept in `analysis_decision`: `/continue` is open (a warming canary is no reason to stop, and
Flagger's `confirm-rollout` must let the canary start, or it would never warm up), `/ship`,
`/promote` and `/rollback` are closed, and Argo's jsonPath reads neither ship nor rollback (an
inconclusive measurement). After it, the analysis is of the history from the warm-up's last look
on (`warmup_end` in the document), as the ramp controller's is.

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
from experiments.live.history import History
from experiments.live.sources.base import utc_now
from experiments.live.warmup import counted_history, warming_reason, warmup

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


def _analysed(feed: Feed, now: datetime) -> tuple[Analysis, dict[str, Any]]:
    config, history = feed.config(), feed.history()
    warming, end = warmup(history)
    counted = counted_history(history, warming, end)
    analysis = analyze(counted, config, now if feed.live else None)
    result = analysis.to_dict()
    result["warmup_end"] = history.looks[end].time.isoformat() if end is not None else None
    if warming:
        result["analysis_decision"] = result["decision"]
        result["decision"] = WAIT
        result["reason"] = f"wait: {warming_reason(history, result['analysis_decision'])}"
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
