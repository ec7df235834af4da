"""The router's gRPC services beside Predict: ModelService, refused PredictionService methods, health and reflection.

- `tensorflow.serving.ModelService/GetModelStatus`: the model arm's answer (`router.tfserving_api`).
- `Classify`, `Regress`, `MultiInference` and `HandleReloadConfigRequest`: UNIMPLEMENTED, naming
  what is served, rather than gRPC's bare "Method not found!".
- `grpc.health.v1.Health`: SERVING exactly when `GET /readyz` answers 200 (`Router.readiness`),
  for the service "" and each TF Serving service; NOT_SERVING from the start of a shutdown.
- Server reflection (v1alpha, what `grpcurl` asks): TF Serving's descriptors live in a private
  pool (`serving.tfserving.protos`) and reflection answers from one pool, so it gets a pool of
  its own holding those, health's and its own.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeAlias

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool

# No type information ships with these two (typeshed's stubs are not among our dev dependencies): Any here.
from grpc_health.v1 import health_pb2  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import reflection, reflection_pb2  # type: ignore[import-untyped]

from router.core import Router
from router.tfserving_api import REFUSED_GRPC, model_status, not_served, reload_refused
from serving.tfserving import errors, protos

HEALTH_SERVICE = "grpc.health.v1.Health"
# Health answers for these; any other name is NOT_FOUND (Check) or SERVICE_UNKNOWN (Watch), as the reference servicer does.
HEALTH_NAMES = frozenset(("", protos.PREDICTION_SERVICE, protos.MODEL_SERVICE))
WATCH_INTERVAL_S = 1.0  # how often a Watch stream looks at readiness: nothing announces a backend going away

Message: TypeAlias = Any  # messages of private pools and of untyped generated modules
Context: TypeAlias = grpc.aio.ServicerContext[Message, Message]
_SERVING: int = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING: int = health_pb2.HealthCheckResponse.NOT_SERVING
_UNKNOWN: int = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class Health:
    """grpc.health.v1.Health on the router's readiness; concurrent checks share one look at the backends."""

    def __init__(self, router: Router, watch_interval: float = WATCH_INTERVAL_S) -> None:
        self.router = router
        self.watch_interval = watch_interval
        self._stopping = asyncio.Event()
        self._look: asyncio.Task[bool] | None = None

    def stop(self) -> None:
        """From now on NOT_SERVING, and Watch streams end, so that load balancers drain before the server stops."""
        self._stopping.set()

    async def _ready(self) -> bool:
        return bool((await self.router.readiness())["ready"])

    async def status(self) -> int:
        if self._stopping.is_set():
            return _NOT_SERVING
        if self._look is None or self._look.done():
            self._look = asyncio.get_running_loop().create_task(self._ready())
        # Shielded: a caller that gives up does not cancel the look the others wait for.
        return _SERVING if await asyncio.shield(self._look) else _NOT_SERVING

    async def check(self, request: Message, context: Context) -> Message:
        if request.service not in HEALTH_NAMES:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=await self.status())

    async def watch(self, request: Message, context: Context) -> None:
        last = None
        while True:
            status = await self.status() if request.service in HEALTH_NAMES else _UNKNOWN
            if status != last:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
            if self._stopping.is_set():
                return
            try:
                await asyncio.wait_for(self._stopping.wait(), self.watch_interval)
            except TimeoutError:
                pass


def _refuse(error: errors.UserFacingError) -> grpc.RpcMethodHandler[bytes, bytes]:
    async def answer(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await context.abort(error.grpc_code, str(error))

    return grpc.unary_unary_rpc_method_handler(answer)  # no deserializer: the request is not even parsed


def reflection_pool() -> descriptor_pool.DescriptorPool:
    """A pool with TF Serving's files (dependencies first), health's and reflection's: all that reflection describes."""
    pool = descriptor_pool.DescriptorPool()
    for file in protos.FILES:
        pool.Add(file)
    for module in (health_pb2, reflection_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        pool.Add(proto)
    return pool


def add_services(server: grpc.aio.Server, router: Router) -> Health:
    """Add ModelService, the refused methods, health and reflection to `server` (before it starts); returns the health service."""
    health = Health(router)

    async def get_model_status(request: Message, context: Context) -> Message:
        spec = request.model_spec
        which = spec.WhichOneof("version_choice")
        try:
            return await model_status(router, spec.name, spec.version.value if which == "version" else None,
                                      spec.version_label if which == "version_label" else None,
                                      context.time_remaining() or router.state.config.router.request_timeout_ms / 1000.0)
        except errors.UserFacingError as err:
            await context.abort(err.grpc_code, str(err))

    model_service = {
        "GetModelStatus": grpc.unary_unary_rpc_method_handler(
            get_model_status, request_deserializer=protos.GetModelStatusRequest.FromString,
            response_serializer=protos.GetModelStatusResponse.SerializeToString),
        "HandleReloadConfigRequest": _refuse(reload_refused()),
    }
    refused = {name: _refuse(not_served(f"{protos.PREDICTION_SERVICE}/{name}", rest=False)) for name in REFUSED_GRPC}
    health_methods = {
        "Check": grpc.unary_unary_rpc_method_handler(
            health.check, request_deserializer=health_pb2.HealthCheckRequest.FromString,
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString),
        "Watch": grpc.unary_stream_rpc_method_handler(
            health.watch, request_deserializer=health_pb2.HealthCheckRequest.FromString,
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString),
    }
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler(protos.MODEL_SERVICE, model_service),
        grpc.method_handlers_generic_handler(protos.PREDICTION_SERVICE, refused),  # beside router.grpc's Predict handlers
        grpc.method_handlers_generic_handler(HEALTH_SERVICE, health_methods),
    ))
    names = (protos.PREDICTION_SERVICE, protos.MODEL_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server, pool=reflection_pool())
    return health
