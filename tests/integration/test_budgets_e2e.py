"""Budgets over real loopback sockets, with the real ``Daemon`` in-process on a SQLite file.

Peers: ``smpp34.Client`` as the well-behaved partner, and raw sockets writing PDUs encoded by
``protocol.codec`` as the floods (no client library pipelines 20,000 requests at once).

1. 20,000 query_sm written at once on one session: every one is answered with a proper
   status (ESME_ROK / RQUERYFAIL / RINVMSGID / RTHROTTLED / RMSGQFUL, never RSYSERR), the
   pipeline's tasks stay within ``max_storage_reads``, RSS grows by less than 50 MB, and
   another partner's submits are all accepted meanwhile.
2. 8 sessions flooding enquire_link or refused submits: each is unbound as
   ``session_flooding`` (counted), the refusals are logged as a few aggregated lines, and a
   well-behaved partner binds and submits meanwhile.
3. A storage pool exhausted answers ESME_RTHROTTLED, logged once; a bug ESME_RSYSERR with one
   traceback.
4. One session's big read does not hold another's request behind it (per-turn budget).
"""

from __future__ import annotations

import asyncio
import struct

import pytest
from prometheus_client import generate_latest
from structlog.testing import capture_logs

from protocol import pdu as P
from protocol.codec import encode
from protocol.constants import CommandId as C
from protocol.constants import CommandStatus as S
from smscenter.app.metrics import registry_for
from tests.integration.mt_fixtures import (  # noqa: F401 - mt, mt_settings are fixtures
    HOST,
    PARTNER_PASSWORDS,
    connector_entry,
    mt,
    mt_settings,
    port_of,
    wait_for,
)
from tests.patience import PATIENCE

pytestmark = pytest.mark.timeout(90)

