"""Data-subject requests: ``smscenter subject export|erase`` and ``smscenter account purge``.

The provider note promises access and erasure on request, automated. These verbs do it for
one number, looked up by its keyed hash (``storage/subject.py`` holds the queries):

``subject export -c FILE --number N [--account ID] [--output FILE]`` writes everything held
about the number as JSON — messages (decrypted text, states, dates, parts, receipts still
owed), MO (text, status), the partners' copies of MO still waiting, opt-outs (scope, source,
date), the invalid-number entry, unsubscribe links issued and used — to stdout, or to
``--output`` created mode 0600. It decrypts, so it needs the ``dpo`` role (``roles.py``).

``subject erase -c FILE --number N [--account ID] [--include-queued]`` deletes it all in
bounded batches and short transactions (``[retention] purge_batch`` messages each, ``purge_pause``
between them: safe beside a running daemon), except what must stay: the opt-outs, kept as keyed
hashes (erasing them would expose the person to marketing again), and the billing aggregates
(the messages are counted into ``billing_days`` before they go, so ``billing report`` does not
change). A message not yet ended (queued, or out upstream awaiting its receipt) is reported
and left; with ``--include-queued`` it is cancelled first — it ends DELETED and its partner's
failure receipt is queued in the outbox, which the daemon's outbox sender delivers — then
erased like the others. Two limits, said rather than hidden: a message already out upstream
may still be delivered by the upstream (we stop waiting for it; its late receipt finds no
message and is dropped with the early receipts), and a message the running daemon has already
taken from the queue into memory may still leave in the seconds that follow (the CLI cannot
reach the daemon's memory): erase again later to be sure.

``account purge -c FILE ID`` removes everything of an account that left the config:
messages (ended or not: nobody to send them for), MO, outbox rows, its own blacklist scope;
the billing aggregates stay. Refused while the account is configured.

Every run writes an audit row (counts only; the number's keyed hash, never the number). The
summaries print the number masked (``+336****78``), and never a text.

Exit codes: 0 done (also "nothing held"); 1 the keys cannot be read (role) or a database
problem; 2 wrong input — a number that does not parse, an unknown ``--account``, an account
still configured — nothing done.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any, Callable

import smscenter.cli.roles as roles
from smscenter.cli.verbs import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, add_config_option, load_for

#: Messages (or MO, or outbox rows) read per query by an export.
EXPORT_PAGE = 500


def add_arguments(verbs) -> None:
    """Register ``subject export|erase`` and ``account purge``."""
    subject = verbs.add_parser("subject", help="data-subject requests: export or erase what is held about a number")
    subs = subject.add_subparsers(dest="action", required=True, metavar="ACTION")

    def number_options(p) -> None:
        add_config_option(p)
        p.add_argument("--number", required=True, metavar="N",
                       help="the person's number (+33…, 0033…, or national in the account's default_country)")
        p.add_argument("--account", metavar="ID", help="only this account's data (default: every account)")

    export = subs.add_parser(
        "export", help="everything held about a number, as JSON (needs the dpo role)",
        description="Write everything held about a number as JSON: messages (decrypted text, states, "
        "dates, receipts), MO, opt-outs, the invalid-number entry, unsubscribe links. Audited.",
    )
    number_options(export)
    export.add_argument("--output", metavar="FILE", help="write to FILE (created mode 0600) instead of stdout")
    export.set_defaults(func=_cmd_export)

    erase = subs.add_parser(
        "erase", help="delete what is held about a number, opt-outs and billing aside (needs the dpo role)",
        description="Delete, in bounded batches, everything held about a number except its opt-outs "
        "(kept as keyed hashes: erasing them would expose it to marketing again) and the billing "
        "aggregates. Messages not yet ended are reported and left, unless --include-queued. Audited.",
    )
    number_options(erase)
    erase.add_argument("--include-queued", action="store_true",
                       help="cancel messages still queued or awaiting their receipt (their partner gets a "
                       "failure receipt), then erase them too")
    erase.set_defaults(func=_cmd_erase)

    account = verbs.add_parser("account", help="an account that left the config: purge")
    subs = account.add_subparsers(dest="action", required=True, metavar="ACTION")
    purge = subs.add_parser(
        "purge", help="remove everything of an account no longer configured, billing aside (needs the dpo role)",
    )
    add_config_option(purge)
    purge.add_argument("id", metavar="ID", help="the account's system_id")
    purge.add_argument("--keep-optouts", action="store_true",
                       help="keep the blacklist of the account's own scope (keyed hashes): for an account "
                       "that may come back, so that its customers' opt-outs still hold")
    purge.set_defaults(func=_cmd_account_purge)


# --------------------------------------------------------------------------- common


class _Usage(Exception):
    """Wrong input: printed, exit 2, nothing done."""


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def _target(settings, args) -> tuple[str, str | None]:
    """(E.164 number, account or None) from ``--number`` / ``--account``, or ``_Usage``."""
    from routing.numbers import InvalidNumber

    from smscenter.cli.admin import normalize

    account = None
    if args.account is not None:
        found = settings.account(args.account)
        if found is None:
            names = ", ".join(a.system_id for a in settings.accounts) or "none"
            raise _Usage(f"--account {args.account}: no such account (accounts: {names})")
        account, country = found.system_id, found.default_country
    else:
        country = settings.accounts[0].default_country if settings.accounts else "FR"
    try:
        return normalize(args.number, country), account
    except (InvalidNumber, ValueError) as exc:
        raise _Usage(f"--number: not a valid phone number ({exc})") from None


class Database:
    """The database for one verb: the async engine, and the transactions the erase runs in
    — on a SQLite file, a connection of its own that begins ``BEGIN IMMEDIATE`` with
    ``secure_delete`` on (as the retention purge: deleted means overwritten, and the write
    lock is taken at once instead of a read that fails to upgrade beside the daemon's
    writer); elsewhere, through the async engine."""

    def __init__(self, engine) -> None:
        from storage import db

        self.engine = engine
        self._url = db.writer_url(engine)
        self._sync = None

    async def transaction(self, fn: Callable[[Any], Any]) -> Any:
        if self._url is None:
            async with self.engine.begin() as conn:
                return await conn.run_sync(fn)
        if self._sync is None:
            from sqlalchemy import event

            from storage import db

            from smscenter.app.retention import _secure_delete

            self._sync = db.sync_writer_engine(self._url)
            event.listen(self._sync, "connect", _secure_delete)

        def run():
            with self._sync.connect() as conn:
                with conn.begin():
                    return fn(conn)

        return await asyncio.to_thread(run)

    async def read(self, fn: Callable[[Any], Any]) -> Any:
        async with self.engine.connect() as conn:
            return await conn.run_sync(fn)

    async def checkpoint(self) -> None:
        """SQLite: copy the WAL into the file and empty it (``TRUNCATE``), so the zeroed pages
        replace the old ones on disk. Best effort, as the retention purge's: with a running
        daemon's readers in the way, SQLite does what it can now and its next checkpoint
        the rest."""
        if self._sync is None:
            return  # PostgreSQL, or nothing written

        def run():
            raw = self._sync.raw_connection()
            try:
                raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                raw.close()

        await asyncio.to_thread(run)

    def close(self) -> None:
        if self._sync is not None:
            self._sync.dispose()


def _run(verb: str, settings, role: roles.Role, body) -> int:
    """Load the keys ``role`` gives (or say which role is needed), then ``body(db, cipher)``
    on the upgraded database."""
    from storage import db
    from storage.crypto import FieldCipher

    try:
        keyring = roles.keyring_for(settings, role, verb)
    except roles.RoleError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILURE
    cipher = FieldCipher(keyring) if keyring is not None else None

    async def main() -> int:
        engine = db.create_engine(settings.storage.url)
        handle = Database(engine)
        try:
            await db.upgrade(engine)
            return await body(handle, cipher)
        finally:
            handle.close()
            await engine.dispose()

    try:
        return asyncio.run(main())
    except _Usage as exc:
        print(f"{verb}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except db.SchemaTooNew as exc:
        print(f"{verb}: {exc}", file=sys.stderr)
    except OSError as exc:
        print(f"{verb}: {exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}".rstrip(": "), file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - a database that cannot be reached
        print(f"{verb}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return EXIT_FAILURE


def _prepare(args) -> tuple[str, Any, str | None, str | None] | int:
    verb, settings = load_for(args)
    if settings is None:
        return EXIT_USAGE
    try:
        e164, account = _target(settings, args)
    except _Usage as exc:
        print(f"{verb}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return verb, settings, e164, account


# --------------------------------------------------------------------------- decoding


def _state_name(state: int, part: bool = False) -> str:
    """A message's MessageState name; a part's also QUEUED, SENDING or SUBMITTED (out
    upstream, awaiting its receipt)."""
    from protocol.constants import MessageState
    from storage.schema import PART_QUEUED, PART_SENDING, PART_SUBMITTED

    named = {PART_QUEUED: "QUEUED", PART_SENDING: "SENDING", PART_SUBMITTED: "SUBMITTED"}
    if part and state in named:
        return named[state]
    try:
        return MessageState(state).name
    except ValueError:
        return str(state)


def _body(pdu) -> bytes:
    """The user data of a submit_sm / deliver_sm, its UDH (concatenation header) removed."""
    from protocol.constants import Tag

    data = bytes(pdu.tlv(Tag.MESSAGE_PAYLOAD) or getattr(pdu, "short_message", b"") or b"")
    if getattr(pdu, "esm_class", 0) & 0x40 and data:  # UDHI: a user data header first
        data = data[1 + data[0]:]
    return data


def _text(data: bytes, data_coding: int) -> dict:
    from protocol.text import decode_text, is_binary

    if is_binary(data_coding):
        return {"binary_hex": data.hex()}
    return {"text": decode_text(data, data_coding, errors="replace")}


def _open_pdu(cipher, token: bytes, aad: bytes):
    from protocol import codec

    return codec.decode(cipher.decrypt(token, aad))


def _message_json(cipher, m: dict) -> dict:
    pieces, unreadable = [], []
    for p in m["parts"]:
        try:
            pieces.append(_body(_open_pdu(cipher, p["pdu_enc"], b"part:%d:%d" % (m["id"], p["part_no"]))))
        except Exception as exc:  # noqa: BLE001 - a part the keys cannot open: said, not hidden
            unreadable.append(f"part {p['part_no']}: {type(exc).__name__}")
    out = {
        "id": str(m["id"]), "account": m["account"], "category": m["category"], "sender": m["source_addr"],
        "submitted_at": _iso(m["submitted_at"]), "not_before": _iso(m["not_before"]),
        "expires_at": _iso(m["expires_at"]), "done_at": _iso(m["done_at"]), "state": _state_name(m["state"]),
        "error": m["error"], "parts_total": m["parts_total"], "connector": m["connector"],
        "destination_country": m["dest_country"], "receipt_requested": bool(m["registered_delivery"] & 0x03),
        **_text(b"".join(pieces), m["data_coding"]),
        "parts": [
            {"part_no": p["part_no"], "state": _state_name(p["state"], part=True), "connector": p["connector"],
             "upstream_id": p["upstream_id"], "attempts": p["attempts"], "updated_at": _iso(p["updated_at"])}
            for p in m["parts"]
        ],
        "receipts_owed": [_outbox_json(cipher, o) for o in m["receipts"]],
    }
    if m["unsub_token"]:
        out["unsubscribe_token"] = m["unsub_token"]
    if unreadable:
        out["unreadable"] = unreadable
    return out


def _outbox_json(cipher, o: dict) -> dict:
    """An outbox row (a receipt or an MO copy not yet delivered to the partner)."""
    out = {"id": str(o["id"]), "account": o["account"], "created_at": _iso(o["created_at"]),
           "expires_at": _iso(o["expires_at"]), "attempts": o["attempts"]}
    try:
        pdu = _open_pdu(cipher, o["pdu_enc"], b"outbox:%d" % o["id"])
        out.update(_text(_body(pdu), getattr(pdu, "data_coding", 0)))
    except Exception as exc:  # noqa: BLE001
        out["unreadable"] = type(exc).__name__
    return out


def _mo_json(cipher, r: dict) -> dict:
    out = {"id": str(r["id"]), "received_at": _iso(r["received_at"]), "short_code": r["short_code"],
           "connector": r["connector"], "account": r["account"], "status": r["status"], "reason": r["reason"]}
    try:
        out.update(_text(cipher.decrypt(r["text_enc"], b"mo-text:%d" % r["id"]), r["data_coding"]))
    except Exception as exc:  # noqa: BLE001
        out["unreadable"] = type(exc).__name__
    return out


async def _pending_of(db, page, account: str | None, sender) -> list[dict]:
    """The rows of ``page`` (the outbox's MO copies, the webhook backlog's MO: few, what a
    partner or receiver has not acknowledged yet) whose decrypted sender is the number:
    ``sender(row)`` gives it, or raises for a row it cannot open (another key: not ours to
    judge here)."""
    found, after = [], 0
    while True:
        rows = await db.read(lambda c: page(c, after, EXPORT_PAGE))
        for row in rows:
            if account is not None and row["account"] != account:
                continue
            try:
                if sender(row):
                    found.append(row)
            except Exception:  # noqa: BLE001 - another key, another number
                continue
        if len(rows) < EXPORT_PAGE:
            return found
        after = rows[-1]["id"]


async def _mo_copies(db, cipher, e164: str, account: str | None) -> list[dict]:
    """The partners' copies of this number's MO still in the outbox (decrypted to be found)."""
    from storage.subject import mo_outbox_page

    def sender(row) -> bool:
        pdu = _open_pdu(cipher, row["pdu_enc"], b"outbox:%d" % row["id"])
        return getattr(pdu, "source_addr", "") == e164.lstrip("+")

    return await _pending_of(db, mo_outbox_page, account, sender)


async def _mo_webhooks(db, cipher, e164: str, account: str | None) -> list[dict]:
    """This number's MO and opt-out events still waiting in the webhook backlog (both go to
    the ``mo_url``: the number is an MO's ``from``, an opt-out's ``number``), each row with
    its decrypted ``body``."""
    from storage.subject import mo_webhook_page

    def sender(row) -> bool:
        row["body"] = body = json.loads(cipher.decrypt(row["payload_enc"], b"webhook:%d" % row["id"]))
        return str(body.get("from") or body.get("number") or "").lstrip("+") == e164.lstrip("+")

    return await _pending_of(db, mo_webhook_page, account, sender)


# --------------------------------------------------------------------------- export


async def collect(db, cipher, e164: str, account: str | None) -> dict:
    """Everything held about ``e164`` (of ``account``, when given), as the export's JSON."""
    from storage import subject

    h = cipher.lookup_hash(e164)
    msgs, mos, after = [], [], 0
    while True:
        page = await db.read(lambda c: subject.messages_page(c, h, account, after, EXPORT_PAGE))
        msgs.extend(_message_json(cipher, m) for m in page)
        if len(page) < EXPORT_PAGE:
            break
        after = page[-1]["id"]
    after = 0
    while True:
        page = await db.read(lambda c: subject.mo_page(c, h, account, after, EXPORT_PAGE))
        mos.extend(_mo_json(cipher, r) for r in page)
        if len(page) < EXPORT_PAGE:
            break
        after = page[-1]["id"]
    copies = [_outbox_json(cipher, o) for o in await _mo_copies(db, cipher, e164, account)]
    hooks = [{"account": w["account"], "created_at": _iso(w["created_at"]), "attempts": w["attempts"],
              "body": w["body"]} for w in await _mo_webhooks(db, cipher, e164, account)]
    optouts = await db.read(lambda c: subject.optouts_of(c, h, account))
    invalid = await db.read(lambda c: subject.invalid_entry(c, h))
    return {
        "number": e164,
        "account": account,
        "exported_at": _iso(time.time()),
        "messages": msgs,
        "mo": mos,
        "mo_copies_owed": copies,
        "mo_webhooks_owed": hooks,
        "optouts": [
            {"scope": o["scope"], "source": o["source"], "created_at": _iso(o["created_at"]),
             "created_by": o["created_by"], "confirmed_at": _iso(o["confirmed_at"])}
            for o in optouts
        ],
        "invalid_number": None if invalid is None else {
            "reported_at": _iso(invalid["created_at"]), "refused_until": _iso(invalid["expires_at"])},
        "unsubscribe_links": {
            "issued": [{"token": m["unsubscribe_token"], "message_id": m["id"], "account": m["account"]}
                       for m in msgs if "unsubscribe_token" in m],
            "used": [{"scope": o["scope"], "at": _iso(o["created_at"])} for o in optouts if o["source"] == "link"],
        },
    }


