"""The partner-facing server over real loopback sockets (issue 3, partner-server part).

Peers on the other end: ``smpplib`` (pure-Python blocking client, run in a thread),
``smpp34`` (Rust-backed asyncio client), and a raw socket for what no well-behaved client
sends (corrupt PDUs, floods, silence). The daemon itself is exercised as a subprocess.

Every wait is bounded; timeouts come from ``conftest.FAST_SERVER`` or per-test overrides.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import smpplib.client
import smpplib.exceptions
import smpplib.smpp

from protocol import pdu as P
from protocol.codec import encode
from protocol.constants import CommandId as C, CommandStatus as S
from smscenter.runtime.timers import FakeTimers
from tests.integration.conftest import HOST, PASSWORDS, AcceptAll, RawClient, header, until
from tests.patience import PATIENCE

REPO = Path(__file__).resolve().parents[2]

SUBMIT = P.SubmitSm(source_addr="ACME", destination_addr="33612345678", short_message=b"hello")


async def accepted(running):
    """The server's one link, once its connection is made (its timers armed)."""
    return await until(lambda: next((link for link in running.server.links if link.transport is not None), None),
                       what="connection accepted")


# --- smpplib helpers (blocking: always called through asyncio.to_thread) -------------------


def smpplib_connect(port: int, timeout: float = PATIENCE) -> smpplib.client.Client:
    client = smpplib.client.Client(HOST, port, timeout=timeout, allow_unknown_opt_params=True)
    client.connect()
    return client


def smpplib_bind(port: int, kind: str, system_id: str = "acme", password: str | None = None):
    """Connect and bind; returns (client, bind_resp) or raises PDUError (args[1] = status)."""
    client = smpplib_connect(port)
    try:
        password = PASSWORDS.get(system_id, "x") if password is None else password
        resp = getattr(client, f"bind_{kind}")(system_id=system_id, password=password)
    except BaseException:
        client.disconnect()
        raise
    return client, resp


def smpplib_bind_status(port: int, kind: str, system_id: str = "acme", password: str | None = None) -> int:
    try:
        client, resp = smpplib_bind(port, kind, system_id, password)
    except smpplib.exceptions.PDUError as exc:
        return int(exc.args[1])
    client.disconnect()
    return int(resp.status)


def smpplib_read_eof(client: smpplib.client.Client) -> bool:
    """True if the server closed the socket (recv returns b"" or the connection reset)."""
    try:
        return client._socket.recv(1) == b""
    except ConnectionResetError:
        return True


# --- smpplib: binds, enquire_link, unbind, submit -----------------------------------------


@pytest.mark.parametrize("kind", ["transmitter", "receiver", "transceiver"])
async def test_smpplib_binds_enquires_and_unbinds(server, kind):
    def session():
        client, resp = smpplib_bind(server.port, kind)
        try:
            assert resp.command == f"bind_{kind}_resp"
            assert resp.status == 0
            assert resp.system_id == b"SMSCENTER"

            enquire = smpplib.smpp.make_pdu("enquire_link", client=client)
            client.send_pdu(enquire)
            answer = client.read_pdu()
            assert answer.command == "enquire_link_resp"
            assert answer.sequence == enquire.sequence
            assert answer.status == 0

            unbound = client.unbind()
            assert unbound.command == "unbind_resp"
            assert unbound.status == 0
            assert smpplib_read_eof(client), "the server keeps the socket open after unbind"
        finally:
            client.disconnect()

    await asyncio.to_thread(session)
    # The account's bind slot is released once the session is gone.
    await until(lambda: not server.server.registry.get("acme").binds, what="the bind slot released")


async def test_smpplib_submit_on_transmitter(server):
    def session():
        client, _ = smpplib_bind(server.port, "transmitter")
        try:
            ids = []
            for text in (b"hello", b"world"):
                sent = client.send_message(
                    source_addr_ton=5, source_addr="ACME", dest_addr_ton=1, dest_addr_npi=1,
                    destination_addr="33612345678", short_message=text,
                )
                resp = client.read_pdu()
                assert resp.command == "submit_sm_resp"
                assert resp.sequence == sent.sequence
                assert resp.status == 0
                ids.append(resp.message_id)
            client.unbind()
            return ids
        finally:
            client.disconnect()

    ids = await asyncio.to_thread(session)
    assert ids == [b"1", b"2"]
    assert server.handler.count == 2


