"""Alembic environment: runs on the connection handed over by ``storage.db.upgrade``."""

from alembic import context

from storage.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - we always run in-process
    raise RuntimeError("run migrations with `smscenter db upgrade` (storage.db.upgrade)")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
