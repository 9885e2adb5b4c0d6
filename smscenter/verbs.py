"""What the ``smscenter`` verbs share: exit codes, ``-c FILE``, and (for the administrator
verbs ``db``, ``keys``, ``blacklist``, ``mo``) the config loaded or its problems printed
(exit 2)."""

from __future__ import annotations

import argparse
from typing import Callable

from .config import Settings, load_or_report

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
    return verb, load_or_report(args.config, f"{verb}: {args.config}: invalid configuration")
