"""Administrator verbs on the opt-out list and on received MO: ``smscenter blacklist …`` and
``smscenter mo list``.

They work on the database directly (migrations run first, like the daemon's start), with the
keys their role reads (``roles.keyring_for``: the CLI never creates keys). Every verb here is
a ``support`` verb — the look-up key only: the blacklist holds keyed hashes, and ``mo list``
shows the sender's hash prefix and the text's size in octets — except ``mo list
--show-numbers``, which decrypts the senders' numbers and needs the ``dpo`` role. A user
without the role's key gets "this needs the … role" (exit 1) before the database is opened.
Changes are audited per entry by ``storage.optouts``; ``blacklist list|export`` and ``mo list
--show-numbers`` leave one read row (``blacklist.list``, ``blacklist.export``, ``mo.list``,
counts only). A running
daemon picks up blacklist changes within a few seconds: it follows the audit log that every
change writes, in the same transaction, with who made it (``--actor``, default the user
behind ``sudo`` or the current user).

What the list holds, and why ``export`` gives hashes: numbers on the blacklist are stored
only as keyed hashes (HMAC with the ``lookup.key`` of the keys folder), never in clear, so
that an opt-out can outlive every retention purge without keeping personal data. Nothing can
turn a hash back into the number, so ``export`` writes the hashes (hex) with their scope,
source, date and author; ``list --number`` tells whether a given number is on the list. The
hashes only mean something with the same keys folder.

Exit codes: 0 done; 1 something failed (an import with bad lines — the good ones are in —,
a number not on the list for ``list --number``, a database or keys problem); 2 wrong input
(unknown account, a number that does not parse, bad config), nothing changed.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, TextIO

from smscenter.config import Settings
from smscenter.cli.roles import CLI_NODE, Role, RoleError, audit, keyring_for
from smscenter.cli.roles import current_actor as default_actor
from smscenter.cli.verbs import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, add_config_option, load_for
from smscenter.runtime.timers import utc_stamp

# storage (SQLAlchemy) and routing.numbers (phonenumbers) are imported where used: the other
# verbs (check-config, hash-password) should not pay for them at start-up.
PLATFORM_PREFIX = "sc:"  # storage.optouts.PLATFORM_PREFIX

#: Valid lines of an import stored per transaction (each line is whole: entry and audit row).
IMPORT_BATCH = 500
HASH_PREFIX_CHARS = 12

_MO_STATUSES = ("unroutable", "routed", "optout", "all")
_CELL_SEPARATORS = re.compile(r"[,;\t]")


class UsageError(Exception):
    """Wrong input: printed, exit 2, nothing changed."""


def _err(*lines: str) -> None:
    for line in lines:
        print(line, file=sys.stderr)


# --------------------------------------------------------------------------- scope


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose list: an account (``acme``) or a short code's platform-level list."""

    key: str  # the blacklist scope: "acme" or "sc:36180"
    label: str  # as the admin writes it: "acme" or "platform:36180"
    country: str  # for numbers written in national form


def platform_scope(short_code: str) -> str:
    from storage.optouts import platform_scope as scope_of

    return scope_of(short_code)


def resolve_scope(settings: Settings, account: str) -> Scope:
    if account.startswith("platform:") or account.startswith(PLATFORM_PREFIX):
        code = account.split(":", 1)[1]
        known = {c for a in settings.accounts for c in a.short_codes}
        if settings.optout:
            known.add(settings.optout.short_code)
        if not (code.isdigit() and len(code) == 5):
            raise UsageError(f"--account {account}: a platform scope is platform:<5-digit short code>")
        if code not in known:
            raise UsageError(
                f"--account {account}: short code {code} is neither [optout] short_code nor any "
                "account's short code"
            )
        users = [a for a in settings.accounts if code in a.short_codes]
        country = users[0].default_country if users else "FR"
        return Scope(platform_scope(code), f"platform:{code}", country)
    found = settings.account(account)
    if found is None:
        names = ", ".join(a.system_id for a in settings.accounts) or "none"
        raise UsageError(f"--account {account}: no such account (accounts: {names}; or platform:<short code>)")
    return Scope(found.system_id, found.system_id, found.default_country)


