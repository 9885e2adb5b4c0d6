"""Delivery receipts both ways.

Upstream → us: ``UpstreamDeliveries`` takes an upstream's receipt as a neutral value
(``ports.InboundReceipt``: the SMPP door, smpp/upstream.py, reads it from a deliver_sm or
data_sm — TLVs and text, any case — and normalises its id per the connector's
``message_id`` setting). It is correlated by (connector, id) in the store — inside the
transaction that also queues the partner's receipt; only then is the upstream answered
(``Reply.ack``: deliver_sm_resp), so an upstream receipt is never lost.

With ``message_id = "auto"`` (protocol/idreadings.py) the receipt carries the keys of its
readings, as-is first; the store says which matched and whether it was the only one, the
connector's learner learns from the unambiguous ones, and the reading it learns is logged
once (``receipt_id_convention_learnt``) and kept in the ``meta`` table (``idconv:<connector>``)
so a restart keeps it. Receipts that find no message are counted per connector (the
``smscenter_receipts_unmatched_total`` metric) and logged as a warning once per interval
(``receipts_unmatched``): an upstream whose ids never match does not stay silent.

Us → partner: ``ReceiptBuilder`` turns a finished message into the deliver_sm the partner
gets: our decimal id in the text ``id:`` field and in ``receipted_message_id``, the final
state in ``stat:`` and ``message_state``, and the upstream error code in ``err:``.
"""

from __future__ import annotations

import hashlib
import time
from functools import partial
from datetime import datetime, timezone
from typing import Callable

import structlog

from protocol import codec
from protocol import pdu as P
from protocol.constants import CommandStatus, EsmClass, MessageState, Tag
from protocol.idreadings import READINGS
from protocol.receipt import Receipt, error_code, format_receipt, read_receipt, receipt_tlvs, usual_receipt
from storage.crypto import FieldCipher, Keyring
from storage.ids import IdGenerator
from storage.schema import OUTBOX_RECEIPT
from storage.store import Finished, Store, Transaction, UpstreamReceipt

from smscenter.pipeline.events import Events
from smscenter.pipeline.outbox_subscriber import OutboxSubscriber
from smscenter.pipeline.ports import InboundReceipt, Upstream
from smscenter.pipeline.webhook_backlog import WebhookSubscriber, WebhookTargets, webhook_targets
from smscenter.runtime.floodlog import Tally
from smscenter.runtime.tasks import TaskSet
from smscenter.runtime.timers import RealTimers, Timers

log = structlog.get_logger("smscenter.receipts")


#: Where a connector's learnt id convention is kept in the ``meta`` table.
ID_CONVENTION_PREFIX = "idconv:"

#: Seconds between two ``receipts_unmatched`` warnings of one connector.
UNMATCHED_LOG_INTERVAL = 60.0


def id_convention_key(connector: str) -> str:
    """The ``meta`` key of a connector's learnt convention (the column holds 64
    characters: a longer name is hashed)."""
    key = ID_CONVENTION_PREFIX + connector
    if len(key) <= 64:
        return key
    return ID_CONVENTION_PREFIX + "#" + hashlib.sha256(connector.encode()).hexdigest()[:32]


