"""Where the router's configuration comes from: the YAML file (watched), a weights file (watched), and the weights API.

The files are polled (stat, then content) rather than watched with inotify, because a Kubernetes
ConfigMap volume changes by swapping a symlink, which inotify on the file does not report.
An invalid new file is rejected and logged and the configuration in force stays; every file
rejected, for whatever reason (unreadable, not UTF-8, not YAML, not a valid experiment, a
backend that cannot be built, a weights file for another experiment or salt), is one
`modelramp_config_reloads_total{source="file", result="rejected"}`.

A file is applied only once it is complete, because almost every section has a default: the
prefix of a file caught mid-write often parses and validates (a model timeout of `2` ms cut from
`200`, a target `127.0.0.1:186` cut from `127.0.0.1:18600`), and was applied until the rest
arrived. A look reads the content between two stats; a file whose size, mtime or inode moved
meanwhile, or whose length is not its size, is being written and is not parsed at all. A new
file (another inode: renamed into place, as the ramp controller, editors that write a copy and a
ConfigMap's symlink swap do) is complete when one look sees it steady, and is applied at once. A
file changed in place (`>` in a shell, `write_text`) can be caught between two writes, so it is
applied only once its fingerprint (mtime, size, inode, SHA-256 of the content) has stayed the
same for `SETTLE_SECONDS`: a writer pausing longer than that between writes is still caught,
which is why writers should write a temporary file and rename it over the experiment file.

The weights file (`modelramp router --weights FILE`, `router/weights_file.py`) is read the same
way. The weights in force are a function of the two files' content, so every replica reading
them agrees, a restarted one included: the config's weights, replaced by the weights file's
when that file exists and names the config's experiment (and salt, when it gives one). A
weights file for another experiment or salt is rejected (counted) and the config's own weights
apply; one that disappears (its ConfigMap deleted) leaves the config's weights; one that cannot
be parsed is rejected and the weights last read stay, as for the config file.

`PUT /v1/experiments/{name}/weights` writes through the same files, so every replica reading
them, the ramp controller and `modelramp analyze` agree, and the next look at the file keeps the
change instead of reverting it: into the weights file when the router was given one, else into
the experiment file itself (its arms' `weight` fields, nothing else changed; comments are not
kept, as when the ramp controller rewrites it), each by a temporary file renamed over it. A
router whose files cannot be written (a ConfigMap volume on Kubernetes is read-only) answers 409
`WeightsReadOnly` naming where the weights are changed there, and changes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import grpc
import yaml

from router.config import ARMS, ConfigError, RouterConfig, load_config, parse_config, parse_yaml
from router.core import Router
from router.weights_file import Weights, parse_weights, weights_of, write_atomically
from serving.tfserving.errors import InvalidArgument, NotFound, UserFacingError

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
_INODE = 2

# How long a file changed in place must stay the same before it is applied. Writers that are not
# atomic finish within milliseconds unless they stall; two seconds covers a stall of 1.5 s, as long
# as a probe once saw a half-written file in force. The ramp controller renames, so its weight
# changes are not delayed at all. A constant, not yet a field of the experiment file's `router:`
# section; `ConfigFile(settle_seconds=...)` takes another value.
SETTLE_SECONDS = 2.0

class WeightsReadOnly(UserFacingError):
    """The weights API cannot write the router's weights store (read-only, or none): 409, and the message says where to change them."""

    http_status = 409
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


READ_ONLY_HINT = ("on Kubernetes the weights are the ramp controller's: change them with `modelramp ramp`, or by editing the "
                  "weights ConfigMap (the chart's `<release>-weights`, key weights.yaml), which every replica reads")


# What one look at a watched file found.
_Poll = Literal["same", "waiting", "changed", "gone", "unreadable"]


