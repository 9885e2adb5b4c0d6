"""Connection slots per IP and bind throttling over real loopback sockets (issue 14, items 3-4).

The attacker's sockets come from 127.0.0.2 (bound before connect), the partner's from
127.0.0.1 through ``smpplib`` (an independent client). Assertions are structural (who was
answered while what was still waiting, which checks ran before which), never durations.
"""

from __future__ import annotations

import asyncio
import time
import socket

import pytest
import smpplib.client
import smpplib.exceptions
from prometheus_client import generate_latest
from prometheus_client.core import CollectorRegistry

from protocol import pdu as P
from protocol.constants import CommandId as C, CommandStatus as S
from smscenter.smpp.bindguard import GUESS_WINDOW
from smscenter.app.metrics import ServerCollector
from smscenter.smpp.server import PartnerServer
from smscenter.runtime.timers import FakeTimers
from tests.integration.conftest import HOST, PASSWORDS, AcceptAll, RawClient
from tests.patience import PATIENCE

ATTACKER = "127.0.0.2"


async def connect_from(ip: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.bind((ip, 0))
    await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
    return sock


async def raw_from(ip: str, port: int) -> RawClient:
    sock = await connect_from(ip, port)
    reader, writer = await asyncio.open_connection(sock=sock)
    return RawClient(reader, writer)


async def closed_by_server(sock: socket.socket, timeout: float = PATIENCE) -> bool:
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.get_running_loop().sock_recv(sock, 1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def smpplib_bind_status(port: int, system_id: str = "acme", password: str | None = None) -> int:
    client = smpplib.client.Client(HOST, port, timeout=10, allow_unknown_opt_params=True)
    client.connect()
    try:
        resp = client.bind_transceiver(system_id=system_id, password=PASSWORDS["acme"] if password is None else password)
        status = int(resp.status)
        client.unbind()
        return status
    except smpplib.exceptions.PDUError as exc:
        return int(exc.args[1])
    finally:
        client.disconnect()


async def until(condition, what: str, timeout: float = PATIENCE) -> None:
    """Wait (bounded) for the server to have done something we cannot await directly."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def metrics_text(server: PartnerServer) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(server))
    return generate_latest(registry).decode()


# --- 3. connection slots per IP -----------------------------------------------------------


async def test_1000_idle_sockets_from_one_ip_leave_room_for_a_partner(start_server):
    running = await start_server(
        server={"max_connections": 1000, "max_connections_per_ip": 100, "max_unbound_per_ip": 10,
                "bind_timeout": "30s", "inactivity_timeout": "60s"}
    )
    admission = running.server.admission

    async def flood():
        return await asyncio.gather(*(connect_from(ATTACKER, running.port) for _ in range(1000)))

    socks, status = await asyncio.gather(flood(), asyncio.to_thread(smpplib_bind_status, running.port))
    try:
        assert status == S.ESME_ROK
        await until(lambda: admission.refused["max_unbound_per_ip"] == 990, "990 refusals")
        assert admission.unbound(ATTACKER) == 10
        closed = await asyncio.gather(*(closed_by_server(s, timeout=2.0) for s in socks))
        assert sum(closed) == 990
        text = metrics_text(running.server)
        assert 'smscenter_connections_refused_total{reason="max_unbound_per_ip"} 990.0' in text
        assert 'smscenter_connections_refused_total{reason="max_connections"} 0.0' in text
    finally:
        for s in socks:
            s.close()


async def test_bound_sockets_leave_the_unbound_share_and_closed_ones_free_their_slot(start_server):
    running = await start_server(
        server={"max_connections_per_ip": 3, "max_unbound_per_ip": 2, "bind_timeout": "30s"}
    )
    admission = running.server.admission
    first, second = await raw_from(ATTACKER, running.port), await raw_from(ATTACKER, running.port)
    clients = [first, second]
    try:
        for c in clients:
            assert (await c.request(P.EnquireLink())).command_id == C.ENQUIRE_LINK_RESP
        third = await connect_from(ATTACKER, running.port)
        assert await closed_by_server(third)  # the unbound share (2) is full
        third.close()

        assert (await first.bind()).command_status == S.ESME_ROK
        assert admission.unbound(ATTACKER) == 1 and admission.connections(ATTACKER) == 2
        fourth = await raw_from(ATTACKER, running.port)  # room again in the unbound share
        clients.append(fourth)
        assert (await fourth.request(P.EnquireLink())).command_id == C.ENQUIRE_LINK_RESP
        fifth = await connect_from(ATTACKER, running.port)
        assert await closed_by_server(fifth)  # 3 sockets from that IP: the per-IP cap
        fifth.close()
        assert admission.refused["max_connections_per_ip"] == 1

        await second.close()
        await until(lambda: admission.connections(ATTACKER) == 2, "the closed socket's slot freed")
        sixth = await raw_from(ATTACKER, running.port)
        clients.append(sixth)
        assert (await sixth.request(P.EnquireLink())).command_id == C.ENQUIRE_LINK_RESP
        # Another address was never affected.
        assert await asyncio.to_thread(smpplib_bind_status, running.port) == S.ESME_ROK
    finally:
        for c in clients:
            await c.close()


# --- 4. bind throttling ---------------------------------------------------------------------


async def test_unknown_account_and_wrong_password_get_the_same_answer(start_server):
    running = await start_server()
    client = await raw_from(HOST, running.port)
    try:
        unknown = await client.bind(system_id="nobody", password="secret1")
        wrong = await client.bind(system_id="acme", password="wrong")
    finally:
        await client.close()
    assert (unknown.command_id, unknown.command_status, unknown.body) == (
        wrong.command_id, wrong.command_status, wrong.body
    ) == (C.BIND_TRANSMITTER_RESP, S.ESME_RINVPASWD, wrong.body)
    failed = running.server.guard.failed
    assert (failed["unknown_system_id"], failed["invalid_password"]) == (1, 1)
    statuses = await asyncio.to_thread(
        lambda: (smpplib_bind_status(running.port, "nobody", "x"), smpplib_bind_status(running.port, "acme", "x"))
    )
    assert statuses == (S.ESME_RINVPASWD, S.ESME_RINVPASWD)


async def flood_binds(port: int, count: int) -> tuple[list[RawClient], list[asyncio.Task]]:
    """``count`` binds at once from the attacker's address, each for another system_id (so
    the per-account guess cap does not stop them before the password check)."""
    clients = await asyncio.gather(*(raw_from(ATTACKER, port) for _ in range(count)))
    answers = [
        asyncio.create_task(c.request(P.BindTransceiver(system_id=f"user{n}", password="guess"), timeout=60))
        for n, c in enumerate(clients)
    ]
    return list(clients), answers


async def test_a_bind_from_another_ip_is_not_queued_behind_300_wrong_binds(start_server):
    """Every wrong bind is let through to the password check (caps raised): 300 scrypt
    checks are queued from 127.0.0.2; the partner's check from 127.0.0.1 goes next, not
    300th, and it is answered while most of the flood still waits."""
    running = await start_server(
        server={"max_connections_per_ip": 400, "max_unbound_per_ip": 400, "bind_checks_per_ip": 300,
                "bind_checks": 400, "bind_timeout": "60s", "inactivity_timeout": "120s"}
    )
    server = running.server
    pool = server.guard.executor
    marks: dict[str, int] = {}
    authenticate = server.registry.authenticate

    async def spy(command_id, system_id, password, ip, run):
        if ip == HOST:
            marks["queued"] = pool.started
        result = await authenticate(command_id, system_id, password, ip, run=run)
        if ip == HOST:
            marks["done"] = pool.started
        return result

    server.registry.authenticate = spy  # type: ignore[method-assign]
    clients, answers = await flood_binds(running.port, 300)
    try:
        await until(lambda: pool.queued + pool.started >= 300, "300 checks queued")
        assert pool.queued > 250
        status = await asyncio.to_thread(smpplib_bind_status, running.port)
        answered = sum(a.done() for a in answers)
        assert status == S.ESME_ROK
        assert answered < 150, "the partner's bind waited for most of the flood"
        # Between its check being queued and done, only the checks already running (2
        # threads) and the next ones on the freed threads started: not the 300 queued.
        assert marks["done"] - marks["queued"] <= 1 + 2 * pool.workers
    finally:
        for a in answers:
            a.cancel()
        for c in clients:
            await c.close()


async def test_300_wrong_binds_from_one_ip_with_the_default_caps(start_server):
    """With the default caps most of the flood is refused at once without scrypt, and the
    partner from another address binds."""
    running = await start_server(
        server={"max_connections_per_ip": 400, "max_unbound_per_ip": 400, "bind_timeout": "60s",
                "inactivity_timeout": "120s"}
    )
    guard = running.server.guard
    clients, answers = await flood_binds(running.port, 300)
    try:
        status = await asyncio.to_thread(smpplib_bind_status, running.port)
        assert status == S.ESME_ROK
        await until(lambda: guard.failed["checks_per_ip"] >= 250, "refusals at once")
        assert guard.executor.started <= 300 - 250 + 1
        refused_at_once = [a.result() for a in answers if a.done()]
        assert all(f.command_status == S.ESME_RBINDFAIL for f in refused_at_once if f.command_status != S.ESME_RINVPASWD)
        text = metrics_text(running.server)
        assert 'smscenter_binds_failed_total{reason="checks_per_ip"}' in text
    finally:
        for a in answers:
            a.cancel()
        for c in clients:
            await c.close()


async def drive(task: asyncio.Task, timers: FakeTimers):
    """Let a bind be answered: real I/O and the scrypt thread run, virtual time moves to
    the next timer (the penalty delay) when nothing else is left."""
    while not task.done():
        await asyncio.wait({task}, timeout=0.02)
        if not task.done():
            due = timers.next_due()
            if due is not None:
                await timers.advance(max(0.0, due - timers.now()))
    return task.result()


@pytest.mark.parametrize("delay", ["0s", "1s"])
@pytest.mark.parametrize("pace", [0.4, 13.0])
async def test_guesses_per_minute_capped_however_paced(make_settings, delay, pace):
    """An attacker guessing one account's password from one IP, on virtual time: at most
    ``bind_guesses_per_minute`` (5) password checks in any 60 s, with or without the
    penalty delay, at any pace."""
    settings = make_settings(
        server={"failed_bind_delay": delay, "bind_guesses_per_minute": 5, "bind_timeout": "30s"}
    )
    timers = FakeTimers()
    server = PartnerServer(settings, AcceptAll(), guard_timers=timers)
    checks: list[float] = []
    authenticate = server.registry.authenticate

    async def spy(command_id, system_id, password, ip, run):
        checks.append(timers.now())
        return await authenticate(command_id, system_id, password, ip, run=run)

    server.registry.authenticate = spy  # type: ignore[method-assign]
    await server.start()
    port = server.addresses[0][1]
    statuses = []
    try:
        end = timers.now() + 150
        while timers.now() < end:
            client = await raw_from(ATTACKER, port)
            try:
                frame = await drive(asyncio.create_task(client.bind(password="guess")), timers)
            finally:
                await client.close()
            statuses.append(frame.command_status)
            await timers.advance(pace)
    finally:
        await server.stop(0.2)
    assert max(sum(1 for u in checks if t <= u < t + GUESS_WINDOW) for t in checks) <= 5
    assert set(statuses) <= {S.ESME_RINVPASWD, S.ESME_RBINDFAIL}
    if pace < 12 and delay == "0s":
        assert server.guard.failed["guess_limit"] > 0


async def test_sockets_stuck_before_their_tls_handshake_hold_unbound_slots(start_server, make_settings, tmp_path):
    """On a TLS listener the slot is taken before the handshake: sockets from 127.0.0.2 that
    never send a ClientHello fill their IP's unbound share (the rest are closed at once) and
    are closed after bind_timeout; a partner from 127.0.0.1 binds over TLS meanwhile."""
    import ssl

    from tests.integration.test_tls import make_certificate

    cert, key = make_certificate(tmp_path)
    settings = make_settings(
        server={"listen": [], "tls_listen": [f"{HOST}:0"], "tls_cert": str(cert), "tls_key": str(key),
                "max_unbound_per_ip": 5, "bind_timeout": "1s"}
    )
    running = await start_server(settings)
    admission = running.server.admission
    silent = await asyncio.gather(*(connect_from(ATTACKER, running.port) for _ in range(20)))
    try:
        await until(lambda: admission.refused["max_unbound_per_ip"] == 15, "15 refusals")
        assert admission.unbound(ATTACKER) == 5

        def tls_bind() -> int:
            context = ssl.create_default_context(cafile=str(cert))
            context.check_hostname = False
            client = smpplib.client.Client(HOST, running.port, ssl_context=context, timeout=10,
                                           allow_unknown_opt_params=True)
            client.connect()
            try:
                status = int(client.bind_transceiver(system_id="acme", password=PASSWORDS["acme"]).status)
                client.unbind()
                return status
            finally:
                client.disconnect()

        assert await asyncio.to_thread(tls_bind) == S.ESME_ROK
        # The silent ones: closed when their handshake time (bind_timeout) runs out.
        assert all(await asyncio.gather(*(closed_by_server(s) for s in silent)))
        await until(lambda: admission.unbound(ATTACKER) == 0, "the stuck handshakes' slots freed")
        assert admission.refused["tls_handshake"] == 5
        assert running.server.links == set()
    finally:
        for s in silent:
            s.close()


async def test_a_client_that_hangs_up_during_the_check_counts_as_a_failure(start_server):
    running = await start_server()
    guard = running.server.guard
    client = await raw_from(ATTACKER, running.port)
    client.send(P.BindTransceiver(system_id="acme", password="guess"))
    await client.writer.drain()
    await client.close()  # gone before the scrypt check is done
    await until(lambda: guard.failed["hung_up"] == 1, "the hang-up counted")
    assert guard.score(ATTACKER) == pytest.approx(1.0, rel=0.01)
    assert guard.delay(ATTACKER) > 0


async def test_right_password_waits_the_penalty_too_on_virtual_time(make_settings):
    """After two failures from 127.0.0.2, its bind with the right password is answered only
    once virtual time passes the penalty (2 × 1 s); 127.0.0.1 is answered without waiting."""
    settings = make_settings(server={"failed_bind_delay": "1s", "bind_timeout": "30s"})
    timers = FakeTimers()
    server = PartnerServer(settings, AcceptAll(), guard_timers=timers)
    await server.start()
    port = server.addresses[0][1]
    clients = []
    try:
        for _ in range(2):
            client = await raw_from(ATTACKER, port)
            clients.append(client)
            frame = await drive(asyncio.create_task(client.bind(password="wrong")), timers)
            assert frame.command_status == S.ESME_RINVPASWD
        assert server.guard.delay(ATTACKER) == 2.0
        right = await raw_from(ATTACKER, port)
        partner = await raw_from(HOST, port)
        clients += [right, partner]
        answer = asyncio.create_task(right.bind())
        # The partner from another address: answered with virtual time standing still.
        assert (await partner.bind()).command_status == S.ESME_ROK
        pool = server.guard.executor
        await until(lambda: pool.started == 4 and server.guard.checking == 0, "the right bind checked")
        start = timers.now()
        await timers.advance(1.9)
        # Checked, still held by the guard: its answer cannot have been sent.
        assert server.guard.in_progress(ATTACKER) == 1 and not answer.done()
        frame = await drive(answer, timers)
        assert frame.command_status == S.ESME_ROK and timers.now() - start >= 1.9
    finally:
        for c in clients:
            await c.close()
        await server.stop(0.2)