async def test_smpplib_bind_refusals(start_server):
    running = await start_server(
        accounts=[
            {"system_id": "acme"},
            {"system_id": "fenced", "allowed_ips": ["10.0.0.0/8", "::1/128"]},
            {"system_id": "rxonly", "bind_types": ["receiver"]},
        ]
    )
    port = running.port

    def refusals():
        return {
            "wrong password": smpplib_bind_status(port, "transmitter", "acme", "wrong"),
            "unknown system_id": smpplib_bind_status(port, "transmitter", "nobody", "secret1"),
            "ip not allowed": smpplib_bind_status(port, "transceiver", "fenced", PASSWORDS["acme"]),
            "bind type not allowed": smpplib_bind_status(port, "transmitter", "rxonly", PASSWORDS["acme"]),
            "allowed bind type": smpplib_bind_status(port, "receiver", "rxonly", PASSWORDS["acme"]),
        }

    assert await asyncio.to_thread(refusals) == {
        "wrong password": S.ESME_RINVPASWD,  # 0x0E
        "unknown system_id": S.ESME_RINVPASWD,  # like a wrong password: no enumeration
        "ip not allowed": S.ESME_RBINDFAIL,  # 0x0D
        "bind type not allowed": S.ESME_RBINDFAIL,
        "allowed bind type": S.ESME_ROK,
    }


async def test_smpplib_too_many_binds(start_server):
    running = await start_server(accounts=[{"system_id": "acme", "max_binds": 1}])

    def binds():
        first, _ = smpplib_bind(running.port, "transceiver")
        try:
            second = smpplib_bind_status(running.port, "transmitter")
            first.unbind()
        finally:
            first.disconnect()
        return second

    assert await asyncio.to_thread(binds) == S.ESME_RBINDFAIL


async def test_concurrent_binds_respect_max_binds(start_server, raw_client):
    """Binds racing each other (scrypt runs in threads) still cannot exceed max_binds."""
    running = await start_server(accounts=[{"system_id": "acme", "max_binds": 2}])
    clients = [await raw_client(running.port) for _ in range(5)]
    answers = await asyncio.gather(*(c.bind(kind=P.BindTransceiver) for c in clients))
    statuses = sorted(a.command_status for a in answers)
    assert statuses == [S.ESME_ROK] * 2 + [S.ESME_RBINDFAIL] * 3
    assert len(running.server.registry.get("acme").binds) == 2


async def test_failed_bind_leaves_session_open_for_a_retry(server, raw_client):
    client = await raw_client(server.port)
    refused = await client.bind(password="nope")
    assert (refused.command_id, refused.command_status) == (C.BIND_TRANSMITTER_RESP, S.ESME_RINVPASWD)
    accepted = await client.bind()
    assert (accepted.command_id, accepted.command_status) == (C.BIND_TRANSMITTER_RESP, S.ESME_ROK)


# --- malformed PDUs --------------------------------------------------------------------------


def submit_with_unterminated_source(seq: int) -> bytes:
    """A submit_sm whose source_addr runs past its 21-octet limit without a NUL."""
    body = b"\0" + b"\x01\x01" + b"1" * 30 + b"\0" + b"\x01\x01" + b"33612345678\0" + bytes(3) + b"\0\0" + bytes(4) + b"\0"
    return header(C.SUBMIT_SM, seq, body)


def submit_truncated(seq: int) -> bytes:
    """A submit_sm whose body stops inside source_addr."""
    return header(C.SUBMIT_SM, seq, b"\0\x01\x0112345")