class UpstreamDeliveries:
    """Upstream receipts: stored, then acknowledged."""

    def __init__(self, store: Store, cipher: FieldCipher, clock=time.time, timers: Timers | None = None) -> None:
        self.store = store
        self.cipher = cipher
        self.clock = clock
        self.stats = {"receipts": 0, "matched": 0, "early": 0, "unparsable": 0}
        #: connector -> receipts that found no message when they came (kept as early ones).
        self.unmatched: dict[str, int] = {}
        self._unmatched_log = Tally(log, "receipts_unmatched", timers or RealTimers(clock),
                                    interval=UNMATCHED_LOG_INTERVAL)
        self._tasks = TaskSet()

    async def restore_conventions(self, connectors) -> None:
        """Give ``auto`` connectors the convention they learnt before a restart (a
        configured convention wins: it has no learner)."""
        learnt = await self.store.meta_values(ID_CONVENTION_PREFIX)
        for connector in connectors:
            reading = learnt.get(id_convention_key(connector.name))
            if connector.id_learner is not None and reading in READINGS:
                connector.id_learner.learnt = reading

    def _learn(self, connector: Upstream, readings: tuple[str, ...], keys_hit: int) -> None:
        taught = connector.id_learner.matched(readings, keys_hit)  # type: ignore[union-attr]
        if taught is None:
            return
        log.info("receipt_id_convention_learnt", connector=connector.name, convention=taught)
        self._tasks.spawn(self._keep_convention(connector.name, taught))

    async def _keep_convention(self, connector: str, reading: str) -> None:
        try:
            await self.store.set_meta(id_convention_key(connector), reading)
        except Exception as exc:  # noqa: BLE001 - learnt again after a restart
            log.warning("receipt_id_convention_not_kept", connector=connector, error=str(exc))

    def _unmatched(self, connector: Upstream) -> None:
        self.unmatched[connector.name] = self.unmatched.get(connector.name, 0) + 1
        self._unmatched_log.add(connector=connector.name, convention=connector.id_convention)

    async def stop(self) -> None:
        """Wait for a learnt convention being written; end the warnings' intervals."""
        await self._tasks.wait()
        self._unmatched_log.close()

    def unparsable(self, connector: str, error: str) -> None:
        """A receipt its door could not read (it acknowledges it anyway: refusing makes the
        upstream resend it forever)."""
        self.stats["receipts"] += 1
        self.stats["unparsable"] += 1
        log.warning("receipt_unparsable", connector=connector, error=error)

    def on_receipt(self, receipt: InboundReceipt) -> None:
        """Store the receipt, then answer it (``receipt.reply``)."""
        self.stats["receipts"] += 1
        connector = receipt.upstream
        readings = receipt.readings
        reply = receipt.reply
        item = UpstreamReceipt(
            connector=connector.name,
            upstream_id=receipt.upstream_id,
            state=receipt.state,
            error=receipt.error,
            done_at=self.clock(),
            keys=tuple(key for key, _ in readings),
        )
        try:
            fut = self.store.apply_receipt(item)
        except RuntimeError as exc:  # the store is closing: no answer, the upstream resends
            log.warning("receipt_not_stored", connector=connector.name, error=str(exc))
            return

        def stored(f) -> None:
            if f.cancelled() or f.exception() is not None:
                # Not stored: no answer, so the upstream sends it again.
                log.error("receipt_not_stored", connector=connector.name,
                          error=str(f.exception()) if not f.cancelled() else "cancelled")
                reply.abandon()
                return
            matched = f.result()
            if matched:
                self.stats["matched"] += 1
                if readings:  # auto: (index of the key that matched, keys that found a part)
                    self._learn(connector, readings[matched[0]][1], matched[1])
            else:
                self.stats["early"] += 1
                self._unmatched(connector)
            reply.ack()

        fut.add_done_callback(stored)


