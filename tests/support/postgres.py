"""A throwaway PostgreSQL server (Debian's binaries) on a free loopback port, for the store's tests.

PostgreSQL refuses to run as root, so when the suite runs as root the server runs as the
`postgres` system user through `runuser`. Without the binaries the test skips on a laptop and fails in CI (`.ci/run`
installs Debian's `postgresql` and sets MODELRAMP_REQUIRE_BINARIES).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.processes import free_port, wait_until


def postgres_bindir() -> Path | None:
    """The folder of Debian's PostgreSQL binaries (initdb, postgres, pg_ctl), or None."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start PostgreSQL with trust auth; yields a SQLAlchemy URL; stops and deletes it afterwards."""
    bindir = postgres_bindir()
    if bindir is None:
        reason = "PostgreSQL binaries (initdb, postgres) are not installed (Debian: apt-get install postgresql)"
        if os.environ.get("MODELRAMP_REQUIRE_BINARIES"):
            pytest.fail(f"required binary missing in CI: {reason}")
        pytest.skip(reason)
    try:
        import psycopg
    except ImportError:
        pytest.skip("psycopg is not installed (pip install 'modelramp[postgres]')")
    as_user: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: PostgreSQL will not start as root")
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="modelramp-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if as_user:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    log = root / "postgres.log"
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "modelramp", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    port = free_port()
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            [*as_user, str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1", "-k", str(sock)],
            stdout=log_file, stderr=subprocess.STDOUT,
        )
    url = f"postgresql+psycopg://modelramp@127.0.0.1:{port}/postgres"
    try:
        import psycopg

        def accepting() -> bool:
            with psycopg.connect(f"host=127.0.0.1 port={port} user=modelramp dbname=postgres", connect_timeout=1):
                return True

        wait_until(accepting, timeout=60, what="PostgreSQL accepting connections", proc=proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)
