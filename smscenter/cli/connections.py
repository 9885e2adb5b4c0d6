"""``smscenter connections list`` and ``smscenter accounts``: the connection log, read back.

``connections list -c FILE [--account ID] [--ip ADDR] [--since DATETIME|DURATION] [--failed]
[--limit N]`` prints bind attempts, newest first: time (UTC), system_id as sent, account, the
peer's ip:port, bind type, TLS, and the status answered by name (``hung up`` when the peer left
before its answer). ``--since`` takes an ISO 8601 instant (UTC without an offset) or a
duration back from now (``24h``, ``7d``); ``--failed`` keeps what was not ESME_ROK.

``accounts -c FILE`` prints, per configured account, its last bind attempt (time, ip, status)
and the submission time of its newest stored message. No number, no text: neither verb reads
personal data beyond the partners' own addresses.

Both run under the ``support`` role (``roles.keyring_for``: the look-up key must be
readable, though neither uses it) and leave an audit row with their counts
(``connections.list``, ``accounts.list``). The schema is upgraded first, like the daemon's
start.

Exit codes: 0 done; 1 a database problem, or the caller lacks the support role (nothing
read); 2 wrong input (bad config, a --since or --ip that does not parse, an account neither
configured nor found in the log), nothing done.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import sys

from smscenter.cli.verbs import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, add_config_option, positive_int, when_arg
from smscenter.runtime.timers import utc_stamp

DEFAULT_LIMIT = 100


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None


def add_arguments(verbs) -> None:
    """Register ``connections list`` and ``accounts``."""
    connections = verbs.add_parser("connections", help="the connection log (bind attempts): list")
    subs = connections.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = subs.add_parser(
        "list", help="bind attempts, newest first: time, system_id, account, ip:port, bind type, tls, status",
        description="Bind attempts on the partner listener, newest first (kept [retention] connections). "
        "Needs the support role.",
    )
    add_config_option(listing)
    listing.add_argument("--account", metavar="ID", help="only this account's attempts")
    listing.add_argument("--ip", type=_ip, metavar="ADDR", help="only attempts from this address")
    listing.add_argument("--since", type=when_arg, metavar="DATETIME|DURATION",
                         help="from this UTC time (2026-05-01T08:00) or this long ago (24h, 7d)")
    listing.add_argument("--failed", action="store_true", help="only attempts not answered ESME_ROK")
    listing.add_argument("--limit", type=positive_int, default=DEFAULT_LIMIT, metavar="N",
                         help=f"at most N rows (default {DEFAULT_LIMIT})")
    listing.set_defaults(func=_cmd_list, action="list")

    accounts = verbs.add_parser(
        "accounts", help="per account: last connection (time, ip, status) and last SMS",
        description="Per configured account: its last bind attempt and the submission time of its "
        "newest stored message. Needs the support role.",
    )
    add_config_option(accounts)
    accounts.set_defaults(func=_cmd_accounts, action="list")


def _err(line: str) -> None:
    print(line, file=sys.stderr)


def _run(args: argparse.Namespace, verb: str, body) -> int:
    """Config, the support role, the database (schema upgraded): then ``body(settings,
    engine)``; errors mapped to exit codes."""
    from storage import db

    from smscenter.cli.verbs import load_configured
    from smscenter.cli.roles import Role, RoleError, keyring_for

    settings = load_configured(args.config, f"{verb}: {args.config}: invalid configuration")
    if settings is None:
        return EXIT_USAGE
    try:
        keyring_for(settings, Role.SUPPORT, verb)
    except RoleError as exc:
        _err(str(exc))
        return EXIT_FAILURE

    async def main() -> int:
        engine = db.create_engine(settings.storage.url)
        try:
            await db.upgrade(engine)
            return await body(settings, engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except db.SchemaTooNew as exc:
        _err(f"{verb}: {exc}")
    except Exception as exc:  # noqa: BLE001 - a database that cannot be reached
        _err(f"{verb}: {type(exc).__name__}: {exc}")
    return EXIT_FAILURE


def _status(status: int | None) -> str:
    from protocol.constants import CommandStatus

    return "hung up" if status is None else CommandStatus.name_of(status)


def _address(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _cmd_list(args: argparse.Namespace) -> int:
    verb = "smscenter connections list"
    from storage.connections import Filters, list_rows

    from smscenter.cli.roles import audit

    filters = Filters(account=args.account, ip=args.ip, since=args.since, failed=args.failed, limit=args.limit)

    async def body(settings, engine) -> int:
        async with engine.connect() as conn:
            if args.account is not None and settings.account(args.account) is None:
                if not await conn.run_sync(lambda c: list_rows(c, Filters(account=args.account, limit=1))):
                    names = ", ".join(a.system_id for a in settings.accounts) or "none"
                    _err(f"{verb}: --account {args.account}: no such account (configured: {names}; "
                         "none in the connection log either)")
                    return EXIT_USAGE
            rows = await conn.run_sync(lambda c: list_rows(c, filters))
        scope = args.account or "*"
        await audit(engine, "connections.list", scope, f"rows={len(rows)}" + (" failed" if args.failed else ""))
        print(f"{'TIME (UTC)':<19}  {'SYSTEM_ID':<15}  {'ACCOUNT':<15}  {'PEER':<47}  {'BIND':<11}  "
              f"{'TLS':<3}  STATUS")
        for r in rows:
            print(f"{utc_stamp(r['at']):<19}  {r['system_id']:<15}  {r['account'] or '-':<15}  "
                  f"{_address(r['peer_ip'], r['peer_port']):<47}  {r['bind_type']:<11}  "
                  f"{'yes' if r['tls'] else 'no':<3}  {_status(r['status'])}")
        more = " (--limit reached: older ones not shown)" if len(rows) == args.limit else ""
        print(f"{len(rows)} bind attempts{more}")
        return EXIT_OK

    return _run(args, verb, body)


def _cmd_accounts(args: argparse.Namespace) -> int:
    verb = "smscenter accounts"
    from storage.connections import last_connection, last_submit

    from smscenter.cli.roles import audit

    async def body(settings, engine) -> int:
        lines = []
        async with engine.connect() as conn:
            for account in settings.accounts:
                name = account.system_id
                last = await conn.run_sync(lambda c: last_connection(c, name))
                sms = await conn.run_sync(lambda c: last_submit(c, name))
                lines.append((name, last, sms))
        await audit(engine, "accounts.list", "*", f"accounts={len(lines)}")
        print(f"{'ACCOUNT':<15}  {'LAST CONNECTION (UTC)':<21}  {'FROM':<47}  {'STATUS':<16}  LAST SMS (UTC)")
        for name, last, sms in lines:
            if last is None:
                when, peer, status = "never", "-", "-"
            else:
                when, peer, status = utc_stamp(last["at"]), _address(last["peer_ip"], last["peer_port"]), _status(last["status"])
            print(f"{name:<15}  {when:<21}  {peer:<47}  {status:<16}  {utc_stamp(sms) if sms is not None else 'never'}")
        return EXIT_OK

    return _run(args, verb, body)
