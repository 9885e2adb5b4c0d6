"""The connection log over real sockets (issue 15, item 4): every bind attempt on the partner
listener leaves a row with the status answered — bound, wrong password, unknown system_id,
over TLS, refused by the session (already bound; a system_id too long to decode), and a peer that hung up during the check
(no answer: status NULL) — and no password reaches the database file or its ``-wal``.

Binds come from ``smpplib`` (an independent client) and, for what it will not do (a second
bind on a bound session, leaving mid-bind), from a raw socket. In the real daemon, on virtual
time: an acknowledged bind's row is written by a clean stop even though no flush interval
passed, and /metrics shows the log's counters."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from protocol import pdu as P
from protocol.constants import CommandId as C, CommandStatus as S
from smscenter.pipeline.connlog import ConnectionLog
from smscenter.app.metrics import registry_for
from smscenter.smpp.server import PartnerServer
from smscenter.runtime.timers import FakeTimers
from storage import db
from storage.schema import connection_log
from tests.integration.conftest import HOST, PASSWORDS, AcceptAll, RawClient, header, until
from tests.integration.mt_fixtures import (  # noqa: F401 - mt, mt_settings: fixtures
    TUESDAY_MORNING, connector_entry, db_path, free_port, mt, mt_settings,
)
from tests.integration.test_bind_guard import smpplib_bind_status
from tests.integration.test_tls import make_certificate, smpplib_over_tls

pytestmark = pytest.mark.timeout(120)

WRONG = "hunter42"  # a wrong password: must never be stored
GUESS = "guess123"  # the unknown account's password: must never be stored


def stored(path: Path) -> list[dict]:
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(connection_log).order_by(connection_log.c.id)).mappings()]
    finally:
        engine.dispose()


def file_bytes(path: Path) -> bytes:
    """The database file and its WAL, as a reader of the disk would see them."""
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


@pytest.fixture
async def logged(make_settings, tmp_path):
    """A partner server (plain and TLS listeners) telling a ``ConnectionLog`` on a SQLite file."""
    path = tmp_path / "connections.db"
    engine = db.create_engine(f"sqlite:///{path}")
    await db.upgrade(engine)
    cert, key = make_certificate(tmp_path)
    settings = make_settings(
        server={"tls_listen": [f"{HOST}:{free_port()}"], "tls_cert": str(cert), "tls_key": str(key)},
        accounts=[{"system_id": "acme"}, {"system_id": "beta"}],
    )
    log = ConnectionLog(engine)
    await log.start()
    server = PartnerServer(settings, AcceptAll(), connections=log)
    await server.start()
    try:
        yield server, log, path, cert
    finally:
        await server.stop(0.2)
        await log.stop()
        await engine.dispose()


async def test_every_bind_attempt_is_logged_with_its_answer_and_no_password(logged):
    server, log, path, cert = logged
    (_, port), (_, tls_port) = server.addresses

    assert await asyncio.to_thread(smpplib_bind_status, port, "acme", PASSWORDS["acme"]) == S.ESME_ROK
    assert await asyncio.to_thread(smpplib_bind_status, port, "acme", WRONG) == S.ESME_RINVPASWD
    assert await asyncio.to_thread(smpplib_bind_status, port, "nobody", GUESS) == S.ESME_RINVPASWD
    assert await asyncio.to_thread(smpplib_over_tls, tls_port, cert)

    # A second bind on a bound session: refused by the session itself (ESME_RALYBND).
    raw = await RawClient.connect(port)
    try:
        assert (await raw.bind("beta", kind=P.BindReceiver)).command_status == S.ESME_ROK
        again = await raw.bind("beta", kind=P.BindReceiver)
        assert (again.command_id, again.command_status) == (C.BIND_RECEIVER_RESP, S.ESME_RALYBND)
        raw_port = raw.writer.get_extra_info("sockname")[1]
    finally:
        await raw.close()
    await until(lambda: not server.links, what="the raw client gone")

    # A system_id past its 15 octets does not decode: refused by the session (ESME_RINVSYSID);
    # what it said is not known, so its row has an empty system_id.
    long_id = RawClient(*await asyncio.open_connection(HOST, port))
    try:
        body = b"x" * 30 + b"\0" + b"pw\0" + b"\0" + bytes([0x34, 0, 0]) + b"\0"
        long_id.send(header(C.BIND_TRANSMITTER, 1, body))
        answer = await long_id.read()
        assert (answer.command_id, answer.command_status) == (C.BIND_TRANSMITTER_RESP, S.ESME_RINVSYSID)
    finally:
        await long_id.close()
    await until(lambda: not server.links, what="the long-id client gone")

    # A hang-up during the password check: the check waits until the server saw the peer go.
    authenticate = server.registry.authenticate

    async def slow_check(command_id, system_id, password, ip, run):
        await until(lambda: not server.links, what="the peer gone mid-check")
        return await authenticate(command_id, system_id, password, ip, run=run)

    server.registry.authenticate = slow_check
    leaver = await RawClient.connect(port)
    leaver.send(P.BindTransmitter(system_id="acme", password=PASSWORDS["acme"]))
    await until(lambda: server.links, what="the leaver's link")
    await leaver.close()
    await until(lambda: server.guard.failed["hung_up"] == 1, what="the hang-up counted")

    await until(lambda: log.written == 8, what="eight rows written")
    rows = stored(path)
    assert [(r["system_id"], r["account"], r["bind_type"], r["tls"], r["status"]) for r in rows] == [
        ("acme", "acme", "transceiver", False, S.ESME_ROK),
        ("acme", "acme", "transceiver", False, S.ESME_RINVPASWD),
        ("nobody", None, "transceiver", False, S.ESME_RINVPASWD),
        ("acme", "acme", "transceiver", True, S.ESME_ROK),
        ("beta", "beta", "receiver", False, S.ESME_ROK),
        ("", "beta", "receiver", False, S.ESME_RALYBND),  # its system_id never reached the server
        ("", None, "transmitter", False, S.ESME_RINVSYSID),
        ("acme", "acme", "transmitter", False, None),  # hung up: nothing answered
    ]
    assert {r["peer_ip"] for r in rows} == {HOST}
    assert rows[4]["peer_port"] == rows[5]["peer_port"] == raw_port
    assert rows[0]["at"] <= rows[-1]["at"] and all(r["peer_port"] > 0 for r in rows)

    data = file_bytes(path)
    assert b"nobody" in data  # the grep sees what is stored…
    for secret in (PASSWORDS["acme"], PASSWORDS["beta"], WRONG, GUESS):
        assert secret.encode() not in data  # …and no password is


async def test_the_daemon_writes_an_acknowledged_binds_row_at_a_clean_stop(mt, mt_settings):  # noqa: F811
    """On virtual time no flush interval passes: the row reaches the database only because
    the orderly stop writes what is buffered."""
    up = await mt.upstream()
    settings = mt_settings([connector_entry("up", up.port)])
    timers = FakeTimers(TUESDAY_MORNING)
    d = await mt.daemon(settings, timers=timers)
    port = d.server.addresses[0][1]
    assert await asyncio.to_thread(smpplib_bind_status, port, "acme", PASSWORDS["acme"]) == S.ESME_ROK
    assert await asyncio.to_thread(smpplib_bind_status, port, "beta", WRONG) == S.ESME_RINVPASWD
    await until(lambda: d.connections.buffered == 2, what="two attempts buffered")
    assert stored(db_path(settings)) == [] and d.connections.written == 0

    assert registry_for(d).get_sample_value("smscenter_connection_log_buffered") == 2.0
    await mt.stop_daemon(d)
    rows = stored(db_path(settings))
    assert [(r["account"], r["status"], r["at"]) for r in rows] == [
        ("acme", S.ESME_ROK, TUESDAY_MORNING), ("beta", S.ESME_RINVPASWD, TUESDAY_MORNING),
    ]
    metrics = registry_for(d)
    assert metrics.get_sample_value("smscenter_connection_log_written_total") == 2.0
    assert metrics.get_sample_value("smscenter_connection_log_dropped_total") == 0.0
    assert b"secret1" not in file_bytes(db_path(settings)) and WRONG.encode() not in file_bytes(db_path(settings))
