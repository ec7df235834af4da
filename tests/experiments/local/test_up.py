"""`modelramp up`: the local stack starts, answers through the router, and stops cleanly; a busy port is a clear error."""

from __future__ import annotations

import socket
import subprocess
import sys

import httpx
import pytest

from experiments.cli import main
from experiments.config import EXAMPLE_CONFIG
from tests.router.stack import ROW
from tests.support.processes import REPO, Process, free_port, port_open, wait_until


@pytest.mark.slow
def test_up_starts_everything_and_stops_on_sigterm(models_dir, tmp_path):
    ports = {flag: free_port() for flag in ("--model-port", "--model-rest-port", "--legacy-port", "--router-port", "--router-grpc-port",
                                                 "--prometheus-port")}
    args = ["up", "--models", str(models_dir), "--timeout", "120"] + [x for flag, port in ports.items() for x in (flag, str(port))]
    proc = Process(args, tmp_path / "up.log")
    try:
        wait_until(lambda: "modelramp is up" in proc.log(), timeout=180, what="stack up", proc=proc.proc)
        router = f"http://127.0.0.1:{ports['--router-port']}"
        r = httpx.post(f"{router}/v1/models/churn:predict", json={"instances": [ROW]}, headers={"X-Unit-Id": "up-1"})
        assert r.status_code == 200 and r.headers["X-Modelramp-Arm"] in ("legacy", "model")
        assert httpx.get(f"{router}/v1/experiments").json()["experiments"][0]["name"] == "churn-v2-vs-legacy"
        assert "/v1/models/churn:predict" in proc.log()
    finally:
        code = proc.stop(timeout=60)
    assert code == 0, proc.log()[-3000:]
    assert not any(port_open(p) for p in ports.values()), "every child stopped"


def test_up_refuses_a_busy_port(tmp_path):
    (tmp_path / "churn").mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "experiments.cli", "up", "--models", str(tmp_path), "--router-port", str(port),
                                 "--model-port", str(free_port()), "--model-rest-port", str(free_port()), "--legacy-port", str(free_port()),
                                 "--router-grpc-port", str(free_port())], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"router HTTP (--router-port) port {port}" in result.stderr and "Traceback" not in result.stderr


def test_router_refuses_a_busy_port():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "experiments.cli", "router", "--config", str(EXAMPLE_CONFIG), "--host", "127.0.0.1",
                                 "--http-port", str(port), "--grpc-port", str(free_port())], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "already in use" in result.stderr and "Traceback" not in result.stderr


def test_router_needs_a_config(capsys):
    """No packaged default: a router replica runs the experiment it is given, or none."""
    with pytest.raises(SystemExit) as exited:
        main(["router", "--http-port", str(free_port())])
    assert exited.value.code == 2 and "the following arguments are required: --config" in capsys.readouterr().err