async def test_corrupt_pdus_are_answered_and_the_session_survives(server, raw_client):
    client = await raw_client(server.port)
    assert (await client.bind()).command_status == S.ESME_ROK

    client.send(submit_with_unterminated_source(101))
    frame = await client.read()
    assert (frame.command_id, frame.command_status, frame.sequence_number) == (C.SUBMIT_SM_RESP, S.ESME_RINVSRCADR, 101)

    client.send(submit_truncated(102))
    frame = await client.read()
    assert frame.sequence_number == 102
    assert frame.command_id in (C.SUBMIT_SM_RESP, C.GENERIC_NACK)
    assert frame.command_status == S.ESME_RINVCMDLEN

    client.send(header(0x00000099, 103, b"\xde\xad\xbe\xef"))
    frame = await client.read()
    assert (frame.command_id, frame.command_status, frame.sequence_number) == (C.GENERIC_NACK, S.ESME_RINVCMDID, 103)

    # Budget is 3 and 3 were spent: the session is still alive and serves requests.
    frame = await client.request(P.EnquireLink())
    assert (frame.command_id, frame.command_status) == (C.ENQUIRE_LINK_RESP, S.ESME_ROK)
    frame = await client.request(SUBMIT)
    assert (frame.command_id, frame.command_status, frame.message_id) == (C.SUBMIT_SM_RESP, S.ESME_ROK, "1")

    # One more bad PDU spends the budget: answered, then the session is closed.
    client.send(header(0x00000099, 104))
    frame = await client.read()
    assert (frame.command_id, frame.command_status, frame.sequence_number) == (C.GENERIC_NACK, S.ESME_RINVCMDID, 104)
    assert await client.closed(timeout=3.0)


async def test_corrupt_pdu_from_smpplib_session(server):
    """smpplib's own socket, bound with smpplib, gets a corrupt PDU; smpplib carries on."""

    def session():
        client, _ = smpplib_bind(server.port, "transceiver")
        try:
            client._socket.sendall(header(0x00000099, 4242))
            nack = client.read_pdu()
            assert nack.command == "generic_nack"
            assert (nack.status, nack.sequence) == (S.ESME_RINVCMDID, 4242)
            enquire = smpplib.smpp.make_pdu("enquire_link", client=client)
            client.send_pdu(enquire)
            answer = client.read_pdu()
            assert (answer.command, answer.sequence) == ("enquire_link_resp", enquire.sequence)
            client.unbind()
        finally:
            client.disconnect()

    await asyncio.to_thread(session)


@pytest.mark.parametrize("command_length", [0xFFFFFFFF, 8, 15, 70_000])
async def test_absurd_command_length_nacks_and_closes(server, raw_client, command_length):
    client = await raw_client(server.port)
    assert (await client.bind()).command_status == S.ESME_ROK
    client.send(header(C.SUBMIT_SM, 77, command_length=command_length))
    frame = await client.read()
    assert (frame.command_id, frame.command_status, frame.sequence_number) == (C.GENERIC_NACK, S.ESME_RINVCMDLEN, 77)
    assert await client.closed(timeout=3.0)


async def test_absurd_command_length_before_bind(server, raw_client):
    client = await raw_client(server.port)
    client.send(header(C.BIND_TRANSMITTER, 5, command_length=0xFFFFFFFF))
    frame = await client.read()
    assert (frame.command_id, frame.command_status, frame.sequence_number) == (C.GENERIC_NACK, S.ESME_RINVCMDLEN, 5)
    assert await client.closed(timeout=3.0)


# --- state errors --------------------------------------------------------------------------


async def test_submit_before_bind_and_second_bind(server, raw_client):
    client = await raw_client(server.port)
    frame = await client.request(SUBMIT)
    assert frame.command_status == S.ESME_RINVBNDSTS
    assert frame.command_id in (C.SUBMIT_SM_RESP, C.GENERIC_NACK)

    assert (await client.bind()).command_status == S.ESME_ROK
    again = await client.bind(kind=P.BindTransceiver)
    assert (again.command_id, again.command_status) == (C.BIND_TRANSCEIVER_RESP, S.ESME_RALYBND)

    # Still bound as a transmitter and working.
    frame = await client.request(SUBMIT)
    assert frame.command_status == S.ESME_ROK
    assert server.handler.count == 1


