"""Shared fixtures for the integration tier: real loopback sockets against a real server.

- ``password_hashes``: scrypt hashes of the test accounts' passwords, computed once per
  session (scrypt costs tens of milliseconds on purpose).
- ``make_settings``: ``Settings`` with short timeouts, listening on 127.0.0.1:0 (the OS picks
  a free port; read it from ``server.addresses``), one or more accounts.
- ``start_server``: starts a ``PartnerServer`` (``AcceptAll`` handler unless told otherwise)
  and stops every server it started when the test ends.
- ``RawClient``: a bare asyncio socket that speaks SMPP bytes, for what a well-behaved
  client library will not send (corrupt PDUs, pipelined floods, silence).
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import Any, Callable

import pytest

from protocol import pdu as P
from protocol.codec import encode
from protocol.constants import CommandId
from smscenter.config import Settings, settings_from_dict
from smscenter.runtime.passwords import hash_password
from smscenter.smpp.server import PartnerServer
from tests.patience import PATIENCE

HOST = "127.0.0.1"

#: system_id -> plaintext password of the test accounts.
PASSWORDS = {"acme": "secret1", "beta": "secret2"}

#: Generous timeouts on real time (a bind on a loaded machine may take seconds); the timing
#: tests set theirs via ``make_settings`` and run on ``FakeTimers``.
FAST_SERVER = {
    "listen": [f"{HOST}:0"],
    "system_id": "SMSCENTER",
    "bind_timeout": "30s",
    "failed_bind_delay": "50ms",
    "enquire_link_interval": "30s",
    "inactivity_timeout": "60s",
    "response_timeout": "30s",
    "shutdown_grace": "1s",
    "bad_pdu_budget": 3,
}


async def until(predicate: Callable[[], Any], timeout: float = PATIENCE, what: str = "") -> Any:
    """Wait for I/O: poll ``predicate`` (every loop turn, then every 5 ms) until it is truthy,
    and return it; AssertionError after ``timeout`` seconds. Not for waiting on a timer: tests
    on ``FakeTimers`` move time with ``advance`` and use this for what the sockets carry.
    Never less than ``PATIENCE``: what must happen may be slow on a loaded machine."""
    timeout = max(timeout, PATIENCE)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for turn in range(1_000_000):
        value = predicate()
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"not true within {timeout}s: {what or predicate}")
        await asyncio.sleep(0 if turn < 20 else 0.005)
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def password_hashes() -> dict[str, str]:
    return {system_id: hash_password(pw) for system_id, pw in PASSWORDS.items()}


@pytest.fixture
def make_settings(password_hashes, tmp_path) -> Callable[..., Settings]:
    """``make_settings(server={...}, accounts=[{...}, ...])``.

    ``server`` overrides ``FAST_SERVER``. Each account dict needs a ``system_id``; its
    ``password`` defaults to the session hash of ``PASSWORDS[system_id]`` (or of "acme"'s
    password for other ids). Without ``accounts``: one account, "acme", category alert.
    """

    def build(server: dict[str, Any] | None = None, accounts: list[dict[str, Any]] | None = None) -> Settings:
        if accounts is None:
            accounts = [{"system_id": "acme"}]
        account_tables = []
        for acc in accounts:
            table = {"category": "alert", **acc}
            table.setdefault("password", password_hashes.get(table["system_id"], password_hashes["acme"]))
            account_tables.append(table)
        data = {
            "server": {**FAST_SERVER, **(server or {})},
            "storage": {"url": "sqlite:///:memory:", "keys": str(tmp_path / "keys")},
            "account": account_tables,
        }
        return settings_from_dict(data, base_dir=tmp_path)

    return build


class AcceptAll:
    """Answers every submit_sm at once with an incrementing message_id; anything else with
    its plain response."""

    def __init__(self) -> None:
        self.count = 0
        self.binds: set = set()

    def handle(self, bind, pdu: P.Pdu) -> None:
        self.binds.add(bind)
        if pdu.command_id == CommandId.SUBMIT_SM:
            self.count += 1
            bind.respond(pdu.response(message_id=str(self.count)))
        else:
            bind.respond(pdu.response())


@dataclass
class Running:
    server: PartnerServer
    handler: Any

    @property
    def port(self) -> int:
        return self.server.addresses[0][1]


@pytest.fixture
async def start_server(make_settings):
    """``await start_server(settings=None, handler=None, timers=None, **make_settings_kwargs)``
    → Running. With ``timers`` (a ``FakeTimers``) the links' deadlines are on virtual time."""
    started: list[PartnerServer] = []

    async def start(settings: Settings | None = None, handler: Any = None, timers: Any = None,
                    **kwargs) -> Running:
        if settings is None:
            settings = make_settings(**kwargs)
        handler = handler if handler is not None else AcceptAll()
        server = PartnerServer(settings, handler, timers=timers)
        await server.start()
        started.append(server)
        assert all(host == HOST for host, _ in server.addresses)
        return Running(server, handler)

    yield start
    for server in started:
        await server.stop(0.2)