class _Watched:
    """One file read complete or not at all: its fingerprint, and whether a change is complete enough to use."""

    def __init__(self, path: Path, settle_seconds: float):
        self.path = path
        self.settle_seconds = settle_seconds
        self.fingerprint: _Fingerprint | None = None  # of the file last used or rejected
        self._pending: _Fingerprint | None = None  # a file changed in place, waiting to settle
        self._pending_since = 0.0  # time.monotonic() when `_pending` was first seen

    def look(self) -> tuple[_Fingerprint, bytes, bool]:
        """(fingerprint, content, steady) of the file; OSError if it cannot be read (FileNotFoundError: not there).

        Not steady: the file moved while it was read (a writer is at work), so its content may be
        any prefix of what is being written.
        """
        before = os.stat(self.path)  # follows symlinks: a ConfigMap swap changes the inode
        data = self.path.read_bytes()
        after = os.stat(self.path)
        steady = ((before.st_mtime_ns, before.st_size, before.st_ino) == (after.st_mtime_ns, after.st_size, after.st_ino)
                  and len(data) == after.st_size)
        return (after.st_mtime_ns, after.st_size, after.st_ino, hashlib.sha256(data).hexdigest()), data, steady

    def _complete(self, fingerprint: _Fingerprint, steady: bool, now: float) -> bool:
        """Is this changed file complete enough to use? Renamed into place and steady: yes; in place: once settled."""
        if not steady:
            self._pending = None
            return False
        if self.fingerprint is not None and fingerprint[_INODE] != self.fingerprint[_INODE]:
            return True  # another inode: renamed into place, written before it was visible
        if fingerprint != self._pending:
            self._pending, self._pending_since = fingerprint, now
        return now - self._pending_since >= self.settle_seconds

    def poll(self, now: float) -> tuple[_Poll, bytes]:
        """Look once: "changed" with the content to use, "gone"/"unreadable" once per disappearance, else nothing new."""
        try:
            fingerprint, data, steady = self.look()
        except OSError as err:
            self._pending = None
            if self.fingerprint is None:  # once per disappearance, not at every look
                return "same", b""
            self.fingerprint = None
            return ("gone" if isinstance(err, FileNotFoundError) else "unreadable"), b""
        if fingerprint == self.fingerprint:
            self._pending = None  # written back as it was: nothing to wait for
            return "same", b""
        if not self._complete(fingerprint, steady, now):
            return "waiting", b""
        self.fingerprint, self._pending = fingerprint, None
        return "changed", data