DEST = "+33612345678"
PROPER = {S.ESME_ROK, S.ESME_RQUERYFAIL, S.ESME_RINVMSGID, S.ESME_RTHROTTLED, S.ESME_RMSGQFUL}


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class Flood:
    """A raw socket bound as a transmitter that writes PDUs in bulk and reads answers in bulk:
    ``answers[command_id]`` counts responses by status; ``closed`` is set on EOF."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.statuses: dict[int, int] = {}
        self.answered = 0
        self.closed = asyncio.Event()
        self.unbinds = 0

    @classmethod
    async def bind(cls, port: int, system_id: str) -> "Flood":
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(encode(P.BindTransmitter(system_id=system_id, password=PARTNER_PASSWORDS[system_id]), 1))
        head = await asyncio.wait_for(reader.readexactly(16), PATIENCE)
        length, cid, status, _ = struct.unpack(">IIII", head)
        await reader.readexactly(length - 16)
        assert (cid, status) == (C.BIND_TRANSMITTER_RESP, S.ESME_ROK)
        flood = cls(reader, writer)
        flood._task = asyncio.get_running_loop().create_task(flood._read())
        return flood

    async def _read(self) -> None:
        buf = bytearray()
        try:
            while True:
                chunk = await self.reader.read(1 << 20)
                if not chunk:
                    return
                buf += chunk
                off = 0
                while len(buf) - off >= 16:
                    length, cid, status, seq = struct.unpack_from(">IIII", buf, off)
                    if len(buf) - off < length:
                        break
                    off += length
                    if cid == C.UNBIND:
                        self.unbinds += 1
                    elif cid == C.ENQUIRE_LINK:
                        self.writer.write(struct.pack(">IIII", 16, C.ENQUIRE_LINK_RESP, 0, seq))
                    elif cid & 0x80000000:
                        self.answered += 1
                        self.statuses[status] = self.statuses.get(status, 0) + 1
                del buf[:off]
        except (ConnectionError, OSError):
            return
        finally:
            self.closed.set()

    def write(self, data: bytes) -> bool:
        if self.writer.is_closing():
            return False
        self.writer.write(data)
        return True

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def query_sm(message_id: str, seq: int) -> bytes:
    return encode(P.QuerySm(message_id=message_id, source_addr="ACME"), seq)


async def test_query_sm_flood_answers_every_request_with_a_proper_status(mt, mt_settings):
    up = await mt.upstream(stat=None)
    settings = mt_settings(
        [connector_entry("op", up.port)],
        # This test is about the answers: flood unbinding is the next test's.
        server={"flood_refusals": 100_000_000, "max_storage_reads": 8, "pdus_per_turn": 32},
    )
    d = await mt.daemon(settings)
    acme = await mt.partner(d, "acme", "TRX")
    known = [(await acme.submit(DEST, b"query me")).message_id for _ in range(5)]
    beta = await mt.partner(d, "beta", "TX")
    flood = await Flood.bind(port_of(d), "acme")

    total = 20_000
    ids = known + ["1234567890123", "not-an-id"]
    max_tasks = max_reads = 0
    rss_before = rss_bytes()
    rss_peak = rss_before

    async def sample() -> None:
        nonlocal max_tasks, max_reads, rss_peak
        while True:
            max_tasks = max(max_tasks, len(d.pipeline._tasks))
            max_reads = max(max_reads, d.pipeline.reads.in_use)
            rss_peak = max(rss_peak, rss_bytes())
            await asyncio.sleep(0.005)

    sampler = asyncio.get_running_loop().create_task(sample())
    try:
        flood.write(b"".join(query_sm(ids[i % len(ids)], 10 + i) for i in range(total)))
        beta_statuses = []
        while flood.answered < total and len(beta_statuses) < 200:
            resp = await beta.submit(DEST, b"meanwhile", source_addr="BETA")
            beta_statuses.append(resp.command_status)
        await wait_for(lambda: flood.answered >= total, timeout=60, what=f"{total} answers ({flood.answered})")
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)

    assert flood.answered == total
    assert set(flood.statuses) <= PROPER, flood.statuses
    assert S.ESME_RSYSERR not in flood.statuses
    assert flood.statuses.get(S.ESME_ROK, 0) > 0 and flood.statuses.get(S.ESME_RQUERYFAIL, 0) > 0
    assert flood.statuses.get(S.ESME_RTHROTTLED, 0) > 0  # more than the gate (or the account's rate) allows
    assert max_reads <= 8 and max_tasks <= 8, (max_reads, max_tasks)
    assert rss_peak - rss_before < 50 * 1024 * 1024, (rss_before, rss_peak)
    assert beta_statuses and set(beta_statuses) == {S.ESME_ROK}
    assert not flood.closed.is_set()  # answered, not unbound
    refused = d.server.budgets.refusals.totals
    assert sum(n for (account, _), n in refused.items() if account == "acme") >= flood.statuses[S.ESME_RTHROTTLED]
    metrics = generate_latest(registry_for(d)).decode()
    assert "smscenter_storage_reads_refused_total" in metrics and "smscenter_storage_reads_in_use 0.0" in metrics
    assert 'smscenter_requests_refused_total{account="acme",reason="ESME_RTHROTTLED"}' in metrics
    await flood.close()


async def test_flooding_sessions_are_unbound_while_a_partner_binds_and_submits(mt, mt_settings):
    up = await mt.upstream(stat=None)
    settings = mt_settings(
        [connector_entry("op", up.port)],
        accounts=[{"system_id": "acme", "max_binds": 8, "sender_ids": ["ACME"]}, {"system_id": "beta"}],
        server={"flood_refusals": 1000, "flood_interval": "10s", "enquire_link_rate": 2, "enquire_link_burst": 10},
    )
    d = await mt.daemon(settings)
    port = port_of(d)
    floods = [await Flood.bind(port, "acme") for _ in range(8)]
    enquire = b"".join(encode(P.EnquireLink(), seq) for seq in range(2, 1002))
    refused_submit = b"".join(
        encode(P.SubmitSm(source_addr="NOTOURS", destination_addr="33612345678", short_message=b"x"), seq)
        for seq in range(2, 1002)
    )

    async def keep_flooding(flood: Flood, chunk: bytes) -> None:
        while not flood.closed.is_set() and flood.write(chunk):
            try:
                await flood.writer.drain()
            except (ConnectionError, OSError):
                return
            await asyncio.sleep(0)

    with capture_logs() as logs:
        writers = [
            asyncio.get_running_loop().create_task(keep_flooding(f, enquire if i % 2 else refused_submit))
            for i, f in enumerate(floods)
        ]
        try:
            beta = await mt.partner(d, "beta", "TX")  # binds while the floods run
            statuses = [(await beta.submit(DEST, b"meanwhile", source_addr="BETA")).command_status for _ in range(20)]
            for flood in floods:
                await asyncio.wait_for(flood.closed.wait(), PATIENCE)
        finally:
            for w in writers:
                w.cancel()
            await asyncio.gather(*writers, return_exceptions=True)

    assert statuses == [S.ESME_ROK] * 20
    budgets = d.server.budgets
    assert budgets.stats["flooding_unbinds"] == 8
    assert budgets.stats["enquire_link_over_rate"] >= 4 * 1000
    # Told: unbind, then closed. (A socket closed with the flood unread in it may reset, and a
    # reset can overtake the unbind on the way: so at least one, not all eight.)
    assert all(f.unbinds <= 1 for f in floods) and sum(f.unbinds for f in floods) >= 1
    flooding = [e for e in logs if e["event"] == "session_flooding"]
    assert sorted(e["cause"] for e in flooding) == ["enquire_link"] * 4 + ["refused_requests"] * 4
    unbound = [e for e in logs if e["event"] == "unbound" and "session_flooding" in e["reason"]]
    assert len(unbound) == 8
    # Thousands refused, a handful of lines: one per (account, reason) per interval.
    assert budgets.refusals.totals[("acme", "ESME_RINVSRCADR")] >= 4 * 1000
    refusal_lines = [e for e in logs if e["event"] == "requests_refused"]
    assert 1 <= len(refusal_lines) <= 6, refusal_lines
    assert not [e for e in logs if e["event"] == "submit_refused"]
    metrics = generate_latest(registry_for(d)).decode()
    assert "smscenter_budget_flooding_unbinds_total 8.0" in metrics
    assert 'smscenter_requests_refused_total{account="acme",reason="ESME_RINVSRCADR"}' in metrics
    assert "smscenter_budget_enquire_link_over_rate_total" in metrics
    for flood in floods:
        await flood.close()


async def test_storage_pool_exhausted_is_a_temporary_status_logged_once(mt, mt_settings):
    from sqlalchemy import exc as sa

    up = await mt.upstream(stat=None)
    d = await mt.daemon(mt_settings([connector_entry("op", up.port)]))
    raw = await mt.raw(d, "acme")

    async def pool_exhausted(message_id: int):
        raise sa.TimeoutError("QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 30.00")

    d.store.message = pool_exhausted  # what a real pool does when every connection is taken
    with capture_logs() as logs:
        statuses = [(await raw.query("1234567890")).status for _ in range(50)]
        statuses += [(await raw.cancel("1234567890")).status for _ in range(10)]
    assert statuses == [S.ESME_RTHROTTLED] * 60
    failed = [e for e in logs if e["event"] in ("query_failed", "cancel_failed")]
    assert [(e["event"], e["error"]) for e in failed] == [("query_failed", "TimeoutError"), ("cancel_failed", "TimeoutError")]
    assert all(e.get("exc_info") is None for e in failed)  # expected: one line, no traceback
    assert d.pipeline.stats["storage_busy"] == 60 and d.pipeline.stats["storage_errors"] == 0

    async def broken(message_id: int):
        raise KeyError("a bug")

    d.store.message = broken
    with capture_logs() as logs:
        statuses = [(await raw.query("1234567890")).status for _ in range(20)]
    assert statuses == [S.ESME_RSYSERR] * 20
    tracebacks = [e for e in logs if e.get("exc_info") is not None]
    assert len(tracebacks) == 1 and tracebacks[0]["event"] == "query_failed"
    metrics = generate_latest(registry_for(d)).decode()
    assert 'smscenter_errors_total{error="TimeoutError",event="query_failed"} 50.0' in metrics
    assert 'smscenter_errors_total{error="KeyError",event="query_failed"} 20.0' in metrics


class Recording:
    """Answers every request at once and records which session's request it handled, in order."""

    def __init__(self) -> None:
        self.order: list[str] = []

    def handle(self, bind, pdu) -> None:
        self.order.append(bind.link.peer[1])
        bind.respond(pdu.response(message_id="1"))


