"""Fixtures for the durable MT path tests (``test_mt_path.py``): the real ``Daemon`` in-process
on a temp SQLite file, between peers we did not write.

- ``SmscPeer``: ``smpp34.Server`` (Rust-backed, independent of our ``protocol`` package) as the
  upstream SMSC. It answers each submit_sm with an id in hex or decimal, optionally rejects
  some with a status, and sends delivery receipts with ``Esme.deliver_sm`` — after the
  submit_sm_resp, or before it (``early``), with the receipt id written in hex or decimal.
- ``Partner``: ``smpp34.Client`` bound to our server (TX, RX or TRX); collects every
  deliver_sm it gets (smpp34 acknowledges them itself).
- ``RawPartner``: a bare socket with request bodies packed by hand (``struct``), for
  query_sm / cancel_sm / replace_sm / submit_multi, which neither client library offers
  fully. Not our codec: the bytes are written from the spec here.
- ``mt_settings`` / ``start_daemon``: build settings (short timeouts, 127.0.0.1:0, SQLite file
  and keys folder under ``tmp_path``) and start a ``Daemon``; every daemon, peer and partner
  a test opened is closed at teardown.

Every wait is bounded (``wait_for``, ``asyncio.timeout``).
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import smpp34
from sqlalchemy import create_engine, func, select

from smscenter.config import Settings, settings_from_dict
from smscenter.app.daemon import Daemon
from tests.patience import PATIENCE

HOST = "127.0.0.1"
PARTNER_PASSWORDS = {"acme": "secret1", "beta": "secret2"}
GW_PASSWORD = "gwpass"

TAG_RECEIPTED_MESSAGE_ID = 0x001E
TAG_MESSAGE_STATE = 0x0427
TAG_USER_MESSAGE_REFERENCE = 0x0204

STATE_OF_STAT = {"DELIVRD": 2, "EXPIRED": 3, "DELETED": 4, "UNDELIV": 5, "ACCEPTD": 6, "UNKNOWN": 7, "REJECTD": 8}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


async def wait_for(predicate: Callable[[], Any], timeout: float = PATIENCE, interval: float = 0.01, what: str = ""):
    """Poll ``predicate`` until truthy (returned) or ``timeout`` passes (AssertionError).
    Never less than ``PATIENCE``: what must happen may be slow on a loaded machine."""
    timeout = max(timeout, PATIENCE)
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s: {what or predicate}")
        await asyncio.sleep(interval)


# --------------------------------------------------------------------------- upstream


def format_id(n: int, fmt: str) -> str:
    return format(n, "X") if fmt == "hex" else str(n)


@dataclass
class Submitted:
    """One submit_sm as the upstream saw it."""

    session_id: str
    destination_addr: str
    source_addr: str
    short_message: bytes
    esm_class: int
    data_coding: int
    registered_delivery: int
    tlvs: dict[int, bytes]
    number: int  # the upstream's own message number (its id in hex or decimal)
    status: int | None = None  # what it was answered with
    upstream_id: str | None = None  # the id in submit_sm_resp, if accepted
    source_ton_npi: tuple[int, int] = (0, 0)
    dest_ton_npi: tuple[int, int] = (0, 0)


class SmscPeer:
    """``smpp34.Server`` as an upstream SMSC, scripted by attributes read per submit:

    - ``resp_ids`` / ``receipt_ids``: "hex" or "decimal" (submit_sm_resp id, receipt id);
    - ``stat``: receipt stat sent after each accepted submit ("DELIVRD", "UNDELIV", …), or
      None to send none (the test calls ``send_receipt`` itself);
    - ``early``: send the receipt before answering the submit_sm;
    - ``receipt_tlvs``: also put receipted_message_id and message_state TLVs in receipts;
    - ``statuses``: a list of statuses answered to the next submits, one each (0 accepts);
    - ``answer_delay``: seconds before each answer.
    """

    def __init__(self, name: str = "up", *, resp_ids: str = "hex", receipt_ids: str = "decimal",
                 stat: str | None = "DELIVRD", early: bool = False, receipt_tlvs: bool = False,
                 answer_delay: float = 0.0, first_number: int = 0xA1B2C0) -> None:
        self.name = name
        self.port = free_port()
        self.resp_ids = resp_ids
        self.receipt_ids = receipt_ids
        self.stat = stat
        self.early = early
        self.receipt_tlvs = receipt_tlvs
        self.answer_delay = answer_delay
        self.statuses: list[int] = []
        self.submits: list[Submitted] = []
        self.receipt_results: list[int] = []  # deliver_sm_resp command_status per receipt sent
        self._receipt_answered = asyncio.Event()  # set at each new entry of receipt_results
        self.esmes: dict[str, Any] = {}
        self.binds = 0
        self._number = first_number
        self._server = smpp34.Server(HOST, self.port, system_id="UPSTREAM")
        self._task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> "SmscPeer":
        await self._server.start()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"smsc-{self.name}")
        return self

    async def stop(self) -> None:
        for task in [self._task, *self._tasks]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in [self._task, *self._tasks] if t is not None), return_exceptions=True)
        try:
            await asyncio.wait_for(self._server.stop(), PATIENCE)
        except Exception:  # noqa: BLE001 - teardown
            pass
        await asyncio.sleep(0.1)  # let the Rust runtime settle its callbacks

    @property
    def accepted(self) -> list[Submitted]:
        return [s for s in self.submits if s.status == 0]

    async def _run(self) -> None:
        while True:
            event = await self._server.next()
            if isinstance(event, smpp34.SubmitSmEvent):
                self._number += 1
                sub = Submitted(
                    event.session_id, event.destination_addr, event.source_addr, bytes(event.short_message),
                    event.esm_class, event.data_coding, event.registered_delivery,
                    {t.tag: bytes(t.value) for t in event.tlvs}, self._number,
                    source_ton_npi=(event.source_addr_ton, event.source_addr_npi),
                    dest_ton_npi=(event.dest_addr_ton, event.dest_addr_npi),
                )
                self.submits.append(sub)
                self._spawn(self._answer(event, sub))
            elif isinstance(event, smpp34.Unbound):
                self.esmes.pop(event.session_id, None)
            else:  # Esme: a bind
                self.binds += 1
                self.esmes[event.session_id] = event

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, event, sub: Submitted) -> None:
        if self.answer_delay:
            await asyncio.sleep(self.answer_delay)
        status = self.statuses.pop(0) if self.statuses else 0
        if status:
            sub.status = status
            event.reject(status)
            return
        stat = self.stat
        if stat is not None and self.early:
            await self.send_receipt(sub, stat)
        sub.upstream_id = format_id(sub.number, self.resp_ids)
        sub.status = 0
        event.accept(sub.upstream_id)
        if stat is not None and not self.early:
            await asyncio.sleep(0.01)
            await self.send_receipt(sub, stat)

    def receipt_text(self, sub: Submitted, stat: str) -> bytes:
        rid = format_id(sub.number, self.receipt_ids)
        err = "000" if stat == "DELIVRD" else "001"
        dlvrd = "001" if stat == "DELIVRD" else "000"
        return (f"id:{rid} sub:001 dlvrd:{dlvrd} submit date:2601011200 done date:2601011201 "
                f"stat:{stat} err:{err} text:").encode()

    async def send_receipt(self, sub: Submitted, stat: str) -> int:
        """Send the receipt for ``sub`` on the bind it came from; returns the ack status."""
        esme = self.esmes.get(sub.session_id) or next(
            (e for e in self.esmes.values() if e.can_receive), None)
        assert esme is not None, "no upstream bind to send the receipt on"
        tlvs = []
        if self.receipt_tlvs:
            tlvs = [
                smpp34.Tlv(TAG_RECEIPTED_MESSAGE_ID, format_id(sub.number, self.receipt_ids).encode() + b"\0"),
                smpp34.Tlv(TAG_MESSAGE_STATE, bytes([STATE_OF_STAT[stat]])),
            ]
        resp = await asyncio.wait_for(
            esme.deliver_sm(sub.source_addr, self.receipt_text(sub, stat), source_addr=sub.destination_addr,
                            source_addr_ton=1, source_addr_npi=1, esm_class=0x04, tlvs=tlvs),
            5,
        )
        self.receipt_results.append(resp.command_status)
        self._receipt_answered.set()
        return resp.command_status

    async def receipt_answers(self, count: int, timeout: float = PATIENCE) -> list[int]:
        """The statuses of our ``deliver_sm_resp`` once ``count`` receipts were answered.

        The partner may get a receipt before this peer has read our answer to it (the daemon
        answers upstream after its commit, the peer's reader runs on its own), so a test that
        checks what the upstream saw waits for it here instead of reading the list at once."""
        try:
            async with asyncio.timeout(timeout):
                while len(self.receipt_results) < count:
                    self._receipt_answered.clear()
                    await self._receipt_answered.wait()
        except TimeoutError:
            raise AssertionError(f"{len(self.receipt_results)} of {count} receipts answered "
                                 f"within {timeout}s: {self.receipt_results}") from None
        return list(self.receipt_results)


# --------------------------------------------------------------------------- partners


@dataclass
class GotReceipt:
    id: str  # the text's id: field
    stat: str
    tlv_id: str | None  # receipted_message_id
    esm_class: int
    part: int | None  # user_message_reference (per-part receipts)
    text: bytes


_ID = re.compile(rb"id:(\S+)")
_STAT = re.compile(rb"stat:(\w+)")


def as_receipt(event) -> GotReceipt:
    tlvs = {t.tag: bytes(t.value) for t in event.tlvs}
    text = bytes(event.short_message)
    m_id, m_stat = _ID.search(text), _STAT.search(text)
    tlv_id = tlvs.get(TAG_RECEIPTED_MESSAGE_ID)
    ref = tlvs.get(TAG_USER_MESSAGE_REFERENCE)
    return GotReceipt(
        m_id.group(1).decode() if m_id else "",
        m_stat.group(1).decode() if m_stat else "",
        tlv_id.rstrip(b"\0").decode() if tlv_id is not None else None,
        event.esm_class,
        int.from_bytes(ref, "big") if ref is not None else None,
        text,
    )


class Partner:
    """``smpp34.Client`` bound to our server; ``received`` holds every deliver_sm it got."""

    def __init__(self, port: int, system_id: str = "acme", bind_type: str = "TRX") -> None:
        self.client = smpp34.Client(HOST, port, system_id, PARTNER_PASSWORDS[system_id], bind_type=bind_type,
                                    window_size=64)
        self.smsc = None
        self.received: list[GotReceipt] = []
        self._reader: asyncio.Task | None = None
        self.closed = False

    async def connect(self) -> "Partner":
        self.smsc = await asyncio.wait_for(self.client.connect(), PATIENCE)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        return self

    async def _read(self) -> None:
        while True:
            event = await self.smsc.next()
            if isinstance(event, smpp34.Disconnected):
                return
            self.received.append(as_receipt(event))

    async def submit(self, destination: str, text: bytes = b"Hello from acme", *, source_addr: str = "ACME",
                     registered_delivery: int = 1, **kwargs):
        return await asyncio.wait_for(
            self.smsc.submit_sm(destination, text, source_addr=source_addr,
                                registered_delivery=registered_delivery, **kwargs),
            5,
        )

    async def receipts(self, count: int, timeout: float = PATIENCE, settle: float = 0.15) -> list[GotReceipt]:
        """Wait for ``count`` deliver_sm in all, then ``settle`` seconds more: exactly ``count``
        (a duplicate receipt fails the test)."""
        await wait_for(lambda: len(self.received) >= count, timeout,
                       what=f"{count} receipts (got {len(self.received)})")
        await asyncio.sleep(settle)
        assert len(self.received) == count, f"expected {count} receipts, got {len(self.received)}: {self.received}"
        return list(self.received)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.smsc is not None:
            try:
                await asyncio.wait_for(self.smsc.unbind(), PATIENCE)
            except Exception:  # noqa: BLE001 - the server may be gone already
                pass
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        try:
            await asyncio.wait_for(self.client.stop(), PATIENCE)
        except Exception:  # noqa: BLE001
            pass
        await asyncio.sleep(0.05)


def cstr(value: str) -> bytes:
    return value.encode("ascii") + b"\0"


@dataclass
class RawResp:
    command_id: int
    status: int
    body: bytes

    def cstrings(self) -> list[bytes]:
        return self.body.split(b"\0")


class RawPartner:
    """A socket speaking SMPP with PDUs packed by hand from the spec (not our codec)."""

    BIND_RX, BIND_TX, BIND_TRX = 0x00000001, 0x00000002, 0x00000009
    QUERY_SM, CANCEL_SM, REPLACE_SM, SUBMIT_MULTI, SUBMIT_SM = 0x03, 0x08, 0x07, 0x21, 0x04

    def __init__(self, reader, writer) -> None:
        self.reader, self.writer = reader, writer
        self.seq = 0

    @classmethod
    async def bind(cls, port: int, system_id: str = "acme", command_id: int = BIND_TX) -> "RawPartner":
        reader, writer = await asyncio.open_connection(HOST, port)
        raw = cls(reader, writer)
        body = cstr(system_id) + cstr(PARTNER_PASSWORDS[system_id]) + cstr("") + bytes([0x34, 0, 0]) + cstr("")
        resp = await raw.request(command_id, body)
        assert resp.status == 0, f"bind refused: 0x{resp.status:X}"
        return raw

    async def request(self, command_id: int, body: bytes, timeout: float = PATIENCE) -> RawResp:
        self.seq += 1
        seq = self.seq
        self.writer.write(struct.pack(">IIII", 16 + len(body), command_id, 0, seq) + body)
        async with asyncio.timeout(timeout):
            while True:
                length, cid, status, rseq = struct.unpack(">IIII", await self.reader.readexactly(16))
                rbody = await self.reader.readexactly(length - 16)
                if cid == 0x00000015:  # enquire_link: answer it
                    self.writer.write(struct.pack(">IIII", 16, 0x80000015, 0, rseq))
                    continue
                if rseq == seq and cid & 0x80000000:
                    return RawResp(cid, status, rbody)

    async def read_request(self, timeout: float = PATIENCE) -> tuple[int, int, bytes]:
        """The next request the server sends us (command_id, sequence_number, body),
        answering enquire_links on the way."""
        async with asyncio.timeout(timeout):
            while True:
                length, cid, _status, seq = struct.unpack(">IIII", await self.reader.readexactly(16))
                body = await self.reader.readexactly(length - 16)
                if cid == 0x00000015:
                    self.writer.write(struct.pack(">IIII", 16, 0x80000015, 0, seq))
                    continue
                if not cid & 0x80000000:
                    return cid, seq, body

    async def quiet(self, timeout: float = 5.0) -> list[tuple[int, int, bytes]]:
        """The requests the server sent before it answered an enquire_link of ours: a
        barrier, so that "nothing was sent" is checked without waiting on the wall clock
        (the socket keeps order: whatever the server wrote first arrives first)."""
        self.seq += 1
        seq = self.seq
        self.writer.write(struct.pack(">IIII", 16, 0x00000015, 0, seq))
        seen = []
        async with asyncio.timeout(timeout):
            while True:
                length, cid, _status, rseq = struct.unpack(">IIII", await self.reader.readexactly(16))
                body = await self.reader.readexactly(length - 16)
                if cid == 0x80000015 and rseq == seq:
                    return seen
                if cid == 0x00000015:
                    self.writer.write(struct.pack(">IIII", 16, 0x80000015, 0, rseq))
                elif not cid & 0x80000000:
                    seen.append((cid, rseq, body))

    def answer(self, command_id: int, seq: int, status: int = 0) -> None:
        body = b"\0" if command_id == 0x00000005 else b""  # deliver_sm_resp: empty message_id
        self.writer.write(struct.pack(">IIII", 16 + len(body), command_id | 0x80000000, status, seq) + body)

    async def submit_pipelined(self, messages: list[tuple[str, bytes]], source_addr: str = "ACME",
                               registered_delivery: int = 0, timeout: float = PATIENCE,
                               service_type: str = "") -> list[RawResp]:
        """Write one submit_sm per (destination digits, text), all back to back in this order,
        then read their answers; returns them in the order of ``messages``."""
        first = self.seq + 1
        out = b""
        for dest, text in messages:
            self.seq += 1
            body = (cstr(service_type) + bytes([5, 0]) + cstr(source_addr) + bytes([1, 1]) + cstr(dest)
                    + bytes([0, 0, 0]) + cstr("") + cstr("") + bytes([registered_delivery, 0, 0, 0, len(text)])
                    + text)
            out += struct.pack(">IIII", 16 + len(body), self.SUBMIT_SM, 0, self.seq) + body
        self.writer.write(out)
        answers: dict[int, RawResp] = {}
        async with asyncio.timeout(timeout):
            while len(answers) < len(messages):
                length, cid, status, rseq = struct.unpack(">IIII", await self.reader.readexactly(16))
                rbody = await self.reader.readexactly(length - 16)
                if cid == 0x00000015:
                    self.writer.write(struct.pack(">IIII", 16, 0x80000015, 0, rseq))
                elif cid == 0x80000004:
                    answers[rseq] = RawResp(cid, status, rbody)
        return [answers[first + i] for i in range(len(messages))]

    async def data_sm(self, dest: str, text: bytes, source_addr: str = "ACME", registered_delivery: int = 1) -> RawResp:
        body = (cstr("") + bytes([5, 0]) + cstr(source_addr) + bytes([1, 1]) + cstr(dest)
                + bytes([0, registered_delivery, 0]) + struct.pack(">HH", 0x0424, len(text)) + text)
        return await self.request(0x00000103, body)

    async def query(self, message_id: str, source_addr: str = "ACME") -> RawResp:
        return await self.request(self.QUERY_SM, cstr(message_id) + bytes([5, 0]) + cstr(source_addr))

    async def cancel(self, message_id: str, source_addr: str = "ACME", dest: str = "") -> RawResp:
        body = cstr("") + cstr(message_id) + bytes([5, 0]) + cstr(source_addr) + bytes([1, 1]) + cstr(dest)
        return await self.request(self.CANCEL_SM, body)

    async def replace(self, message_id: str, text: bytes = b"new text", source_addr: str = "ACME") -> RawResp:
        body = (cstr(message_id) + bytes([5, 0]) + cstr(source_addr) + cstr("") + cstr("")
                + bytes([1, 0, len(text)]) + text)
        return await self.request(self.REPLACE_SM, body)

    async def submit_multi(self, dests: list[str], text: bytes = b"hello all", source_addr: str = "ACME") -> RawResp:
        body = cstr("") + bytes([5, 0]) + cstr(source_addr) + bytes([len(dests)])
        for d in dests:
            body += bytes([1, 1, 1]) + cstr(d)  # dest_flag 1 (SME address), TON, NPI
        body += bytes([0, 0, 0]) + cstr("") + cstr("") + bytes([1, 0, 0, 0, len(text)]) + text
        return await self.request(self.SUBMIT_MULTI, body)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


def query_resp_fields(resp: RawResp) -> tuple[str, str, int, int]:
    """(message_id, final_date, message_state, error_code) of a query_sm_resp body."""
    first = resp.body.index(b"\0")
    second = resp.body.index(b"\0", first + 1)
    rest = resp.body[second + 1 :]
    return (resp.body[:first].decode(), resp.body[first + 1 : second].decode(), rest[0], rest[1])


# --------------------------------------------------------------------------- settings, daemon


def connector_entry(name: str, port: int, message_id: str = "hex-to-decimal", **overrides) -> dict:
    return {
        "name": name,
        "host": HOST,
        "port": port,
        "system_id": "gw",
        "password": GW_PASSWORD,
        "bind": "transceiver",
        "window": 10,
        "throughput": 10_000,
        "message_id": message_id,
        "enquire_link_interval": "5s",
        "response_timeout": "2s",
        "reconnect_min": "100ms",
        "reconnect_max": "300ms",
        **overrides,
    }


#: The daemon's [server] section in these tests: loopback, short timeouts.
TEST_SERVER = {
    "listen": [f"{HOST}:0"],
    "system_id": "SMSCENTER",
    "bind_timeout": "2s",
    "failed_bind_delay": "50ms",
    "enquire_link_interval": "5s",
    "inactivity_timeout": "20s",
    "response_timeout": "2s",
    "shutdown_grace": "500ms",
}


@pytest.fixture
def mt_settings(password_hashes, tmp_path) -> Callable[..., Settings]:
    """``mt_settings(connectors=[...], routes=[...], accounts=[...])`` → Settings on
    ``tmp_path/var/smscenter.db`` and ``tmp_path/var/keys``. Accounts default to "acme"
    (sender ID ACME, alerts) and "beta" (sender ID BETA); routes default to every connector
    for "*", in the order given."""

    def build(connectors: list[dict], routes: list[dict] | None = None, accounts: list[dict] | None = None,
              server: dict | None = None) -> Settings:
        if accounts is None:
            accounts = [{"system_id": "acme"}, {"system_id": "beta"}]
        tables = []
        for acc in accounts:
            table = {"category": "alert", "sender_ids": [acc["system_id"].upper()], "throughput": 10_000, **acc}
            table.setdefault("password", password_hashes[table["system_id"]])
            tables.append(table)
        if routes is None:
            routes = [{"destinations": ["*"], "connectors": [c["name"] for c in connectors]}]
        data = {
            "server": {**TEST_SERVER, **(server or {})},
            "storage": {"url": "sqlite:///var/smscenter.db", "keys": "var/keys"},
            "account": tables,
            "connector": connectors,
            "route": routes,
        }
        return settings_from_dict(data, base_dir=tmp_path)

    return build


@dataclass
class Harness:
    """What a test opened; closed in reverse order at teardown."""

    daemons: list[Daemon] = field(default_factory=list)
    stopped: set[int] = field(default_factory=set)
    peers: list[SmscPeer] = field(default_factory=list)
    partners: list[Partner | RawPartner] = field(default_factory=list)

    async def upstream(self, name: str = "up", **kwargs) -> SmscPeer:
        peer = await SmscPeer(name, **kwargs).start()
        self.peers.append(peer)
        return peer

    async def daemon(self, settings: Settings, wait_up: tuple[str, ...] | None = None, timers=None) -> Daemon:
        """Start a Daemon; wait until the named connectors (default: all) are bound. With
        ``timers`` (a ``FakeTimers``) the daemon's clock and timers are on virtual time."""
        d = Daemon(settings, timers=timers)
        await d.start()
        self.daemons.append(d)
        names = wait_up if wait_up is not None else tuple(d.connectors)
        async with asyncio.timeout(10):  # real time: virtual deadlines never pass by themselves
            for name in names:
                await d.connectors[name].wait_up(5)
        return d

    async def stop_daemon(self, d: Daemon) -> None:
        if id(d) not in self.stopped:
            self.stopped.add(id(d))
            await asyncio.wait_for(d.stop(), PATIENCE)

    async def partner(self, d: Daemon, system_id: str = "acme", bind_type: str = "TRX") -> Partner:
        p = await Partner(port_of(d), system_id, bind_type).connect()
        self.partners.append(p)
        return p

    async def raw(self, d: Daemon, system_id: str = "acme", command_id: int = RawPartner.BIND_TX) -> RawPartner:
        r = await RawPartner.bind(port_of(d), system_id, command_id)
        self.partners.append(r)
        return r

    async def close(self) -> None:
        for p in reversed(self.partners):
            await p.close()
        for d in reversed(self.daemons):
            try:
                await self.stop_daemon(d)
            except Exception:  # noqa: BLE001 - teardown goes on
                pass
        for peer in reversed(self.peers):
            await peer.stop()


#: A Tuesday, 10:00 in Paris (2 June 2026, 08:00 UTC): where tests on virtual time start,
#: inside every send window.
TUESDAY_MORNING = 1_780_387_200.0


def port_of(d: Daemon) -> int:
    return d.server.addresses[0][1]


@pytest.fixture
async def mt():
    harness = Harness()
    try:
        yield harness
    finally:
        await harness.close()


# --------------------------------------------------------------------------- the database


def db_path(settings: Settings) -> Path:
    return Path(settings.storage.url.split(":///", 1)[1])


def count_rows(settings: Settings, table) -> int:
    """Rows in a table, read with a separate synchronous connection (WAL: sees commits)."""
    engine = create_engine(f"sqlite:///{db_path(settings)}")
    try:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(table)).scalar_one()
    finally:
        engine.dispose()


def rows(settings: Settings, table) -> list[dict]:
    engine = create_engine(f"sqlite:///{db_path(settings)}")
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(table)).mappings()]
    finally:
        engine.dispose()
