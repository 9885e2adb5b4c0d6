"""The ``smscenter`` command line: ``run``, ``check-config``, ``hash-password``.

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

from . import __version__
from .config import ConfigError, Settings, load_settings

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _err(*lines: str) -> None:
    for line in lines:
        print(line, file=sys.stderr)


def _load(path: str) -> Settings | None:
    """The settings, or None after printing every error."""
    try:
        return load_settings(path)
    except ConfigError as exc:
        _err(*exc.errors)
        return None


def _cmd_run(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if settings is None:
        _err(f"smscenter: {args.config}: invalid configuration, nothing started")
        return EXIT_USAGE
    from .logs import configure_logging

    configure_logging(settings.logging.level, settings.logging.format)
    # Imported late: the daemon pulls in asyncio servers and storage, which check-config and
    # hash-password do not need.
    try:
        daemon = importlib.import_module("smscenter.daemon")
    except ModuleNotFoundError as exc:
        if exc.name != "smscenter.daemon":
            raise  # a dependency of the daemon is missing: show the real error
        _err("smscenter: the daemon module (smscenter.daemon) is missing from this build")
        return EXIT_FAILURE
    result = daemon.main(settings)
    if inspect.isawaitable(result):
        result = asyncio.run(result)  # type: ignore[arg-type]
    return int(result or 0)


def _cmd_check_config(args: argparse.Namespace) -> int:
    settings = _load(args.config)
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
    from .passwords import hash_password

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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smscenter", description="Carrier-side SMPP 3.4 connectivity server."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    run = verbs.add_parser("run", help="run the daemon in the foreground")
    run.add_argument("-c", "--config", required=True, metavar="FILE", help="TOML config file")
    run.set_defaults(func=_cmd_run)

    check = verbs.add_parser(
        "check-config", help="validate a config file; print every error with its key path"
    )
    check.add_argument("-c", "--config", required=True, metavar="FILE", help="TOML config file")
    check.set_defaults(func=_cmd_check_config)

    hashpw = verbs.add_parser(
        "hash-password",
        help="read a password on stdin, print its scrypt hash for an [[account]] password",
    )
    hashpw.set_defaults(func=_cmd_hash_password)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``smscenter`` and ``python -m smscenter``; returns the exit code."""
    args = _parser().parse_args(argv)
    return int(args.func(args))
