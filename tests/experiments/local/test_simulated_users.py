"""The demo's simulated clients: their own process, stats in the parent, nothing lost at stop.

The router stand-in is a small HTTP server in a subprocess of its own (so that nothing the test
process does can slow it down): it answers predict with the router's headers and counts what it
gets. The clients must keep their pace while the parent process holds its interpreter lock, which
is what the ramp controller, the display and the report do in the demo.
"""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pandas as pd
import pytest

from experiments.local.simulated_users import SimulatedUsers
from serving.training import dataset
from tests.router.stack import ROW
from tests.support.processes import free_port, wait_until

SERVER = r"""
import itertools, json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

counts = {"predict": 0, "outcomes": 0}
ids = itertools.count()

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def _answer(self, body, headers=()):
        self.send_response(200)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self._answer(json.dumps(counts).encode())
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/outcomes":
            counts["outcomes"] += len(json.loads(body))
            self._answer(b"{}")
        else:
            counts["predict"] += 1
            i = next(ids)
            self._answer(b'{"predictions": [0.2]}', [("X-Modelramp-Arm", "model" if i % 10 == 0 else "legacy"),
                                                    ("X-Modelramp-Outcome-Id", f"id-{i}")])

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


@pytest.fixture
def server():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, 30, "stand-in router up", proc)
    yield url
    proc.terminate()
    proc.wait(10)


def counts(url: str) -> dict[str, int]:
    return httpx.get(url, timeout=5).json()


def _hold_the_interpreter_lock(seconds: float) -> None:
    """C calls of about a second each that never release the GIL, as a long analysis or plot in the demo's process.

    Shorter calls would not tell a thread from a process: between two calls the GIL passes to a waiting
    thread, whose loop then catches up on the requests it owes.
    """
    n = 1_000_000
    started = time.perf_counter()
    sum(range(n))
    per_second = n / max(time.perf_counter() - started, 1e-6)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sum(range(int(per_second)))


def test_clients_run_in_their_own_process_keep_their_pace_and_lose_nothing(server):
    live = pd.DataFrame([{**ROW, dataset.LABEL: i % 2 == 0} for i in range(50)])
    rate = 100.0
    users = SimulatedUsers(server, "churn", live, rate, units=500, outcome_delay=(0.05, 0.1))
    users.start()
    try:
        wait_until(lambda: users.stats.requests >= 20, 30, "the parent sees the clients' stats")
        before, started = counts(server)["predict"], time.monotonic()
        _hold_the_interpreter_lock(3.0)
        sent, held = counts(server)["predict"] - before, time.monotonic() - started
    finally:
        users.stop()
    # The clients kept their rate while this process held its lock (a thread of it would have stalled).
    assert sent >= 0.6 * rate * held, (sent, held)
    served = counts(server)
    stats = users.stats
    # The last snapshot came after the clients stopped: every answer counted, every outcome reported.
    assert stats.requests == served["predict"] and stats.client_errors == 0, (stats, served)
    assert sum(t.reported for t in stats.arms.values()) == served["outcomes"] == stats.requests
    assert stats.arms["model"].requests + stats.arms["legacy"].requests == stats.requests
    assert stats.latencies_ms and stats.max_loop_lag_ms >= 0.0


def test_stop_before_start_and_twice_is_harmless(server):
    users = SimulatedUsers(server, "churn", pd.DataFrame([{**ROW, dataset.LABEL: True}]), 10.0, units=5)
    users.stop()
    users.start()
    wait_until(lambda: users.stats.requests >= 1, 30, "one request")
    users.stop()
    users.stop()
    assert users.stats.requests == counts(server)["predict"]