async def test_submit_on_receiver_bind_and_unknown_command_before_bind(server, raw_client):
    client = await raw_client(server.port)
    frame = await client.request(P.EnquireLink())  # legal before bind
    assert (frame.command_id, frame.command_status) == (C.ENQUIRE_LINK_RESP, S.ESME_ROK)
    client.send(header(0x00000099, 9))
    frame = await client.read()
    assert (frame.command_id, frame.command_status, frame.sequence_number) == (C.GENERIC_NACK, S.ESME_RINVCMDID, 9)

    assert (await client.bind(kind=P.BindReceiver)).command_status == S.ESME_ROK
    frame = await client.request(SUBMIT)
    assert frame.command_status == S.ESME_RINVBNDSTS
    assert server.handler.count == 0


async def test_deliver_sm_from_partner_refused(server, raw_client):
    """A partner may not send deliver_sm to us: answered, not handed to the pipeline."""
    client = await raw_client(server.port)
    assert (await client.bind(kind=P.BindTransceiver)).command_status == S.ESME_ROK
    frame = await client.request(P.DeliverSm(source_addr="1", destination_addr="2"))
    assert frame.command_status != S.ESME_ROK
    assert server.handler.count == 0


# --- throughput and window -------------------------------------------------------------------


async def pipeline_submits(client: RawClient, count: int, timeout: float = PATIENCE) -> dict[int, int]:
    """Write ``count`` submit_sm in one go, then read every answer: {seq: status}."""
    body = encode(SUBMIT, 1)[16:]
    first = client.seq + 1
    client.writer.write(b"".join(header(C.SUBMIT_SM, first + i, body) for i in range(count)))
    client.seq += count
    answers: dict[int, int] = {}
    async with asyncio.timeout(timeout):
        while len(answers) < count:
            frame = await client.read(timeout)
            assert frame.command_id == C.SUBMIT_SM_RESP
            answers[frame.sequence_number] = frame.command_status
    assert sorted(answers) == list(range(first, first + count))
    return answers


async def test_over_throughput_is_throttled(start_server, raw_client):
    running = await start_server(accounts=[{"system_id": "acme", "throughput": 50}])
    client = await raw_client(running.port)
    assert (await client.bind()).command_status == S.ESME_ROK
    statuses = list((await pipeline_submits(client, 200)).values())
    throttled = statuses.count(S.ESME_RTHROTTLED)
    accepted = statuses.count(S.ESME_ROK)
    assert throttled + accepted == 200
    assert throttled > 0
    assert accepted >= 50  # the burst: one second's worth
    assert running.handler.count == accepted


async def test_within_throughput_burst_is_not_throttled(start_server, raw_client):
    running = await start_server(accounts=[{"system_id": "acme", "throughput": 50}])
    client = await raw_client(running.port)
    assert (await client.bind()).command_status == S.ESME_ROK
    statuses = await pipeline_submits(client, 20)
    assert set(statuses.values()) == {S.ESME_ROK}


async def test_throughput_is_per_account_across_binds(start_server, raw_client):
    running = await start_server(accounts=[{"system_id": "acme", "throughput": 50}])
    a, b = await raw_client(running.port), await raw_client(running.port)
    assert (await a.bind()).command_status == S.ESME_ROK
    assert (await b.bind()).command_status == S.ESME_ROK
    first = list((await pipeline_submits(a, 45)).values())
    second = list((await pipeline_submits(b, 45)).values())
    assert first.count(S.ESME_ROK) == 45
    assert second.count(S.ESME_RTHROTTLED) > 0  # the second bind shares the first's bucket


class NeverAnswers:
    """Keeps every request (to answer later, or never)."""

    def __init__(self) -> None:
        self.held: list = []

    def handle(self, bind, pdu) -> None:
        self.held.append((bind, pdu))