async def test_one_sessions_big_read_does_not_hold_the_others(start_server, raw_client):
    """20,000 submit_sm written at once on session A, then one on session B: B's is handled
    within a few turns of A's, not after A's whole read (thousands of PDUs)."""
    handler = Recording()
    running = await start_server(handler=handler, server={"pdus_per_turn": 32},
                                 accounts=[{"system_id": "acme", "throughput": 10_000_000, "window": 100_000}])
    a, b = await raw_client(running.port), await raw_client(running.port)
    assert (await a.bind()).command_status == S.ESME_ROK
    assert (await b.bind()).command_status == S.ESME_ROK
    port_b = b.writer.get_extra_info("sockname")[1]
    body = encode(P.SubmitSm(source_addr="ACME", destination_addr="33612345678", short_message=b"x"), 1)[16:]
    flood = b"".join(struct.pack(">IIII", 16 + len(body), C.SUBMIT_SM, 0, 10 + i) + body for i in range(20_000))
    a.writer.write(flood)  # sent to the kernel at once, as far as the socket takes it
    b.send(P.SubmitSm(source_addr="ACME", destination_addr="33612345678", short_message=b"y"))

    async def drain_answers(client, count: int) -> None:
        got, buf = 0, bytearray()
        while got < count:
            chunk = await client.reader.read(1 << 20)
            assert chunk, "closed"
            buf += chunk
            off = 0
            while len(buf) - off >= 16:
                length, cid = struct.unpack_from(">II", buf, off)
                if len(buf) - off < length:
                    break
                off += length
                got += cid == C.SUBMIT_SM_RESP
            del buf[:off]
    await asyncio.wait_for(asyncio.gather(drain_answers(a, 20_000), drain_answers(b, 1)), 30)
    position = handler.order.index(port_b)
    # One turn of A (32) here; without the per-turn budget, after A's whole read (2,612 when tried).
    assert position < 1000, position