@pytest.fixture
async def server(start_server) -> Running:
    """A server with the default settings (account "acme") and an ``AcceptAll`` handler."""
    return await start_server()


# --- a raw SMPP socket ---------------------------------------------------------------------


@dataclass
class Frame:
    """One PDU as read off the wire, header parsed by hand (not by our codec)."""

    command_id: int
    command_status: int
    sequence_number: int
    body: bytes

    @property
    def message_id(self) -> str:
        return self.body.split(b"\0", 1)[0].decode("ascii")


def header(command_id: int, sequence_number: int, body: bytes = b"", command_status: int = 0,
           command_length: int | None = None) -> bytes:
    length = 16 + len(body) if command_length is None else command_length
    return struct.pack(">IIII", length, command_id, command_status, sequence_number) + body


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.seq = 0

    @classmethod
    async def connect(cls, port: int, **kwargs) -> "RawClient":
        reader, writer = await asyncio.open_connection(HOST, port, **kwargs)
        return cls(reader, writer)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def send(self, data: bytes | P.Pdu, seq: int | None = None) -> int:
        """Write raw bytes, or a PDU encoded with the next (or given) sequence number.
        Returns the sequence number used (0 for raw bytes)."""
        if isinstance(data, P.Pdu):
            seq = self.next_seq() if seq is None else seq
            data = encode(data, seq)
        self.writer.write(data)
        return seq or 0

    async def read(self, timeout: float = PATIENCE) -> Frame:
        async with asyncio.timeout(timeout):
            head = await self.reader.readexactly(16)
            length, cid, status, seq = struct.unpack(">IIII", head)
            body = await self.reader.readexactly(length - 16)
        return Frame(cid, status, seq, body)

    async def request(self, pdu: P.Pdu, timeout: float = PATIENCE) -> Frame:
        """Send a request and read frames until its answer (answering enquire_links)."""
        seq = self.send(pdu)
        while True:
            frame = await self.read(timeout)
            if frame.command_id == CommandId.ENQUIRE_LINK:
                self.send(header(CommandId.ENQUIRE_LINK_RESP, frame.sequence_number))
                continue
            if frame.sequence_number == seq:
                return frame

    async def bind(self, system_id: str = "acme", password: str | None = None,
                   kind: type = P.BindTransmitter) -> Frame:
        password = PASSWORDS.get(system_id, "") if password is None else password
        return await self.request(kind(system_id=system_id, password=password))

    async def closed(self, timeout: float = PATIENCE) -> bool:
        """True once the server closed the connection (EOF or reset) within ``timeout``,
        skipping whatever PDUs arrive before that."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    data = await self.reader.read(65536)
                    if not data:
                        return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


@pytest.fixture
async def raw_client():
    """``await raw_client(port)`` → a connected ``RawClient``, closed at teardown."""
    clients: list[RawClient] = []

    async def connect(port: int, **kwargs) -> RawClient:
        client = await RawClient.connect(port, **kwargs)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.close()
