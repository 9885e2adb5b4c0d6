"""``smscenter audit list``: who read or changed what, from the audit log.

Every blacklist change (``storage.optouts``) and every CLI verb that reads clear data or
changes data (``roles.audit``) leaves a row: time, the OS user (``actor``), the verb
(``blacklist.add``, ``retention.run`` …), its scope (an account, ``sc:<short code>`` or
``*``) and a detail made of counts — never a number in clear. This verb shows them, newest
first, cut by ``--since`` (a date-time, or a duration back from now: ``24h``, ``7d``),
``--actor``, ``--verb`` (a prefix: ``blacklist`` matches ``blacklist.add``) and ``--limit``.

A ``support`` verb (``roles.py``): it needs the look-up key's read access, though the rows
hold no clear data; ops cannot read who looked at what. Listing is not itself audited (it
reads no personal data).

Exit codes: 0 done; 1 the role's key unreadable or a database problem; 2 wrong input.
"""

from __future__ import annotations

import argparse
import sys

from smscenter.cli.roles import Role, RoleError, keyring_for
from smscenter.cli.verbs import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, add_config_option, load_for, positive_int, when_arg
from smscenter.runtime.timers import utc_stamp

__all__ = ["add_arguments"]


def add_arguments(verbs) -> None:
    """Register ``audit list``."""
    audit = verbs.add_parser("audit", help="the audit log: list")
    subs = audit.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = subs.add_parser(
        "list", help="who read or changed what: time, actor, verb, scope, detail (newest first)",
        description="The audit log, newest first: time (UTC), the OS user, the verb, its scope "
        "and its counts (never a number in clear). Needs the support role.",
    )
    add_config_option(ls)
    ls.add_argument("--since", type=when_arg, default=None, metavar="DATETIME|DURATION",
                    help="only rows from then on: 2026-05-01T09:00 (UTC) or 24h, 7d back from now")
    ls.add_argument("--actor", default=None, metavar="NAME", help="only this OS user's rows")
    ls.add_argument("--verb", dest="verb_prefix", default=None, metavar="PREFIX",
                    help="only verbs starting with this (blacklist, subject.export …)")
    ls.add_argument("--limit", type=positive_int, default=100, metavar="N", help="at most N rows (default 100)")
    ls.set_defaults(func=_cmd)


async def audit_rows(conn, since: float | None = None, actor: str | None = None, verb: str | None = None,
                     limit: int = 100) -> list[dict]:
    """The rows matching the filters, newest first (``ix_audit_at``)."""
    from sqlalchemy import select

    from storage.schema import audit_log

    query = select(audit_log).order_by(audit_log.c.at.desc(), audit_log.c.id.desc()).limit(limit)
    if since is not None:
        query = query.where(audit_log.c.at >= since)
    if actor is not None:
        query = query.where(audit_log.c.actor == actor)
    if verb:
        query = query.where(audit_log.c.action.startswith(verb, autoescape=True))
    return [dict(r) for r in (await conn.execute(query)).mappings()]


def _cmd(args: argparse.Namespace) -> int:
    verb, settings = load_for(args)
    if settings is None:
        return EXIT_USAGE
    try:
        keyring_for(settings, Role.SUPPORT, verb)  # before any database access
    except RoleError as exc:
        print(exc, file=sys.stderr)
        return EXIT_FAILURE
    from smscenter.cli.retention import run_db

    async def body(engine) -> int:
        async with engine.connect() as conn:
            rows = await audit_rows(conn, args.since, args.actor, args.verb_prefix, args.limit)
        print(f"{'TIME (UTC)':<19} {'ACTOR':<16} {'VERB':<20} {'SCOPE':<16} DETAIL")
        for r in rows:
            print(f"{utc_stamp(r['at']):<19} {r['actor']:<16} {r['action']:<20} {r['scope']:<16} {r['detail']}")
        more = f" (the newest {args.limit}; --limit for more)" if len(rows) == args.limit else ""
        print(f"{len(rows)} rows{more}")
        return EXIT_OK

    return run_db(verb, settings, body)
