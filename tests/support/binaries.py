"""External programs the suite needs: skip on a laptop without them, fail in CI.

CI sets MODELRAMP_REQUIRE_BINARIES=1 (see .ci/run), which turns a missing binary into a test
failure, so nothing that matters is skipped silently where it counts.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_binary(name: str, package: str = "prometheus") -> str:
    """The full path of `name`, or skip (laptop) / fail (CI) with a clear reason naming the Debian `package`."""
    path = shutil.which(name)
    if path:
        return path
    reason = f"`{name}` is not on the PATH (Debian: apt-get install {package}); .ci/run installs it"
    if os.environ.get("MODELRAMP_REQUIRE_BINARIES"):
        pytest.fail(f"required binary missing in CI: {reason}")
    pytest.skip(reason)