async def test_window_full_gets_rmsgqful(start_server, raw_client):
    handler = NeverAnswers()
    running = await start_server(handler=handler, accounts=[{"system_id": "acme", "window": 5}])
    client = await raw_client(running.port)
    assert (await client.bind()).command_status == S.ESME_ROK

    body = encode(SUBMIT, 1)[16:]
    client.send(b"".join(header(C.SUBMIT_SM, seq, body) for seq in range(11, 17)))
    frame = await client.read()
    assert (frame.command_id, frame.command_status, frame.sequence_number) == (C.SUBMIT_SM_RESP, S.ESME_RMSGQFUL, 16)
    assert [pdu.sequence_number for _, pdu in handler.held] == [11, 12, 13, 14, 15]

    # Answering one frees one slot: the next submit reaches the handler again.
    bind, pdu = handler.held.pop(0)
    bind.respond(pdu.response(message_id="late-1"))
    frame = await client.read()
    assert (frame.sequence_number, frame.command_status, frame.message_id) == (11, S.ESME_ROK, "late-1")
    client.send(header(C.SUBMIT_SM, 17, body))
    await until(lambda: len(handler.held) == 5, what="the freed slot taken")
    assert handler.held[-1][1].sequence_number == 17
    # And the one after that is over the window again.
    client.send(header(C.SUBMIT_SM, 18, body))
    frame = await client.read()
    assert (frame.sequence_number, frame.command_status) == (18, S.ESME_RMSGQFUL)


# --- slowloris, connection limit ---------------------------------------------------------------


async def test_slowloris_closed_after_bind_timeout(start_server, raw_client):
    """Bytes that never make a bind do not stop the bind timeout (0.5 s): open at 0.4 s of
    trickle, closed once it passed. Virtual time: the bytes are real, the seconds are not."""
    timers = FakeTimers()
    running = await start_server(timers=timers, server={"bind_timeout": "500ms"})
    client = await raw_client(running.port)
    link = await accepted(running)
    bind = encode(P.BindTransmitter(system_id="acme", password=PASSWORDS["acme"]), 1)
    for byte in bind[:4]:  # never completes the PDU
        client.writer.write(bytes([byte]))
        await client.writer.drain()
        await timers.advance(0.1)
    assert not link.transport.is_closing(), "closed before the bind timeout"
    client.writer.write(bind[4:8])
    await timers.advance(0.2)
    assert link.transport.is_closing()
    assert await client.closed(), "a trickling, unbound socket stayed open"


async def test_bind_received_in_time_is_answered_after_bind_timeout(start_server, raw_client):
    """The bind timeout limits how long a partner takes to send its bind, not how long we
    take to answer it (scrypt, the failed-bind delay): a bind sent in time gets its answer;
    once refused past the deadline, the connection is closed."""
    running = await start_server(server={"bind_timeout": "300ms", "failed_bind_delay": "600ms"})
    client = await raw_client(running.port)
    refused = await client.bind(password="wrong")
    assert (refused.command_id, refused.command_status) == (C.BIND_TRANSMITTER_RESP, S.ESME_RINVPASWD)
    assert await client.closed(timeout=3.0)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_connection_limit_closes_extra_connections(start_server, raw_client):
    running = await start_server(server={"max_connections": 5, "bind_timeout": "10s"})
    held = [await raw_client(running.port) for _ in range(5)]
    for _ in range(200):
        if len(running.server.links) == 5:
            break
        await asyncio.sleep(0.01)
    assert len(running.server.links) == 5
    baseline = open_fds()

    # The 6th to 20th: closed at once.
    extra = [await RawClient.connect(running.port) for _ in range(15)]
    try:
        results = await asyncio.gather(*(c.closed(timeout=3.0) for c in extra))
        assert all(results)
    finally:
        for c in extra:
            await c.close()

    # A burst of many more: file descriptors stay bounded.
    for _ in range(10):
        burst = [await RawClient.connect(running.port) for _ in range(20)]
        assert all(await asyncio.gather(*(c.closed(timeout=3.0) for c in burst)))
        for c in burst:
            await c.close()
    await asyncio.sleep(0.05)
    assert len(running.server.links) == 5
    assert open_fds() <= baseline + 2

    # The five held connections are untouched and can still bind.
    assert (await held[0].bind()).command_status == S.ESME_ROK


# --- keep-alive and dead sessions ------------------------------------------------------------


