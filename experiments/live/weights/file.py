"""Weights in the experiment YAML file the local router watches, rewritten atomically (or in a weights file beside it)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import yaml

from experiments.config import ExperimentConfig, dump_config, load_config
from experiments.live.weights.base import WeightStore, WeightStoreError, check_expected
from router.config import ConfigError
from router.weights_file import parse_weights, weights_of, write_atomically


class FileWeightStore(WeightStore):
    """The YAML file at `path`; a write is a temp file plus rename, as a mounted ConfigMap changes.

    The router therefore never reads half a file. The file is rewritten from the parsed config, so
    comments in it are not kept; the fields and their values are.

    With `weights_path` (the file a router is given as `--weights`), the experiment file is only
    read and the weights go to that weights document (`router/weights_file.py`), which overrides
    the experiment file's weights while it names its experiment and salt, as the router reads it.
    """

    def __init__(self, path: str | Path, weights_path: str | Path | None = None):
        self.path = Path(path)
        self.weights_path = Path(weights_path) if weights_path is not None else None
        self.description = f"file {self.path}" + (f", weights in {self.weights_path}" if self.weights_path else "")

    def load(self) -> ExperimentConfig:
        try:
            config = load_config(self.path)
        except ConfigError as err:
            raise WeightStoreError(str(err)) from None
        if self.weights_path is None:
            return config
        try:
            doc = parse_weights(self.weights_path.read_bytes(), str(self.weights_path))
        except FileNotFoundError:
            return config  # no weights written yet: the experiment file's are the starting point
        except OSError as err:
            raise WeightStoreError(f"cannot read {self.weights_path}: {err.strerror}") from None
        except ConfigError as err:
            raise WeightStoreError(str(err)) from None
        if doc.mismatch(config) is not None:
            return config  # for another experiment or salt: the router ignores it too
        try:
            return config.with_weights(dict(doc.weights))
        except ConfigError as err:
            raise WeightStoreError(f"{self.weights_path}: {err}") from None

    def apply(self, weights: Mapping[str, float], expected: Mapping[str, float] | None = None) -> ExperimentConfig:
        current = self.load()
        check_expected(current, expected, self.description)
        try:
            updated = current.with_weights(dict(weights))
        except ConfigError as err:
            raise WeightStoreError(f"refusing to write weights {dict(weights)}: {err}") from None
        if self.weights_path is not None:
            try:
                write_atomically(self.weights_path, weights_of(updated).dump())
            except OSError as err:
                raise WeightStoreError(f"cannot write {self.weights_path}: {err.strerror}") from None
            return updated
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