def label_of(scope_key: str) -> str:
    return "platform:" + scope_key[len(PLATFORM_PREFIX) :] if scope_key.startswith(PLATFORM_PREFIX) else scope_key


def normalize(number: str, country: str) -> str:
    """E.164 form of a number as an admin writes it (``+33…``, ``0033…``, ``06…`` in the
    account's country, or the international digits without ``+``)."""
    from routing.numbers import normalize_msisdn

    return normalize_msisdn(number.strip(), 0, 1, country)


# --------------------------------------------------------------------------- storage


@dataclass
class Admin:
    settings: Settings
    store: Any  # storage.optouts.OptOutStore
    cipher: Any  # storage.crypto.FieldCipher
    #: The core's durable subscribers (``pipeline/events.py``): a new entry's opt-out event
    #: is written to their backlogs in the entry's transaction, by this command (the daemon
    #: need not run; it delivers them from the backlog, and hears of them within seconds).
    events: Any = None  # smscenter.pipeline.events.Events
    #: Accounts owed an opt-out event this command could not write: its webhook row holds the
    #: number encrypted, and the support role's keys (``lookup.key`` alone) cannot encrypt.
    untold: set = field(default_factory=set)

    def optout(self, scope: Scope, source: str, e164: str):
        """The rows a new entry of ``scope`` for ``e164`` owes (``storage.transaction.Backlog``):
        its account's opt-out event; a platform scope's has no account (nobody's webhook).
        None when a subscriber needs the data keys this command has not (``untold``): the
        opt-out is recorded all the same — it never waits on a webhook."""
        from storage.crypto import NoDataKeyError

        from smscenter.pipeline.events import OptOutEvent

        account = None if scope.key.startswith(PLATFORM_PREFIX) else scope.key
        try:
            return self.events.backlog([OptOutEvent(account, scope.key, source, self.store.clock(), e164)])
        except NoDataKeyError:
            self.untold.add(account)
            return None

    def said_untold(self) -> bool:
        """Tell (stderr) which accounts' ``mo_url`` did not get their opt-out events; True if any."""
        if self.untold:
            _err(f"the opt-out events of {', '.join(sorted(self.untold))} (mo_url) were not written: they hold the "
                 "number encrypted, which needs the data keys (dek-*.key: the dpo role, or run as the daemon's "
                 "user); the entries are recorded")
        return bool(self.untold)


@asynccontextmanager
async def open_storage(settings: Settings, role: Role = Role.SUPPORT, verb: str = "smscenter",
                       data_keys: bool = False) -> AsyncIterator[Admin]:
    """The keys ``role`` reads (``RoleError`` if the caller cannot read them: nothing else is
    touched), then the database (schema upgraded first), for one command. ``data_keys``: the
    whole keyring when the caller can read it (the opt-out events of ``blacklist add|import``
    carry the number encrypted), else what ``role`` reads."""
    from storage import db
    from storage.crypto import FieldCipher
    from storage.ids import IdGenerator
    from storage.optouts import OptOutStore
    from storage.store import max_ids
    from storage.webhooks import WebhookBacklog

    from smscenter.pipeline.receipts import AccountPolicies

    keyring = None
    if data_keys and role is not Role.DPO:
        try:
            keyring = keyring_for(settings, Role.DPO, verb)
        except RoleError:
            pass
    keyring = keyring or keyring_for(settings, role, verb)  # before touching the database
    engine = db.create_engine(settings.storage.url)
    try:
        await db.upgrade(engine)
        ids = IdGenerator(node=CLI_NODE)
        # Past every id stored: audit rows and the opt-outs' webhook rows are ordered by id.
        ids.seed(max(*(await max_ids(engine)).values(), await WebhookBacklog(engine).max_id()) + 1)
        cipher = FieldCipher(keyring)
        events = AccountPolicies(*AccountPolicies.values_of(settings)).events(cipher, ids)
        yield Admin(settings, OptOutStore(engine, ids), cipher, events)
    finally:
        await engine.dispose()


# --------------------------------------------------------------------------- blacklist verbs


async def blacklist_add(admin: Admin, scope: Scope, number: str, actor: str) -> int:
    e164 = _number_or_usage(number, scope)
    added = await admin.store.add(scope.key, admin.cipher.lookup_hash(e164), "manual", actor,
                                  backlog=admin.optout(scope, "manual", e164))
    if added:
        print(f"added {e164} to the blacklist of {scope.label}")
    else:
        print(f"{e164} was already on the blacklist of {scope.label}")
    return EXIT_OK


