"""``smscenter retention run`` and ``smscenter billing report``: the purge by hand, and what
billing keeps of it.

``retention run -c FILE [--dry-run]`` runs the very purge the daemon runs daily
(``retention.py``: same batches, same transactions, safe beside a running daemon) and prints
the rows it removed — or, dry, would remove — per category, table and account. No number or
text is ever printed: only counts.

``billing report -c FILE --account ID --month YYYY-MM [--format table|csv|json]`` prints an
account's month per UTC day, destination country, category, sender and final state: message
and segment counts. Messages already purged are read from ``billing_days``, the others from
``messages``, so the report is the same before and after a purge.

Both upgrade the schema first, like the daemon's start. Roles (``roles.py``): ``retention
run`` is an ``ops`` verb — it needs no key; when its user can read the data keys (dpo) they
are used only to derive the country of rows stored before the country was recorded, else
those rows are counted under "". A run that removes rows leaves an audit row
(``retention.run``: rows per category). ``billing report`` is a ``support`` verb (the
look-up key must be readable, though the aggregates hold no number at all).

Exit codes: 0 done; 1 a database problem; 2 wrong input (bad config, a month that is not
YYYY-MM, an account neither configured nor found in the database), nothing done.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import re
import sys
from datetime import datetime, timezone

from smscenter.cli.roles import Role, RoleError, audit, keyring_for
from smscenter.cli.verbs import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, add_config_option, load_for


def _month(text: str) -> tuple[float, float]:
    m = re.fullmatch(r"(\d{4})-(\d{2})", text)
    if m is None or not 1 <= int(m[2]) <= 12:
        raise argparse.ArgumentTypeError(f"{text!r} is not a month: expected YYYY-MM, e.g. 2026-05")
    year, month = int(m[1]), int(m[2])
    start = datetime(year, month, 1, tzinfo=timezone.utc)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=timezone.utc)
    return start.timestamp(), end.timestamp()


def add_arguments(verbs) -> None:
    """Register ``retention run`` and ``billing report``."""
    retention = verbs.add_parser("retention", help="the retention purge: run (or --dry-run)")
    subs = retention.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = subs.add_parser(
        "run", help="delete what is past its retention now; print the rows removed per category and account",
        description="Delete, in bounded batches, what is past its retention ([retention], "
        "[account.retention]): ended messages with their parts and receipts, MO, invalid numbers, "
        "old billing aggregates, old connection-log rows. Opt-outs and messages not yet ended are never removed. Prints "
        "the rows removed per category, table and account.",
    )
    add_config_option(run)
    run.add_argument("--dry-run", action="store_true", help="count what would go, remove nothing")
    run.set_defaults(func=_cmd_retention)

    billing = verbs.add_parser("billing", help="billing aggregates: report")
    subs = billing.add_subparsers(dest="action", required=True, metavar="ACTION")
    report = subs.add_parser(
        "report", help="an account's month: messages and segments per day, country, category, sender, state",
    )
    add_config_option(report)
    report.add_argument("--account", required=True, metavar="ID", help="account system_id")
    report.add_argument("--month", required=True, type=_month, metavar="YYYY-MM", help="the month (UTC)")
    report.add_argument("--format", choices=("table", "csv", "json"), default="table",
                        help="table (default, for reading), csv or json")
    report.set_defaults(func=_cmd_billing)


def _country_of(settings, verb: str):
    """A decrypting ``country_of`` when the caller can read the data keys (dpo), else None:
    the purge is an ops verb and runs without them."""
    from storage.crypto import FieldCipher, has_keys

    from smscenter.app.retention import cipher_country

    try:
        if has_keys(settings.storage.keys):
            return cipher_country(FieldCipher(keyring_for(settings, Role.DPO, verb)))
    except Exception:  # noqa: BLE001 - RoleError, unreadable keys: rows without a country go under ""
        pass
    return None


def run_db(verb: str, settings, body) -> int:
    from storage import db

    async def main() -> int:
        engine = db.create_engine(settings.storage.url)
        try:
            await db.upgrade(engine)
            return await body(engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except db.SchemaTooNew as exc:
        print(f"{verb}: {exc}", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - a database that cannot be reached
        print(f"{verb}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return EXIT_FAILURE


_run_db = run_db  # the name keys_cli imports


def _cmd_retention(args: argparse.Namespace) -> int:
    verb, settings = load_for(args)
    if settings is None:
        return EXIT_USAGE
    from smscenter.app.retention import Purger

    country_of = None if args.dry_run else _country_of(settings, verb)  # keys before the database

    async def body(engine) -> int:
        purger = Purger(engine, settings, country_of=country_of)
        try:
            report = await purger.run(dry_run=args.dry_run)
        finally:
            await purger.close()
        if not report.dry_run and report.total:
            per = ", ".join(f"{k} {v}" for k, v in sorted(report.by_category().items()))
            await audit(engine, "retention.run", "*", f"removed {report.total} rows: {per}")
        print_report(report)
        return EXIT_OK

    return run_db(verb, settings, body)


def print_report(report, out=None) -> None:
    out = out or sys.stdout
    done = "would remove" if report.dry_run else "removed"
    print(f"{'CATEGORY':<16} {'TABLE':<16} {'ACCOUNT':<16} {'ROWS':>10}", file=out)
    for (category, table, account), n in sorted(report.rows.items()):
        print(f"{category:<16} {table:<16} {account:<16} {n:>10}", file=out)
    per = ", ".join(f"{k} {v}" for k, v in sorted(report.by_category().items())) or "nothing"
    tail = " (dry run: nothing removed)" if report.dry_run else f" in {report.seconds:.1f} s"
    print(f"{done} {report.total} rows: {per}{tail}", file=out)


def _cmd_billing(args: argparse.Namespace) -> int:
    verb, settings = load_for(args)
    if settings is None:
        return EXIT_USAGE
    from storage.purge import billing_accounts, billing_rows

    try:
        keyring_for(settings, Role.SUPPORT, verb)  # enforced, though the aggregates need no key
    except RoleError as exc:
        print(exc, file=sys.stderr)
        return EXIT_FAILURE
    start, end = args.month

    async def body(engine) -> int:
        async with engine.connect() as conn:
            if settings.account(args.account) is None and args.account not in await conn.run_sync(billing_accounts):
                names = ", ".join(a.system_id for a in settings.accounts) or "none"
                print(f"{verb}: --account {args.account}: no such account (configured: {names}; "
                      "none in the database either)", file=sys.stderr)
                return EXIT_USAGE
            rows = await conn.run_sync(lambda c: billing_rows(c, args.account, start, end))
        _print_billing(rows, args.format, args.account, datetime.fromtimestamp(start, timezone.utc).strftime("%Y-%m"))
        return EXIT_OK

    return run_db(verb, settings, body)


def _state_name(state: int) -> str:
    from protocol.constants import MessageState

    try:
        return MessageState(state).name
    except ValueError:
        return str(state)


def _print_billing(rows: list[dict], fmt: str, account: str, month: str) -> None:
    named = [{**r, "state": _state_name(r["state"])} for r in rows]
    fields = ("day", "country", "category", "sender", "state", "messages", "segments")
    if fmt == "json":
        print(json.dumps({"account": account, "month": month, "rows": named,
                          "messages": sum(r["messages"] for r in rows),
                          "segments": sum(r["segments"] for r in rows)}, indent=2))
        return
    if fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(named)
        return
    print(f"account {account}, {month} (UTC days)")
    print(f"{'DAY':<10} {'CC':<3} {'CATEGORY':<9} {'SENDER':<11} {'STATE':<13} {'MESSAGES':>9} {'SEGMENTS':>9}")
    for r in named:
        print(f"{r['day']:<10} {r['country'] or '?':<3} {r['category']:<9} {r['sender']:<11} {r['state']:<13} "
              f"{r['messages']:>9} {r['segments']:>9}")
    print(f"{'total':<50} {sum(r['messages'] for r in rows):>9} {sum(r['segments'] for r in rows):>9}")
