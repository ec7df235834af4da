"""`modelramp serve-model`: a TF-Serving-compatible model server for local use and tests.

The official `tensorflow_model_server` cannot be installed here (container image or C++ binary
only), so this process stands in for it with the same flags, ports, protos and REST API; on
Kubernetes the official `tensorflow/serving` image serves the same model folders. gRPC and REST
run on one asyncio loop; inference runs in a thread pool; a poll task picks up new versions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from serving.model_server.dataplane import DataPlane
from serving.model_server.grpc_server import build_grpc_server
from serving.model_server.model_config import load_model_config
from serving.model_server.registry import ModelRegistry, ModelSource
from serving.model_server.rest_server import build_rest_app
from serving.ports import check_port_free
from serving.tfserving.errors import InvalidArgument

log = logging.getLogger(__name__)


class _QuietServer(uvicorn.Server):
    """uvicorn without its own SIGINT/SIGTERM handlers: `serve` below handles them for both fronts."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def sources_from_flags(model_name: str | None, model_base_path: str | None, model_config_file: str | None) -> list[ModelSource]:
    if model_config_file:
        if model_base_path:
            raise InvalidArgument("give --model_config_file or --model_base_path, not both")
        return load_model_config(model_config_file)
    if not model_base_path:
        raise InvalidArgument("one of --model_base_path or --model_config_file is required")
    base = Path(model_base_path).resolve()
    if not base.is_dir():
        raise InvalidArgument(f"--model_base_path {base} is not a directory")
    return [ModelSource(model_name or "default", base)]


async def serve(sources: list[ModelSource], port: int, rest_api_port: int, poll_seconds: float, host: str = "0.0.0.0",
                session_config=None) -> None:
    for p in (port, rest_api_port):
        if p:
            check_port_free(host, p)
    registry = ModelRegistry(sources, session_config)
    plane = DataPlane(registry)
    await plane.poll()  # load before listening, as TF Serving does
    for source in sources:
        states = {s.version: s.state for s in registry.statuses(source.name)}
        log.info("model %s from %s: versions %s", source.name, source.base_path, states or "none found yet")

    grpc_server = build_grpc_server(plane, port, host)
    await grpc_server.start()
    rest = None
    if rest_api_port:
        config = uvicorn.Config(build_rest_app(plane), host=host, port=rest_api_port, log_level="warning",
                                access_log=False, lifespan="off")
        rest = _QuietServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def poller():
        while poll_seconds > 0 and not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=poll_seconds)
            except asyncio.TimeoutError:
                await plane.poll()

    tasks = [asyncio.create_task(poller())]
    if rest:
        tasks.append(asyncio.create_task(rest.serve()))
    print(f"modelramp model server: gRPC on {host}:{port}" + (f", REST on {host}:{rest_api_port}" if rest else ""), flush=True)
    await stop.wait()
    log.info("shutting down")
    if rest:
        rest.should_exit = True
    await grpc_server.stop(grace=2)
    await asyncio.gather(*tasks, return_exceptions=True)
    plane.shutdown()
