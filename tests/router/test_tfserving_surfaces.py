"""What gRPC and REST tools expect of a TF Serving endpoint, through a real router process, with the official clients.

Reflection as `grpcurl` uses it (no proto files), health that follows readiness, ModelService
and REST model status equal to the model server's own answers, Classify/Regress refused by name,
TF Serving's error body on unknown routes, and an OpenAPI document whose status codes are the
ones the routes really answer.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving.tfserving.tensors import to_tensor_proto
from tests.conftest import MODEL_NAME
from tests.router.stack import ROW, TOKEN, RouterProcess, experiment, grpc_inputs, start_router
from tests.support.processes import free_port, wait_until

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
SERVICES = {"tensorflow.serving.PredictionService", "tensorflow.serving.ModelService", "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection"}


@pytest.fixture()
def router(tmp_path: Path, model_server, legacy_server):
    started = start_router(tmp_path, experiment(legacy_server.url, model_server.grpc_target, 0.5, router={"max_body_bytes": 4096}))
    yield started
    started.process.stop()


def status_request(name: str = MODEL_NAME, version: int | None = None, label: str | None = None):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    return request


def test_reflection_lists_services_and_describes_them_without_proto_files(router: RouterProcess):
    with grpc.insecure_channel(router.grpc_target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        [listing] = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
        assert {s.name for s in listing.list_services_response.service} == SERVICES
        # grpcurl's way: descriptors fetched over reflection (file by symbol, then its imports by name) into a pool.
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        service = pool.FindServiceByName("tensorflow.serving.PredictionService")
        assert service.file.name == "tensorflow_serving/apis/prediction_service.proto"
        assert {m.name for m in service.methods} == {"Classify", "Regress", "Predict", "MultiInference", "GetModelMetadata"}
        predict = service.methods_by_name["Predict"]
        assert predict.input_type.full_name == "tensorflow.serving.PredictRequest"
        for name in SERVICES - {"tensorflow.serving.PredictionService"}:
            assert pool.FindServiceByName(name).methods, name
        # A Predict built from the reflected descriptors alone is answered.
        request_class = message_factory.GetMessageClass(predict.input_type)
        response_class = message_factory.GetMessageClass(predict.output_type)
        request = request_class()
        request.model_spec.name = MODEL_NAME
        tensor_class = message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.TensorProto"))
        for key, array in grpc_inputs().items():
            request.inputs[key].CopyFrom(to_tensor_proto(array, tensor_class))
        call = channel.unary_unary(f"/{service.full_name}/Predict", request_serializer=request_class.SerializeToString,
                                   response_deserializer=response_class.FromString)
        response = call(request, timeout=10)
        assert set(response.outputs) >= {"probability"}
        missing = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.Such")]), timeout=10)
        assert next(missing).error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def test_health_follows_readiness_and_flips_back(router: RouterProcess, model_server, legacy_server):
    """NOT_SERVING exactly while /readyz answers 503 (the model's signature unknown, or neither backend answering), SERVING again after."""
    dead = f"127.0.0.1:{free_port()}"  # nobody listens there
    healthy = experiment(legacy_server.url, model_server.grpc_target, 0.5, router={"max_body_bytes": 4096})
    with grpc.insecure_channel(router.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        def check(service: str = "") -> int:
            return health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status

        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=120)
        assert next(watch).status == SERVING
        assert check() == check("tensorflow.serving.PredictionService") == check("tensorflow.serving.ModelService") == SERVING
        with pytest.raises(grpc.RpcError) as unknown:
            check("no.such.Service")
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        # The router applies each file within its watch interval; the Watch stream reports each change.
        # The legacy system alone down is no reason: the model arm is still answered (router.core.Router.readiness).
        applied = router.metric("modelramp_config_reloads_total", result="applied")
        router.write_config(experiment(f"http://{dead}", model_server.grpc_target, 0.5))
        wait_until(lambda: router.metric("modelramp_config_reloads_total", result="applied") > applied, timeout=30,
                   what="the legacy-down file applied")
        assert check() == SERVING and httpx.get(f"{router.url}/readyz", timeout=5).status_code == 200
        for broken in (experiment(legacy_server.url, dead, 0.5), experiment(f"http://{dead}", dead, 0.5)):
            router.write_config(broken)
            assert next(watch).status == NOT_SERVING
            assert check() == NOT_SERVING and httpx.get(f"{router.url}/readyz", timeout=5).status_code == 503
            router.write_config(healthy)
            assert next(watch).status == SERVING
            assert check() == SERVING and httpx.get(f"{router.url}/readyz", timeout=5).status_code == 200
        watch.cancel()


@pytest.mark.parametrize("backend", ["tfserving_grpc", "tfserving_rest"])
def test_model_status_through_the_router_is_the_model_servers_own(tmp_path: Path, model_server, legacy_server, backend: str):
    doc = experiment(legacy_server.url, model_server.grpc_target, 0.5)
    if backend == "tfserving_rest":
        doc["arms"]["model"]["backend"] = {"kind": "tfserving_rest", "url": model_server.rest_url, "model_name": MODEL_NAME}
    router = start_router(tmp_path, doc)
    try:
        with grpc.insecure_channel(router.grpc_target) as via, grpc.insecure_channel(model_server.grpc_target) as direct:
            through, own = model_service_pb2_grpc.ModelServiceStub(via), model_service_pb2_grpc.ModelServiceStub(direct)
            for spec, versions in (({}, [1, 2]), ({"version": 1}, [1]), ({"version": 2}, [2]), ({"label": "stable"}, [1]),
                                   ({"label": "canary"}, [2])):
                answer = through.GetModelStatus(status_request(**spec), timeout=10)
                assert answer == own.GetModelStatus(status_request(**spec), timeout=10), spec
                assert [s.version for s in answer.model_version_status] == versions, spec
                assert {s.state for s in answer.model_version_status} == {get_model_status_pb2.ModelVersionStatus.AVAILABLE}
            for spec, code in (({"version": 7}, grpc.StatusCode.NOT_FOUND), ({"name": "other"}, grpc.StatusCode.NOT_FOUND)):
                with pytest.raises(grpc.RpcError) as err:
                    through.GetModelStatus(status_request(**spec), timeout=10)
                assert err.value.code() == code, spec
        with httpx.Client(base_url=router.url, timeout=10) as client:
            for path in ("", "/versions/1", "/versions/2", "/labels/stable", "/labels/canary"):
                mine, theirs = client.get(f"/v1/models/{MODEL_NAME}{path}"), httpx.get(f"{model_server.rest_url}/v1/models/{MODEL_NAME}{path}")
                assert (mine.status_code, mine.json()) == (theirs.status_code, theirs.json()) == (200, theirs.json()), path
            unknown = client.get(f"/v1/models/{MODEL_NAME}/versions/7")
            assert unknown.status_code == 404 and set(unknown.json()) == {"error"}
            assert client.get("/v1/models/other").json() == {"error": f"unknown model 'other'; this router serves '{MODEL_NAME}'"}
            bad = client.get(f"/v1/models/{MODEL_NAME}/versions/latest")
            assert bad.status_code == 400 and set(bad.json()) == {"error"}
    finally:
        router.process.stop()


def test_classify_and_regress_are_refused_naming_what_is_served(router: RouterProcess):
    before = router.metric("modelramp_requests_total")
    with grpc.insecure_channel(router.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for method, request in ((stub.Classify, classification_pb2.ClassificationRequest()),
                                (stub.Regress, regression_pb2.RegressionRequest()),
                                (stub.MultiInference, inference_pb2.MultiInferenceRequest())):
            if request.DESCRIPTOR.name != "MultiInferenceRequest":
                request.model_spec.name = MODEL_NAME
            with pytest.raises(grpc.RpcError) as err:
                method(request, timeout=10)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert "PredictionService/Predict" in err.value.details() and "not served by this router" in err.value.details()
        with pytest.raises(grpc.RpcError) as reload:
            model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(), timeout=10)
        assert reload.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with httpx.Client(base_url=router.url, timeout=10) as client:
        for path in ("/v1/models/churn:classify", "/v1/models/churn/versions/2:regress", "/v1/models/churn/labels/stable:classify"):
            r = client.post(path, json={"examples": [ROW]})
            assert r.status_code == 501 and set(r.json()) == {"error"}, path
            assert "POST /v1/models/{name}:predict" in r.json()["error"]
    assert router.metric("modelramp_requests_total") == before, "refused calls are not predictions: nothing counted"


def test_unknown_routes_and_methods_answer_tf_servings_error_body(router: RouterProcess):
    with httpx.Client(base_url=router.url, timeout=10) as client:
        for method, path, status in (("GET", "/nope", 404), ("GET", "/v1/nope/churn", 404), ("POST", "/v1/models/churn:explain", 405),
                                     ("DELETE", "/v1/outcomes", 405), ("GET", "/v1/models/churn/versions/x/metadata", 404)):
            r = client.request(method, path)
            assert r.status_code == status, (method, path)
            assert r.json() == {"error": f"Malformed request: {method} {path}"}, (method, path)


# (method, path, path as documented, body, headers, expected status): each answer of the real router checked against the document.
REQUESTS = (
    ("POST", "/v1/models/churn:predict", "/v1/models/{name}:predict", {"instances": [ROW]}, {}, 200),
    ("POST", "/v1/models/churn:predict", "/v1/models/{name}:predict", {"instances": [{"state": 3}]}, {}, 400),
    ("POST", "/v1/models/nope:predict", "/v1/models/{name}:predict", {"instances": [ROW]}, {}, 404),
    ("POST", "/v1/models/churn/versions/2:predict", "/v1/models/{name}/versions/{version}:predict", {"instances": [ROW] * 40}, {}, 413),
    ("GET", "/v1/models/churn", "/v1/models/{name}", None, {}, 200),
    ("GET", "/v1/models/churn/versions/9", "/v1/models/{name}/versions/{version}", None, {}, 404),
    ("GET", "/v1/models/churn/versions/x", "/v1/models/{name}/versions/{version}", None, {}, 400),
    ("GET", "/v1/models/churn/labels/stable", "/v1/models/{name}/labels/{label}", None, {}, 200),
    ("POST", "/v1/models/churn:classify", "/v1/models/{name}:classify", {}, {}, 501),
    ("GET", "/v1/models/churn/metadata", "/v1/models/{name}/metadata", None, {}, 200),
    ("GET", "/v1/models/nope/metadata", "/v1/models/{name}/metadata", None, {}, 404),
    ("POST", "/v1/outcomes", "/v1/outcomes", {"request_id": "made-up", "success": True}, {}, 400),
    ("POST", "/v1/outcomes", "/v1/outcomes", [{"request_id": "x", "success": True}] * 200, {}, 413),
    ("GET", "/v1/experiments", "/v1/experiments", None, {}, 200),
    ("GET", "/v1/experiments/churn-it", "/v1/experiments/{name}", None, {}, 200),
    ("GET", "/v1/experiments/nope", "/v1/experiments/{name}", None, {}, 404),
    ("PUT", "/v1/experiments/churn-it/weights", "/v1/experiments/{name}/weights", {"weights": {"model": 0.5}}, {}, 401),
    ("PUT", "/v1/experiments/churn-it/weights", "/v1/experiments/{name}/weights", {"weights": {"model": 2}},
     {"Authorization": f"Bearer {TOKEN}"}, 400),
    ("PUT", "/v1/experiments/nope/weights", "/v1/experiments/{name}/weights", {"weights": {"model": 0.5}},
     {"Authorization": f"Bearer {TOKEN}"}, 404),
    ("PUT", "/v1/experiments/churn-it/weights", "/v1/experiments/{name}/weights", {"weights": {"model": 0.5}},
     {"Authorization": f"Bearer {TOKEN}"}, 200),
    ("GET", "/metrics", "/metrics", None, {}, 200),
    ("GET", "/healthz", "/healthz", None, {}, 200),
    ("GET", "/readyz", "/readyz", None, {}, 200),
)


def test_openapi_documents_the_status_codes_and_bodies_the_routes_answer(router: RouterProcess):
    with httpx.Client(base_url=router.url, timeout=10) as client:
        document = client.get("/openapi.json").json()
        schemas = document["components"]["schemas"]
        assert schemas["ErrorBody"]["required"] == ["error"] and "HTTPValidationError" not in schemas
        assert document["components"]["securitySchemes"]["bearerToken"] == {
            "type": "http", "scheme": "bearer", "description": document["components"]["securitySchemes"]["bearerToken"]["description"]}
        assert document["paths"]["/v1/experiments/{name}/weights"]["put"]["security"] == [{"bearerToken": []}]
        operations = [(m, p, op) for p, ops in document["paths"].items() for m, op in ops.items()]
        assert all("422" not in op["responses"] for _, _, op in operations), "no request is ever answered 422"
        seen = set()
        for method, path, documented, body, headers, status in REQUESTS:
            r = client.request(method, path, json=body, headers=headers)
            assert r.status_code == status, (method, path, r.text)
            responses = document["paths"][documented][method.lower()]["responses"]
            assert str(status) in responses, f"{method} {documented} answers {status}, undocumented"
            if status >= 400:
                assert set(r.json()) == {"error"}, (method, path)
                assert responses[str(status)]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
            seen.add((method.lower(), documented))
        for method, path, op in operations:
            assert op["responses"], (method, path)
            for code, response in op["responses"].items():
                if int(code) >= 400 and (method, path) != ("get", "/readyz"):
                    assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}, (method, path)
        assert len(seen) >= 12


def test_health_says_not_serving_from_the_start_of_a_shutdown():
    """`Health.stop` (the router's first step on SIGTERM): Check answers NOT_SERVING and Watch streams end with it."""
    from router.core import Router
    from router.grpc import create_server
    from router.grpc_services import add_services
    from router.signing import Signer
    from tests.router.fakes import fake_factory, make_config

    async def body() -> list[int]:
        router = Router(make_config(0.5), signer=Signer(b"k"), backend_factory=fake_factory)
        server, port = create_server(router, "127.0.0.1:0")
        health = add_services(server, router)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                watch = stub.Watch(health_pb2.HealthCheckRequest(), timeout=30)
                seen = [(await watch.read()).status]
                health.stop()
                while (message := await watch.read()) is not grpc.aio.EOF:  # the stream ends after NOT_SERVING
                    seen.append(message.status)
                seen.append((await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)).status)
                return seen
        finally:
            await server.stop(0)
            await router.close()

    assert asyncio.run(body()) == [SERVING, NOT_SERVING, NOT_SERVING]
