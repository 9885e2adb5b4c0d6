"""Data-subject requests on both backends (``smscenter/cli/subject.py``'s ``collect``,
``erase_number``, ``purge_account`` over ``storage/subject.py``): export → erase → export
again leaves only the hashed opt-outs; another number is untouched; billing totals do not
move; a message not ended stays (and is reported) unless ``--include-queued``, which cancels
it and queues its partner's failure receipt; batches smaller than the work; an account gone
from the config purged, billing aside; the audit rows carry counts and the keyed hash only.

Rows are written by ``tests/retention_fixtures.Seeder`` (real ``FieldCipher``), their parts
and outbox rows then made real PDUs (``realize``), as the daemon stores them."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from protocol import codec
from protocol import pdu as P
from protocol.constants import EsmClass
from smscenter.config import settings_from_dict
from smscenter.cli.subject import Database, collect, erase_number, purge_account
from storage import db
from storage.crypto import FieldCipher, Keyring
from storage.purge import billing_rows
from storage.schema import (
    OUTBOX_MO,
    OUTBOX_RECEIPT,
    PART_QUEUED,
    WEBHOOK_MO,
    WEBHOOK_RECEIPT,
    audit_log,
    blacklist,
    messages,
    mo_messages,
    outbox,
    parts,
    webhook_backlog,
)
from tests.retention_fixtures import DAY, NOW, Seeder

HASH = "scrypt$16384$8$1$s5Y73IQSiQFNjmd2BA0ncA$3bu9+9yLDyNEF1c0dZdTHrly0o1Wx72udtUvTAl93z4"
A, TEXT_A = "+33611112222", "Rendez-vous XQZWV mardi"
B, TEXT_B = "+33633334444", "Code secret BLORPT 4471"
WHOLE = (NOW - 400 * DAY, NOW + DAY)


def make_settings(url: str, keys: str = "keys", accounts=("acme",)):
    return settings_from_dict({
        "storage": {"url": url, "keys": keys},
        "retention": {"purge_batch": 10, "purge_pause": "0s"},
        "account": [{"system_id": a, "password": HASH} for a in accounts],
    })


def realize(conn, cipher, number_of: dict[str, str]) -> None:
    """Turn the Seeder's stand-in tokens (encrypted raw text) into what the daemon stores:
    parts as encrypted submit_sm, receipts and MO copies as encrypted deliver_sm from the
    number (``number_of``: text → number)."""
    totals = dict(conn.execute(select(messages.c.id, messages.c.parts_total)).all())
    for p in conn.execute(select(parts)).mappings().all():
        aad = b"part:%d:%d" % (p["message_id"], p["part_no"])
        raw = cipher.decrypt(p["pdu_enc"], aad)
        if raw.startswith(b"\x00"):
            continue  # already a PDU (a second call)
        # Part n of N carries the n-th slice of the text after a concatenation header.
        n, total = p["part_no"], totals[p["message_id"]]
        size = -(-len(raw) // total)
        udh = bytes((5, 0, 3, 42, total, n))
        pdu = P.SubmitSm(source_addr="ACME", destination_addr=number_of[raw.decode()].lstrip("+"),
                         esm_class=0x40, short_message=udh + raw[(n - 1) * size:n * size])
        conn.execute(parts.update().where(parts.c.message_id == p["message_id"], parts.c.part_no == p["part_no"])
                     .values(pdu_enc=cipher.encrypt(codec.encode(pdu), aad)))
    dests = {m.id: cipher.decrypt(m.dest_enc, b"dest:%d" % m.id).decode()
             for m in conn.execute(select(messages.c.id, messages.c.dest_enc))}
    for o in conn.execute(select(outbox)).mappings().all():
        aad = b"outbox:%d" % o["id"]
        raw = cipher.decrypt(o["pdu_enc"], aad)
        if raw.startswith(b"\x00"):
            continue
        if o["kind"] == OUTBOX_RECEIPT:
            pdu = P.DeliverSm(source_addr=dests[o["message_id"]].lstrip("+"), destination_addr="ACME",
                              esm_class=EsmClass.DELIVERY_RECEIPT, short_message=raw)
        else:
            pdu = P.DeliverSm(source_addr=number_of[raw.decode()].lstrip("+"), destination_addr="36180", short_message=raw)
        conn.execute(outbox.update().where(outbox.c.id == o["id"]).values(pdu_enc=cipher.encrypt(codec.encode(pdu), aad)))


def seed_people(conn, cipher, *, extra_a: int = 0) -> dict:
    """Number A: ended messages in acme (``3 + extra_a``) and beta, one queued, one awaiting
    its receipt, two MO (one with its partner copy in the outbox), an invalid-number entry,
    an opt-out by STOP (acme) and one by unsubscribe link (beta). Number B: a message, an MO
    with its copy, an opt-out, an invalid-number entry."""
    s = Seeder(conn, cipher)
    made = {
        "a_done": [s.message(ended_days_ago=3, number=A, text=TEXT_A) for _ in range(3 + extra_a)],
        "a_beta": s.message(account="beta", ended_days_ago=3, number=A, text=TEXT_A),
        "a_queued": s.message(ended_days_ago=None, part_state=PART_QUEUED, number=A, text=TEXT_A, receipt=False),
        # out upstream, awaiting its receipt
        "a_out": s.message(ended_days_ago=None, number=A, text=TEXT_A, receipt=False),
        "a_mo": [s.mo(days_ago=2, number=A, text=TEXT_A, with_outbox=True), s.mo(days_ago=1, number=A, text=TEXT_A)],
        "b": s.message(ended_days_ago=3, number=B, text=TEXT_B),
        "b_beta": s.message(account="beta", ended_days_ago=3, number=B, text=TEXT_B),
        "b_mo": s.mo(days_ago=1, number=B, text=TEXT_B, with_outbox=True),
    }
    s.invalid(A, reported_days_ago=1)
    s.invalid(B, reported_days_ago=1)
    s.optout(A, scope="acme")
    conn.execute(blacklist.insert(), [{"scope": "beta", "dest_hash": cipher.lookup_hash(A), "source": "link",
                                       "created_at": NOW - DAY, "created_by": "unsubscribe-link", "confirmed_at": None}])
    s.optout(B, scope="acme")
    realize(conn, cipher, {TEXT_A: A, TEXT_B: B})
    return made


@pytest.fixture
async def world(db_url, tmp_path):
    engine = db.create_engine(db_url)
    await db.upgrade(engine)
    cipher = FieldCipher(Keyring.create(tmp_path / "keys"))
    handle = Database(engine)
    yield engine, handle, cipher, db_url
    handle.close()
    await engine.dispose()


async def seed(engine, fn):
    async with engine.begin() as conn:
        return await conn.run_sync(fn)


async def billing(engine, account: str) -> tuple[int, int]:
    async with engine.connect() as conn:
        rows = await conn.run_sync(lambda c: billing_rows(c, account, *WHOLE))
    return sum(r["messages"] for r in rows), sum(r["segments"] for r in rows)


def without_time(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "exported_at"}


async def test_export_erase_export_leaves_only_the_hashed_optouts(world):
    engine, handle, cipher, url = world
    settings = make_settings(url, accounts=("acme", "beta"))
    made = await seed(engine, lambda c: seed_people(c, cipher, extra_a=22))  # 25 + 1 ended: three batches of 10
    bills = {a: await billing(engine, a) for a in ("acme", "beta")}
    b_before = without_time(await collect(handle, cipher, B, None))

    doc = await collect(handle, cipher, A, None)
    assert len(doc["messages"]) == 25 + 1 + 2
    assert {m["text"] for m in doc["messages"]} == {TEXT_A}
    states = {int(m["id"]): m["state"] for m in doc["messages"]}
    assert states[made["a_queued"]] == "ENROUTE" and states[made["a_out"]] == "ENROUTE"
    queued = next(m for m in doc["messages"] if int(m["id"]) == made["a_queued"])
    assert [p["state"] for p in queued["parts"]] == ["QUEUED", "QUEUED"]
    done = next(m for m in doc["messages"] if int(m["id"]) == made["a_done"][0])
    assert done["state"] == "DELIVERED" and done["done_at"] and [r["text"] for r in done["receipts_owed"]]
    assert [m["text"] for m in doc["mo"]] == [TEXT_A, TEXT_A]
    assert [c["text"] for c in doc["mo_copies_owed"]] == [TEXT_A]
    assert [(o["scope"], o["source"]) for o in doc["optouts"]] == [("acme", "stop"), ("beta", "link")]
    assert doc["invalid_number"] is not None
    assert doc["unsubscribe_links"]["used"] == [{"scope": "beta", "at": doc["optouts"][1]["created_at"]}]
    assert B not in str(doc) and TEXT_B not in str(doc)

    # Without --include-queued: the two messages not ended stay, reported.
    counts, by_account = await erase_number(handle, settings, cipher, A, None, include_queued=False)
    assert counts == {"messages": 26, "parts": 52, "outbox": 26 + 1, "webhooks": 0, "mo": 2, "invalid": 1,
                      "cancelled": 0,
                      "receipts_queued": 0, "left": 2, "optouts_kept": 2}
    assert by_account == {"acme": 25, "beta": 1}
    after = await collect(handle, cipher, A, None)
    assert sorted(int(m["id"]) for m in after["messages"]) == sorted([made["a_queued"], made["a_out"]])
    assert after["mo"] == [] and after["mo_copies_owed"] == [] and after["invalid_number"] is None

    # With it: cancelled, each partner's failure receipt queued, then erased.
    counts, _ = await erase_number(handle, settings, cipher, A, None, include_queued=True)
    assert (counts["messages"], counts["cancelled"], counts["receipts_queued"], counts["left"]) == (2, 2, 2, 0)
    async with engine.connect() as conn:
        owed = (await conn.execute(select(outbox).where(outbox.c.message_id.in_([made["a_queued"], made["a_out"]]))
                                   )).mappings().all()
        assert await conn.scalar(select(func.count()).select_from(parts).where(
            parts.c.message_id.in_([made["a_queued"], made["a_out"]]))) == 0
    assert len(owed) == 2 and {o["account"] for o in owed} == {"acme"}
    for o in owed:
        receipt = codec.decode(cipher.decrypt(o["pdu_enc"], b"outbox:%d" % o["id"]))
        assert receipt.esm_class & EsmClass.DELIVERY_RECEIPT and receipt.destination_addr == "ACME"
        assert b"stat:DELETED" in receipt.short_message and receipt.source_addr == A.lstrip("+")

    final = await collect(handle, cipher, A, None)
    assert [k for k in ("messages", "mo", "mo_copies_owed") if final[k]] == [] and final["invalid_number"] is None
    assert [(o["scope"], o["source"]) for o in final["optouts"]] == [("acme", "stop"), ("beta", "link")]
    assert without_time(await collect(handle, cipher, B, None)) == b_before  # the other number: untouched
    assert {a: await billing(engine, a) for a in ("acme", "beta")} == bills  # billing: unchanged

    async with engine.connect() as conn:
        rows = (await conn.execute(select(audit_log).order_by(audit_log.c.id))).mappings().all()
    assert [r["action"] for r in rows] == ["subject.erase", "subject.erase"]
    assert all(r["dest_hash"] == cipher.lookup_hash(A) and r["scope"] == "*" for r in rows)
    assert "left=2" in rows[0]["detail"] and "cancelled=2" in rows[1]["detail"]
    for r in rows:
        seen = " ".join(str(v) for v in r.values())
        assert A.lstrip("+") not in seen and B.lstrip("+") not in seen and "XQZWV" not in seen


async def test_an_account_filter_erases_that_account_only(world):
    engine, handle, cipher, url = world
    settings = make_settings(url, accounts=("acme", "beta"))
    made = await seed(engine, lambda c: seed_people(c, cipher))
    doc = await collect(handle, cipher, A, "beta")
    assert [int(m["id"]) for m in doc["messages"]] == [made["a_beta"]]
    assert [o["scope"] for o in doc["optouts"]] == ["beta"] and doc["mo"] == []  # the MO went to acme
    counts, by_account = await erase_number(handle, settings, cipher, A, "beta", include_queued=True)
    assert by_account == {"beta": 1} and counts["cancelled"] == 0
    assert len((await collect(handle, cipher, A, "acme"))["messages"]) == 5


async def test_account_purge_removes_a_departed_account_billing_aside(world):
    engine, handle, cipher, url = world
    settings = make_settings(url, accounts=("acme",))  # beta left the config
    await seed(engine, lambda c: seed_people(c, cipher))
    async with engine.begin() as conn:
        def more(c):
            Seeder(c, cipher).mo(account="beta", days_ago=1, number=B, text=TEXT_B, with_outbox=True)
            realize(c, cipher, {TEXT_A: A, TEXT_B: B})

        await conn.run_sync(more)
    bills = {a: await billing(engine, a) for a in ("acme", "beta")}
    acme_a = len((await collect(handle, cipher, A, "acme"))["messages"])

    counts = await purge_account(handle, settings, cipher, "beta")
    assert counts == {"messages": 2, "parts": 4, "outbox": 2 + 1, "webhooks": 0, "mo": 1, "optouts": 1}
    async with engine.connect() as conn:
        for table, col in ((messages, messages.c.account), (mo_messages, mo_messages.c.account),
                           (outbox, outbox.c.account), (blacklist, blacklist.c.scope)):
            assert await conn.scalar(select(func.count()).select_from(table).where(col == "beta")) == 0
        assert await conn.scalar(select(func.count()).select_from(outbox).where(outbox.c.kind == OUTBOX_MO)) == 2
    assert {a: await billing(engine, a) for a in ("acme", "beta")} == bills
    assert len((await collect(handle, cipher, A, "acme"))["messages"]) == acme_a
    assert await purge_account(handle, settings, cipher, "beta") is None  # nothing held any more
    async with engine.connect() as conn:
        details = [r[0] for r in await conn.execute(select(audit_log.c.detail).where(audit_log.c.action == "account.purge"))]
    assert details == ["messages=2 parts=4 outbox=3 webhooks=0 mo=1 optouts=1", "nothing held"]


async def test_lookups_by_number_read_their_indexes(tmp_path):
    """Every statement an export and an erase run to find a number's messages and MO goes
    through ix_messages_dest / ix_mo_source (migration 0012): no scan of either table, whatever
    its size; the MO copies in the outbox through ix_outbox_mo, not every receipt (SQLite's
    plans, for the very statements run, captured)."""
    import sqlite3

    from sqlalchemy import event

    url = f"sqlite:///{tmp_path / 'plans.db'}"
    engine = db.create_engine(url)
    await db.upgrade(engine)
    cipher = FieldCipher(Keyring.create(tmp_path / "keys"))
    await seed(engine, lambda c: seed_people(c, cipher))
    handle = Database(engine)
    seen: list[tuple[str, tuple]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if not executemany and statement.lstrip().upper().startswith(("SELECT", "DELETE")):
            seen.append((statement, tuple(parameters)))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    await handle.transaction(lambda c: None)  # the erase's own connection (BEGIN IMMEDIATE) made
    event.listen(handle._sync, "before_cursor_execute", capture)
    await collect(handle, cipher, A, None)
    await collect(handle, cipher, A, "acme")
    await erase_number(handle, make_settings(url, accounts=("acme", "beta")), cipher, A, None, include_queued=False)
    handle.close()
    await engine.dispose()
    raw = sqlite3.connect(tmp_path / "plans.db")
    checked = set()
    for statement, params in seen:
        for table, column, index in (("messages", "dest_hash", "ix_messages_dest"),
                                     ("mo_messages", "source_hash", "ix_mo_source")):
            if f"FROM {table} " in statement + " " and f"{table}.{column} = ?" in statement:
                plan = " ".join(r[-1] for r in raw.execute("EXPLAIN QUERY PLAN " + statement, params))
                assert index in plan and f"SCAN {table}" not in plan, (statement, plan)
                checked.add(table)
        if "FROM outbox" in statement and "outbox.message_id IS NULL" in statement:
            plan = " ".join(r[-1] for r in raw.execute("EXPLAIN QUERY PLAN " + statement, params))
            assert "ix_outbox_mo" in plan, (statement, plan)
            checked.add("outbox")
    raw.close()
    assert checked == {"messages", "mo_messages", "outbox"}
    assert any(s.startswith("SELECT") and "mo_messages.source_hash = ?" in s and "ORDER BY mo_messages.id" in s
               and "LIMIT" in s and "mo_messages.id >" not in s for s, _ in seen)  # the erase's, captured


def webhook_row(cipher, row_id: int, account: str, kind: int, body: dict, message_id: int | None = None) -> dict:
    """A webhook backlog row as the daemon's subscriber writes it (JSON body encrypted,
    AAD ``webhook:<id>``), not yet acknowledged by the receiver."""
    import json

    return {"id": row_id, "account": account, "kind": kind, "message_id": message_id,
            "payload_enc": cipher.encrypt(json.dumps(body).encode(), b"webhook:%d" % row_id),
            "created_at": NOW - DAY, "expires_at": NOW + 100 * DAY, "attempts": 3, "next_attempt_at": NOW}


async def test_account_purge_can_keep_the_accounts_opt_outs(world):
    """``--keep-optouts``: an account that may come back keeps its customers' opt-outs (keyed
    hashes) while everything else of it goes; a second purge then finds nothing to do."""
    engine, handle, cipher, url = world
    settings = make_settings(url, accounts=("acme",))
    await seed(engine, lambda c: seed_people(c, cipher))
    async with engine.connect() as conn:
        kept = sorted((await conn.execute(select(blacklist.c.dest_hash).where(blacklist.c.scope == "beta"))).scalars())
    assert kept  # the seed opted a number out of beta's scope

    counts = await purge_account(handle, settings, cipher, "beta", keep_optouts=True)
    assert counts["messages"] == 2 and counts["optouts"] == 0
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(messages).where(messages.c.account == "beta")) == 0
        assert sorted((await conn.execute(
            select(blacklist.c.dest_hash).where(blacklist.c.scope == "beta"))).scalars()) == kept
    assert await purge_account(handle, settings, cipher, "beta", keep_optouts=True) is None
    assert (await purge_account(handle, settings, cipher, "beta"))["optouts"] == len(kept)  # without: they go


async def test_webhook_events_not_yet_delivered_are_exported_and_erased(world):
    """MO and opt-out events waiting for a receiver that is down name the number (encrypted): the export shows
    them, the erase deletes them and the receipts' events of the erased messages; another
    number's stay; an account purge removes the account's."""
    engine, handle, cipher, url = world
    settings = make_settings(url, accounts=("acme", "beta"))
    made = await seed(engine, lambda c: seed_people(c, cipher))
    rows = [
        webhook_row(cipher, 9001, "acme", WEBHOOK_MO, {"event": "mo", "from": A, "text": TEXT_A}),
        webhook_row(cipher, 9002, "acme", WEBHOOK_MO, {"event": "mo", "from": B, "text": TEXT_B}),
        webhook_row(cipher, 9003, "acme", WEBHOOK_RECEIPT, {"event": "receipt", "message_id": str(made["a_done"][0])},
                    message_id=made["a_done"][0]),
        webhook_row(cipher, 9004, "beta", WEBHOOK_RECEIPT, {"event": "receipt", "message_id": str(made["b_beta"])},
                    message_id=made["b_beta"]),
        # An opt-out event (to the mo_url too) names the number as ``number``.
        webhook_row(cipher, 9005, "acme", WEBHOOK_MO, {"event": "optout", "number": A, "source": "manual"}),
    ]
    await seed(engine, lambda c: c.execute(webhook_backlog.insert(), rows))

    doc = await collect(handle, cipher, A, None)
    assert [(w["body"]["event"], w["body"].get("text")) for w in doc["mo_webhooks_owed"]] == [
        ("mo", TEXT_A), ("optout", None)]
    assert B not in str(doc) and TEXT_B not in str(doc)
    assert (await collect(handle, cipher, A, "beta"))["mo_webhooks_owed"] == []  # acme's, not beta's

    counts, _ = await erase_number(handle, settings, cipher, A, None, include_queued=False)
    assert counts["webhooks"] == 3  # A's MO, A's opt-out event and the receipt event of A's erased message
    async with engine.connect() as conn:
        left = sorted((await conn.execute(select(webhook_backlog.c.id))).scalars())
    assert left == [9002, 9004]
    assert (await collect(handle, cipher, A, None))["mo_webhooks_owed"] == []
    assert [w["body"]["text"] for w in (await collect(handle, cipher, B, None))["mo_webhooks_owed"]] == [TEXT_B]

    purged = await purge_account(handle, make_settings(url, accounts=("acme",)), cipher, "beta")
    assert purged["webhooks"] == 1  # 9004: its message went with the account's messages, or alone
    async with engine.connect() as conn:
        assert sorted((await conn.execute(select(webhook_backlog.c.id))).scalars()) == [9002]
