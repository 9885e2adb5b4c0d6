"""``smscenter keys list|rotate|retire -c FILE``: the data-encryption keys, for the dpo.

Phone numbers and message text are stored encrypted with the *current* key of the keys
folder (``[storage] keys``), each value tagged with its key's id. ``rotate`` adds the next
key, which becomes current: a running daemon (its writer process too) encrypts new values
with it within a second, with no restart; the older keys stay and go on decrypting what they
encrypted, so rotation loses nothing and costs nothing. ``retire KEY_ID`` then re-encrypts,
in bounded batches beside the running daemon, every value still under an older key with the
current one, and removes that key's file once nothing needs it (``storage/rekey.py``). ``list``
shows, per key, how many stored values it still protects. The look-up key (``lookup.key``,
behind every keyed hash of a number) never rotates: the blacklist and the look-ups by number
would stop finding their rows.

Key administration is the dpo's (``roles.py``): the keys are loaded through
``keyring_for(…, Role.DPO, …)``, and ``rotate`` and ``retire`` leave an audit row (key ids and
counts). No verb creates a keys folder: a new installation gets its keys on the daemon's first
start, and a missing folder is an error to restore from backup, never a reason to make fresh
keys. Back the folder up after a rotation or a retirement.

Exit codes: 0 done; 1 the keys folder is missing, unreadable, unsafe (permissions) or out of
key ids, a database problem, or values left under a key ``retire`` could not re-encrypt
(the key is kept); 2 bad config, an unknown key id, or the current key to ``retire``.
"""

from __future__ import annotations

import argparse
import stat
import sys
from pathlib import Path

from smscenter.cli.verbs import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, add_config_option, load_for, positive_int


def add_arguments(verbs) -> None:
    """Register ``keys list``, ``keys rotate`` and ``keys retire`` on the ``smscenter`` sub-parsers."""
    from storage.rekey import DEFAULT_BATCH

    parser = verbs.add_parser("keys", help="the encryption keys: list, rotate, retire")
    subs = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, action_help, run in [
        ("list", "the keys folder's key ids, which one is current, and how many values each protects", _list),
        ("rotate", "add a new data-encryption key; new values are encrypted with it, old ones stay readable",
         _rotate),
    ]:
        sub = subs.add_parser(action, help=action_help)
        add_config_option(sub)
        sub.set_defaults(func=_cmd, run=run)
    retire = subs.add_parser(
        "retire", help="re-encrypt every value under an old key with the current one, then remove the old key",
        description="Re-encrypt, in bounded batches and beside the running daemon, every stored value "
        "under KEY_ID with the current key, then remove KEY_ID's file. Resumable: run it again after "
        "an interruption. Refuses the current key (rotate first).",
    )
    add_config_option(retire)
    retire.add_argument("key_id", type=positive_int, metavar="KEY_ID", help="the key to retire (see keys list)")
    retire.add_argument("--batch", type=positive_int, default=DEFAULT_BATCH, metavar="N",
                        help=f"rows read and rewritten per transaction (default {DEFAULT_BATCH})")
    retire.set_defaults(func=_cmd, run=_retire)


def _cmd(args: argparse.Namespace) -> int:
    verb, settings = load_for(args)
    if settings is None:
        return EXIT_USAGE
    from storage.crypto import KeyringError, has_keys

    from smscenter.cli.retention import _run_db
    from smscenter.cli.roles import Role, RoleError, keyring_for

    folder = Path(settings.storage.keys)
    try:
        if not has_keys(folder):
            print(
                f"{verb}: no keys in {folder}: the daemon makes them on its first start with a new "
                "database; if it has data, restore the keys folder from your backup",
                file=sys.stderr,
            )
            return EXIT_FAILURE
        keyring = keyring_for(settings, Role.DPO, verb)  # refuses loose permissions and malformed files
    except (KeyringError, RoleError) as exc:
        print(f"{verb}: {exc}" if isinstance(exc, KeyringError) else str(exc), file=sys.stderr)
        return EXIT_FAILURE
    refused = args.run(args, verb, keyring, None)  # checks that need no database
    if refused is not None:
        return refused
    return _run_db(verb, settings, lambda engine: args.run(args, verb, keyring, engine))


def _list(args, verb, keyring, engine):
    if engine is None:
        return None
    return _print_list(keyring, engine)