def _counts(doc: dict) -> dict[str, int]:
    return {"messages": len(doc["messages"]), "mo": len(doc["mo"]), "mo_copies": len(doc["mo_copies_owed"]),
            "mo_webhooks": len(doc["mo_webhooks_owed"]),
            "optouts": len(doc["optouts"]), "invalid": int(doc["invalid_number"] is not None),
            "links_used": len(doc["unsubscribe_links"]["used"])}


def _write_private(path: str, text: str) -> None:
    """Create (or replace) ``path`` mode 0600 before a byte is written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            fd = -1
            f.write(text)
    finally:
        if fd >= 0:
            os.close(fd)


def _cmd_export(args: argparse.Namespace) -> int:
    from routing.numbers import mask

    prepared = _prepare(args)
    if isinstance(prepared, int):
        return prepared
    verb, settings, e164, account = prepared

    async def body(db, cipher) -> int:
        doc = await collect(db, cipher, e164, account)
        counts = _counts(doc)
        detail = " ".join(f"{k}={v}" for k, v in counts.items())
        await roles.audit(db.engine, "subject.export", account or "*", detail, dest_hash=cipher.lookup_hash(e164))
        if not any(counts.values()):
            print(f"nothing held about {mask(e164)}" + (f" for {account}" if account else ""), file=sys.stderr)
            return EXIT_OK
        text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
        if args.output:
            _write_private(args.output, text)
        else:
            sys.stdout.write(text)
        where = f" to {args.output} (mode 0600)" if args.output else ""
        print(f"exported {mask(e164)}{where}: " + ", ".join(f"{v} {k}" for k, v in counts.items()), file=sys.stderr)
        return EXIT_OK

    return _run(verb, settings, roles.Role.DPO, body)


# --------------------------------------------------------------------------- erase


def _receipt_builder(settings, cipher, engine_ids: int):
    """The daemon's receipt builder (``receipts.ReceiptBuilder``) for the failure receipts
    of cancelled messages, with ids past every id stored (``engine_ids``)."""
    from storage.ids import IdGenerator

    from smscenter.pipeline.receipts import ReceiptBuilder

    ids = IdGenerator(node=roles.CLI_NODE)
    ids.seed(engine_ids + 1)

    def retention(account: str) -> float:
        found = settings.account(account)
        return (settings.retention_for(found) if found else settings.retention).message_details

    return ReceiptBuilder(cipher, ids, retention)


async def _erase_all(db, settings, where_messages, where_mo, unfinished: str, receipt_for=None, country_of=None):
    """Messages then MO matching the conditions, batch by batch (``purge_batch`` per
    transaction, ``purge_pause`` between)."""
    from storage import subject

    limit, pause = settings.retention.purge_batch, settings.retention.purge_pause
    total = subject.Erased()
    after = 0
    while True:
        now = time.time()
        batch = await db.transaction(lambda c: subject.erase_messages(
            c, where_messages, after, limit, now, unfinished=unfinished, receipt_for=receipt_for,
            country_of=country_of))
        total.add(batch)
        after = batch.last_id
        if batch.selected < limit:
            break
        await asyncio.sleep(pause)
    while True:
        batch = await db.transaction(lambda c: subject.erase_mo(c, where_mo, limit))
        total.add(batch)
        if batch.selected < limit:
            break
        await asyncio.sleep(pause)
    return total


async def erase_number(db: Database, settings, cipher, e164: str, account: str | None,
                       include_queued: bool) -> tuple[dict[str, int], Counter]:
    """Erase what is held about ``e164`` (of ``account``, when given): (counts, messages
    deleted per account). Opt-outs and billing aggregates stay (see the module docstring)."""
    from storage import subject
    from storage.store import max_ids

    from smscenter.app.retention import cipher_country

    h = cipher.lookup_hash(e164)
    builder = _receipt_builder(settings, cipher, max((await max_ids(db.engine)).values()))
    total = await _erase_all(
        db, settings, subject.number_messages(h, account), subject.number_mo(h, account),
        "cancel" if include_queued else "keep", builder, cipher_country(cipher),
    )
    copies = [r["id"] for r in await _mo_copies(db, cipher, e164, account)]
    limit = settings.retention.purge_batch
    for start in range(0, len(copies), limit):
        chunk = copies[start:start + limit]
        total.rows["outbox"] += await db.transaction(lambda c: subject.delete_outbox(c, chunk))
    hooks = [w["id"] for w in await _mo_webhooks(db, cipher, e164, account)]
    for start in range(0, len(hooks), limit):
        chunk = hooks[start:start + limit]
        total.rows["webhook_backlog"] += await db.transaction(lambda c: subject.delete_webhooks(c, chunk))
    invalid = await db.transaction(lambda c: subject.erase_invalid(c, h))
    optouts = len(await db.read(lambda c: subject.optouts_of(c, h, account)))
    await db.checkpoint()
    counts = {
        "messages": total.rows["messages"], "parts": total.rows["parts"], "outbox": total.rows["outbox"],
        "webhooks": total.rows["webhook_backlog"], "mo": total.rows["mo_messages"], "invalid": invalid, "cancelled": total.cancelled,
        "receipts_queued": total.receipts_queued, "left": len(total.left), "optouts_kept": optouts,
    }
    await roles.audit(db.engine, "subject.erase", account or "*", " ".join(f"{k}={v}" for k, v in counts.items()),
                      dest_hash=h)
    return counts, total.by_account


def _cmd_erase(args: argparse.Namespace) -> int:
    from routing.numbers import mask

    prepared = _prepare(args)
    if isinstance(prepared, int):
        return prepared
    verb, settings, e164, account = prepared

    async def body(db, cipher) -> int:
        counts, by_account = await erase_number(db, settings, cipher, e164, account, args.include_queued)
        _print_erase(mask(e164), account, counts, by_account)
        return EXIT_OK

    return _run(verb, settings, roles.Role.DPO, body)


def _print_erase(masked: str, account: str | None, c: dict, by_account: Counter) -> None:
    erased = c["messages"] + c["parts"] + c["outbox"] + c["webhooks"] + c["mo"] + c["invalid"]
    scope = f"account {account}" if account else "every account"
    if not erased and not c["left"] and not c["optouts_kept"]:
        print(f"nothing held about {masked} ({scope})")
        return
    per = ", ".join(f"{a} {n}" for a, n in sorted(by_account.items()))
    print(f"erased for {masked} ({scope}):")
    print(f"  messages {c['messages']}" + (f" ({per})" if per else "")
          + f", their parts {c['parts']}, outbox rows (receipts, MO copies) {c['outbox']}")
    print(f"  MO {c['mo']}, webhook events not yet delivered {c['webhooks']}, invalid-number entry {c['invalid']}")
    if c["cancelled"]:
        print(f"  cancelled first (not ended): {c['cancelled']}; failure receipts queued for partners: "
              f"{c['receipts_queued']} (they name the number, encrypted, until delivered)")
    if c["left"]:
        print(f"  left: {c['left']} messages not ended (queued or awaiting their receipt); "
              "give --include-queued to cancel and erase them")
    print(f"  kept: {c['optouts_kept']} opt-outs (keyed hashes: erasing them would expose the number to "
          "marketing again) and the billing aggregates (no number)")


# --------------------------------------------------------------------------- account purge


async def purge_account(db: Database, settings, cipher, account: str, *,
                        keep_optouts: bool = False) -> dict[str, int] | None:
    """Remove everything of ``account`` but its billing aggregates: counts, or None when
    nothing was held. The caller checked that the account is no longer configured.

    The blacklist of the account's own scope goes too by default: a processor deletes its
    client's data at the end of the contract, and that list is only ever read for this
    account. ``keep_optouts`` keeps it (keyed hashes, no number in clear) for an account that
    may come back: its customers' opt-outs then still hold when it does."""
    from storage import subject

    from smscenter.app.retention import cipher_country

    if not await db.read(lambda c: subject.account_held(c, account, optouts=not keep_optouts)):
        await roles.audit(db.engine, "account.purge", account, "nothing held")
        return None
    total = await _erase_all(db, settings, subject.account_messages(account), subject.account_mo(account),
                             "drop", country_of=cipher_country(cipher))
    limit, pause = settings.retention.purge_batch, settings.retention.purge_pause
    steps = (subject.erase_account_outbox, subject.erase_account_webhooks)
    if not keep_optouts:
        steps += (subject.erase_account_optouts,)
    for step in steps:
        while True:
            batch = await db.transaction(lambda c: step(c, account, limit))
            total.add(batch)
            if batch.selected < limit:
                break
            await asyncio.sleep(pause)
    await db.checkpoint()
    counts = {k: total.rows[t] for k, t in (("messages", "messages"), ("parts", "parts"), ("outbox", "outbox"),
                                            ("webhooks", "webhook_backlog"), ("mo", "mo_messages"),
                                            ("optouts", "blacklist"))}
    await roles.audit(db.engine, "account.purge", account, " ".join(f"{k}={v}" for k, v in counts.items()))
    return counts


def _cmd_account_purge(args: argparse.Namespace) -> int:
    verb, settings = load_for(args)
    if settings is None:
        return EXIT_USAGE
    account = args.id
    if settings.account(account) is not None:
        print(f"{verb}: account {account} is still in {args.config}: remove its [[account]] first "
              "(nothing done)", file=sys.stderr)
        return EXIT_USAGE

    async def body(db, cipher) -> int:
        counts = await purge_account(db, settings, cipher, account, keep_optouts=args.keep_optouts)
        if counts is None:
            print(f"nothing held for account {account} (billing aggregates aside)")
            return EXIT_OK
        optouts = ("kept (--keep-optouts)" if args.keep_optouts
                   else f"opt-outs of its own scope {counts['optouts']}")
        print(f"purged account {account}: messages {counts['messages']}, parts {counts['parts']}, outbox rows "
              f"{counts['outbox']}, webhook events {counts['webhooks']}, MO {counts['mo']}, {optouts}; "
              "billing aggregates kept")
        return EXIT_OK

    return _run(verb, settings, roles.Role.DPO, body)


__all__ = ["Database", "add_arguments", "collect", "erase_number", "purge_account"]
