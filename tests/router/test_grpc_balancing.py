"""The router's gRPC channel to TF Serving spreads calls over every address its target resolves to.

In Kubernetes the target is a headless Service (`dns:///<name>:8500`, one A record per TF Serving
pod). No DNS server runs here, so the test gives the router gRPC's `ipv4:` target, a static
list of two addresses: a different resolver, the same load-balancing policy on the resolved list.
Two real model servers; each one's CPU time shows whether it answered predictions (an idle model
server spends next to none).
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.conftest import start_model_server
from tests.router.stack import ROW, experiment, start_router


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.fixture(scope="module")
def two_model_servers(models_dir, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("two-model-servers")
    servers = [start_model_server(models_dir, log_dir) for _ in range(2)]
    yield servers
    for server in servers:
        server.process.stop()


def test_both_model_servers_behind_one_target_answer_predictions(two_model_servers, legacy_server, tmp_path):
    target = "ipv4:" + ",".join(server.grpc_target for server in two_model_servers)
    router = start_router(tmp_path, experiment(legacy_server.url, target, 1.0))
    try:
        pids = [server.process.proc.pid for server in two_model_servers]
        before = [_cpu_seconds(pid) for pid in pids]
        with httpx.Client(base_url=router.url, timeout=10) as client:
            for i in range(400):
                r = client.post("/v1/models/churn:predict", json={"instances": [ROW]}, headers={"X-Unit-Id": f"u{i}"})
                assert r.status_code == 200 and r.headers["X-Modelramp-Arm"] == "model", r.text
        spent = [_cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
    finally:
        router.process.stop()
    # pick_first (gRPC's default) gives one server all 400 and the other none.
    assert min(spent) > 0.25 * sum(spent), f"model servers' CPU seconds during 400 predictions: {spent}"
