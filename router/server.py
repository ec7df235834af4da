"""One router process: HTTP and gRPC fronts on one event loop, the config watcher, and clean shutdown.

One process is one replica (see `router.metrics` for why not several workers per process).
SIGTERM or Ctrl-C stops accepting, lets requests in flight finish, then closes backends and,
last, the outcome ledger (its queued writes finish first, so an outcome answered 200 is stored).
The ledger is opened at start but not waited for: while its database is unreachable the router
serves predictions and answers outcome reports 503, and readiness does not depend on it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

from router.core import Router
from router.grpc import create_server
from router.grpc_services import add_services
from router.ledger import DEFAULT_LEDGER, open_ledger, redact
from router.ledger.metrics import LedgerMetrics
from router.metrics import RouterMetrics
from router.reload import ConfigFile, with_addresses
from router.rest.app import create_app
from router.rest.server import HttpServer
from router.signing import Signer, load_key
from router.skew.features import FeatureSink

log = logging.getLogger("router")



@dataclass(frozen=True)
class RouterSettings:
    """Process settings of one router replica (the experiment itself lives in the YAML file)."""

    config: Path  # the experiment YAML, watched for changes
    weights: Path | None = None  # the weights file (router/weights_file.py), watched; overrides the config's weights
    host: str = "0.0.0.0"
    http_port: int = 8080  # docs/architecture.md, "Ports"
    grpc_port: int = 8090
    legacy_url: str | None = None  # overrides the file's legacy backend address
    model_target: str | None = None  # overrides the file's model backend address
    signing_key_file: Path | None = None  # else $MODELRAMP_SIGNING_KEY, else a random key (one replica only)
    admin_token_file: Path | None = None  # else $MODELRAMP_WEIGHTS_TOKEN, else the weights API is off
    watch_interval: float = 1.0  # seconds between looks at the config file
    baseline: Path | None = None  # feature baseline for the skew monitors; overrides the file's skew.baseline
    outcome_ledger: str = DEFAULT_LEDGER  # where outcomes are recorded once (router/ledger): SQLite file or PostgreSQL URL


def build_router(settings: RouterSettings, sinks: tuple[FeatureSink, ...] = ()) -> tuple[Router, ConfigFile]:
    """The router and its config file, from settings (raises ConfigError on a bad file, LedgerConfigError on a bad ledger URL).

    The router records outcomes in the ledger of `settings.outcome_ledger`; the caller closes it
    (`router.outcomes.ledger.aclose()`) after the fronts have stopped.
    """
    source = ConfigFile(settings.config, lambda c: with_addresses(c, settings.legacy_url, settings.model_target),
                        weights=settings.weights)
    config = source.load()
    key = load_key(settings.signing_key_file)
    if key is None:
        log.warning("no signing key (file or $MODELRAMP_SIGNING_KEY): using a random one; "
                    "outcomes are accepted only by this process")
    metrics = RouterMetrics()
    from router.skew.sink import skew_sink_for  # noqa: PLC0415 - the skew monitors, built only when configured

    skew = skew_sink_for(config, settings.baseline, metrics.registry)
    sinks = (*sinks, skew) if skew is not None else sinks
    ledger = open_ledger(settings.outcome_ledger, ttl_seconds=config.router.outcome_ttl_seconds)
    log.info("outcome ledger %s", redact(settings.outcome_ledger))
    router = Router(config, signer=Signer(key, config.router.outcome_ttl_seconds), metrics=metrics, sinks=sinks, ledger=ledger)
    # Ids are issued and accepted for the experiment and salt in force, whichever way it was put in force.
    router.signer.follow(lambda: (router.state.config.name, router.state.config.salt))
    attach_ledger_metrics(router)
    for reason in source.load_rejections:  # a bad weights file does not stop the router: the config's weights apply
        router.reject("file", reason)
    return router, source


def attach_ledger_metrics(router: Router) -> None:
    """The outcome ledger's gauges and the outcome-lag histogram on the router's registry."""
    router.outcomes.observe = LedgerMetrics(router.metrics.registry, router.outcomes.ledger).observe


async def serve(settings: RouterSettings, admin_token: str | None, sinks: tuple[FeatureSink, ...] = ()) -> None:
    """Run one router until SIGTERM/SIGINT."""
    router, source = build_router(settings, sinks)
    grpc_server, grpc_port = create_server(router, f"{settings.host}:{settings.grpc_port}")
    health = add_services(grpc_server, router)
    http = HttpServer(router, create_app(router, admin_token, source), settings.host, settings.http_port)
    try:
        await http.start()
    except OSError as err:
        await grpc_server.stop(None)
        await router.close()
        await router.outcomes.ledger.aclose()
        raise OSError(f"cannot listen for HTTP on {settings.host}:{settings.http_port}: {err.strerror or err}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await grpc_server.start()
    for sink in router.sinks:  # sinks with a background job (the skew sketches) run it while we serve
        getattr(sink, "start", lambda: None)()
    background = [asyncio.create_task(router.keep_metadata_fresh()),
                  asyncio.create_task(source.watch(router, settings.watch_interval))]
    _tune_gc()
    cfg = router.state.config
    log.info("router for experiment %r (model %r, weights %s): HTTP on %s:%d, gRPC on %s:%d",
             cfg.name, cfg.model_name, cfg.weights, settings.host, settings.http_port, settings.host, grpc_port)
    await stop.wait()
    log.info("router stopping")
    health.stop()
    await asyncio.gather(http.stop(grace=5), grpc_server.stop(grace=5), return_exceptions=True)
    for task in background:
        task.cancel()
    await router.close()
    for sink in router.sinks:
        getattr(sink, "close", lambda: None)()
    await router.outcomes.ledger.aclose()  # after the fronts: reports in flight got their answer, their rows are written
    log.info("router stopped")


def _tune_gc() -> None:
    """Freeze the start-up objects so that the collector never scans them again.

    A full collection walks every tracked object: the modules, pydantic models, FastAPI routes
    and protobuf descriptors loaded at start-up are most of them, and walking them is a pause of
    several milliseconds in some request's latency. Frozen, only what requests allocate is
    scanned. The young-generation threshold stays at its default: rarer but larger young
    collections would trade CPU for longer pauses, and CPU per request did not change
    measurably with it (loadtests/bench_router.py).
    """
    gc.collect()
    gc.freeze()


def run(settings: RouterSettings, admin_token: str | None) -> int:
    """Blocking entry point (uses uvloop when installed)."""
    try:
        import uvloop  # noqa: PLC0415 - optional: the standard loop serves when it is missing
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        asyncio.run(serve(settings, admin_token))
    else:
        uvloop.run(serve(settings, admin_token))
    return 0
