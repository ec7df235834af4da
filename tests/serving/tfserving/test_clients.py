"""The TF Serving clients: typed results and errors, deadlines, retries only when safe."""

import asyncio
import socket

import numpy as np
import pytest

from serving.tfserving import errors
from serving.tfserving.grpc_client import AsyncPredictionClient, PredictionClient
from serving.tfserving.rest_client import RestClient
from serving.training import dataset
from tests.support.processes import free_port


@pytest.fixture(scope="module")
def columns(models_dir):
    return dataset.to_columns(dataset.read_split(models_dir / "data", "live").head(8))


def test_sync_and_async_grpc_and_rest_clients_agree(model_server, columns):
    with PredictionClient(model_server.grpc_target) as client:
        sync = client.predict("churn", columns)["probability"]
        assert client.get_model_metadata("churn")["serving_default"]["outputs"] == {"probability": {"dtype": "DT_FLOAT", "shape": [-1]}}
        assert [s["state"] for s in client.get_model_status("churn")] == ["AVAILABLE", "AVAILABLE"]
        stable = client.predict("churn", columns, version_label="stable")["probability"]

    async def run():
        client = AsyncPredictionClient(model_server.grpc_target, max_in_flight=8)
        try:  # 32 concurrent calls through a bound of 8 in flight: all complete
            results = await asyncio.gather(*(client.predict("churn", columns) for _ in range(32)))
        finally:
            await client.close()
        return results

    for result in asyncio.run(run()):
        np.testing.assert_array_equal(result["probability"], sync)
    with RestClient(model_server.rest_url) as rest:
        np.testing.assert_allclose(rest.predict("churn", inputs=columns), sync, rtol=1e-6)
        np.testing.assert_allclose(rest.predict("churn", inputs=columns, version=1), stable, rtol=1e-6)
        assert rest.metadata("churn", version_label="canary")["model_spec"]["version"] == "2"


def test_typed_errors(model_server, columns):
    with PredictionClient(model_server.grpc_target) as client:
        with pytest.raises(errors.NotFound):
            client.predict("churn", columns, version=9)
        with pytest.raises(errors.InvalidArgument, match="state"):
            client.predict("churn", {k: v for k, v in columns.items() if k != "state"})
    with RestClient(model_server.rest_url) as rest:
        with pytest.raises(errors.InvalidArgument):
            rest.predict("churn", instances=[{"state": "KS"}])
        with pytest.raises(errors.NotFound):
            rest.status("nope")


def test_unreachable_server_is_unavailable_after_retries():
    port = free_port()
    with PredictionClient(f"127.0.0.1:{port}", timeout=1.0, retries=2) as client:
        with pytest.raises(errors.Unavailable):
            client.get_model_status("churn")
    with RestClient(f"http://127.0.0.1:{port}", timeout=1.0) as rest:
        with pytest.raises(errors.Unavailable):
            rest.status("churn")


def test_silent_server_hits_the_deadline_and_is_not_retried():
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        with RestClient(f"http://127.0.0.1:{port}", timeout=0.3) as rest:
            with pytest.raises(errors.DeadlineExceeded):
                rest.status("churn")
        with PredictionClient(f"127.0.0.1:{port}", timeout=0.3) as client:
            with pytest.raises((errors.DeadlineExceeded, errors.Unavailable)):
                client.get_model_status("churn")