async def _print_list(keyring, engine) -> int:
    from storage.crypto import dek_filename
    from storage.rekey import count_by_key

    async with engine.connect() as conn:
        found = await conn.run_sync(count_by_key)
    per_key: dict = {}
    for (_, key_id), n in found.items():
        per_key[key_id] = per_key.get(key_id, 0) + n
    print(f"keys folder {keyring.folder} (mode {_mode(keyring.folder)})")
    for key_id in keyring.key_ids:
        current = "  current: new values are encrypted with it" if key_id == keyring.current_id else ""
        print(f"  key {key_id}: {dek_filename(key_id)}  protects {_values(per_key.get(key_id, 0))}{current}")
    print("  lookup.key: the keyed hashes of numbers (never rotates)")
    status = EXIT_OK
    for key_id in sorted(k for k in per_key if k is not None and k not in keyring.key_ids):
        print(f"{_values(per_key[key_id])} are under key {key_id}, which is not in the folder: restore "
              f"{dek_filename(key_id) if 1 <= key_id <= 0xFFFF else 'it'} from your backup", file=sys.stderr)
        status = EXIT_FAILURE
    if per_key.get(None):
        print(f"{_values(per_key[None])} in encrypted columns are not encrypted values", file=sys.stderr)
        status = EXIT_FAILURE
    return status


def _values(n: int) -> str:
    return f"{n} value{'' if n == 1 else 's'}"


def _rotate(args, verb, keyring, engine):
    if engine is None:
        return None
    return _do_rotate(verb, keyring, engine)


async def _do_rotate(verb, keyring, engine) -> int:
    from storage.crypto import KeyringError, dek_filename

    from smscenter.cli.roles import audit

    try:
        key_id = keyring.rotate()
    except KeyringError as exc:
        print(f"{verb}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    await audit(engine, "keys.rotate", "*", f"key={key_id}")
    older = [str(k) for k in keyring.key_ids if k != key_id]
    print(
        f"new key {key_id} ({keyring.folder / dek_filename(key_id)}) is current: new values are "
        "encrypted with it (a running daemon switches within a second); "
        f"{'keys' if len(older) > 1 else 'key'} {', '.join(older)} "
        f"still {'decrypt' if len(older) > 1 else 'decrypts'} what they encrypted. Back up the keys folder now."
    )
    return EXIT_OK


def _retire(args, verb, keyring, engine):
    key_id = args.key_id
    if engine is None:
        if key_id not in keyring.key_ids:
            ids = ", ".join(str(k) for k in keyring.key_ids)
            print(f"{verb}: no key {key_id} in {keyring.folder} (keys there: {ids})", file=sys.stderr)
            return EXIT_USAGE
        if key_id == keyring.current_id:
            print(f"{verb}: key {key_id} is the current key: new values are encrypted with it. Run "
                  "`smscenter keys rotate` first, then retire it", file=sys.stderr)
            return EXIT_USAGE
        return None
    return _do_retire(args, verb, keyring, engine)


async def _do_retire(args, verb, keyring, engine) -> int:
    from storage.crypto import FieldCipher, dek_filename
    from storage.rekey import RetireError, Retirement

    from smscenter.cli.roles import audit

    cipher = FieldCipher(keyring)
    retirement = Retirement(engine, cipher, args.key_id, batch=args.batch, report=lambda line: print(line, flush=True))
    try:
        progress = await retirement.run()
    except RetireError as exc:
        p = retirement.progress
        await audit(engine, "keys.retire", "*", f"key={args.key_id} values={p.total} passes={p.passes} "
                    f"left={p.left} removed=0")
        print(f"{verb}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    await audit(engine, "keys.retire", "*", f"key={args.key_id} values={progress.total} passes={progress.passes} "
                f"skipped={sum(progress.skipped.values())} removed={int(progress.removed)}")
    gone = f"{dek_filename(args.key_id)} removed" if progress.removed else f"{dek_filename(args.key_id)} was already gone"
    print(
        f"key {args.key_id} retired: {_values(progress.total)} re-encrypted with key {keyring.current_id} in "
        f"{progress.passes} pass{'' if progress.passes == 1 else 'es'} ({progress.seconds:.1f} s), "
        f"{sum(progress.skipped.values())} changed meanwhile and left as they were; no value is under key "
        f"{args.key_id} now; {gone}. Back up the keys folder now; older backups of it still hold key {args.key_id}."
    )
    return EXIT_OK


def _mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))