async def test_idle_bound_session_gets_enquire_link(start_server, raw_client):
    timers = FakeTimers()
    running = await start_server(timers=timers, server={"enquire_link_interval": "300ms", "inactivity_timeout": "2s"})
    client = await raw_client(running.port)
    assert (await client.bind(kind=P.BindTransceiver)).command_status == S.ESME_ROK
    link = await accepted(running)
    for _ in range(2):
        await timers.advance(0.29)
        assert link.in_flight == 0, "enquire_link before the interval"
        await timers.advance(0.02)
        frame = await client.read(timeout=3.0)
        assert (frame.command_id, frame.command_status) == (C.ENQUIRE_LINK, 0)
        client.send(header(C.ENQUIRE_LINK_RESP, frame.sequence_number))
        await until(lambda: link.in_flight == 0, what="our enquire_link answered")
    assert len(running.server.links) == 1
    assert link.is_bound


async def test_dead_session_closed_after_inactivity_timeout(start_server, raw_client):
    timers = FakeTimers()
    running = await start_server(timers=timers, server={"enquire_link_interval": "300ms", "inactivity_timeout": "800ms"})
    client = await raw_client(running.port)
    assert (await client.bind()).command_status == S.ESME_ROK  # the last thing the server receives
    link = await accepted(running)
    # It reads (so it sees our enquire_links) but never answers and never sends.
    await timers.advance(0.79)
    assert not link.transport.is_closing(), "closed before the inactivity timeout"
    await timers.advance(0.02)
    assert await client.closed()
    await until(lambda: running.server.links == set(), what="the link forgotten")
    assert running.server.registry.get("acme").binds == []


# --- backpressure ------------------------------------------------------------------------------


class LongIdAccept(AcceptAll):
    """Accepts with 64-character message ids: responses bigger than requests, so a partner
    that does not read fills the way back quickly."""

    def handle(self, bind, pdu) -> None:
        self.count += 1
        bind.respond(pdu.response(message_id=f"{self.count:064d}"))


async def count_frames(reader: asyncio.StreamReader, expected: int, timeout: float) -> dict[int, int]:
    """Read until ``expected`` PDUs arrived; {command_id: count}. Parses lengths in bulk."""
    counts: dict[int, int] = {}
    buf = bytearray()
    total = 0
    async with asyncio.timeout(timeout):
        while total < expected:
            chunk = await reader.read(1 << 20)
            assert chunk, "the server closed the connection"
            buf += chunk
            off = 0
            while len(buf) - off >= 16:
                length, cid = struct.unpack_from(">II", buf, off)
                if len(buf) - off < length:
                    break
                counts[cid] = counts.get(cid, 0) + 1
                total += cid != C.ENQUIRE_LINK
                off += length
            del buf[:off]
    return counts


async def test_partner_that_does_not_read_is_not_buffered_without_limit(start_server):
    handler = LongIdAccept()
    running = await start_server(handler=handler, accounts=[{"system_id": "acme", "throughput": 10_000_000}])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a partner that reads nothing
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (HOST, running.port))
    client = RawClient(*await asyncio.open_connection(sock=sock))
    try:
        assert (await client.bind()).command_status == S.ESME_ROK
        link = next(iter(running.server.links))
        # A small kernel send buffer on the server side too, so that the flood needed to fill
        # it stays small (what is under test — our user-space buffers — is the same).
        link.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)

        body = encode(SUBMIT, 1)[16:]
        batch = 1000
        chunk = b"".join(header(C.SUBMIT_SM, 10 + i, body) for i in range(batch))  # seqs reused: each is answered at once
        sent = 0
        max_write_buffer = max_framer = 0
        stalled = None  # (handler.count, since when) while the server is paused
        async with asyncio.timeout(8.0):
            while True:
                if client.writer.transport.get_write_buffer_size() < 256 * 1024:
                    client.writer.write(chunk)
                    sent += batch
                await asyncio.sleep(0.005)
                max_write_buffer = max(max_write_buffer, link.transport.get_write_buffer_size())
                max_framer = max(max_framer, link.session.buffered)
                now = time.monotonic()
                if link.transport.is_reading():
                    stalled = None
                elif stalled is None or stalled[0] != handler.count:
                    stalled = (handler.count, now)
                elif now - stalled[1] > 0.1 and client.writer.transport.get_write_buffer_size() > 0:
                    # Paused, nothing handled for 100 ms, and the kernel buffers between us
                    # are full: the partner's own writes now back up.
                    break
        assert not link.transport.is_reading()
        assert handler.count < sent
        assert max_write_buffer < 1024 * 1024, max_write_buffer
        # At most one read of the transport (256 KB) and a partial PDU: with the per-turn
        # budget (pdus_per_turn) a read is processed over several loop turns, not at once.
        assert max_framer <= 256 * 1024 + 65536, max_framer
        assert link.session.pending == 0 and link.is_open

        # The partner reads again: the server resumes and answers every request.
        counts = await count_frames(client.reader, sent, timeout=10.0)
        assert counts.get(C.SUBMIT_SM_RESP) == sent
        assert handler.count == sent
        assert link.transport.is_reading()
    finally:
        await client.close()


