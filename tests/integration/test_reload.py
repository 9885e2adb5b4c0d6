"""Live reload (issue 17, item 2): the daemon as a process (``python -m smscenter run``) under
a fake systemd (``NOTIFY_SOCKET``, a Unix datagram socket this test reads), two upstreams
(``smpp34`` servers) and partners on raw sockets.

1. A new account, a changed route, a removed account and a changed send window, applied
   on SIGHUP between ``RELOADING=1`` and ``READY=1``: the new account binds, traffic (and
   the queue) follows the new route, the removed account's session is unbound, the other
   partner keeps its TCP connection and goes on submitting, no acknowledged message is lost.
2. An invalid file, then a changed listen address: refused whole, the reason logged (with
   the key path), nothing changed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.integration import mt_fixtures
from tests.integration.mt_fixtures import (
    GW_PASSWORD,
    HOST,
    PARTNER_PASSWORDS,
    RawPartner,
    cstr,
    free_port,
    wait_for,
)
from tests.integration.optout_fixtures import REPO
from tests.patience import PATIENCE

pytestmark = pytest.mark.timeout(180)
mt = mt_fixtures.mt  # the fixture, for pytest to find

FR = "33612345678"
BE = "32470123456"
SMSC_RWINDOWCLOSED = 0x401
UNBIND = 0x00000006


# --------------------------------------------------------------------------- systemd, logs


class FakeSystemd:
    """The service manager's end of ``NOTIFY_SOCKET``: every datagram the daemon sends."""

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="sd", dir="/tmp")  # a Unix socket path is short
        self.path = os.path.join(self.folder, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.messages: list[list[str]] = []

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            self.messages.append(data.decode().split("\n"))

    async def next_with(self, line: str, after: int = 0) -> int:
        """The index of the first message from ``after`` on that holds ``line``."""
        def found():
            self._read()
            return next((i + 1 for i, m in enumerate(self.messages[after:], after) if line in m), None)
        return (await wait_for(found, what=f"{line} from the daemon")) - 1

    def close(self) -> None:
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.folder)


def events(log: Path, name: str) -> list[dict]:
    out = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == name:
            out.append(entry)
    return out


# --------------------------------------------------------------------------- the config


def closed_now_rule() -> str:
    """A window rule closed now in Brussels (one hour on a day three days away)."""
    day = (datetime.now(ZoneInfo("Europe/Brussels")) + timedelta(days=3)).strftime("%a").lower()
    return f"{day} 10:00-11:00"


def config_toml(port: int, hashes: dict[str, str], ups: dict[str, int], *, accounts: list[str], route: list[str],
                be_rule: str, level: str = "info") -> str:
    parts = [f"""
[server]
listen = ["{HOST}:{port}"]
bind_timeout = "5s"
failed_bind_delay = "50ms"
enquire_link_interval = "5s"
inactivity_timeout = "60s"
response_timeout = "2s"
shutdown_grace = "500ms"

[storage]
url = "sqlite:///var/smscenter.db"
keys = "var/keys"

[logging]
format = "json"
level = "{level}"

[optout]
short_code = "36180"

[windows]
rules = {{ BE = "{be_rule}" }}
"""]
    for system_id in accounts:
        parts.append(f"""
[[account]]
system_id = "{system_id}"
password = "{hashes[system_id]}"
sender_ids = ["{system_id.upper()}"]
category = "alert"
outside_window = "reject"
throughput = 10000
""")
    for name, up_port in ups.items():
        parts.append(f"""
[[connector]]
name = "{name}"
host = "{HOST}"
port = {up_port}
system_id = "gw"
password = "{GW_PASSWORD}"
window = 10
throughput = {1 if name == "a" else 10000}
message_id = "hex-to-decimal"
enquire_link_interval = "5s"
response_timeout = "2s"
reconnect_min = "100ms"
reconnect_max = "300ms"
""")
    parts.append(f"""
[[route]]
destinations = ["*"]
connectors = {json.dumps(route)}
""")
    return "".join(parts)


@pytest.fixture
def hashes(password_hashes) -> dict[str, str]:
    """acme and beta as everywhere; gamma, the new account, with beta's password."""
    return {**password_hashes, "gamma": password_hashes["beta"]}


PASSWORDS = {**PARTNER_PASSWORDS, "gamma": PARTNER_PASSWORDS["beta"]}


# --------------------------------------------------------------------------- the daemon


