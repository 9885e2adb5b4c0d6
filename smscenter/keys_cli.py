"""``smscenter keys list|rotate -c FILE``: the data-encryption keys, for administrators.

Phone numbers and message text are stored encrypted with the *current* key of the keys
folder (``[storage] keys``), each value tagged with its key's id. ``rotate`` adds the next
key, which becomes current: a running daemon (its writer process too) encrypts new values
with it within a second, with no restart; the older keys stay and go on decrypting what they
encrypted, so rotation loses nothing and costs nothing. The look-up key (``lookup.key``,
behind every keyed hash of a number) never rotates: the blacklist and the look-ups by number
would stop finding their rows.

Neither verb touches the database, and neither creates a keys folder: a new installation
gets its keys on the daemon's first start, and a missing folder is an error to restore from
backup, never a reason to make fresh keys. Back the folder up after a rotation.

Exit codes: 0 done; 1 the keys folder is missing, unreadable, unsafe (permissions) or out of
key ids; 2 bad config.
"""

from __future__ import annotations

import argparse
import stat
import sys
from pathlib import Path

from .config import load_or_report

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def add_arguments(verbs) -> None:
    """Register ``keys list`` and ``keys rotate`` on the ``smscenter`` sub-parsers."""
    parser = verbs.add_parser("keys", help="the encryption keys: list, rotate")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the keys folder's key ids and which one is current")
    rotate = actions.add_parser(
        "rotate",
        help="add a new data-encryption key; new values are encrypted with it, old ones stay readable",
    )
    for sub, run in ((listing, _list), (rotate, _rotate)):
        sub.add_argument("-c", "--config", required=True, metavar="FILE", help="TOML config file")
        sub.set_defaults(func=_cmd, run=run)


def _cmd(args: argparse.Namespace) -> int:
    verb = f"smscenter keys {args.action}"
    settings = load_or_report(args.config, f"{verb}: {args.config}: invalid configuration")
    if settings is None:
        return EXIT_USAGE
    from storage.crypto import Keyring, KeyringError

    folder = Path(settings.storage.keys)
    try:
        if not folder.exists() or not any(folder.iterdir()):
            print(
                f"{verb}: no keys in {folder}: the daemon makes them on its first start with a new "
                "database; if it has data, restore the keys folder from your backup",
                file=sys.stderr,
            )
            return EXIT_FAILURE
        keyring = Keyring.load(folder)  # refuses loose permissions and malformed files
        return args.run(keyring)
    except (KeyringError, OSError) as exc:
        print(f"{verb}: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _list(keyring) -> int:
    from storage.crypto import dek_filename

    print(f"keys folder {keyring.folder} (mode {_mode(keyring.folder)})")
    for key_id in keyring.key_ids:
        current = "  current: new values are encrypted with it" if key_id == keyring.current_id else ""
        print(f"  key {key_id}: {dek_filename(key_id)}{current}")
    print("  lookup.key: the keyed hashes of numbers (never rotates)")
    return EXIT_OK


def _rotate(keyring) -> int:
    from storage.crypto import dek_filename

    key_id = keyring.rotate()
    older = [str(k) for k in keyring.key_ids if k != key_id]
    print(
        f"new key {key_id} ({keyring.folder / dek_filename(key_id)}) is current: new values are "
        "encrypted with it (a running daemon switches within a second); "
        f"{'keys' if len(older) > 1 else 'key'} {', '.join(older)} "
        f"still {'decrypt' if len(older) > 1 else 'decrypts'} what they encrypted. Back up the keys folder now."
    )
    return EXIT_OK


def _mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))