# --- smpp34's client: a real window of 64 --------------------------------------------------


class DelayedAccept:
    """Answers each submit_sm after a short delay, counting how many wait at once."""

    def __init__(self, delay: float = 0.01) -> None:
        self.delay = delay
        self.pending = 0
        self.max_pending = 0
        self.count = 0

    def handle(self, bind, pdu) -> None:
        self.pending += 1
        self.max_pending = max(self.max_pending, self.pending)
        asyncio.get_running_loop().call_later(self.delay, self._answer, bind, pdu)

    def _answer(self, bind, pdu) -> None:
        self.pending -= 1
        self.count += 1
        bind.respond(pdu.response(message_id=str(self.count)))


async def test_smpp34_client_window_64(start_server):
    smpp34 = pytest.importorskip("smpp34")
    handler = DelayedAccept()
    running = await start_server(
        handler=handler, accounts=[{"system_id": "acme", "throughput": 1_000_000, "window": 64}]
    )
    client = smpp34.Client(HOST, running.port, "acme", PASSWORDS["acme"], bind_type="TRX", window_size=64)
    smsc = await asyncio.wait_for(client.connect(), PATIENCE)
    try:
        gate = asyncio.Semaphore(64)

        async def submit(i: int):
            async with gate:
                return await smsc.submit_sm(f"3361234{i:04d}", b"load test", source_addr="ACME")

        async with asyncio.timeout(20):
            results = await asyncio.gather(*(submit(i) for i in range(2000)))
        statuses = {r.command_status for r in results}
        assert statuses == {S.ESME_ROK}
        assert all(r.is_success and r.message_id for r in results)
        assert len({r.message_id for r in results}) == 2000
        assert handler.count == 2000
        assert handler.max_pending >= 32, f"at most {handler.max_pending} submits were in flight"
    finally:
        try:
            await asyncio.wait_for(smsc.unbind(), PATIENCE)
        except Exception:
            pass
        await asyncio.wait_for(client.stop(), PATIENCE)


# --- the daemon as a process -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def daemon_config(tmp_path: Path, port: int, password_hash: str, extra: str = "", tables: str = "") -> Path:
    path = tmp_path / "smscenter.toml"
    path.write_text(
        f"""
{tables}
[server]
listen = ["{HOST}:{port}"]
failed_bind_delay = "50ms"
{extra}

[storage]
url = "sqlite:///var/smscenter.db"
keys = "var/keys"

[logging]
format = "json"

[[account]]
system_id = "acme"
password = "{password_hash}"
category = "alert"
"""
    )
    return path


def spawn(config: Path, tmp_path: Path) -> subprocess.Popen:
    with open(tmp_path / "stdout.log", "wb") as out, open(tmp_path / "stderr.log", "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "smscenter", "run", "-c", str(config)],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
        )