class DaemonProcess:
    def __init__(self, config: Path, log: Path, systemd: FakeSystemd, env: dict | None = None) -> None:
        self.config, self.log, self.systemd = config, log, systemd
        self.env = env or {}
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO), NOTIFY_SOCKET=self.systemd.path, **self.env)
        with self.log.open("wb") as err:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "smscenter", "run", "-c", str(self.config),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=err, env=env,
            )
        await self.systemd.next_with("READY=1")

    async def reload(self) -> tuple[dict, list[str]]:
        """SIGHUP; wait for RELOADING=1 (with MONOTONIC_USEC) then READY=1; the log's outcome."""
        seen = len(self.systemd.messages)
        done = len(events(self.log, "reload_done")) + len(events(self.log, "reload_refused"))
        self.proc.send_signal(signal.SIGHUP)
        reloading = await self.systemd.next_with("RELOADING=1", seen)
        message = self.systemd.messages[reloading]
        assert any(line.startswith("MONOTONIC_USEC=") and line[15:].isdigit() for line in message), message
        await self.systemd.next_with("READY=1", reloading + 1)
        outcome = await wait_for(
            lambda: (events(self.log, "reload_done") + events(self.log, "reload_refused"))[done:], what="the outcome")
        return outcome[0], message

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), PATIENCE)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@pytest.fixture
async def daemon_proc(tmp_path):
    systemd = FakeSystemd()
    started: list[DaemonProcess] = []

    def make(config: Path, env: dict | None = None) -> DaemonProcess:
        d = DaemonProcess(config, tmp_path / "daemon.log", systemd, env)
        started.append(d)
        return d

    try:
        yield make
    finally:
        for d in started:
            await d.stop()
        systemd.close()


async def bind(mt, port: int, system_id: str, command_id: int = RawPartner.BIND_TX) -> tuple[RawPartner, int]:
    """(the session, the bind's status): a refused bind's session is closed."""
    reader, writer = await asyncio.open_connection(HOST, port)
    raw = RawPartner(reader, writer)
    body = cstr(system_id) + cstr(PASSWORDS[system_id]) + cstr("") + bytes([0x34, 0, 0]) + cstr("")
    resp = await raw.request(command_id, body)
    if resp.status == 0:
        mt.partners.append(raw)
    else:
        await raw.close()
    return raw, resp.status


async def submit(partner: RawPartner, dest: str, text: bytes, source: str = "ACME", service_type: str = "") -> int:
    (resp,) = await partner.submit_pipelined([(dest, text)], source_addr=source, service_type=service_type)
    return resp.status


def texts(peer) -> list[bytes]:
    return [s.short_message for s in peer.submits]


# --------------------------------------------------------------------------- the watchdog


async def test_the_watchdog_pings_once_ready_and_on_every_half_period(mt, daemon_proc, hashes, tmp_path):
    """Under ``WatchdogSec=`` (``WATCHDOG_USEC``): ``WATCHDOG=1`` at once after READY=1, then
    every half period (``timers.every``): waited for as datagrams, no durations asserted."""
    up_a, up_b = await mt.upstream("a"), await mt.upstream("b")
    config = tmp_path / "smscenter.toml"
    config.write_text(config_toml(free_port(), hashes, {"a": up_a.port, "b": up_b.port}, accounts=["acme"],
                                  route=["a"], be_rule="always"))
    d = daemon_proc(config, env={"WATCHDOG_USEC": "200000"})
    await d.start()
    ready = await d.systemd.next_with("READY=1")
    first = await d.systemd.next_with("WATCHDOG=1", ready)
    second = await d.systemd.next_with("WATCHDOG=1", first + 1)
    await d.systemd.next_with("WATCHDOG=1", second + 1)


# --------------------------------------------------------------------------- 1. live changes