class ConfigFile:
    """The experiment YAML file, loaded with the process's address overrides applied, and its weights file if any."""

    def __init__(self, path: str | Path, transform: Callable[[RouterConfig], RouterConfig] = lambda c: c,
                 settle_seconds: float = SETTLE_SECONDS, weights: str | Path | None = None):
        self.path = Path(path)
        self.transform = transform
        self.settle_seconds = settle_seconds
        self.weights_path = Path(weights) if weights is not None else None
        self._config = _Watched(self.path, settle_seconds)
        self._weights = _Watched(self.weights_path, settle_seconds) if self.weights_path is not None else None
        self._base: RouterConfig | None = None  # the config file's last valid content, its own weights
        self._doc: Weights | None = None  # the weights file's last valid content; None: no file
        #: Why the weights file was not used at `load()` (the router counts them once it exists).
        self.load_rejections: list[str] = []

    @property
    def base(self) -> RouterConfig | None:
        """The config file's last valid content, with its own weights (before the weights file)."""
        return self._base

    def load(self) -> RouterConfig:
        """Read and validate the files now (ConfigError for the config file; a bad weights file goes to `load_rejections`)."""
        try:
            self._config.fingerprint = self._config.look()[0]
        except OSError:
            self._config.fingerprint = None
        self._base = self.transform(load_config(self.path))
        self.load_rejections = []
        if self._weights is not None:
            try:
                fingerprint, data, steady = self._weights.look()
            except FileNotFoundError:
                pass  # no weights written yet: the config's weights are the starting point
            except OSError as err:
                self.load_rejections.append(f"{self.weights_path} cannot be read: {err.strerror or err}")
            else:
                if steady:  # else being written: the first look after start reads it
                    self._weights.fingerprint = fingerprint
                    try:
                        self._doc = parse_weights(data, str(self.weights_path))
                    except ConfigError as err:
                        self.load_rejections.append(str(err))
        return self._effective(self.load_rejections)

    def _effective(self, rejections: list[str]) -> RouterConfig:
        """The config file's content with the weights file's weights when they are for it; why not, in `rejections`."""
        assert self._base is not None
        if self._doc is None:
            return self._base
        try:
            return self._doc.apply_to(self._base)
        except ConfigError as err:
            rejections.append(f"{self.weights_path}: {err}; the config's own weights {self._base.weights} apply")
            return self._base

    def _parse(self, data: bytes) -> RouterConfig:
        """The content that was fingerprinted (not the file read again), validated; ConfigError for anything wrong."""
        document = parse_yaml(data, str(self.path))
        try:
            return self.transform(parse_config(document))
        except ConfigError as err:
            raise ConfigError(f"{self.path}: {err}") from None

    def check(self, router: Router, now: float | None = None) -> bool:
        """Apply the files if they changed since the last look and are complete; True if a new config is in force."""
        now = time.monotonic() if now is None else now
        source: str | None = None  # the file whose change is applied, for the log and the metric
        found, data = self._config.poll(now)
        if found in ("gone", "unreadable"):
            router.reject("file", f"{self.path} cannot be read")
        elif found == "changed":
            try:
                self._base = self._parse(data)
                source = f"file {self.path}"
            except ConfigError as err:
                router.reject("file", str(err))
        if self._weights is not None:
            found, data = self._weights.poll(now)
            if found == "unreadable":
                router.reject("file", f"{self.weights_path} cannot be read")
            elif found == "gone":
                if self._doc is not None:
                    log.warning("weights file %s is gone: the config's own weights apply", self.weights_path)
                    self._doc = None
                    source = source or f"file {self.weights_path}"
            elif found == "changed":
                try:
                    self._doc = parse_weights(data, str(self.weights_path))
                    source = source or f"file {self.weights_path}"
                except ConfigError as err:
                    router.reject("file", str(err))
        if source is None:
            return False
        rejections: list[str] = []
        config = self._effective(rejections)
        for reason in rejections:
            router.reject("file", reason)
        try:
            applied = router.apply(config, source)
        except ConfigError as err:  # valid, but its backend cannot be built (a secret or certificate file unreadable)
            router.reject("file", str(err))
            return False
        if applied:
            # The ledger keeps ids as long as the signer accepts them: at once, not at the next report,
            # so a prune in between never drops ids a longer new TTL still accepts.
            router.outcomes.ledger.ttl_seconds = router.signer.ttl_seconds
        return applied

    def write_weights(self, config: RouterConfig) -> Path:
        """Write `config`'s weights where this router reads them (the weights file, else the experiment file); returns the file.

        Raises WeightsReadOnly, naming where to change them instead, when that file cannot be written.
        """
        if self.weights_path is not None:
            target, text = self.weights_path, weights_of(config).dump()
        else:
            target, text = self.path, self._config_with_weights(config)
        try:
            write_atomically(target, text)
        except OSError as err:
            raise WeightsReadOnly(f"cannot write the weights: {target} is not writable here ({err.strerror or err}); "
                                  f"{READ_ONLY_HINT}") from None
        log.info("weights %s written to %s", config.weights, target)
        return target

    def _config_with_weights(self, config: RouterConfig) -> str:
        """The experiment file as it is, but with `config`'s arm weights (WeightsReadOnly if it now runs another experiment)."""
        try:
            document = yaml.safe_load(self.path.read_text(encoding="utf-8"))
            body = document["experiment"] if isinstance(document, dict) and set(document) == {"experiment"} else document
            arms = body["arms"]
            if body.get("name") != config.name:
                raise WeightsReadOnly(f"{self.path} now runs experiment {body.get('name')!r}, not {config.name!r}: "
                                      "nothing written; its next look applies it")
            for arm, weight in config.weights.items():
                arms[arm]["weight"] = weight
            parse_config(document)  # what the router will read back
        except (OSError, yaml.YAMLError, TypeError, KeyError, AttributeError, ConfigError) as err:
            raise WeightsReadOnly(f"cannot write the weights into {self.path}: it cannot be read back as an experiment now "
                                  f"({type(err).__name__}: {err}); nothing written") from None
        return yaml.safe_dump(document, sort_keys=False)

    async def watch(self, router: Router, interval: float) -> None:
        """Poll the files every `interval` seconds, forever."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.check(router)
            except Exception as err:  # a file that breaks something unforeseen is still a rejected file
                log.exception("config watcher failed on %s", self.path)
                router.reject("file", f"{self.path}: {type(err).__name__}: {err}")


def put_weights(router: Router, experiment: str, body: object, source: ConfigFile | None = None) -> RouterConfig:
    """Write and apply `{"weights": {"legacy": w, "model": w}}` (one arm is enough: the other takes the rest).

    Written through `source` (`ConfigFile.write_weights`) before it is put in force; without a
    source, or one that cannot be written, WeightsReadOnly and nothing changes.
    """
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
    if source is None:
        raise WeightsReadOnly(f"this router has no weights store to write to; {READ_ONLY_HINT}")
    source.write_weights(new)
    router.apply(new, "api")
    return new
