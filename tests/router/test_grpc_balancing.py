"""The router's model arm spreads calls over every address its gRPC target resolves to, REST rows too.

In Kubernetes the target is a headless Service (`dns:///<name>:8500`, one A record per TF Serving
pod). No DNS server runs here, so the test gives the router gRPC's `ipv4:` target, a static
list of addresses: a different resolver, the same load-balancing policy on the resolved list.
Two real model servers, on 127.0.0.1 and 127.0.0.2 with the same REST port (as the pods of one
Deployment share their port numbers); each one's CPU time shows whether it answered predictions
(an idle model server spends next to none).
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import start_model_server
from tests.router.stack import ROW, experiment, start_router
from tests.support.processes import free_port


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.fixture(scope="module")
def two_model_servers(models_dir, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("two-model-servers")
    rest_port = free_port()
    servers = [start_model_server(models_dir, log_dir, host=host, ports=(free_port(), rest_port)) for host in ("127.0.0.1", "127.0.0.2")]
    yield servers
    for server in servers:
        server.process.stop()


def _cpu_spent_answering(router, servers, predictions: int = 400) -> list[float]:
    """Each model server's CPU seconds while `router` answered `predictions` REST predictions, all by the model arm."""
    pids = [server.process.proc.pid for server in servers]
    before = [_cpu_seconds(pid) for pid in pids]
    with httpx.Client(base_url=router.url, timeout=10) as client:
        for i in range(predictions):
            r = client.post("/v1/models/churn:predict", json={"instances": [ROW]}, headers={"X-Unit-Id": f"u{i}"})
            assert r.status_code == 200 and r.headers["X-Modelramp-Arm"] == "model", r.text
    return [_cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]


def test_both_model_servers_behind_one_target_answer_predictions(two_model_servers, legacy_server, tmp_path):
    target = "ipv4:" + ",".join(server.grpc_target for server in two_model_servers)
    router = start_router(tmp_path, experiment(legacy_server.url, target, 1.0))
    try:
        spent = _cpu_spent_answering(router, two_model_servers)
    finally:
        router.process.stop()
    # pick_first (gRPC's default) gives one server all 400 and the other none.
    assert min(spent) > 0.25 * sum(spent), f"model servers' CPU seconds during 400 predictions: {spent}"


def test_rest_rows_go_to_every_servers_rest_port_and_around_one_that_is_gone(two_model_servers, legacy_server, tmp_path):
    """`rest_port`: REST rows go to the REST API of the servers the gRPC target resolves to, round robin.

    A third address where nothing listens (a pod gone, its address not yet out of the Service)
    costs no request: the call is tried once on the next server and the address is skipped a while.
    """
    gone = f"127.0.0.3:{free_port()}"
    target = "ipv4:" + ",".join([server.grpc_target for server in two_model_servers] + [gone])
    doc = experiment(legacy_server.url, target, 1.0)
    rest = doc["arms"]["model"]["backend"]["rest_port"] = two_model_servers[0].rest_port
    router = start_router(tmp_path, doc)
    try:
        spent = _cpu_spent_answering(router, two_model_servers)
        assert router.metric("modelramp_fallbacks_total") == 0
        assert router.metric("modelramp_backend_errors_total") == 0
        # Over REST, not gRPC: the router keeps a connection to each server's REST port (the CPU alone would not say).
        process = psutil.Process(router.process.proc.pid)
        connections = getattr(process, "net_connections", None) or process.connections  # psutil < 6 names it connections
        peers = {tuple(c.raddr) for c in connections(kind="tcp") if c.raddr and c.status == psutil.CONN_ESTABLISHED}
        assert {("127.0.0.1", rest), ("127.0.0.2", rest)} <= peers, peers
        # TF Serving's own REST answer, passed on.
        body = {"instances": [ROW, {**ROW, "state": "NY"}]}
        via = httpx.post(f"{router.url}/v1/models/churn:predict", json=body, headers={"X-Unit-Id": "u1"}, timeout=10)
        assert via.json() == httpx.post(f"{two_model_servers[0].rest_url}/v1/models/churn:predict", json=body, timeout=10).json()
    finally:
        router.process.stop()
    assert min(spent) > 0.25 * sum(spent), f"model servers' CPU seconds during 400 predictions: {spent}"
