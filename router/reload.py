"""Where the router's configuration comes from: the YAML file (watched) and the weights API.

The file is polled (stat, then content) rather than watched with inotify, because a Kubernetes
ConfigMap volume changes by swapping a symlink, which inotify on the file does not report.
An invalid new file is rejected and logged and the configuration in force stays. A weights
change through `PUT /v1/experiments/{name}/weights` lives in memory until the file changes
next; the file (or ConfigMap) written by the ramp controller stays the source of truth.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from router.config import ARMS, ConfigError, RouterConfig, load_config, parse_config
from router.core import Router
from serving.tfserving.errors import InvalidArgument, NotFound

log = logging.getLogger("router")


def with_addresses(config: RouterConfig, legacy_url: str | None = None, model_target: str | None = None) -> RouterConfig:
    """The config with backend addresses replaced (the `router --legacy-url/--model-target` flags)."""
    if not legacy_url and not model_target:
        return config
    data = config.model_dump(mode="json")
    if legacy_url:
        data["arms"]["legacy"]["backend"]["url"] = legacy_url
    if model_target:
        backend = data["arms"]["model"]["backend"]
        backend["target" if backend["kind"] == "tfserving_grpc" else "url"] = model_target
    return parse_config(data)


# (mtime_ns, size, inode, sha256 of the content) of the file.
_Fingerprint = tuple[int, int, int, str]


class ConfigFile:
    """The experiment YAML file, loaded with the process's address overrides applied."""

    def __init__(self, path: str | Path, transform: Callable[[RouterConfig], RouterConfig] = lambda c: c):
        self.path = Path(path)
        self.transform = transform
        self._fingerprint: _Fingerprint | None = None

    def load(self) -> RouterConfig:
        """Read and validate the file now (raises ConfigError)."""
        self._fingerprint = self._stat()
        return self.transform(load_config(self.path))

    def _stat(self) -> _Fingerprint | None:
        try:
            st = self.path.stat()  # follows symlinks: a ConfigMap swap changes the inode
            return (st.st_mtime_ns, st.st_size, st.st_ino, hashlib.sha256(self.path.read_bytes()).hexdigest())
        except OSError:
            return None

    def check(self, router: Router) -> bool:
        """Apply the file if it changed since the last look; True if a new config is in force."""
        fingerprint = self._stat()
        if fingerprint == self._fingerprint:
            return False
        self._fingerprint = fingerprint
        if fingerprint is None:
            router.reject("file", f"{self.path} cannot be read")
            return False
        try:
            config = self.transform(load_config(self.path))
        except ConfigError as err:
            router.reject("file", str(err))
            return False
        try:
            applied = router.apply(config, f"file {self.path}")
        except ConfigError as err:  # valid, but its backend cannot be built (a secret or certificate file unreadable)
            router.reject("file", str(err))
            return False
        if applied:
            # The ledger keeps ids as long as the signer accepts them: at once, not at the next report,
            # so a prune in between never drops ids a longer new TTL still accepts.
            router.outcomes.ledger.ttl_seconds = router.signer.ttl_seconds
        return applied

    async def watch(self, router: Router, interval: float) -> None:
        """Poll the file every `interval` seconds, forever."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.check(router)
            except Exception:
                log.exception("config watcher failed on %s", self.path)


def put_weights(router: Router, experiment: str, body: object) -> RouterConfig:
    """Apply `{"weights": {"legacy": w, "model": w}}` (one arm is enough: the other takes the rest)."""
    config = router.state.config
    if experiment != config.name:
        raise NotFound(f"unknown experiment {experiment!r}; this router runs {config.name!r}")
    weights = body.get("weights") if isinstance(body, dict) else None
    if not isinstance(weights, dict) or not weights or not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights.values()):
        router.reject("api", "body must be {\"weights\": {arm: number}}")
        raise InvalidArgument('body must be {"weights": {"legacy": number, "model": number}}')
    weights = {k: float(v) for k, v in weights.items()}
    if len(weights) == 1 and set(weights) <= set(ARMS):
        (arm, w), = weights.items()
        other = next(a for a in ARMS if a != arm)
        weights[other] = 1.0 - w
    try:
        new = config.with_weights(weights)
    except ConfigError as err:
        router.reject("api", str(err))
        raise InvalidArgument(str(err)) from None
    router.apply(new, "api")
    return new