async def blacklist_remove(admin: Admin, scope: Scope, number: str, actor: str) -> int:
    e164 = _number_or_usage(number, scope)
    removed = await admin.store.remove(scope.key, admin.cipher.lookup_hash(e164), actor)
    if removed:
        print(f"removed {e164} from the blacklist of {scope.label}")
    else:
        print(f"{e164} was not on the blacklist of {scope.label}")
    return EXIT_OK


async def blacklist_list(admin: Admin, scope: Scope | None, number: str | None, limit: int | None) -> int:
    if number is not None:
        return await _check_number(admin, scope, number)
    entries = await admin.store.entries(scope.key if scope else None, limit)
    await audit(admin.store.engine, "blacklist.list", scope.key if scope else "*", f"{len(entries)} entries shown")
    print(f"{'SCOPE':<16} {'HASH':<12} {'SOURCE':<7} {'ADDED (UTC)':<19} BY")
    for e in entries:
        print(
            f"{label_of(e.scope):<16} {e.dest_hash.hex()[:HASH_PREFIX_CHARS]:<12} {e.source:<7} "
            f"{utc_stamp(e.created_at):<19} {e.created_by}"
        )
    where = f" for {scope.label}" if scope else ""
    print(f"{len(entries)} entries{where} (numbers are stored as keyed hashes; give --number to test one)")
    return EXIT_OK


async def _check_number(admin: Admin, scope: Scope | None, number: str) -> int:
    """Is the number on the list? Exit 0 if it is (for this scope, or any when none
    given), 1 if not."""
    settings = admin.settings
    country = scope.country if scope else (settings.accounts[0].default_country if settings.accounts else "FR")
    e164 = _number_or_usage(number, Scope("", "", country))
    dest_hash = admin.cipher.lookup_hash(e164)
    if scope is None:
        listed = await admin.store.find(dest_hash)
    else:
        scopes = [scope.key]
        if not scope.key.startswith(PLATFORM_PREFIX):
            # Platform-level entries this account's marketing respects (see blacklist.py).
            account = settings.account(scope.key)
            codes = set(account.short_codes) if account else set()
            if settings.optout:
                codes.add(settings.optout.short_code)
            scopes += [platform_scope(code) for code in sorted(codes)]
        listed = [e for e in [await admin.store.contains(key, dest_hash) for key in scopes] if e is not None]
    await audit(admin.store.engine, "blacklist.list", scope.key if scope else "*",
                f"1 number checked: {'listed' if listed else 'not listed'}")
    shared = platform_scope(settings.optout.short_code) if settings.optout else None
    found = bool(listed)
    for entry in listed:
        also = ""
        if scope is not None and entry.scope != scope.key:
            senders = "that short code or alphanumeric senders" if entry.scope == shared else "that short code"
            also = f" (platform-level: applies to this account's marketing from {senders})"
        print(
            f"{e164} is on the blacklist of {label_of(entry.scope)}: source {entry.source}, "
            f"added {utc_stamp(entry.created_at)} UTC by {entry.created_by}{also}"
        )
    if not found:
        where = f"the blacklist of {scope.label}" if scope else "any blacklist"
        print(f"{e164} is not on {where}")
        return EXIT_FAILURE
    return EXIT_OK


async def blacklist_import(admin: Admin, scope: Scope, source: TextIO, name: str, actor: str) -> int:
    good: list[tuple[int, bytes]] = []
    bad = 0
    header_possible = True
    for line_no, raw in enumerate(source, start=1):
        line = raw.strip().lstrip("\ufeff")
        if not line or line.startswith("#"):
            continue
        cell = _CELL_SEPARATORS.split(line, maxsplit=1)[0].strip().strip("\"'").strip()
        if header_possible:
            header_possible = False
            if not any(ch.isdigit() for ch in cell):
                continue  # a header ("number", "msisdn;comment")
        try:
            e164 = normalize(cell, scope.country)
        except ValueError as exc:  # routing.numbers.InvalidNumber
            bad += 1
            _err(f"{name}: line {line_no}: bad number: {exc}")
            continue
        good.append((line_no, e164))
    added = await _add_many(admin, scope, good, actor)
    print(
        f"imported {len(good)} numbers into the blacklist of {scope.label}: {added} new, "
        f"{len(good) - added} already listed; {bad} bad lines"
    )
    return EXIT_OK if bad == 0 else EXIT_FAILURE


