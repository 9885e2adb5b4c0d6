"""The ``smscenter`` command line: ``run``, ``check-config``, ``hash-password``, the
demo/admin tools ``simulate-smsc`` (an upstream SMSC simulator) and ``send`` (submit one SMS
and wait for its receipt), the opt-out administration ``blacklist …`` and ``mo list``
(``admin.py``), the schema's ``db status`` / ``db upgrade`` (``db_cli.py``), and
``retention run`` / ``billing report`` (``retention_cli.py``), the data-subject requests
``subject export|erase`` / ``account purge`` (``subject_cli.py``), ``audit list``
(``audit_cli.py``), ``incident report`` (``incident_cli.py``), and ``status`` / ``reload``,
which ask the running daemon over its control socket (``control_cli.py``). Which role each verb needs:
``roles.py``.

Why the exit codes: systemd and scripts act on them. 0 is success, 2 is "your input is wrong"
(bad config, bad arguments, empty password) and nothing was started, 1 is anything else.
Errors go to stderr one per line, each with its config key path, so an administrator can fix
them all in one pass; stdout carries only the result (the hash, the ``ok:`` line).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import importlib
import inspect
import sys
from collections.abc import Sequence

from smscenter import __version__
from smscenter.config import load_or_report
from smscenter.cli.verbs import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, add_config_option, load_configured

__all__ = ["main"]


def _err(*lines: str) -> None:
    for line in lines:
        print(line, file=sys.stderr)


def _cmd_run(args: argparse.Namespace) -> int:
    settings = load_configured(args.config, f"smscenter: {args.config}: invalid configuration, nothing started")
    if settings is None:
        return EXIT_USAGE
    # Imported late: the daemon pulls in asyncio servers and storage, which check-config and
    # hash-password do not need.
    try:
        daemon = importlib.import_module("smscenter.app.daemon")
    except ModuleNotFoundError as exc:
        if exc.name != "smscenter.app.daemon":
            raise  # a dependency of the daemon is missing: show the real error
        _err("smscenter: the daemon module (smscenter.app.daemon) is missing from this build")
        return EXIT_FAILURE
    result = daemon.main(settings, args.config)
    if inspect.isawaitable(result):
        result = asyncio.run(result)  # type: ignore[arg-type]
    return int(result or 0)


def _cmd_check_config(args: argparse.Namespace) -> int:
    settings = load_or_report(args.config)
    if settings is None:
        return EXIT_USAGE
    print(
        f"ok: {len(settings.accounts)} accounts, {len(settings.connectors)} connectors, "
        f"{len(settings.routes)} routes"
    )
    return EXIT_OK


def _read_password() -> str | None:
    """From a terminal: prompt twice without echo. Otherwise: the first line of stdin."""
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if first and getpass.getpass("Again: ") != first:
            _err("smscenter hash-password: the two passwords differ")
            return None
        return first
    line = sys.stdin.readline()
    return line.removesuffix("\n").removesuffix("\r")


def _cmd_hash_password(args: argparse.Namespace) -> int:
    from smscenter.runtime.passwords import hash_password

    password = _read_password()
    if password is None:
        return EXIT_USAGE
    if not password:
        _err("smscenter hash-password: empty password (give it on the first line of stdin)")
        return EXIT_USAGE
    if len(password) > 8 or not password.isascii():
        _err(
            "smscenter hash-password: warning: SMPP 3.4 bind passwords are at most 8 ASCII "
            "characters; most partner stacks cannot send this one"
        )
    print(hash_password(password))
    return EXIT_OK


def _cmd_hash_token(args: argparse.Namespace) -> int:
    from smscenter.runtime.passwords import hash_token

    token = sys.stdin.readline().strip()
    if len(token) < 32:
        _err("smscenter hash-token: a token is at least 32 characters (e.g. `openssl rand -hex 24`), on stdin")
        return EXIT_USAGE
    print(hash_token(token))
    return EXIT_OK


def _cmd_simulate_smsc(args: argparse.Namespace) -> int:
    import signal

    from smscenter.app.logs import configure_logging
    from smscenter.tools.simulator import SimulatedSmsc, run_simulator

    configure_logging(args.log_level, "console")
    host, port = args.listen
    try:
        smsc = SimulatedSmsc(
            host,
            port,
            delay=args.delay,
            outcomes=args.outcomes,
            id_format=args.id_format,
            receipt_id_format=args.receipt_id_format,
            seed=args.seed,
            system_id=args.system_id,
            password=args.password,
            server_system_id=args.server_system_id,
            window=args.window,
        )
    except ValueError as exc:
        _err(f"smscenter simulate-smsc: {exc}")
        return EXIT_USAGE

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_simulator(smsc, stop)

    try:
        asyncio.run(main())
    except OSError as exc:  # address in use, cannot bind the port
        _err(f"smscenter simulate-smsc: cannot listen on {host}:{port}: {exc.strerror or exc}")
        return EXIT_FAILURE
    return EXIT_OK


def _cmd_send(args: argparse.Namespace) -> int:
    from smscenter.tools.send import main as send_main

    return send_main(args)


def _cmd_windows(args: argparse.Namespace) -> int:
    from smscenter.cli.windows import run as windows_run

    settings = None
    if args.config:
        settings = load_configured(args.config)
        if settings is None:
            return EXIT_USAGE
    return windows_run(settings, args.country, args.at)


def _simulator_type(parser_name: str, what: str):
    """An argparse ``type=`` from a ``smscenter.tools.simulator`` parser raising ValueError (bad
    values exit 2). Imported on use: the other verbs do not need asyncio and the link."""

    def convert(text: str):
        import smscenter.tools.simulator as simulator

        try:
            return getattr(simulator, parser_name)(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = what
    return convert


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smscenter", description="Carrier-side SMPP 3.4 connectivity server."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    run = verbs.add_parser("run", help="run the daemon in the foreground")
    add_config_option(run)
    run.set_defaults(func=_cmd_run)

    check = verbs.add_parser(
        "check-config", help="validate a config file; print every error with its key path"
    )
    add_config_option(check)
    check.set_defaults(func=_cmd_check_config)

    hashpw = verbs.add_parser(
        "hash-password",
        help="read a password on stdin, print its scrypt hash for an [[account]] password",
    )
    hashpw.set_defaults(func=_cmd_hash_password)

    hashtok = verbs.add_parser(
        "hash-token",
        help="read an API bearer token on stdin, print its hash for an [[account]] api_tokens entry",
    )
    hashtok.set_defaults(func=_cmd_hash_token)

    sim = verbs.add_parser(
        "simulate-smsc",
        help="run a demo upstream SMSC that answers submits and sends receipts",
        description="A demo upstream SMSC: accepts binds, answers submit_sm with its own ids and "
        "sends a delivery receipt (deliver_sm) after a delay, on a receiver/transceiver bind of "
        "the same system_id; receipts for an unbound system_id are held until it binds. Runs "
        "until SIGTERM or SIGINT.",
    )
    sim.add_argument("--listen", type=_simulator_type("parse_address", "address"), default=("127.0.0.1", 2776),
                     metavar="HOST:PORT", help="where to listen (default 127.0.0.1:2776)")
    sim.add_argument("--delay", type=_simulator_type("parse_delay", "delay"), default=(2.0, 2.0), metavar="DURATION",
                     help='submit to receipt: "2s" (default) or a uniform range "0.5s-3s"')
    sim.add_argument("--outcomes", type=_simulator_type("parse_outcomes", "outcomes"),
                     default="DELIVRD=90,UNDELIV=8,REJECTD=2", metavar="STAT=WEIGHT,...",
                     help="weighted receipt outcomes (default DELIVRD=90,UNDELIV=8,REJECTD=2)")
    sim.add_argument("--id-format", choices=("decimal", "hex"), default="decimal",
                     help="message ids in submit_sm_resp (default decimal)")
    sim.add_argument("--receipt-id-format", choices=("same", "decimal", "hex"), default="same",
                     help="ids in receipts: same as submit_sm_resp (default), or decimal/hex to "
                     "simulate the hex/decimal mix-up")
    sim.add_argument("--seed", type=int, default=None, help="seed for ids, outcomes and delays")
    sim.add_argument("--system-id", default=None, help="accept only this system_id (default: any)")
    sim.add_argument("--password", default=None, help="accept only this password (default: any)")
    sim.add_argument("--server-system-id", default="SIMSMSC", help="system_id in our bind responses")
    sim.add_argument("--window", type=int, default=64, help="receipts in flight per bind (default 64)")
    sim.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    sim.set_defaults(func=_cmd_simulate_smsc)

    from smscenter.tools.send import add_arguments as add_send_arguments

    send = verbs.add_parser(
        "send",
        help="bind with smpplib, submit one SMS, print the response and wait for the receipt",
        description="Bind as transceiver (with smpplib), submit one SMS (split into parts when "
        "long), print each submit_sm_resp, wait for the receipts. Exit 0 when delivered, 1 on a "
        "refused submit, a failed receipt or a timeout, 2 on bad arguments, no connection or a "
        "refused bind.",
    )
    add_send_arguments(send)
    send.set_defaults(func=_cmd_send)

    windows = verbs.add_parser(
        "windows",
        help="may marketing go now, and when is the next opening, per country",
        description="For each country (the configured ones and the built-in defaults, or only "
        "--country), the local time, the rule applied and whether marketing may go at --at "
        "(default now); when closed, the next opening in the recipient's time zone.",
    )
    windows.add_argument("-c", "--config", metavar="FILE",
                         help="TOML config file whose [windows] to use (default: the built-in rules)")
    windows.add_argument("--country", metavar="CC", help='one ISO country code (FR, BE, CH…) or "*"')
    windows.add_argument("--at", metavar="DATETIME",
                         help="ISO 8601 instant, e.g. 2026-05-01T21:00+02:00 (UTC without an offset)")
    windows.set_defaults(func=_cmd_windows)

    from smscenter.cli.admin import add_arguments as add_admin_arguments
    from smscenter.cli.audit import add_arguments as add_audit_arguments
    from smscenter.cli.connections import add_arguments as add_connections_arguments
    from smscenter.cli.control import add_arguments as add_control_arguments
    from smscenter.cli.db import add_arguments as add_db_arguments
    from smscenter.cli.incident import add_arguments as add_incident_arguments
    from smscenter.cli.keys import add_arguments as add_keys_arguments
    from smscenter.cli.retention import add_arguments as add_retention_arguments
    from smscenter.cli.subject import add_arguments as add_subject_arguments

    add_admin_arguments(verbs)  # blacklist add|remove|list|import|export, mo list
    add_db_arguments(verbs)  # db status|upgrade
    add_keys_arguments(verbs)  # keys list|rotate|retire
    add_retention_arguments(verbs)  # retention run, billing report
    add_audit_arguments(verbs)  # audit list
    add_incident_arguments(verbs)  # incident report
    add_subject_arguments(verbs)  # subject export|erase, account purge
    add_connections_arguments(verbs)  # connections list, accounts
    add_control_arguments(verbs)  # status, reload (the running daemon, over its control socket)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``smscenter`` and ``python -m smscenter``; returns the exit code."""
    args = _parser().parse_args(argv)
    return int(args.func(args))
