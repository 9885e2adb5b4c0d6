"""``smscenter status`` and ``smscenter reload``: the verbs that ask the running daemon, over
its control socket (``control.py``), rather than read the database.

The config file is read only to find the socket (``[server] control_socket``, or its default
beside the keys folder). With no daemon there: "no daemon is listening on <path>", exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys

from smscenter.app.control import ControlUnavailable, request
from smscenter.cli.verbs import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, load_configured

#: The systemd layout's config (``systemd/smscenter.service``): ``status`` without ``-c``.
DEFAULT_CONFIG = "/etc/smscenter/smscenter.toml"
STATUS_TIMEOUT = 30.0
#: A reload may drain or re-bind connectors before it answers.
RELOAD_TIMEOUT = 120.0


def add_arguments(verbs) -> None:
    status = verbs.add_parser(
        "status",
        help="what the running daemon is doing: binds, connectors, queue, held messages, retention",
        description="Ask the running daemon, over its control socket, for its binds per account, "
        "connectors, queue, messages held by send windows and retention's last run. No number, no "
        "text. Exit 1 when no daemon answers.",
    )
    status.add_argument("-c", "--config", default=DEFAULT_CONFIG, metavar="FILE",
                        help=f"TOML config file, to find the control socket (default {DEFAULT_CONFIG})")
    status.add_argument("--json", action="store_true", help="print the status as JSON (fields: README)")
    status.set_defaults(func=_cmd_status)

    reload = verbs.add_parser(
        "reload",
        help="ask the running daemon to reload its config file, print the outcome",
        description="Ask the running daemon to read its config file again and apply it without "
        "dropping sessions; prints what changed, or why nothing did. Exit 0 when applied, 1 otherwise.",
    )
    reload.add_argument("-c", "--config", required=True, metavar="FILE", help="TOML config file")
    reload.set_defaults(func=_cmd_reload)


def _ask(verb: str, config: str, command: str, timeout: float) -> tuple[int, dict | None]:
    """(exit code, the command's result): the reply's result, or the problem printed."""
    settings = load_configured(config, f"smscenter {verb}: {config}: invalid configuration")
    if settings is None:
        return EXIT_USAGE, None
    try:
        reply = request(settings.control_socket_path, command, timeout=timeout)
    except ControlUnavailable as exc:
        print(f"smscenter {verb}: {exc}", file=sys.stderr)
        return EXIT_FAILURE, None
    if not reply["ok"]:
        print(f"smscenter {verb}: {reply.get('error', 'refused')}", file=sys.stderr)
        return EXIT_FAILURE, None
    return EXIT_OK, reply.get("result") or {}


def _cmd_status(args: argparse.Namespace) -> int:
    code, result = _ask("status", args.config, "status", STATUS_TIMEOUT)
    if result is None:
        return code
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        from smscenter.app.status import render

        print(render(result))
    return EXIT_OK


def _cmd_reload(args: argparse.Namespace) -> int:
    code, result = _ask("reload", args.config, "reload", RELOAD_TIMEOUT)
    if result is None:
        return code
    ok = bool(result.get("ok"))
    changes, errors, restart = (list(result.get(k) or []) for k in ("changes", "errors", "restart_needed"))
    if ok:
        print(f"reloaded: {len(changes)} change{'s' if len(changes) != 1 else ''}")
    else:
        print("reload refused: the running configuration is unchanged")
    for line in changes:
        print(f"  changed: {line}")
    for line in errors:
        print(f"  error: {line}")
    for line in restart:
        print(f"  needs a restart: {line}")
    return EXIT_OK if ok else EXIT_FAILURE
