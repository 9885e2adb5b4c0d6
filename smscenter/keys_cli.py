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

from .verbs import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, add_actions, load_for


def add_arguments(verbs) -> None:
    """Register ``keys list`` and ``keys rotate`` on the ``smscenter`` sub-parsers."""
    add_actions(verbs, "keys", "the encryption keys: list, rotate", [
        ("list", "the keys folder's key ids and which one is current", _list),
        ("rotate", "add a new data-encryption key; new values are encrypted with it, old ones stay readable",
         _rotate),
    ], _cmd)


def _cmd(args: argparse.Namespace) -> int:
    verb, settings = load_for(args)
    if settings is None:
        return EXIT_USAGE
    from storage.crypto import Keyring, KeyringError, has_keys

    folder = Path(settings.storage.keys)
    try:
        if not has_keys(folder):
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
