"""``smscenter db status|upgrade -c FILE``: the database schema, for administrators.

The daemon creates or upgrades the schema itself at start (when it knows the schema; a
schema upgraded by a newer smscenter makes it refuse to start instead). These verbs let an
administrator look before a deployment — ``status`` exits 0 when the schema is current, 1
when an upgrade is due or the schema is newer than this code — and upgrade on purpose, e.g.
while the nodes sharing a PostgreSQL are stopped. Both are safe beside a running daemon:
``upgrade`` takes the same lock as start-up.

Both are ``ops`` verbs (``roles.py``): they read no key. An upgrade of an existing schema
leaves an audit row (``db.upgrade``: from and to which revision); creating the schema of a new
database does not (it changes no data).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from smscenter.cli.verbs import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, add_actions, load_for


def add_arguments(verbs) -> None:
    """Register ``db status`` and ``db upgrade`` on the ``smscenter`` sub-parsers."""
    add_actions(verbs, "db", "the database schema: status, upgrade", [
        ("status", "the schema's revision and this smscenter's (exit 1 if they differ)", _status),
        ("upgrade", "create or upgrade the schema to this smscenter's", _upgrade),
    ], _cmd)


def _cmd(args: argparse.Namespace) -> int:
    verb, settings = load_for(args)
    if settings is None:
        return EXIT_USAGE
    from storage import db

    async def main() -> int:
        engine = db.create_engine(settings.storage.url)
        try:
            return await args.run(engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except db.SchemaTooNew as exc:
        print(f"{verb}: {exc}", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - a database that cannot be reached, a failed migration
        print(f"{verb}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return EXIT_FAILURE


async def _status(engine) -> int:
    from storage import db

    current, head = await db.current_revision(engine), db.head_revision()
    if current == head:
        print(f"schema {current}: current")
        return EXIT_OK
    if current is None:
        print(f"no schema yet (new database): `smscenter db upgrade` or the daemon's start creates {head}")
    elif db.known_revision(current):
        print(f"schema {current}: an upgrade to {head} is due (`smscenter db upgrade`, or the daemon's start)")
    else:
        print(f"schema {current}: unknown to this smscenter (schema {head}); a newer smscenter upgraded it")
    return EXIT_FAILURE


async def _upgrade(engine) -> int:
    from storage import db

    from smscenter.cli.roles import audit

    before, after = await db.upgrade(engine)
    if before == after:
        print(f"schema {after}: already current")
    else:
        if before is not None:  # an existing schema changed (creating a new one is the install)
            await audit(engine, "db.upgrade", "*", f"schema {before} -> {after}")
        print(f"schema upgraded: {before or 'none (new database)'} -> {after}")
    return EXIT_OK
