"""The gRPC stack choice is made before grpc loads, and never overrides the user's."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.processes import REPO

PROBE = """
import os, sys
{before}
from serving.tfserving.grpc_stack import prefer_iomgr_stack
print(prefer_iomgr_stack(), os.environ.get("GRPC_EXPERIMENTS"))
"""


def probe(before: str = "", env_value: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    if env_value is not None:
        env["GRPC_EXPERIMENTS"] = env_value
    done = subprocess.run([sys.executable, "-c", PROBE.format(before=before)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


def test_a_fresh_process_asks_for_the_iomgr_stack():
    assert probe() == "True -event_engine_client,-event_engine_listener"


def test_the_users_choice_wins():
    assert probe(env_value="-event_engine_dns") == "False -event_engine_dns"


def test_too_late_once_grpc_is_loaded():
    assert probe(before="import grpc") == "False None"