async def test_daemon_sigterm_unbinds_partners_and_exits_0(tmp_path, password_hashes):
    port = free_port()
    config = daemon_config(tmp_path, port, password_hashes["acme"], extra='shutdown_grace = "1s"',
                           tables=f'[http]\nlisten = "{HOST}:0"\n')
    proc = spawn(config, tmp_path)
    silent = None
    try:
        deadline = time.monotonic() + PATIENCE  # a daemon start under load (seen > 15 s at load 8)
        while not await asyncio.to_thread(port_open, port):
            assert proc.poll() is None, (tmp_path / "stderr.log").read_text()
            assert time.monotonic() < deadline, "the daemon never started listening"
            await asyncio.sleep(0.05)

        # A second partner that will never answer our unbind: it must not hold up the exit.
        silent = await RawClient.connect(port)
        assert (await silent.bind(kind=P.BindReceiver)).command_status == S.ESME_ROK

        def partner():
            client, resp = smpplib_bind(port, "transceiver")
            try:
                assert resp.status == 0
                proc.send_signal(signal.SIGTERM)
                request = client.read_pdu()
                assert request.command == "unbind"
                answer = smpplib.smpp.make_pdu("unbind_resp", client=client)
                answer.sequence = request.sequence
                client.send_pdu(answer)
                return smpplib_read_eof(client)
            finally:
                client.disconnect()

        assert await asyncio.to_thread(partner), "the socket stayed open after unbind_resp"
        frame = await silent.read()
        assert frame.command_id == C.UNBIND
        assert await silent.closed()
        code = await asyncio.to_thread(proc.wait, 5)
        assert code == 0, (tmp_path / "stderr.log").read_text()
        assert not port_open(port)
        # The ready line says what listened where (README "Log events"), the HTTP port as bound.
        events = [json.loads(line) for line in (tmp_path / "stderr.log").read_text().splitlines()]
        [ready] = [e for e in events if e["event"] == "ready"]
        assert ready["listen"] == [f"{HOST}:{port}"] and ready["level"] == "info"
        http_host, _, http_port = ready["http"].rpartition(":")
        assert http_host == HOST and int(http_port) > 0
    finally:
        if silent is not None:
            await silent.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_daemon_malformed_config_exits_2(tmp_path, password_hashes):
    port = free_port()
    config = daemon_config(tmp_path, port, password_hashes["acme"], extra='bind_timout = "5s"\nwindow = -1')
    proc = subprocess.run(
        [sys.executable, "-m", "smscenter", "run", "-c", str(config)],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 2
    assert "server.bind_timout" in proc.stderr
    assert "server.window" in proc.stderr
    assert not port_open(port)


async def test_bound_session_trickling_a_pdu_is_closed_after_inactivity_timeout(start_server, raw_client):
    """Bytes that never make a PDU are not activity: a bound partner sending one byte of a
    submit_sm every 100 ms (and not answering our enquire_links) is closed once
    inactivity_timeout passed since its last complete PDU."""
    timers = FakeTimers()
    running = await start_server(timers=timers, server={"enquire_link_interval": "300ms", "inactivity_timeout": "800ms"})
    client = await raw_client(running.port)
    assert (await client.bind()).command_status == S.ESME_ROK  # its last complete PDU
    link = await accepted(running)
    submit = encode(SUBMIT, 2)
    for byte in submit[:7]:  # 0.7 s of trickle: open
        client.writer.write(bytes([byte]))
        await client.writer.drain()
        await timers.advance(0.1)
    assert not link.transport.is_closing(), "closed before the inactivity timeout"
    for byte in submit[7:9]:  # past 0.8 s: closed, though bytes kept coming
        client.writer.write(bytes([byte]))
        await client.writer.drain()
        await timers.advance(0.1)
    assert link.transport.is_closing()
    assert await client.closed(), "a bound partner trickling bytes stayed open"


async def test_complete_pdus_keep_a_bound_session_open(start_server, raw_client):
    """The other side of the rule: a partner answering our enquire_links stays bound past
    several inactivity timeouts (1.6 s of virtual time, inactivity_timeout 0.5 s)."""
    timers = FakeTimers()
    running = await start_server(timers=timers, server={"enquire_link_interval": "200ms", "inactivity_timeout": "500ms"})
    client = await raw_client(running.port)
    assert (await client.bind(kind=P.BindTransceiver)).command_status == S.ESME_ROK
    link = await accepted(running)
    answered = 0
    for _ in range(16):
        await timers.advance(0.1)
        if link.in_flight:  # our enquire_link went out: answer it, and let the answer arrive
            frame = await client.read(timeout=2.0)
            assert frame.command_id == C.ENQUIRE_LINK
            client.send(header(C.ENQUIRE_LINK_RESP, frame.sequence_number))
            await until(lambda: link.in_flight == 0, what="enquire_link_resp received")
            answered += 1
    assert answered >= 5
    assert len(running.server.links) == 1 and link.is_bound and not link.transport.is_closing()
