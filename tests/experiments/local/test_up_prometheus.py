"""`modelramp up` survives its Prometheus: the exit is reported loudly, Prometheus is restarted (a bounded
number of times), and the router and backends keep serving throughout."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import httpx
import pytest

from experiments.local.stack import Child, Ports, Stack
from tests.router.stack import ROW
from tests.support.processes import Process, free_port, port_open, wait_until

SLEEPER = ["-c", "import time; time.sleep(600)"]


def test_an_optional_process_is_restarted_a_bounded_number_of_times_then_left(tmp_path, capsys):
    """A Prometheus stand-in that always exits: three restarts, then the stack goes on without it; the router stand-in is untouched."""
    stack = Stack("127.0.0.1", Ports(), tmp_path, stopping=threading.Event())
    router = stack.children["router"] = Child("router", SLEEPER, executable=sys.executable, log_path=tmp_path / "router.log")
    starts = tmp_path / "starts"
    script = f"open({str(starts)!r}, 'a').write('x'); raise SystemExit(3)"
    stack.children["prometheus"] = Child("prometheus", ["-c", script], executable=sys.executable, log_path=tmp_path / "prom.log")
    try:
        assert stack.prometheus_url is not None
        thread = stack.supervise("prometheus", restarts=3, backoff=0.01, poll=0.01)
        thread.join(timeout=30)
        assert not thread.is_alive()
        assert starts.read_text() == "x" * 4  # the first start and three restarts
        assert "prometheus" not in stack.children and stack.prometheus_url is None
        assert stack.exited() is None and router.proc.poll() is None  # the rest of the stack runs on
        err = capsys.readouterr().err
        assert err.count("prometheus exited with code 3") == 4 and "restarting it" in err and "going on without it" in err
    finally:
        stack.stop()


def test_a_healthy_run_resets_the_count(tmp_path, capsys):
    stack = Stack("127.0.0.1", Ports(), tmp_path, stopping=threading.Event())
    stack.children["prometheus"] = Child("prometheus", SLEEPER, executable=sys.executable)
    try:
        stack.supervise("prometheus", restarts=1, backoff=0.01, healthy=0.0, poll=0.01)
        for n in range(3):  # more exits than `restarts`, each after a healthy run: restarted every time
            pid = stack.children["prometheus"].proc.pid
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda pid=pid: stack.children["prometheus"].proc.pid != pid and stack.children["prometheus"].proc.poll() is None,
                       timeout=20, what=f"restart {n + 1}")
        assert "going on without it" not in capsys.readouterr().err
    finally:
        stack.stop()


def child_pid(parent: int, name: str) -> int:
    """The pid of `parent`'s child process called `name` (from /proc)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            comm, rest = stat[stat.index("(") + 1: stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            if comm == name and int(rest[1]) == parent:
                return int(entry.name)
    raise LookupError(f"no child {name} of {parent}")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/bin/prometheus").exists() and not os.environ.get("MODELRAMP_REQUIRE_BINARIES"),
                    reason="needs Debian's prometheus")
def test_up_keeps_serving_and_restarts_prometheus_when_it_is_killed(models_dir, tmp_path):
    ports = {flag: free_port() for flag in ("--model-port", "--model-rest-port", "--legacy-port", "--router-port", "--router-grpc-port",
                                                 "--prometheus-port")}
    args = ["up", "--models", str(models_dir), "--timeout", "120"] + [x for flag, port in ports.items() for x in (flag, str(port))]
    proc = Process(args, tmp_path / "up.log")
    router = f"http://127.0.0.1:{ports['--router-port']}"
    prometheus = f"http://127.0.0.1:{ports['--prometheus-port']}"
    try:
        wait_until(lambda: "modelramp is up" in proc.log(), timeout=180, what="stack up", proc=proc.proc)
        first = child_pid(proc.proc.pid, "prometheus")
        os.kill(first, signal.SIGKILL)  # the Prometheus this test's `up` started, by its pid
        wait_until(lambda: "prometheus exited" in proc.log(), timeout=30, what="the exit reported", proc=proc.proc)
        for n in range(20):  # the router answers while Prometheus is down and being restarted
            r = httpx.post(f"{router}/v1/models/churn:predict", json={"instances": [ROW]}, headers={"X-Unit-Id": f"p-{n}"}, timeout=10)
            assert r.status_code == 200, r.text
        wait_until(lambda: httpx.get(f"{prometheus}/api/v1/targets", timeout=2).json()["data"]["activeTargets"][0]["health"] == "up",
                   timeout=60, what="Prometheus restarted and scraping the router", proc=proc.proc)
        assert child_pid(proc.proc.pid, "prometheus") != first
        assert proc.proc.poll() is None, "up is still running"
        assert port_open(ports["--legacy-port"]) and port_open(ports["--model-port"])
    finally:
        code = proc.stop(timeout=60)
    assert code == 0, proc.log()[-3000:]
