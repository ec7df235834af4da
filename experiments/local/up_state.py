"""What a running `modelramp up` tells the commands started in its working folder: `.modelramp/up.json`.

`up` puts its stack in a temporary run folder and on ports that flags can move, so without this
file `analyze`, `ramp`, `skew` and `versions` would need flags nobody had seen. The file lives in
the working folder rather than `$XDG_RUNTIME_DIR`: the commands are run from the project folder
anyway (`models/`, `modelramp.db` are relative to it), two projects' stacks do not see each
other, and a test isolates itself by its working directory. A command takes from it only when
the flag that names what to work on is absent (the source for `analyze` and `skew`, the
experiment file for `ramp`, the database for `versions`), so flags always win, and it says on
stderr what it took. A file whose `up` no longer runs (killed outright, so it could not remove
it) is ignored, and said so.

Standard library only: `analyze`, `ramp` and `skew` run from the controller's install, without TensorFlow.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

STATE_DIR = ".modelramp"
STATE_FILE = "up.json"


def state_path(folder: Path | None = None) -> Path:
    """Where `up` started in `folder` (default: the working folder) records itself."""
    return (folder or Path.cwd()).resolve() / STATE_DIR / STATE_FILE


@dataclass(frozen=True)
class UpState:
    """A running `modelramp up`: its process, addresses and files (paths absolute)."""

    pid: int
    experiment: str
    router_url: str
    router_grpc: str
    prometheus_url: str | None
    config: str
    baseline: str | None
    db: str
    models: str
    outcome_ledger: str
    run_dir: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, object]) -> UpState:
        fields = cls.__dataclass_fields__
        missing = sorted(set(fields) - set(doc))
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        return cls(**{k: doc[k] for k in fields})  # type: ignore[arg-type]

    def live_prometheus(self) -> str | None:
        """Its Prometheus if that answers now: `up` goes on without one that keeps exiting, and this file stays."""
        if not self.prometheus_url:
            return None
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy
        try:
            with no_proxy.open(f"{self.prometheus_url}/-/ready", timeout=2.0) as answer:
                return self.prometheus_url if answer.status == 200 else None
        except (OSError, ValueError):
            return None


def write_state(state: UpState, folder: Path | None = None) -> Path:
    """Record `state`, renamed into place so a command never reads half a file."""
    path = state_path(folder)
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_name(f".{STATE_FILE}.{state.pid}.tmp")
    tmp.write_text(json.dumps(state.to_dict(), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def remove_state(pid: int, folder: Path | None = None) -> None:
    """Remove the file if it still names `pid`: a second `up` started meanwhile keeps its own."""
    path = state_path(folder)
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError, AttributeError):
        return
    try:
        path.parent.rmdir()  # only when empty: nothing else of anyone's is removed
    except OSError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: it exists
    return True


def read_state(folder: Path | None = None) -> tuple[UpState | None, str]:
    """The running `up` of this folder, or None and why not, in words a command can put in its error."""
    path = state_path(folder)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None, f"no `modelramp up` runs from this folder (no {path})"
    except OSError as err:
        return None, f"cannot read {path}: {err.strerror or err}"
    try:
        state = UpState.from_dict(json.loads(text))
    except (ValueError, TypeError) as err:
        return None, f"{path} is not a `modelramp up` state file ({err})"
    if not _alive(state.pid):
        return None, f"{path} names a `modelramp up` (pid {state.pid}) that no longer runs"
    return state, f"the running `modelramp up` (pid {state.pid}, {path})"


def announce(command: str, state: UpState, took: dict[str, str]) -> None:
    """Say on stderr what a command took from `up`'s file (stdout stays the table or the JSON)."""
    what = "; ".join(f"{k} {v}" for k, v in took.items())
    print(f"modelramp {command}: from the running `modelramp up` (pid {state.pid}, {state_path()}): {what}",
          file=sys.stderr, flush=True)
