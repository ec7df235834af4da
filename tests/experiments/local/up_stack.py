"""A real `modelramp up` for tests: on free ports, from a working folder of its own, until the block ends.

The working folder is the test's, so the `.modelramp/up.json` it writes is seen by the commands a
test runs there and by no one else's (the repository's folder stays untouched).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from experiments.local.stack import Child
from experiments.local.up_state import state_path
from tests.support.processes import REPO, free_port, port_open, wait_until

BIN = Path(sys.executable).parent  # the venv's `modelramp`, `python`


@dataclass
class UpStack:
    child: Child
    folder: Path
    ports: dict[str, int]

    @property
    def router_port(self) -> int:
        return self.ports["--router-port"]

    @property
    def router_grpc_port(self) -> int:
        return self.ports["--router-grpc-port"]

    @property
    def state(self) -> dict:
        return json.loads(state_path(self.folder).read_text())

    def env(self) -> dict[str, str]:
        """The environment a user's shell has after `make demo`: the venv's commands first on the PATH."""
        return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(REPO)}


@contextmanager
def modelramp_up(models_dir: Path, folder: Path, *extra: str) -> Iterator[UpStack]:
    """`modelramp up --models models_dir` run from `folder`; yields once its banner is printed."""
    ports = {flag: free_port() for flag in ("--model-port", "--model-rest-port", "--legacy-port", "--router-port",
                                            "--router-grpc-port", "--prometheus-port")}
    args = ["up", "--models", str(models_dir), "--timeout", "170", *extra,
            *[x for flag, port in ports.items() for x in (flag, str(port))]]
    folder.mkdir(parents=True, exist_ok=True)
    child = Child("modelramp up", args, {"PYTHONPATH": str(REPO)}, log_path=folder / "up.log", cwd=folder)
    try:
        wait_until(lambda: "modelramp is up" in child.log(), timeout=240, what="modelramp up's banner", proc=child.proc)
        yield UpStack(child, folder, ports)
    except BaseException:
        child.stop(timeout=60)
        raise
    code = child.stop(timeout=60)
    assert code == 0, child.log()[-3000:]
    assert not any(port_open(p) for p in ports.values()), "every child of up stopped"
    assert not state_path(folder).exists(), "up removes its state file when it stops"
