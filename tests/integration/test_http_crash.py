"""Crash safety of the HTTPS API (issue 16).

1. ``Idempotency-Key`` across a crash: the key and its 202 answer commit in the messages'
   own transaction, so a daemon that dies once they are committed — before anything else
   runs, here a failure injected where the key's answer used to be stored on its own — still
   answers the client's retry with the first ids, and sends nothing twice.
2. SIGKILL under HTTP load: the daemon as a real process (``python -m smscenter run``, the
   pieces of ``test_crash.py`` and ``test_webhooks_crash.py``), on SQLite and PostgreSQL; an
   aiohttp client (one keep-alive session, ``CONCURRENCY`` requests at once) submits
   ``REQUESTS`` requests of ``RECIPIENTS`` recipients each, each with its own
   ``Idempotency-Key``, and retries a request that got no answer (the kill) with the same key
   once the daemon is back. The kill comes when half the messages got their 202. Then: every
   202'd message reached the upstream (each recipient is a number of its own, which the
   upstream records) and its receipt the HTTPS webhook receiver, signed; every request was
   accepted once (the database holds one message per recipient, a retry of a committed
   request replays its ids); duplicates upstream only for what was in flight at the kill, and
   webhook duplicates at most ``account_in_flight`` beyond those. And the kill made certain
   to fall between the commit and the client: a request whose answer is never read, SIGKILL
   once the upstream has its messages, the retry replays their ids.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import aiohttp
import pytest
from sqlalchemy import func, select

from smscenter.runtime.passwords import hash_token
from storage import db
from storage.idempotency import IdempotencyKeys
from storage.schema import messages
from tests.integration.mt_fixtures import connector_entry, count_rows, mt, wait_for  # noqa: F401 - mt is a fixture
from tests.integration.test_crash import (
    KILL_SLACK,
    WIRE_SLACK,
    Daemon,
    RecordingSmsc,
    free_port,
    write_config,
)
from tests.integration.test_crash import wait_for as wait_until
from tests.integration.test_http_api import ONE, TOKEN, TWO, build, clients  # noqa: F401 - fixtures
from tests.integration.test_webhooks_crash import ACCOUNT_IN_FLIGHT, with_webhooks
from tests.integration.webhook_receiver import SECRET, Receiver, self_signed
from tests.patience import PATIENCE

REQUESTS = 100
RECIPIENTS = 3  # per request: REQUESTS * RECIPIENTS messages
CONCURRENCY = 8  # requests in flight on the client's keep-alive session

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
    assert count_rows(settings, messages) == 2  # the retry stored nothing
    # (A message may go upstream again, at least once: stopped before its submit_sm_resp was
    # recorded, or answered after the connector's response_timeout on a loaded machine.)
    assert {s.destination_addr for s in up.submits} == {"33612345678", "33698765432"}


# --------------------------------------------------------------------------- SIGKILL under load


class NumberedSmsc(RecordingSmsc):
    """The recording upstream, also recording each submit's destination (one per message)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.destinations: list[tuple[float, str]] = []  # (monotonic time, destination_addr)

    def _on_submit(self, link, pdu) -> None:
        super()._on_submit(link, pdu)
        self.destinations.append((time.monotonic(), pdu.destination_addr))

    def copies(self) -> Counter:
        return Counter(dest for _, dest in self.destinations)


def recipients_of(i: int) -> list[str]:
    return [f"+336{20_000_000 + 10 * i + j:08d}" for j in range(RECIPIENTS)]


