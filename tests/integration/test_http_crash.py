"""Crash safety of the HTTPS API (issue 16).

1. ``Idempotency-Key`` across a crash: the key and its 202 answer commit in the messages'
   own transaction, so a daemon that dies once they are committed — before anything else
   runs, here a failure injected where the key's answer used to be stored on its own — still
   answers the client's retry with the first ids, and sends nothing twice.
"""

from __future__ import annotations

import pytest

from storage.idempotency import IdempotencyKeys
from storage.schema import messages
from tests.integration.mt_fixtures import connector_entry, count_rows, mt, wait_for  # noqa: F401 - mt is a fixture
from tests.integration.test_http_api import ONE, TWO, build, clients  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(150)


async def test_a_crash_after_the_commit_keeps_the_key_with_its_messages(mt, build, clients, monkeypatch):
    up = await mt.upstream(stat=None)
    settings = build([connector_entry("op", up.port)])
    d = await mt.daemon(settings)
    api = clients(d)

    async def dead(self, *args, **kwargs):  # the process is gone once the messages committed
        raise RuntimeError("killed after the messages' commit")

    monkeypatch.setattr(IdempotencyKeys, "keep", dead)
    order = {"from": "ACME", "to": [ONE, TWO], "text": "Votre code: 4242"}
    key = {"Idempotency-Key": "crash-1"}
    status, first, _ = await api.post(order, headers=key)
    assert status == 202
    await wait_for(lambda: len(up.submits) == 2, what="the two messages upstream")

    # The restart: the client, which may never have heard the 202, tries again.
    await mt.stop_daemon(d)
    d2 = await mt.daemon(settings)
    api2 = clients(d2)
    status, again, headers = await api2.post(order, headers=key)
    assert (status, again, headers.get("Idempotent-Replayed")) == (202, first, "true")
    assert count_rows(settings, messages) == 2
    assert sorted(s.destination_addr for s in up.submits) == ["33612345678", "33698765432"]
