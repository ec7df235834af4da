"""Fixtures of the experiments tests: the audit store on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import pytest

from experiments.store import Store, metadata
from tests.support.postgres import postgres_server


@pytest.fixture(scope="session")
def postgres_url():
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    """An empty audit store, once on SQLite and once on PostgreSQL (started only when a test asks for it)."""
    if request.param == "sqlite":
        s = Store.open(tmp_path / "audit.db")
    else:
        s = Store.open(request.getfixturevalue("postgres_url"))
        metadata.drop_all(s.engine)  # a clean schema per test on the shared server
        s = Store(s.engine)
    yield s
    s.close()
