"""Fixtures of the ledger tests: one restartable PostgreSQL per module, a fresh database per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.router.ledger.pgserver import RestartablePostgres, require_postgres


@pytest.fixture(scope="module")
def pg() -> Iterator[RestartablePostgres]:
    server = RestartablePostgres(require_postgres())
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def pg_url(pg: RestartablePostgres) -> str:
    if pg.proc is None:  # a test that failed while the server was stopped must not break the next one
        pg.start()
    return pg.create_database()
