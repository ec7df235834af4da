"""Start real modelramp processes on loopback for tests, and wait for them without sleeps."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from experiments.local.stack import Child

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "condition", proc: subprocess.Popen | None = None) -> None:
    """Poll `predicate` until true; fail with `what` (and the process's exit) on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} while waiting for {what}")
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 - not ready yet is any error
            pass
        time.sleep(0.05)  # polling interval, not synchronisation: the predicate decides
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


class Process(Child):
    """A `modelramp` subcommand run as a child process from the repository, its output kept in a log file."""

    def __init__(self, args: Sequence[str], log_path: Path, env: dict[str, str] | None = None):
        if args and args[0] == "router" and "--outcome-ledger" not in args and "MODELRAMP_OUTCOME_LEDGER" not in (env or {}):
            # A router's outcome ledger of its own beside its log, never the working folder's
            # default file (the repository), which every test's routers would otherwise share.
            env = {**(env or {}), "MODELRAMP_OUTCOME_LEDGER": f"sqlite:///{log_path.resolve().with_suffix('.outcomes.db')}"}
        super().__init__(args[0] if args else "modelramp", args, env, log_path=log_path, cwd=REPO)


def wait_ready(proc: Process, url: str, what: str, timeout: float = 60.0) -> None:
    """Wait until GET `url` answers 200; if it never does, print the process's log, stop it and raise."""
    import httpx

    try:
        wait_until(lambda: httpx.get(url, timeout=2).status_code == 200, timeout=timeout, what=what, proc=proc.proc)
    except Exception:
        print(proc.log())
        proc.stop()
        raise
