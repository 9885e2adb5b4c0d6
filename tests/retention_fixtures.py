"""Rows for the retention tests, written straight into a migrated database (synchronous
``Connection``): messages in every stage with their parts and receipts, MO, invalid numbers,
opt-outs, early receipts. Numbers and texts are encrypted with a real ``FieldCipher`` so the
tests can grep the database file for them afterwards."""

from __future__ import annotations

import itertools

from protocol.constants import MessageState
from storage.purge import id_floor
from storage.schema import (
    OUTBOX_MO,
    OUTBOX_RECEIPT,
    PART_SUBMITTED,
    blacklist,
    early_receipts,
    invalid_numbers,
    messages,
    mo_messages,
    outbox,
    parts,
)

DAY = 86400.0
NOW = 1_800_000_000.0  # 2027-01-15
NUMBER = "+33612345678"
TEXT = "Promo secrete ZORGLUB -20%"

_seq = itertools.count(1)


def next_id(at: float = NOW) -> int:
    """An id as the daemon makes them: time-ordered, made at ``at``."""
    return id_floor(at) + next(_seq)  # unique; past 4096 it spills into the next milliseconds

class Seeder:
    """Writes rows; ``cipher`` encrypts the numbers and texts (a stand-in encoder if None)."""

    def __init__(self, conn, cipher=None) -> None:
        self.conn = conn
        self.cipher = cipher

    def _enc(self, data: bytes, aad: bytes) -> bytes:
        return self.cipher.encrypt(data, aad) if self.cipher is not None else b"enc:" + data

    def _hash(self, number: str) -> bytes:
        if self.cipher is not None:
            return self.cipher.lookup_hash(number)
        return (number.encode() * 2)[:16]

    def message(
        self,
        *,
        account: str = "acme",
        ended_days_ago: float | None = 200,
        state: MessageState = MessageState.DELIVERED,
        part_state: int | None = None,
        parts_total: int = 2,
        submitted_at: float | None = None,
        country: str | None = "FR",
        number: str = NUMBER,
        text: str = TEXT,
        sender: str = "ACME",
        receipt: bool = True,
    ) -> int:
        """A message with ``parts_total`` parts and (``receipt``) an outbox receipt; ended
        ``ended_days_ago`` before NOW (None: not ended, its parts ``part_state``)."""
        done_at = None if ended_days_ago is None else NOW - ended_days_ago * DAY
        if submitted_at is None:
            submitted_at = (done_at if done_at is not None else NOW) - 60.0
        mid = next_id(submitted_at)
        if ended_days_ago is None:
            state = MessageState.ENROUTE
            part_state = PART_SUBMITTED if part_state is None else part_state
        elif part_state is None:
            part_state = int(state)
        self.conn.execute(messages.insert(), [{
            "id": mid, "account": account, "category": "marketing", "source_addr": sender,
            "source_ton": 5, "source_npi": 0, "dest_hash": self._hash(number),
            "dest_enc": self._enc(number.encode(), b"dest:%d" % mid), "data_coding": 0,
            "registered_delivery": 1, "priority": 0, "parts_total": parts_total, "state": int(state),
            "error": 0, "submitted_at": submitted_at, "not_before": submitted_at,
            "expires_at": submitted_at + 2 * DAY, "done_at": done_at, "connector": "op",
            "unsub_token": None, "dest_country": country,
        }])
        self.conn.execute(parts.insert(), [{
            "message_id": mid, "part_no": n, "pdu_enc": self._enc(text.encode(), b"part:%d:%d" % (mid, n)),
            "state": part_state, "connector": "op", "upstream_id": f"up{mid}-{n}", "attempts": 1,
            "next_attempt_at": submitted_at, "updated_at": submitted_at,
        } for n in range(1, parts_total + 1)])
        if receipt:
            oid = next_id(done_at or NOW)
            self.conn.execute(outbox.insert(), [{
                "id": oid, "account": account, "kind": OUTBOX_RECEIPT, "message_id": mid,
                "pdu_enc": self._enc(b"id:%d stat:DELIVRD" % mid, b"outbox:%d" % oid),
                "created_at": done_at or NOW, "expires_at": (done_at or NOW) + 180 * DAY, "attempts": 0,
            }])
        return mid

    def mo(self, *, account: str | None = "acme", days_ago: float = 800, number: str = NUMBER,
           text: str = TEXT, with_outbox: bool = False) -> int:
        at = NOW - days_ago * DAY
        mid = next_id(at)
        self.conn.execute(mo_messages.insert(), [{
            "id": mid, "received_at": at, "connector": "op", "short_code": "36180",
            "source_hash": self._hash(number), "source_enc": self._enc(number.encode(), b"mo-source:%d" % mid),
            "text_enc": self._enc(text.encode(), b"mo-text:%d" % mid), "data_coding": 0, "account": account,
            "status": "routed" if account else "unroutable", "reason": "",
        }])
        if with_outbox:
            oid = next_id(at)
            self.conn.execute(outbox.insert(), [{
                "id": oid, "account": account or "acme", "kind": OUTBOX_MO, "message_id": None,
                "pdu_enc": self._enc(text.encode(), b"outbox:%d" % oid), "created_at": at,
                "expires_at": at + 180 * DAY, "attempts": 0,
            }])
        return mid

    def invalid(self, number: str, *, reported_days_ago: float, ttl_days: float = 420) -> bytes:
        h = self._hash(number)
        at = NOW - reported_days_ago * DAY
        self.conn.execute(invalid_numbers.insert(), [{"dest_hash": h, "created_at": at, "expires_at": at + ttl_days * DAY}])
        return h

    def optout(self, number: str, *, scope: str = "acme", days_ago: float = 3000) -> bytes:
        h = self._hash(number)
        self.conn.execute(blacklist.insert(), [{
            "scope": scope, "dest_hash": h, "source": "stop", "created_at": NOW - days_ago * DAY,
            "created_by": "test", "confirmed_at": None,
        }])
        return h

    def early_receipt(self, upstream_id: str, *, days_ago: float) -> None:
        self.conn.execute(early_receipts.insert(), [{
            "connector": "op", "upstream_id": upstream_id, "pdu_enc": None, "received_at": NOW - days_ago * DAY,
            "state": 2, "error": 0,
        }])
