"""The neutral submit, end to end: a ``SubmitRequest`` built without any PDU (as the HTTPS
door will) handed to the running daemon's ``Pipeline.submit``; each destination planned,
stored and answered with our id only after its commit, refused ones with their reason; the
accepted ones reach the upstream SMSC (``smpp34.Server``) over real sockets, and their
receipts reach the account's SMPP bind with the ids the result gave."""

from __future__ import annotations

import asyncio

import pytest

from smscenter.pipeline.request import Destination, ReceiptWish, Refusal, SenderKind, SubmitRequest, SubmitResult
from storage.schema import messages
from tests.integration.mt_fixtures import (  # noqa: F401 - mt, mt_settings are fixtures
    connector_entry,
    count_rows,
    mt,
    mt_settings,
    wait_for,
)
from tests.patience import PATIENCE

pytestmark = pytest.mark.timeout(60)


async def submitted(d, request: SubmitRequest) -> SubmitResult:
    done: asyncio.Future[SubmitResult] = asyncio.get_running_loop().create_future()
    d.pipeline.submit(request, done.set_result)
    return await asyncio.wait_for(done, PATIENCE)


async def test_a_request_to_three_numbers_two_stored_and_sent_one_refused(mt, mt_settings):
    up = await mt.upstream(stat="DELIVRD")
    settings = mt_settings([connector_entry("op", up.port)])
    d = await mt.daemon(settings)
    rx = await mt.partner(d, "acme", "RX")  # where acme's receipts go today
    request = SubmitRequest(
        account=d.server.registry.get("acme"), source="ACME", source_kind=SenderKind.ALPHANUMERIC,
        destinations=(Destination("+33612345678"), Destination("+336"), Destination("+33698765432")),
        text="Rendez-vous à 10 h", category="ALERT", receipt=ReceiptWish.ALWAYS,
    )
    result = await submitted(d, request)

    assert [a.destination.addr for a in result.accepted] == ["+33612345678", "+33698765432"]
    assert [(dest.addr, r.refusal) for dest, r in result.refused] == [("+336", Refusal.INVALID_NUMBER)]
    assert all(a.parts == 1 and a.held_until is None for a in result.accepted)
    assert count_rows(settings, messages) == 2  # answered after the commit: already there
    await wait_for(lambda: len(up.submits) == 2, what="both messages upstream")
    assert sorted(s.destination_addr for s in up.submits) == ["33612345678", "33698765432"]
    assert {s.short_message for s in up.submits} == {"Rendez-vous à 10 h".encode("latin-1").replace(b"\xe0", b"\x7f")}
    got = await rx.receipts(2)
    assert sorted(r.id for r in got) == sorted(str(a.message_id) for a in result.accepted)


async def test_a_request_refused_whole_stores_nothing(mt, mt_settings):
    up = await mt.upstream(stat="DELIVRD")
    settings = mt_settings([connector_entry("op", up.port)])
    d = await mt.daemon(settings)
    request = SubmitRequest(
        account=d.server.registry.get("acme"), source="NOTOURS", source_kind=SenderKind.ALPHANUMERIC,
        destinations=(Destination("+33612345678"), Destination("+33698765432")), text="Hi",
    )
    result = await submitted(d, request)
    assert result.accepted == ()
    assert [r.refusal for _, r in result.refused] == [Refusal.SENDER_NOT_ALLOWED] * 2
    assert count_rows(settings, messages) == 0 and up.submits == []
