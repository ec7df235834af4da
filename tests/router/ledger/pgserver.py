"""A PostgreSQL server the ledger tests can stop and start again on the same data directory and port.

`tests/support/postgres.py` starts one server for the life of a test; the outage test needs the
database to vanish mid-load and come back with its data, as a restarted pod or a failover does.
Same conventions as that helper: Debian's binaries, trust auth on loopback, `runuser` when root,
skip on a laptop without the binaries and fail in CI (MODELRAMP_REQUIRE_BINARIES).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.support.postgres import postgres_bindir
from tests.support.processes import free_port, wait_until


def require_postgres() -> Path:
    """The binaries' folder, or skip (laptop) / fail (CI) as tests/support/postgres.py does."""
    bindir = postgres_bindir()
    if bindir is None:
        reason = "PostgreSQL binaries (initdb, postgres) are not installed (Debian: apt-get install postgresql)"
        if os.environ.get("MODELRAMP_REQUIRE_BINARIES"):
            pytest.fail(f"required binary missing in CI: {reason}")
        pytest.skip(reason)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install 'modelramp[postgres]')")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: PostgreSQL will not start as root")
    return bindir


class RestartablePostgres:
    """initdb once; `start()` and `stop()` any number of times on the same port; `remove()` at the end."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.root = Path(tempfile.mkdtemp(prefix="modelramp-ledger-pg-"))
        self.data, self.sock = self.root / "data", self.root / "sock"
        self.sock.mkdir()
        if self.as_user:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sock, "postgres")
        subprocess.run([*self.as_user, str(bindir / "initdb"), "-D", str(self.data), "-U", "modelramp", "--auth=trust",
                        "-E", "UTF8"], check=True, capture_output=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql+psycopg://modelramp@127.0.0.1:{self.port}/{dbname}"

    def _conninfo(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=modelramp dbname={dbname}"

    def start(self) -> None:
        import psycopg

        with open(self.root / "postgres.log", "ab") as log_file:
            self.proc = subprocess.Popen(
                [*self.as_user, str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-h", "127.0.0.1", "-k", str(self.sock)], stdout=log_file, stderr=subprocess.STDOUT)

        def accepting() -> bool:
            with psycopg.connect(self._conninfo(), connect_timeout=1):
                return True

        wait_until(accepting, timeout=60, what="PostgreSQL accepting connections", proc=self.proc)

    def stop(self) -> None:
        """Fast shutdown, as a pod being killed: sessions are cut and open transactions rolled back."""
        if self.proc is None:
            return
        subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w"],
                       check=True, capture_output=True)
        self.proc.wait(30)
        self.proc = None

    def create_database(self) -> str:
        """A fresh database (one per test, so tests never see each other's rows); its URL."""
        import psycopg

        name = "ledger_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self._conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def count(self, url: str, sql: str) -> int:
        import psycopg

        with psycopg.connect(self._conninfo(url.rsplit("/", 1)[1])) as conn:
            return conn.execute(sql).fetchone()[0]

    def remove(self) -> None:
        try:
            if self.proc is not None:
                self.proc.terminate()
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