class ReceiptBuilder:
    """Builds the partner's receipt (an outbox row) for a finished message or part.

    It runs in the database writer for every finished message, so the usual case takes
    protocol/receipt.py's fast writer (``usual_receipt``) instead of
    ``Receipt``/``format_receipt`` and ``receipt_tlvs``, with the same result to the byte. Anything unusual (dates outside
    2000–2099, a negative error, values of another type…) takes ``_build_reference``, the
    general way, which also raises what it always raised. tests/unit/test_receipt_builder.py
    checks both against each other.
    """

    def __init__(self, cipher: FieldCipher, ids: IdGenerator, retention: Callable[[str], float]) -> None:
        self.cipher = cipher
        self.ids = ids
        self.retention = retention  # account -> seconds a receipt may wait for its partner

    def __call__(self, done: Finished) -> dict | None:
        msg = done.message
        wanted = msg["registered_delivery"] & 0x03
        state = done.state
        if wanted == 0 or (wanted == 2 and state == MessageState.DELIVERED):
            return None
        message_id = msg["id"]
        # The id the partner got: a submit_multi's messages were answered with their multi's.
        partner_id = msg.get("multi_id") or message_id
        usual = None
        if type(partner_id) is int and 0 <= partner_id < 1 << 63:
            usual = usual_receipt(str(partner_id), state, msg["submitted_at"], done.done_at, done.error)
        if usual is None:
            return self._build_reference(done)
        text, tlvs = usual
        if done.part_no is not None:
            tlvs += ((Tag.USER_MESSAGE_REFERENCE, done.part_no),)
        dest = self.cipher.decrypt(msg["dest_enc"], b"dest:%d" % message_id).decode()
        return self._row(msg, _receipt_pdu(msg, dest, text, tlvs), done.done_at)

    def _build_reference(self, done: Finished) -> dict | None:
        """The general way (and the reference of the fast path in ``__call__``)."""
        msg = done.message
        wanted = msg["registered_delivery"] & 0x03
        if wanted == 0 or (wanted == 2 and done.state == MessageState.DELIVERED):
            return None
        dest = self.cipher.decrypt(msg["dest_enc"], b"dest:%d" % msg["id"]).decode()
        our_id = str(msg.get("multi_id") or msg["id"])  # the id the partner got
        text = format_receipt(
            Receipt(
                our_id,
                sub=1,
                dlvrd=1 if done.state == MessageState.DELIVERED else 0,
                submit_date=datetime.fromtimestamp(msg["submitted_at"], timezone.utc),
                done_date=datetime.fromtimestamp(done.done_at, timezone.utc),
                stat=done.state,
                err=min(done.error, 999),
            )
        )
        tlvs = tuple(receipt_tlvs(our_id, done.state, (3, done.error & 0xFFFF) if done.error else None))
        if done.part_no is not None:
            tlvs += ((Tag.USER_MESSAGE_REFERENCE, done.part_no),)
        return self._row(msg, _receipt_pdu(msg, dest, text.encode("ascii"), tlvs), done.done_at)

    def _row(self, msg: dict, pdu: P.DeliverSm, now: float) -> dict:
        """The outbox row; ``now`` is the transaction's time (the store's clock, wherever it
        runs)."""
        outbox_id = self.ids.next()
        return {
            "id": outbox_id,
            "account": msg["account"],
            "kind": OUTBOX_RECEIPT,
            "message_id": msg["id"],
            "pdu_enc": self.cipher.encrypt(codec.encode(pdu), b"outbox:%d" % outbox_id),
            "created_at": now,
            "expires_at": now + self.retention(msg["account"]),
            "attempts": 0,
            # Not a column: the outbox sender gets committed rows handed over in memory and
            # sends this without decrypting and decoding pdu_enc again (nor encoding it: the
            # codec keeps the body it encoded here, and the pickle carries it).
            "pdu": pdu,
        }


def _receipt_pdu(msg: dict, dest: str, text: bytes, tlvs: tuple) -> P.DeliverSm:
    """The receipt deliver_sm: from the message's destination to its sender."""
    return P.DeliverSm(
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr=dest.lstrip("+"),
        dest_addr_ton=msg["source_ton"],
        dest_addr_npi=msg["source_npi"],
        destination_addr=msg["source_addr"],
        esm_class=EsmClass.DELIVERY_RECEIPT,
        short_message=text,
        tlvs=tlvs,
    )


def decode_early(cipher: FieldCipher, row: dict) -> UpstreamReceipt:
    """Turn an early receipt kept before schema 0006 (the upstream's deliver_sm, encrypted)
    back into an ``UpstreamReceipt`` (inside the transaction that found its message)."""
    raw = cipher.decrypt(row["pdu_enc"], b"early:" + row["connector"].encode())
    parsed = read_receipt(codec.decode(raw))
    return UpstreamReceipt(
        connector=row["connector"],
        upstream_id=row["upstream_id"],
        state=parsed[1],
        error=error_code(parsed[2]),
        done_at=row["received_at"],
    )