async def test_reload_applies_accounts_routes_windows_live(mt, daemon_proc, hashes, tmp_path):
    up_a, up_b = await mt.upstream("a"), await mt.upstream("b")
    ups = {"a": up_a.port, "b": up_b.port}
    port = free_port()
    config = tmp_path / "smscenter.toml"
    config.write_text(config_toml(port, hashes, ups, accounts=["acme", "beta"], route=["a"], be_rule="always"))
    d = daemon_proc(config)
    await d.start()
    await wait_for(lambda: up_a.binds and up_b.binds, what="both connectors bound")

    acme, status = await bind(mt, port, "acme")
    assert status == 0
    acme_socket = acme.writer.get_extra_info("sockname")
    beta, status = await bind(mt, port, "beta", RawPartner.BIND_TRX)
    assert status == 0
    assert await submit(acme, FR, b"avant 0") == 0
    assert await submit(acme, BE, b"promo avant", service_type="MKT") == 0  # BE: always open
    await wait_for(lambda: b"avant 0" in texts(up_a), what="the first message at A")
    # A queue behind connector A's rate (1/s): one number's messages go one after the other.
    queued = [b"file %d" % i for i in range(8)]
    answers = await acme.submit_pipelined([(FR, text) for text in queued])
    assert [r.status for r in answers] == [0] * len(queued)

    config.write_text(config_toml(port, hashes, ups, accounts=["acme", "gamma"], route=["b"],
                                  be_rule=closed_now_rule(), level="debug"))
    outcome, _ = await d.reload()
    assert outcome["event"] == "reload_done", outcome
    assert set(outcome["changes"]) == {"account gamma: added", "account beta: removed", "route[0]: connectors changed",
                                       "windows.rules: changed", "logging.level: info -> debug"}

    # The removed account: unbound by the daemon, and it cannot bind again.
    cid, seq, _ = await beta.read_request()
    assert cid == UNBIND
    beta.answer(UNBIND, seq)
    assert await asyncio.wait_for(beta.reader.read(), PATIENCE) == b""  # closed
    assert (await bind(mt, port, "beta"))[1] == 0x0E  # ESME_RINVPASWD: unknown now
    # The new account binds and sends, through the new route.
    gamma, status = await bind(mt, port, "gamma")
    assert status == 0
    assert await submit(gamma, FR, b"gamma apres", source="GAMMA") == 0
    # The other partner: the same TCP connection, still submitting, now through B.
    assert acme.writer.get_extra_info("sockname") == acme_socket
    assert await submit(acme, FR, b"acme apres") == 0
    await wait_for(lambda: {b"gamma apres", b"acme apres"} <= set(texts(up_b)), what="new traffic at B")
    assert b"acme apres" not in texts(up_a) and b"gamma apres" not in texts(up_a)
    # The changed window: BE marketing is now refused (the account rejects outside windows).
    assert await submit(acme, BE, b"promo apres", service_type="MKT") == SMSC_RWINDOWCLOSED
    # No queued message lost: each reached A (before the reload) or B (after), in order.
    await wait_for(lambda: set(queued) <= set(texts(up_a)) | set(texts(up_b)), what="every queued message upstream")
    at_b = [t for t in texts(up_b) if t in queued]
    assert at_b, "the queue in memory did not follow the new route"
    assert [t for t in texts(up_a) if t in queued] + at_b == queued  # each once, in order
    log = d.log.read_text(encoding="utf-8")
    assert FR not in log and BE not in log and "promo" not in log  # no number, no text


# --------------------------------------------------------------------------- 2. refused


async def test_reload_refuses_an_invalid_file_and_a_listen_change(mt, daemon_proc, hashes, tmp_path):
    up_a, up_b = await mt.upstream("a"), await mt.upstream("b")
    ups = {"a": up_a.port, "b": up_b.port}
    port = free_port()
    config = tmp_path / "smscenter.toml"
    config.write_text(config_toml(port, hashes, ups, accounts=["acme", "beta"], route=["a"], be_rule="always"))
    d = daemon_proc(config)
    await d.start()
    await wait_for(lambda: up_a.binds and up_b.binds, what="both connectors bound")
    acme, _ = await bind(mt, port, "acme")
    beta, _ = await bind(mt, port, "beta", RawPartner.BIND_TRX)
    acme_socket = acme.writer.get_extra_info("sockname")

    async def nothing_changed(tag: bytes) -> None:
        assert acme.writer.get_extra_info("sockname") == acme_socket
        assert await submit(acme, FR, tag) == 0
        await wait_for(lambda: tag in texts(up_a), what="traffic still through A")
        assert tag not in texts(up_b)
        assert await beta.quiet() == []  # beta still bound, nothing sent to it (no unbind)
        assert await submit(beta, FR, tag + b" beta", source="BETA") == 0
        assert (await bind(mt, port, "gamma"))[1] == 0x0E  # gamma unknown
        assert await submit(acme, BE, tag + b" promo", service_type="MKT") == 0  # BE still open

    # An invalid file: the new account and route with an error beside them.
    bad = config_toml(port, hashes, ups, accounts=["acme", "gamma"], route=["b"], be_rule=closed_now_rule())
    config.write_text(bad.replace("throughput = 10000", "throughput = 0", 1))
    outcome, _ = await d.reload()
    assert outcome["event"] == "reload_refused"
    assert any(e.startswith("account[0].throughput: ") for e in outcome["errors"]), outcome
    await nothing_changed(b"apres fichier invalide")

    # A changed listen address (and changes that could be applied): refused, naming the key.
    other = free_port()
    config.write_text(config_toml(other, hashes, ups, accounts=["acme", "gamma"], route=["b"], be_rule="always"))
    outcome, _ = await d.reload()
    assert outcome["event"] == "reload_refused"
    assert outcome["restart_needed"] == ["server.listen"]
    assert "server.listen: changed, needs a restart" in outcome["errors"]
    await nothing_changed(b"apres listen")
    with pytest.raises(OSError):
        await asyncio.open_connection(HOST, other)
