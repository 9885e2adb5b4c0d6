"""``smscenter incident report -c FILE --since … --until … [--account ID] [--format
markdown|json]``: the argparse side of ``incident.py`` (imported on use, so other verbs do not
load SQLAlchemy for it).

A ``support`` verb: the look-up key must be readable (``roles.keyring_for``), checked before
the database is opened; the report holds counts only. Each report leaves an audit row.

Exit codes: 0 done; 1 the role's key unreadable or a database problem; 2 wrong input (bad
dates, --until not after --since, an account neither configured nor in the database).
"""

from __future__ import annotations

import argparse
import json
import sys

from smscenter.cli.roles import Role, RoleError, audit, keyring_for
from smscenter.cli.verbs import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, add_config_option, load_for, when_arg

__all__ = ["add_arguments"]


def add_arguments(verbs) -> None:
    """Register ``incident report``."""
    incident = verbs.add_parser("incident", help="personal data breach: report")
    subs = incident.add_subparsers(dest="action", required=True, metavar="ACTION")
    rep = subs.add_parser(
        "report", help="what personal data an incident window concerns, per account: a notification draft",
        description="Per account, the categories of personal data stored or processed in the window "
        "(numbers, texts, MO, opt-outs, connection IPs), their records and distinct persons (by keyed hash) and "
        "countries, and the notification's fields to fill in (nature, consequences, measures, DPO "
        "contact). Counts only: needs the support role. Audited.",
    )
    add_config_option(rep)
    rep.add_argument("--since", required=True, type=when_arg, metavar="DATETIME|DURATION",
                     help="the window's start: 2026-05-01T09:00 (UTC) or 48h back from now")
    rep.add_argument("--until", required=True, type=when_arg, metavar="DATETIME|DURATION",
                     help="the window's end (excluded)")
    rep.add_argument("--account", default=None, metavar="ID", help="one account (default: all)")
    rep.add_argument("--format", choices=("markdown", "json"), default="markdown",
                     help="markdown (default, to edit) or json")
    rep.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    verb, settings = load_for(args)
    if settings is None:
        return EXIT_USAGE
    if args.until <= args.since:
        print(f"{verb}: --until must be after --since", file=sys.stderr)
        return EXIT_USAGE
    try:
        keyring_for(settings, Role.SUPPORT, verb)  # before any database access
    except RoleError as exc:
        print(exc, file=sys.stderr)
        return EXIT_FAILURE
    from smscenter.cli.incident_report import build_report, to_markdown
    from smscenter.cli.retention import run_db

    async def body(engine) -> int:
        async with engine.connect() as conn:
            report = await conn.run_sync(lambda c: build_report(c, args.since, args.until, args.account))
        if args.account is not None and settings.account(args.account) is None and not report["accounts"]:
            names = ", ".join(a.system_id for a in settings.accounts) or "none"
            print(f"{verb}: --account {args.account}: no such account (configured: {names}; "
                  "no data in the database either)", file=sys.stderr)
            return EXIT_USAGE
        held = report["total"]["held"]
        await audit(engine, "incident.report", args.account or "*",
                    f"window {report['window']['since']}..{report['window']['until']}: "
                    f"{len(report['accounts'])} accounts, {held['records']} records held, {held['persons']} persons held")
        print(json.dumps(report, indent=2) if args.format == "json" else to_markdown(report), end="\n" if args.format == "json" else "")
        return EXIT_OK

    return run_db(verb, settings, body)
