"""The webhooks as a durable subscriber of the core's events (``events.py``).

For an account with a ``receipt_url``, each receipt it asked for (registered_delivery, as
over SMPP) becomes a ``webhook_backlog`` row; for an account with an ``mo_url``, each MO
routed to it (STOP replies included, flagged) and each number newly on its blacklist,
whatever put it there (a STOP, an unsubscribe link, ``smscenter blacklist add`` or
``import``): an ``optout`` event with the number, so the partner's own lists can suppress
it. Opt-outs go to the ``mo_url`` (the receiver that already gets the STOP replies) as row
kind ``WEBHOOK_MO``, told apart by their ``event``; a platform-level opt-out (no account)
goes to nobody's. The row holds the JSON body the URL will get, encrypted with the field
cipher (AAD ``webhook:<row id>``: an MO's names the sender and its text, an opt-out's the
number), and is delivered by ``smscenter/http/webhooks.py``. The body is fixed when the
event happens, so every retry sends the same bytes and ``event_id`` lets a receiver drop a
duplicate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from collections.abc import Callable

from storage.crypto import FieldCipher
from storage.ids import IdGenerator
from storage.schema import WEBHOOK_MO, WEBHOOK_RECEIPT
from storage.transaction import Backlog

from smscenter.pipeline.events import Event, MoEvent, OptOutEvent, ReceiptEvent


@dataclass(frozen=True, slots=True)
class WebhookTargets:
    """What an account subscribed to (plain values: it crosses to the writer process)."""

    receipts: bool = False  # receipt_url is set
    mo: bool = False  # mo_url is set


def webhook_targets(settings) -> dict[str, WebhookTargets]:
    """What each account with a webhook URL subscribed to (plain values, for the writer)."""
    return {
        a.system_id: WebhookTargets(receipts=a.receipt_url is not None, mo=a.mo_url is not None)
        for a in settings.accounts if a.has_webhooks
    }


class WebhookSubscriber:
    def __init__(
        self, cipher: FieldCipher, ids: IdGenerator, targets: dict[str, WebhookTargets],
        retention: Callable[[str], float],
    ) -> None:
        self.cipher = cipher
        self.ids = ids
        self.targets = targets
        self.retention = retention  # account -> seconds (message-details retention)

    def take(self, event: Event, backlog: Backlog) -> None:
        kind = type(event)
        if kind is ReceiptEvent:
            target = self.targets.get(event.account)
            if target is not None and target.receipts and event.wanted:
                backlog.webhooks.append(self._row(event.account, WEBHOOK_RECEIPT, event.message_id,
                                                  event.done_at, lambda eid: receipt_body(event, eid)))
        elif kind is MoEvent:
            target = self.targets.get(event.account)
            if target is not None and target.mo:
                backlog.webhooks.append(self._row(event.account, WEBHOOK_MO, None, event.received_at,
                                                  lambda eid: mo_body(event, eid)))
        elif kind is OptOutEvent:
            target = self.targets.get(event.account) if event.account is not None else None
            if target is not None and target.mo and event.number is not None:
                backlog.webhooks.append(self._row(event.account, WEBHOOK_MO, None, event.at,
                                                  lambda eid: optout_body(event, eid)))

    def _row(self, account: str, kind: int, message_id: int | None, now: float, body) -> dict:
        row_id = self.ids.next()
        return {
            "id": row_id,
            "account": account,
            "kind": kind,
            "message_id": message_id,
            "payload_enc": self.cipher.encrypt(body(str(row_id)), b"webhook:%d" % row_id),
            "created_at": now,
            "expires_at": now + self.retention(account),
            "attempts": 0,
            "next_attempt_at": now,
        }


def receipt_body(event: ReceiptEvent, event_id: str) -> bytes:
    """The JSON a ``receipt_url`` gets (README "Webhooks"); a submit_multi's message's also
    carries ``multi_id``, the id its submitter got."""
    body = {
        "event": "receipt",
        "event_id": event_id,
        "message_id": str(event.message_id),
        "part": event.part_no,
        "state": event.state.name.lower(),
        "error": event.error,
        "submitted_at": iso(event.submitted_at),
        "done_at": iso(event.done_at),
        "reference": event.reference,
    }
    if event.multi_id is not None:
        body["multi_id"] = str(event.multi_id)
    return _json(body)


def mo_body(event: MoEvent, event_id: str) -> bytes:
    """The JSON an ``mo_url`` gets (README "Webhooks")."""
    return _json({
        "event": "mo",
        "event_id": event_id,
        "mo_id": str(event.mo_id),
        "account": event.account,
        "short_code": event.short_code,
        "from": event.source,
        "text": event.text,
        "data_coding": event.data_coding,
        "optout": event.optout,
        "received_at": iso(event.received_at),
    })


def optout_body(event: OptOutEvent, event_id: str) -> bytes:
    """The JSON an ``mo_url`` gets when a number opts out of the account (README "Webhooks")."""
    return _json({
        "event": "optout",
        "event_id": event_id,
        "account": event.account,
        "number": event.number,
        "scope": event.scope,
        "source": event.source,
        "at": iso(event.at),
    })


def iso(t: float) -> str:
    """UTC, to the second: ``2026-01-01T12:00:00Z``."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(value: dict) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


__all__ = ["WebhookSubscriber", "WebhookTargets", "mo_body", "optout_body", "receipt_body"]
