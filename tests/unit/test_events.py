"""Events out of the core (``smscenter.pipeline.events``) and their two subscribers: the
SMPP outbox builds, through ``Events``, exactly the receipt ``ReceiptBuilder`` builds alone
(same row, same ids, same deliver_sm bytes under the encryption); the webhooks' subscriber
writes a row only for what the account subscribed to and the partner asked for, its JSON
encrypted."""

from __future__ import annotations

import functools
import json
import tempfile

import pytest

from protocol import codec
from protocol.constants import MessageState, Tag
from smscenter.pipeline.events import ConnectorEvent, Events, MoEvent, receipt_event
from smscenter.pipeline.outbox_subscriber import OutboxSubscriber
from smscenter.pipeline.receipts import ReceiptBuilder
from smscenter.pipeline.webhook_backlog import WebhookSubscriber, WebhookTargets
from storage.crypto import FieldCipher, Keyring
from storage.ids import IdGenerator
from storage.schema import OUTBOX_MO, WEBHOOK_MO, WEBHOOK_RECEIPT
from storage.transaction import Backlog, Finished

CLOCK = 1_750_000_000.0


@functools.cache
def cipher() -> FieldCipher:
    folder = tempfile.mkdtemp() + "/keys"
    Keyring.create(folder)
    return FieldCipher(Keyring.load(folder))


def kept(account: str) -> float:
    return 3600.0


def finished(message_id: int = 42, wish: int = 1, state=MessageState.DELIVERED, part_no=None, error=0) -> Finished:
    msg = {
        "id": message_id, "account": "acme", "category": "alert", "source_addr": "ACME", "source_ton": 5,
        "source_npi": 0, "dest_hash": b"h" * 16, "dest_enc": cipher().encrypt(b"+33612345678", b"dest:%d" % message_id),
        "data_coding": 0, "registered_delivery": wish, "priority": 0, "parts_total": 1, "state": 2, "error": 0,
        "submitted_at": CLOCK - 60, "not_before": CLOCK - 60, "expires_at": CLOCK + 86400, "done_at": None,
    }
    return Finished(msg, part_no, state, error, CLOCK)


def plain(row: dict, aad: bytes) -> bytes:
    return cipher().decrypt(row["pdu_enc" if "pdu_enc" in row else "payload_enc"], aad)


@pytest.mark.parametrize("wish,state,part_no,error", [
    (1, MessageState.DELIVERED, None, 0), (1, MessageState.UNDELIVERABLE, None, 0x45), (2, MessageState.EXPIRED, 3, 1),
    (2, MessageState.DELIVERED, None, 0), (0, MessageState.REJECTED, None, 0),
])
def test_the_outbox_subscriber_builds_the_receipt_builders_row(wish, state, part_no, error):
    done = finished(wish=wish, state=state, part_no=part_no, error=error)
    alone = ReceiptBuilder(cipher(), IdGenerator(clock=lambda: CLOCK), kept)(done)
    ids = IdGenerator(clock=lambda: CLOCK)
    events = Events([OutboxSubscriber(cipher(), ids, kept, receipts=ReceiptBuilder(cipher(), ids, kept))])
    through = events.on_finished(done)
    if alone is None:
        assert through is None
        return
    [row] = through.outbox
    assert through.webhooks == []
    assert {k: v for k, v in row.items() if k not in ("pdu_enc", "pdu")} == {
        k: v for k, v in alone.items() if k not in ("pdu_enc", "pdu")}
    assert codec.encode(row["pdu"]) == codec.encode(alone["pdu"])
    assert plain(row, b"outbox:%d" % row["id"]) == plain(alone, b"outbox:%d" % alone["id"])


def test_the_outbox_subscriber_forwards_an_mo_as_before():
    ids = IdGenerator(clock=lambda: CLOCK)
    out = Backlog()
    sub = OutboxSubscriber(cipher(), ids, kept)
    sub.take(MoEvent("acme", 7, CLOCK, "38100", "+33612345678", True, 1, 1, "STOP", b"STOP", 0, optout=True), out)
    long = bytes(range(32, 127)) * 3
    sub.take(MoEvent("beta", 8, CLOCK, "38100", "0612", False, 2, 9, None, long, 4), out)
    first, second = out.outbox
    assert (first["account"], first["kind"], first["message_id"], first["expires_at"]) == ("acme", OUTBOX_MO, None, CLOCK + 3600)
    pdu = codec.decode(plain(first, b"outbox:%d" % first["id"]))
    assert (pdu.service_type, pdu.source_addr, pdu.source_addr_ton, pdu.destination_addr, pdu.dest_addr_ton,
            pdu.short_message) == ("STOP", "33612345678", 1, "38100", 3, b"STOP")
    pdu = codec.decode(plain(second, b"outbox:%d" % second["id"]))
    assert (pdu.service_type, pdu.source_addr, pdu.source_addr_ton, pdu.source_addr_npi, pdu.short_message,
            pdu.tlv(Tag.MESSAGE_PAYLOAD), pdu.data_coding) == ("", "0612", 2, 9, b"", long, 4)


