"""Which model versions are loaded, kept in step with the model folders by polling.

Mirrors TF Serving's behaviour: a model's base path holds numeric version folders; the version
policy (latest N, all, or specific versions) says which to serve; a new folder is picked up on
the next poll without a restart; a version that fails to load is reported with its error and
never replaces a working one (the old version is unloaded only once its successor is
AVAILABLE); each version is loaded once.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from serving.model_server.servable import Servable
from serving.tfserving.errors import NotFound

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSource:
    """One model as a `--model_config_file` entry (or the `--model_name/--model_base_path` pair) describes it."""

    name: str
    base_path: Path
    policy: str = "latest"  # latest | all | specific
    latest_count: int = 1
    specific_versions: tuple[int, ...] = ()
    version_labels: dict[str, int] = field(default_factory=dict)


@dataclass
class VersionStatus:
    version: int
    state: str  # START, LOADING, AVAILABLE, UNLOADING, END (TF Serving's ModelVersionStatus states)
    error_code: str = "OK"
    error_message: str = ""
    mtime: float = 0.0


def _version_dirs(base: Path) -> dict[int, Path]:
    if not base.is_dir():
        return {}
    return {int(p.name): p for p in base.iterdir() if p.is_dir() and p.name.isdigit()}


class ModelRegistry:
    """Loaded servables for every configured model; thread-safe reads, polling loads."""

    def __init__(self, sources: list[ModelSource], session_config=None):
        self.session_config = session_config  # every version's TensorFlow session (threads)
        self.sources = {s.name: s for s in sources}
        self._servables: dict[str, dict[int, Servable]] = {s.name: {} for s in sources}
        self._status: dict[str, dict[int, VersionStatus]] = {s.name: {} for s in sources}
        self._lock = threading.Lock()  # guards the two dicts above
        self._poll_lock = threading.Lock()  # one poll at a time, so no version loads twice

    def poll(self) -> None:
        """Bring loaded versions in line with the folders and each model's policy."""
        with self._poll_lock:
            for source in self.sources.values():
                self._poll_model(source)

    def _wanted(self, source: ModelSource, dirs: dict[int, Path]) -> list[int]:
        status = self._status[source.name]

        def usable(v: int) -> bool:  # a broken version is retried only when its folder changes
            s = status.get(v)
            return not (s and s.state == "END" and s.error_code != "OK" and s.mtime == dirs[v].stat().st_mtime)

        candidates = sorted((v for v in dirs if usable(v)), reverse=True)
        if source.policy == "all":
            return candidates
        if source.policy == "specific":
            return [v for v in candidates if v in source.specific_versions]
        return candidates[: source.latest_count]

    def _poll_model(self, source: ModelSource) -> None:
        dirs = _version_dirs(source.base_path)
        wanted = self._wanted(source, dirs)
        loaded = self._servables[source.name]
        for version in wanted:
            if version not in loaded:
                self._load(source, version, dirs[version])
        with self._lock:
            available = [v for v in wanted if v in loaded]
            # Keep serving what we have until a wanted version is up (availability first).
            keep = set(available) if available else set(loaded)
            for version in [v for v in loaded if v not in keep]:
                del loaded[version]
                self._status[source.name][version] = VersionStatus(version, "END")
                log.info("unloaded %s version %d", source.name, version)

    def _load(self, source: ModelSource, version: int, path: Path) -> None:
        status = self._status[source.name]
        status[version] = VersionStatus(version, "LOADING")
        try:
            servable = Servable(source.name, version, path, self.session_config)
        except Exception as err:  # noqa: BLE001 - any load failure is reported, never raised into the server
            status[version] = VersionStatus(version, "END", "UNKNOWN", f"failed to load {path}: {type(err).__name__}: {err}", path.stat().st_mtime)
            log.error("model %s version %d failed to load: %s", source.name, version, status[version].error_message)
            return
        with self._lock:
            self._servables[source.name][version] = servable
            status[version] = VersionStatus(version, "AVAILABLE")
        log.info("loaded %s version %d from %s", source.name, version, path)

    def get(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a ModelSpec asks for; NotFound with TF Serving's wording otherwise."""
        with self._lock:
            versions = self._servables.get(name)
            if versions is None:
                raise NotFound(f"Servable not found for request: Latest({name})")
            if label is not None:
                labelled = self.sources[name].version_labels.get(label)
                if labelled is None:
                    raise NotFound(f"Unrecognized servable version label: {label}")
                version = labelled
            if version is None:
                if not versions:
                    raise NotFound(f"Servable not found for request: Latest({name})")
                return versions[max(versions)]
            if version not in versions:
                raise NotFound(f"Servable not found for request: Specific({name}, {version})")
            return versions[version]

    def statuses(self, name: str, version: int | None = None) -> list[VersionStatus]:
        with self._lock:
            if name not in self._status:
                raise NotFound(f"Could not find any versions of model {name}")
            found = sorted(self._status[name].values(), key=lambda s: s.version)
        if version is not None:
            found = [s for s in found if s.version == version]
            if not found:
                raise NotFound(f"Could not find version {version} of model {name}")
        return found

    def model_names(self) -> list[str]:
        return sorted(self.sources)
