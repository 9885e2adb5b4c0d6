"""What the ``smscenter`` verbs share: exit codes, ``-c FILE``, and (for the administrator
verbs ``db``, ``keys``, ``blacklist``, ``mo``) the config loaded or its problems printed
(exit 2)."""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone
from typing import Callable

from smscenter.config import Settings, load_or_report

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, metavar="FILE", help="TOML config file")


def add_actions(verbs, name: str, help: str, actions: list[tuple[str, str, Callable]], func: Callable) -> None:
    """``smscenter NAME ACTION -c FILE`` for each (action, help, run): ``func(args)`` runs
    it, with ``args.run`` the action's own function."""
    parser = verbs.add_parser(name, help=help)
    subs = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, action_help, run in actions:
        sub = subs.add_parser(action, help=action_help)
        add_config_option(sub)
        sub.set_defaults(func=func, run=run)


def load_for(args: argparse.Namespace) -> tuple[str, Settings | None]:
    """The verb's name for messages (``smscenter keys rotate``) and its settings, or None
    once the config's problems are printed."""
    verb = f"smscenter {args.verb} {args.action}"
    return verb, load_configured(args.config, f"{verb}: {args.config}: invalid configuration")


def load_configured(path, *then: str) -> Settings | None:
    """The settings (or None once their problems are printed), with logging configured as
    the daemon's: ``[logging]``'s format and level, to stderr — the verb's output on stdout
    stays its own (structlog's default would print to stdout). Every verb that reads a
    config goes through here; ``app.logs`` (and structlog) is imported only then."""
    settings = load_or_report(path, *then)
    if settings is not None:
        from smscenter.app.logs import configure_logging

        configure_logging(settings.logging.level, settings.logging.format)
    return settings


def parse_when(text: str, now: float) -> float:
    """A UNIX time from ``--since``/``--until``: an ISO 8601 date or date-time (UTC when no
    offset is given: ``2026-05-01``, ``2026-05-01T21:00+02:00``), or a duration back from
    ``now`` (``90m``, ``24h``, ``7d``; the config's units). ``ValueError`` otherwise."""
    from smscenter.config.values import parse_duration

    text = text.strip()
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither a date-time (2026-05-01T21:00, UTC without an offset) "
                         "nor a duration back from now (24h, 7d)") from None
    return (at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at).timestamp()


def when_arg(text: str) -> float:
    """``parse_when`` as an argparse ``type=`` (a bad value exits 2), against the clock now."""
    try:
        return parse_when(text, time.time())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    """An argparse ``type=`` for counts, ids and limits: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value