def webhooks(targets: dict[str, WebhookTargets]) -> Events:
    return Events([WebhookSubscriber(cipher(), IdGenerator(clock=lambda: CLOCK), targets, kept)])


@pytest.mark.parametrize("wish,state,wanted", [
    (1, MessageState.DELIVERED, True), (0, MessageState.DELIVERED, False), (2, MessageState.DELIVERED, False),
    (2, MessageState.UNDELIVERABLE, True), (3, MessageState.EXPIRED, False),
])
def test_a_receipt_goes_to_the_webhook_only_when_asked_for(wish, state, wanted):
    made = webhooks({"acme": WebhookTargets(receipts=True)}).on_finished(finished(wish=wish, state=state, error=5))
    if not wanted:
        assert made is None
        return
    [row] = made.webhooks
    assert (row["account"], row["kind"], row["message_id"], row["attempts"]) == ("acme", WEBHOOK_RECEIPT, 42, 0)
    assert (row["created_at"], row["next_attempt_at"], row["expires_at"]) == (CLOCK, CLOCK, CLOCK + 3600)
    body = json.loads(plain(row, b"webhook:%d" % row["id"]))
    assert body == {"event": "receipt", "event_id": str(row["id"]), "message_id": "42", "part": None,
                    "state": state.name.lower(), "error": 5, "submitted_at": "2025-06-15T15:05:40Z",
                    "done_at": "2025-06-15T15:06:40Z", "reference": None}
    assert b"+336" not in row["payload_enc"]


def test_no_webhook_row_for_an_account_that_did_not_subscribe():
    assert webhooks({"acme": WebhookTargets(mo=True)}).on_finished(finished()) is None
    assert webhooks({"beta": WebhookTargets(receipts=True)}).on_finished(finished()) is None
    mo = MoEvent("acme", 7, CLOCK, "38100", "+33612345678", True, 1, 1, "Bonjour", b"Bonjour", 0)
    assert webhooks({"acme": WebhookTargets(receipts=True)}).backlog([mo]).webhooks == []
    [row] = webhooks({"acme": WebhookTargets(mo=True)}).backlog([mo]).webhooks
    assert row["kind"] == WEBHOOK_MO
    body = json.loads(plain(row, b"webhook:%d" % row["id"]))
    assert (body["event"], body["from"], body["text"], body["mo_id"], body["optout"]) == (
        "mo", "+33612345678", "Bonjour", "7", False)
    assert b"Bonjour" not in row["payload_enc"]


def test_receipt_event_fields():
    event = receipt_event(finished(message_id=9, wish=3, part_no=2, error=11))
    assert (event.account, event.message_id, event.part_no, event.error, event.receipt_wish,
            event.submitted_at, event.done_at, event.reference) == ("acme", 9, 2, 11, 3, CLOCK - 60, CLOCK, None)


def test_a_connector_event_reaches_every_subscriber_and_writes_no_backlog():
    """Connector up/down has no transaction to commit rows with: the durable subscribers (SMPP
    outbox, webhooks, even for an account that subscribed to everything) take it and write
    nothing; a subscriber that wrote rows for it would be refused, not silently dropped."""
    seen = []

    class Recorder:
        def take(self, event, backlog: Backlog) -> None:
            seen.append(event)

    every = WebhookSubscriber(cipher(), IdGenerator(), {"acme": WebhookTargets(receipts=True, mo=True)}, kept)
    events = Events([OutboxSubscriber(cipher(), IdGenerator(), kept), every, Recorder()])
    up = ConnectorEvent("op", True, CLOCK)
    events.emit(up)
    assert seen == [up]
    assert events.backlog([up]) == Backlog()

    class Writer:
        def take(self, event, backlog: Backlog) -> None:
            backlog.outbox.append({"id": 1})

    with pytest.raises(RuntimeError, match="ConnectorEvent"):
        Events([Writer()]).emit(ConnectorEvent("op", False, CLOCK))


def test_a_submit_multis_message_is_receipted_with_its_multi_id():
    done = finished(message_id=42)
    done.message["multi_id"] = 40
    event = receipt_event(done)
    assert (event.message_id, event.multi_id, event.partner_id) == (42, 40, 40)
    assert receipt_event(finished()).partner_id == 42  # any other message: its own id
    ids = IdGenerator(clock=lambda: CLOCK)
    events = Events([OutboxSubscriber(cipher(), ids, kept, receipts=ReceiptBuilder(cipher(), ids, kept)),
                     WebhookSubscriber(cipher(), ids, {"acme": WebhookTargets(receipts=True)}, kept)])
    out = events.on_finished(done)
    [row] = out.outbox
    assert row["message_id"] == 42  # the row is the message's (purged with it)
    pdu = codec.decode(plain(row, b"outbox:%d" % row["id"]))
    assert pdu.short_message.startswith(b"id:40 ") and pdu.tlv(Tag.RECEIPTED_MESSAGE_ID) == "40"
    assert pdu.source_addr == "33612345678"  # the partner tells a multi's receipts apart by this
    [hook] = out.webhooks
    body = json.loads(plain(hook, b"webhook:%d" % hook["id"]))
    assert (body["message_id"], body["multi_id"]) == ("42", "40")
