"""Weights in the experiment YAML file the local router watches, rewritten atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import yaml

from experiments.config import ExperimentConfig, dump_config, load_config
from experiments.live.weights.base import WeightStore, WeightStoreError, check_expected
from router.config import ConfigError


class FileWeightStore(WeightStore):
    """The YAML file at `path`; a write is a temp file plus rename, as a mounted ConfigMap changes.

    The router therefore never reads half a file. The file is rewritten from the parsed config, so
    comments in it are not kept; the fields and their values are.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.description = f"file {self.path}"

    def load(self) -> ExperimentConfig:
        try:
            return load_config(self.path)
        except ConfigError as err:
            raise WeightStoreError(str(err)) from None

    def apply(self, weights: Mapping[str, float], expected: Mapping[str, float] | None = None) -> ExperimentConfig:
        current = self.load()
        check_expected(current, expected, self.description)
        try:
            updated = current.with_weights(dict(weights))
        except ConfigError as err:
            raise WeightStoreError(f"refusing to write weights {dict(weights)}: {err}") from None
        text = dump_config(updated)
        if self._wrapped():
            text = yaml.safe_dump({"experiment": yaml.safe_load(text)}, sort_keys=False)
        self._replace(text)
        return updated

    def _wrapped(self) -> bool:
        # Keep an `experiment:` top-level key if the file had one (parse_config accepts both).
        try:
            data = yaml.safe_load(self.path.read_text())
        except (OSError, yaml.YAMLError):
            return False
        return isinstance(data, dict) and set(data) == {"experiment"}

    def _replace(self, text: str) -> None:
        try:
            mode = self.path.stat().st_mode & 0o777
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        except OSError as err:
            raise WeightStoreError(f"cannot write {self.path}: {err.strerror}") from None
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())  # the new weights survive a crash right after the rename
            os.chmod(tmp, mode)
            os.replace(tmp, self.path)
        except OSError as err:
            Path(tmp).unlink(missing_ok=True)
            raise WeightStoreError(f"cannot write {self.path}: {err.strerror}") from None
