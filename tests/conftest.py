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
