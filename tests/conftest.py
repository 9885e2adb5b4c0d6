"""Fixtures shared by every tier. PostgreSQL for the tests that need it: ``pg_url``,
``pg_cluster``, ``new_pg_database`` (see ``tests/pg.py``)."""

pytest_plugins = ["tests.pg"]