class HttpClient:
    """``REQUESTS`` requests on one keep-alive session, ``CONCURRENCY`` at once; a request
    without an answer waits until the daemon is ``up`` again and goes again, same key."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/v1/messages"
        self.up = asyncio.Event()
        self.up.set()
        self.answers: dict[int, dict] = {}  # request -> its 202 body
        self.replayed: set[int] = set()  # ... answered by a replay of the first answer
        self.attempts = 0
        self.failures: Counter = Counter()  # why an attempt got no 202

    def accepted(self) -> int:
        return sum(len(body["messages"]) for body in self.answers.values())

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        timeout = aiohttp.ClientTimeout(total=PATIENCE)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            todo: asyncio.Queue[int] = asyncio.Queue()
            for i in range(REQUESTS):
                todo.put_nowait(i)

            async def worker() -> None:
                while not todo.empty():
                    await self.one(session, todo.get_nowait())

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    async def one(self, session: aiohttp.ClientSession, i: int) -> None:
        body = {"from": "ACME", "to": recipients_of(i), "text": f"h-{i:03d}", "receipt": True}
        headers = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": f"order-{i}"}
        for _ in range(50):
            await self.up.wait()
            self.attempts += 1
            try:
                async with session.post(self.url, json=body, headers=headers) as resp:
                    answer = await resp.json()
                    if resp.status == 202:
                        self.answers[i] = answer
                        if resp.headers.get("Idempotent-Replayed") == "true":
                            self.replayed.add(i)
                        return
                    self.failures[str(resp.status)] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.failures[type(exc).__name__] += 1
            if self.up.is_set():
                await asyncio.sleep(0.05)  # a 503 (busy) or a dead keep-alive connection: again
        raise AssertionError(f"request {i} never accepted: {dict(self.failures)}")


async def start_rig(tmp_path, password_hashes, db_url) -> tuple[NumberedSmsc, Receiver, Daemon, int]:
    """The upstream, the HTTPS webhook receiver and the daemon (not started yet) with its
    ``[api]`` on a port of its own (plain HTTP on loopback, bearer ``TOKEN``)."""
    smsc = NumberedSmsc(delay=(0.05, 0.3), outcomes="DELIVRD=80,UNDELIV=20", id_format="hex",
                        receipt_id_format="decimal", seed=16, retry_after=0.2)
    await smsc.start()
    cert, key = self_signed(tmp_path)
    receiver = await Receiver(cert, key, free_port()).start()
    port, api_port = free_port(), free_port()
    config = write_config(tmp_path, port, smsc.port, password_hashes["acme"], db_url)
    with_webhooks(config, receiver.port, cert)
    text = config.read_text().replace("window = 64\n", f'window = 64\napi_tokens = ["{hash_token(TOKEN)}"]\n', 1)
    config.write_text(text + f'\n[api]\nlisten = "127.0.0.1:{api_port}"\n')
    return smsc, receiver, Daemon(tmp_path, config, port), api_port


async def stored_messages(db_url: str) -> int:
    engine = db.create_engine(db_url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(select(func.count()).select_from(messages))).scalar_one()
    finally:
        await engine.dispose()


async def test_sigkill_before_the_client_heard_then_the_retry_replays(tmp_path, password_hashes, db_url):
    """A real kill between the commit and the client: the request is written on a raw
    connection that never reads its answer; once the upstream has the messages (committed
    before they are sent), SIGKILL. The retry with the key, after the restart, gets the ids
    the receipts carry, and nothing more is sent."""
    smsc, receiver, daemon, api_port = await start_rig(tmp_path, password_hashes, db_url)
    order = {"from": "ACME", "to": recipients_of(0), "text": "h-000", "receipt": True}
    headers = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "unheard"}
    writer = None
    try:
        await daemon.start()
        # The API serves once storage is open (after the SMPP port): one request first.
        async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PATIENCE)) as session,
                    session.get(f"http://127.0.0.1:{api_port}/v1/messages/1", headers=headers) as resp):
            assert resp.status == 404
        body = json.dumps(order).encode()
        _, writer = await asyncio.open_connection("127.0.0.1", api_port)
        writer.write(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     + "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        await wait_until("the three messages upstream", lambda: len(smsc.copies()) == RECIPIENTS, 30,
                         daemon.log_tail)
        daemon.kill()
        await daemon.start()
        async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PATIENCE)) as session,
                    session.post(f"http://127.0.0.1:{api_port}/v1/messages", json=order, headers=headers) as resp):
            status, answer, replayed = resp.status, await resp.json(), resp.headers.get("Idempotent-Replayed")
        assert (status, replayed) == (202, "true"), answer
        ids = {m["id"] for m in answer["messages"]}
        assert [m["to"] for m in answer["messages"]] == recipients_of(0) and len(ids) == RECIPIENTS
        await wait_until("the receipts of the replayed ids at the webhook",
                         lambda: ids <= {h.json["message_id"] for h in receiver.acknowledged()}, 30, daemon.log_tail)
        assert await daemon.stop() == 0, daemon.log_tail()
        assert await stored_messages(db_url) == RECIPIENTS
        assert {h.json["message_id"] for h in receiver.acknowledged()} == ids
        assert set(smsc.copies()) == {to[1:] for to in recipients_of(0)}
    finally:
        if writer is not None:
            writer.close()
        await daemon.stop()
        await receiver.stop()
        await smsc.stop(0.5)


async def test_sigkill_under_http_load_loses_nothing_and_sends_nothing_twice(tmp_path, password_hashes, db_url):
    smsc, receiver, daemon, api_port = await start_rig(tmp_path, password_hashes, db_url)
    client = HttpClient(api_port)
    total = REQUESTS * RECIPIENTS

    def details() -> str:
        got = {h.json["message_id"] for h in receiver.acknowledged()}
        return (f"client: accepted={client.accepted()} attempts={client.attempts} failures={dict(client.failures)} "
                f"upstream={len(smsc.destinations)} webhooks={len(got)}\n{daemon.log_tail()}")

    try:
        await daemon.start()
        load = asyncio.get_running_loop().create_task(client.run())
        await wait_until("half the messages accepted", lambda: client.accepted() >= total // 2, 30, details)
        client.up.clear()
        daemon.kill()
        kill_time = time.monotonic()
        accepted_at_kill = client.accepted()
        await daemon.start()
        client.up.set()
        await asyncio.wait_for(load, 60)

        sent = {m["id"]: m["to"] for body in client.answers.values() for m in body["messages"]}
        assert len(sent) == total, "one of our ids was given twice, or a recipient got none"
        for i, body in client.answers.items():
            assert [m["to"] for m in body["messages"]] == recipients_of(i)
        await wait_until("every 202'd message reached the upstream",
                         lambda: all(smsc.copies()[to[1:]] for to in sent.values()), 30, details)
        await wait_until("every receipt reached the webhook",
                         lambda: set(sent) <= {h.json["message_id"] for h in receiver.acknowledged()}, 30, details)
        assert await daemon.stop() == 0, daemon.log_tail()
        errors = [line for line in (tmp_path / "daemon.log").read_text(errors="replace").splitlines()
                  if '"level": "error"' in line or '"level": "critical"' in line]
        assert not errors, "\n".join(errors[:5])

        # Accepted once: one stored message per recipient, whatever was retried.
        stored = await stored_messages(db_url)
        assert stored == total, f"{stored} messages stored for {total} recipients"

        # Upstream duplicates: only messages in flight at the kill.
        copies = smsc.copies()
        assert set(copies) == {to[1:] for to in sent.values()}
        first_seen: dict[str, float] = {}
        for t, dest in smsc.destinations:
            first_seen.setdefault(dest, t)
        duplicated = {dest for dest, n in copies.items() if n > 1}
        late = {d: round(kill_time - first_seen[d], 3) for d in duplicated
                if not kill_time - KILL_SLACK <= first_seen[d] <= kill_time + WIRE_SLACK}
        assert not late, f"duplicates upstream of messages not in flight at the kill (s before it): {late}"
        upstream_duplicates = sum(n - 1 for n in copies.values())

        # Webhooks: every receipt, signed; duplicates for requests in flight at the kill (at
        # most account_in_flight) and for the messages the upstream got twice.
        assert all(h.signed_by(SECRET) for h in receiver.hits)
        hooks = Counter(h.json["message_id"] for h in receiver.acknowledged())
        assert set(hooks) == set(sent)
        hook_duplicates = sum(n - 1 for n in hooks.values())
        assert hook_duplicates <= ACCOUNT_IN_FLIGHT + upstream_duplicates, hooks
        print(f"\n[{db_url.split(':')[0]}] http kill: {total} messages in {REQUESTS} requests, "
              f"{accepted_at_kill} accepted at the kill, attempts={client.attempts} "
              f"failures={dict(client.failures)} replayed={len(client.replayed)} "
              f"upstream_submits={len(smsc.destinations)} duplicates={upstream_duplicates} "
              f"webhooks={len(receiver.hits)} webhook_duplicates={hook_duplicates}")
    finally:
        await daemon.stop()
        await receiver.stop()
        await smsc.stop(0.5)
