"""Fixtures shared by every tier. PostgreSQL for the tests that need it: ``pg_url``,
``pg_cluster``, ``new_pg_database`` (see ``tests/pg.py``); ``sqlite_engine``, a migrated
SQLite file in the test's temporary folder."""

import pytest

from storage import db

pytest_plugins = ["tests.pg"]


@pytest.fixture
async def sqlite_engine(tmp_path):
    engine = db.create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    await db.upgrade(engine)
    yield engine
    await engine.dispose()


def pytest_asyncio_loop_factories(config, item):
    """Every async test runs on uvloop, as the daemon does: asyncio's own loop once hid a
    uvloop-only bug (``call_at`` answering with a plain ``Handle``)."""
    import uvloop

    return {"uvloop": uvloop.new_event_loop}