#: The node id (``storage.ids``) of the outbox ids made inside the transaction, so that they
#: never collide with the daemon's own (node 0), whichever process makes them.
TRANSACTION_NODE = 1022


class AccountPolicies:
    """What the group commit needs to know of each account, as plain values (they cross to
    a writer process): how long its receipts may wait for it (``message_details``, its
    override or ``[retention]``'s), whether it gets one receipt per part, and which webhooks
    it subscribed to. A config reload sends new values (``values_of``) through
    ``Store.reconfigure`` to ``update``."""

    def __init__(self, retention: dict[str, float], default_retention: float, per_part: dict[str, bool],
                 webhooks: dict[str, WebhookTargets] | None = None) -> None:
        self.webhooks: dict[str, WebhookTargets] = {}
        self.update((retention, default_retention, per_part, webhooks or {}))

    @staticmethod
    def values_of(settings) -> tuple[dict[str, float], float, dict[str, bool], dict[str, WebhookTargets]]:
        """The policies of a ``Settings``: (retention per account, default, per-part flags,
        webhook subscriptions)."""
        return (
            {a.system_id: settings.retention_for(a).message_details for a in settings.accounts},
            settings.retention.message_details,
            {a.system_id: a.per_part_receipts for a in settings.accounts},
            webhook_targets(settings),
        )

    def update(self, values: tuple) -> None:
        self.retention, self.default_retention, self.per_part, webhooks = values
        self.webhooks.clear()  # in place: the webhook subscriber holds this dict
        self.webhooks.update(webhooks)

    def retention_of(self, account: str) -> float:
        return self.retention.get(account, self.default_retention)

    def events(self, cipher: FieldCipher, ids: IdGenerator, receipts: "ReceiptBuilder | None" = None) -> Events:
        """The core's durable subscribers (``events.py``) under these policies: the SMPP
        outbox (``receipts``: its receipt rows, where the group commit runs) and the
        webhooks (this object's subscriptions dict, updated in place by ``update``). The
        daemon, its writer and the CLI's opt-outs all emit through these."""
        kept = self.retention_of
        return Events([OutboxSubscriber(cipher, ids, kept, receipts=receipts),
                       WebhookSubscriber(cipher, ids, self.webhooks, kept)])

    def per_part_of(self, account: str) -> bool:
        return self.per_part.get(account, False)


def daemon_transaction(
    keys: str, retention: dict[str, float], default_retention: float, per_part: dict[str, bool],
    webhooks: dict[str, WebhookTargets], id_floor: int,
) -> Transaction:
    """The daemon's group-commit transaction, built where it runs: the store is given a
    ``functools.partial`` of this (picklable: plain values only) and calls it in its writer
    process. It opens the keys folder itself; ``id_floor`` seeds its id generator past the
    ids already stored. A finished message leaves as a receipt event to the durable
    subscribers (``events.py``): the SMPP outbox, and the webhooks of the accounts that have
    them. A reload's new policies (webhook subscriptions included) reach it through
    ``reconfigure``."""
    cipher = FieldCipher(Keyring.open(keys, database_has_data=True))
    ids = IdGenerator(node=TRANSACTION_NODE)
    ids.seed(id_floor)
    policies = AccountPolicies(retention, default_retention, per_part, webhooks)
    events = policies.events(cipher, ids, ReceiptBuilder(cipher, ids, policies.retention_of))
    return Transaction(
        events.on_finished,
        per_part_receipts=policies.per_part_of,
        early_decoder=partial(decode_early, cipher),
        reconfigure=policies.update,
    )


__all__ = [
    "AccountPolicies", "ReceiptBuilder", "UpstreamDeliveries", "daemon_transaction", "decode_early", "CommandStatus",
]