async def _add_many(admin: Admin, scope: Scope, lines: list[tuple[int, str]], actor: str) -> int:
    """Add in batches; each line goes in whole (its entry, its audit row, its opt-out event
    when new) or not at all."""
    added = 0
    for start in range(0, len(lines), IMPORT_BATCH):
        async with admin.store.engine.begin() as conn:
            for _, e164 in lines[start : start + IMPORT_BATCH]:
                dest_hash = admin.cipher.lookup_hash(e164)
                if await admin.store.add(scope.key, dest_hash, "import", actor, conn,
                                         backlog=admin.optout(scope, "import", e164)):
                    added += 1
    return added


async def blacklist_export(admin: Admin, scope: Scope | None, out: TextIO) -> int:
    entries = await admin.store.entries(scope.key if scope else None)
    await audit(admin.store.engine, "blacklist.export", scope.key if scope else "*", f"{len(entries)} entries exported")
    out.write("scope,hash,source,added_utc,added_by\n")
    for e in entries:
        out.write(f"{label_of(e.scope)},{e.dest_hash.hex()},{e.source},{utc_stamp(e.created_at)},{_csv(e.created_by)}\n")
    out.flush()
    return EXIT_OK


def _csv(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\n') else value


def _number_or_usage(number: str, scope: Scope) -> str:
    try:
        return normalize(number, scope.country)
    except ValueError as exc:  # routing.numbers.InvalidNumber
        raise UsageError(f"--number: not a valid phone number ({exc})") from None


# --------------------------------------------------------------------------- mo list


async def mo_list(admin: Admin, status: str, limit: int, show_numbers: bool) -> int:
    """Received MO, newest first. Without ``show_numbers`` (the support role) nothing is
    decrypted: the sender is the prefix of its keyed hash (the same one ``blacklist list``
    shows) and the text its size in octets (the token's length less the encryption's
    overhead). With it (dpo), the sender in clear and the text's length in characters."""
    from protocol.text import decode_text, is_binary
    from storage.crypto import OVERHEAD

    rows = await admin.store.mo_list(None if status == "all" else status, limit)
    if show_numbers:
        await audit(admin.store.engine, "mo.list", "*", f"{len(rows)} MO ({status}), numbers shown")
    sender = "NUMBER" if show_numbers else "SENDER HASH"
    print(f"{'RECEIVED (UTC)':<19} {'CODE':<6} {'STATUS':<10} {'ACCOUNT':<16} {sender:<16} {'LEN':>4}  REASON")
    for row in rows:
        if show_numbers:
            number, length = _mo_clear(admin, row, decode_text, is_binary)
        else:
            number = bytes(row["source_hash"]).hex()[:HASH_PREFIX_CHARS] if row["source_hash"] else "-"
            length = f"{max(0, len(row['text_enc']) - OVERHEAD)}B" if row["text_enc"] else "?"
        print(
            f"{utc_stamp(row['received_at']):<19} {row['short_code'] or '-':<6} {row['status']:<10} "
            f"{row['account'] or '-':<16} {number or '-':<16} {length:>4}  {row['reason'] or '-'}"
        )
    print(f"{len(rows)} MO ({status})")
    return EXIT_OK


def _mo_clear(admin: Admin, row: dict, decode_text, is_binary) -> tuple[str, str]:
    """The sender in clear and the text's length (characters, or ``NB`` octets)."""
    try:
        number = admin.cipher.decrypt(row["source_enc"], b"mo-source:%d" % row["id"]).decode("latin-1")
    except Exception:  # noqa: BLE001 - a row the keys cannot open
        number = "?"
    try:
        body = admin.cipher.decrypt(row["text_enc"], b"mo-text:%d" % row["id"])
        if is_binary(row["data_coding"]):
            length = f"{len(body)}B"
        else:
            try:
                length = str(len(decode_text(body, row["data_coding"])))
            except Exception:  # noqa: BLE001 - undecodable text: its octets
                length = f"{len(body)}B"
    except Exception:  # noqa: BLE001
        length = "?"
    return number, length


# --------------------------------------------------------------------------- argparse


BLACKLIST_HELP = """\
Manage the opt-out list (blacklist) of one account, or the platform-level list of a shared
short code (--account platform:36180). Numbers are normalised to E.164 with the account's
default_country (06…, +33…, 0033… and 33… all work).

The list stores keyed hashes of the numbers, never the numbers: `list` shows hashes and
dates (give --number to test one number), and `export` writes hashes (hex) with their scope,
source, date and author, not numbers, because a hash cannot be turned back into a number.
Every change is recorded in the audit log with --actor (default: the OS user, or the
user behind sudo).
A running daemon applies changes within a few seconds."""


def add_arguments(verbs) -> None:
    """Register ``blacklist`` and ``mo`` on the ``smscenter`` sub-parsers."""
    bl = verbs.add_parser(
        "blacklist",
        help="add, remove, list, import or export opted-out numbers",
        description=BLACKLIST_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = bl.add_subparsers(dest="action", required=True, metavar="ACTION")

    def common(p, account_required: bool = True) -> None:
        add_config_option(p)
        p.add_argument(
            "--account", required=account_required, metavar="ID",
            help="account system_id, or platform:<short code> for a shared code's platform-level list"
            + ("" if account_required else " (default: every list)"),
        )

    def actor(p) -> None:
        p.add_argument("--actor", default=None, metavar="NAME",
                       help="who makes the change, for the audit log (default: the OS user, or the user behind sudo)")

    add = actions.add_parser("add", help="add one number")
    common(add)
    add.add_argument("--number", required=True, help="the number (E.164, or national in the account's country)")
    actor(add)
    add.set_defaults(func=_cmd, run=_run_add, emits_optouts=True)

    remove = actions.add_parser("remove", help="remove one number")
    common(remove)
    remove.add_argument("--number", required=True, help="the number")
    actor(remove)
    remove.set_defaults(func=_cmd, run=_run_remove)

    lst = actions.add_parser(
        "list",
        help="show entries (scope, hash prefix, source, date, actor), or test one --number",
        description="Show the entries: scope, the first 12 hex digits of the keyed hash, source "
        "(stop, manual, import), date and who added it. With --number, say whether that number "
        "is on the list (exit 0) or not (exit 1); for an account, platform-level entries on its "
        "short codes and the shared opt-out short code are reported too.",
    )
    common(lst, account_required=False)
    lst.add_argument("--number", default=None, help="test whether this number is on the list")
    lst.add_argument("--limit", type=int, default=None, metavar="N", help="show at most N entries")
    lst.set_defaults(func=_cmd, run=_run_list)

    imp = actions.add_parser(
        "import",
        help="add the numbers of a CSV file (one per line)",
        description="Add the numbers of a CSV file: one number per line (E.164 or national), an "
        "optional header line, other columns (after , ; or tab) ignored. Good lines go in; each "
        "bad line is reported on stderr with its line number. Exit 0 when every line was good, "
        "1 otherwise. Each line is applied whole or not at all.",
    )
    common(imp)
    imp.add_argument("csv_file", nargs="?", default=None, metavar="FILE.csv", help="the file ('-' for stdin)")
    imp.add_argument("--file", dest="file_opt", default=None, metavar="FILE.csv", help="the file (same as FILE.csv)")
    actor(imp)
    imp.set_defaults(func=_cmd, run=_run_import, emits_optouts=True)

    exp = actions.add_parser(
        "export",
        help="write the entries as CSV: keyed hashes (hex) and dates, not numbers",
        description="Write the entries as CSV (scope,hash,source,added_utc,added_by). The list "
        "holds only keyed hashes of the numbers (HMAC with the keys folder's lookup key), so the "
        "export holds hashes, not phone numbers: they cannot be turned back into numbers and only "
        "match hashes made with the same keys.",
    )
    common(exp, account_required=False)
    exp.add_argument("--file", default=None, metavar="FILE.csv", help="write here (default: stdout)")
    exp.set_defaults(func=_cmd, run=_run_export)

    mo = verbs.add_parser("mo", help="received MO (replies)")
    mo_actions = mo.add_subparsers(dest="action", required=True, metavar="ACTION")
    mo_ls = mo_actions.add_parser(
        "list",
        help="show received MO, by default the unroutable ones",
        description="Show received MO, newest first: time, short code, status, account, the "
        "sender's keyed-hash prefix and the text's size in octets (the support role: nothing "
        "decrypted), and the reason it was not routed. --show-numbers decrypts the senders' "
        "numbers and counts the text's characters: it needs the dpo role and is audited.",
    )
    add_config_option(mo_ls)
    mo_ls.add_argument("--status", choices=_MO_STATUSES, default="unroutable",
                       help="which MO (default: unroutable)")
    mo_ls.add_argument("--limit", type=int, default=100, metavar="N", help="at most N rows (default 100)")
    mo_ls.add_argument("--show-numbers", action="store_true",
                       help="print the senders' numbers in clear (personal data: the dpo role; audited)")
    mo_ls.set_defaults(func=_cmd, run=_run_mo_list)


def _cmd(args: argparse.Namespace) -> int:
    """Load the config, open storage, run the verb; map errors to exit codes."""
    from storage.crypto import CryptoError

    verb, settings = load_for(args)
    if settings is None:
        return EXIT_USAGE
    if getattr(args, "limit", None) is not None and args.limit <= 0:
        _err(f"{verb}: --limit must be positive")
        return EXIT_USAGE
    try:
        scope = resolve_scope(settings, args.account) if getattr(args, "account", None) else None
    except UsageError as exc:
        _err(f"{verb}: {exc}")
        return EXIT_USAGE
    if getattr(args, "actor", "x") is None:
        args.actor = default_actor()

    role = Role.DPO if getattr(args, "show_numbers", False) else Role.SUPPORT

    async def main() -> int:
        async with open_storage(settings, role, verb, data_keys=getattr(args, "emits_optouts", False)) as admin:
            code = await args.run(admin, scope, args)
            return EXIT_FAILURE if admin.said_untold() else code

    try:
        return asyncio.run(main())
    except RoleError as exc:
        _err(str(exc))
        return EXIT_FAILURE
    except UsageError as exc:
        _err(f"{verb}: {exc}")
        return EXIT_USAGE
    except CryptoError as exc:
        _err(f"{verb}: {exc}")
        return EXIT_FAILURE
    except OSError as exc:
        _err(f"{verb}: {exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}".rstrip(": "))
        return EXIT_FAILURE
    except Exception as exc:  # noqa: BLE001 - a database error: say it, exit 1
        _err(f"{verb}: {type(exc).__name__}: {exc}")
        return EXIT_FAILURE


async def _run_add(admin: Admin, scope: Scope, args) -> int:
    return await blacklist_add(admin, scope, args.number, args.actor)


async def _run_remove(admin: Admin, scope: Scope, args) -> int:
    return await blacklist_remove(admin, scope, args.number, args.actor)


async def _run_list(admin: Admin, scope: Scope | None, args) -> int:
    return await blacklist_list(admin, scope, args.number, args.limit)


async def _run_import(admin: Admin, scope: Scope, args) -> int:
    path = args.file_opt or args.csv_file
    if path is None:
        raise UsageError("give the CSV file (FILE.csv or --file FILE.csv; '-' for stdin)")
    if path == "-":
        return await blacklist_import(admin, scope, sys.stdin, "<stdin>", args.actor)
    try:
        f = open(path, encoding="utf-8-sig", errors="replace", newline="")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    with f:
        return await blacklist_import(admin, scope, f, path, args.actor)


async def _run_export(admin: Admin, scope: Scope | None, args) -> int:
    if args.file is None:
        return await blacklist_export(admin, scope, sys.stdout)
    target = Path(args.file)
    with open(target, "w", encoding="utf-8", newline="") as f:
        code = await blacklist_export(admin, scope, f)
    print(f"wrote the entries to {target} (keyed hashes, not numbers)", file=sys.stderr)
    return code


async def _run_mo_list(admin: Admin, _scope, args) -> int:
    return await mo_list(admin, args.status, args.limit, args.show_numbers)


__all__ = ["add_arguments", "default_actor", "resolve_scope", "open_storage"]
