"""The control socket, ``smscenter status`` and ``smscenter reload``, end to end (issue 17).

The real ``Daemon`` in-process on virtual time (a Sunday: marketing is held), on a config
file that the CLI — run as a process, ``python -m smscenter`` — reads too to find the
socket. Partners are ``smpp34`` clients, the upstream an ``smpp34`` server
(``mt_fixtures.py``); a second connector points at a port where nothing listens, so its
messages wait. What is proved:

1. ``status --json`` shows each bind (type, peer, since), the connectors' states, binds,
   window, last error and queue, the queue's depth, what send windows hold (per country,
   when due), the outbox backlog and retention's last run; the human tables too, with no
   number and no text in either;
2. the socket is mode 0660 with ``control_group``'s group; a world-writable folder (no
   sticky bit) is refused at start — by ``smscenter run`` as a process: exit 1, one line
   naming the key, nothing else started; a stale socket is replaced, a live one refused;
   Also against ``smscenter run`` as a process, on the wall clock, killed (SIGKILL) and
   started again: the stale socket is replaced; SIGTERM removes it.
3. ``reload`` calls ``Daemon.reload`` (a test double here: the live reload is another
   change) and prints its outcome, exit 0 or 1; with no daemon, ``status`` and ``reload``
   say "no daemon is listening on <path>", exit 1.
"""

from __future__ import annotations

import asyncio
import grp
import json
import os
import socket
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from protocol.constants import CommandStatus as S
from smscenter.config import load_settings
from smscenter.app.control import ControlSocketError, ControlUnavailable, request
from smscenter.app.daemon import Daemon
from smscenter.runtime.timers import FakeTimers
from tests.integration.mt_fixtures import (  # noqa: F401 - mt is a fixture
    GW_PASSWORD,
    HOST,
    TUESDAY_MORNING,
    Partner,
    free_port,
    mt,
    port_of,
    wait_for,
)
from tests.integration.optout_fixtures import run_cli_here
from tests.patience import PATIENCE

pytestmark = pytest.mark.timeout(90)

REPO = Path(__file__).resolve().parents[2]
#: Sunday 31 May 2026, 10:00 in Paris: no marketing under the default rule.
SUNDAY = TUESDAY_MORNING - 2 * 86400
FR_NUMBER = "+33612345678"
UK_NUMBERS = ("+447911123456", "+447911123457")
TEXTS = (b"Soldes du dimanche", b"Votre code 4711", b"Colis en route")


def own_group() -> str:
    return grp.getgrgid(os.getgid()).gr_name


def write_config(tmp_path: Path, password_hashes: dict, up_port: int, *, server: str = "", name="smscenter.toml"):
    """A config file: "acme" (marketing, sender ACME) and "beta" (alerts, sender BETA);
    connector "op" to the test upstream for every number but +44, which goes to "dead"
    (nothing listens there)."""
    path = tmp_path / name
    path.write_text(f"""
[server]
listen = ["{HOST}:0"]
bind_timeout = "2s"
failed_bind_delay = "50ms"
enquire_link_interval = "5s"
inactivity_timeout = "20s"
response_timeout = "2s"
shutdown_grace = "500ms"
{server}

[storage]
url = "sqlite:///var/smscenter.db"
keys = "var/keys"

[logging]
level = "info"
format = "json"

[[account]]
system_id = "acme"
password = "{password_hashes['acme']}"
sender_ids = ["ACME"]
category = "marketing"
throughput = 10000

[[account]]
system_id = "beta"
password = "{password_hashes['beta']}"
sender_ids = ["BETA"]
category = "alert"
throughput = 10000

[[connector]]
name = "op"
host = "{HOST}"
port = {up_port}
system_id = "gw"
password = "{GW_PASSWORD}"
window = 10
throughput = 10000
message_id = "hex-to-decimal"
response_timeout = "2s"
reconnect_min = "100ms"
reconnect_max = "300ms"

[[connector]]
name = "dead"
host = "{HOST}"
port = {free_port()}
system_id = "gw"
password = "{GW_PASSWORD}"
reconnect_min = "100ms"
reconnect_max = "300ms"

[[route]]
destinations = ["+44"]
connectors = ["dead"]

[[route]]
destinations = ["*"]
connectors = ["op"]

[optout]
short_code = "36180"
""")
    return path


async def cli(*argv: str) -> subprocess.CompletedProcess:
    """``python -m smscenter ARGV`` as an administrator runs it (a process of its own); once a
    verb ran so, its other calls run in this process (``run_cli_here``) where no daemon runs in
    the test's process (its log lines would land in the captured stdout)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smscenter", *argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    out, err = await asyncio.wait_for(proc.communicate(), PATIENCE)
    return subprocess.CompletedProcess(argv, proc.returncode, out.decode(), err.decode())


async def start(mt, path: Path, timers=None) -> Daemon:
    d = Daemon(load_settings(path), timers=timers)
    await d.start()
    mt.daemons.append(d)
    return d


# --------------------------------------------------------------------------- 1. status


async def test_status_shows_binds_connectors_queue_held_and_retention(mt, tmp_path, password_hashes):
    up = await mt.upstream(stat="DELIVRD")
    config = write_config(tmp_path, password_hashes, up.port, server=f'control_group = "{own_group()}"')
    timers = FakeTimers(SUNDAY)
    d = await start(mt, config, timers)
    await d.connectors["op"].wait_up(5)
    await asyncio.wait_for(d.retention.ran.wait(), PATIENCE)  # overdue at a first start: it ran
    await wait_for(lambda: d.connectors["dead"].last_error is not None, what="the dead connector's first try")

    acme = await mt.partner(d, "acme", "TRX")
    beta = await mt.partner(d, "beta", "TX")
    assert (await acme.submit(FR_NUMBER, TEXTS[0])).command_status == S.ESME_ROK  # marketing, Sunday: held
    assert (await beta.submit(FR_NUMBER, TEXTS[1], source_addr="BETA")).command_status == S.ESME_ROK
    for number in UK_NUMBERS:
        assert (await beta.submit(number, TEXTS[2], source_addr="BETA")).command_status == S.ESME_ROK
    await up.receipt_answers(1)  # beta's alert went and came back: owed to beta, bound TX only
    await wait_for(lambda: d.connectors["dead"].waiting == 2, what="two messages waiting for the dead connector")

    done = await cli("status", "-c", str(config), "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)

    assert status["version"] and status["pid"] == os.getpid()
    assert status["started_at"] == SUNDAY and status["uptime_seconds"] == 0.0  # virtual time stood still
    assert status["listen"] == [f"{HOST}:{port_of(d)}"]
    accounts = {a["system_id"]: a for a in status["accounts"]}
    assert [b["type"] for b in accounts["acme"]["binds"]] == ["transceiver"]
    assert [b["type"] for b in accounts["beta"]["binds"]] == ["transmitter"]
    for bind in accounts["acme"]["binds"] + accounts["beta"]["binds"]:
        assert bind["peer"].startswith(f"{HOST}:") and bind["since"] == SUNDAY
        assert bind["in_flight"] == 0 and bind["deliveries_in_flight"] == 0
    assert accounts["beta"]["outbox"] == 1 and accounts["acme"]["outbox"] == 0

    connectors = {c["name"]: c for c in status["connectors"]}
    op, dead = connectors["op"], connectors["dead"]
    assert op["state"] == "up" and op["binds"] == {"bound": 1, "planned": 1}
    assert op["window"] == {"in_use": 0, "size": 10} and op["rate"]["throughput"] == 10000
    assert op["rate"]["per_second"] == pytest.approx(0.1)  # one submit answered in the last 10 s
    assert op["last_error"] is None and op["queue"] == {"resident": 0, "waiting": 0, "in_flight": 0}
    assert dead["state"] == "down" and dead["binds"] == {"bound": 0, "planned": 1}
    assert dead["last_error"]["error"].startswith("connect failed") and dead["last_error"]["at"] == SUNDAY
    assert dead["queue"] == {"resident": 2, "waiting": 2, "in_flight": 0}
    assert op["id_convention"] == "hex-to-decimal"  # configured
    assert dead["id_convention"] == "auto"  # message_id = "auto", nothing learnt yet

    assert status["queue"] == {"messages": 3, "resident": 2, "held_for_window": 1}
    opening = d.windows.next_opening(FR_NUMBER, datetime.fromtimestamp(SUNDAY, UTC)).timestamp()
    assert status["held"] == [{"country": "FR", "messages": 1, "next_due_at": opening}]
    assert status["retention"]["last_run_at"] == SUNDAY and status["retention"]["runs"] == 1
    assert status["retention"]["next_run_at"] > SUNDAY

    human = await cli("status", "-c", str(config))
    assert human.returncode == 0, human.stderr
    assert "acme" in human.stdout and "transceiver" in human.stdout and "connect failed" in human.stdout
    assert "held for their send window" in human.stdout and "FR" in human.stdout
    # No personal data: no number (in any spelling), no text, in either output.
    for out in (done.stdout, human.stdout):
        for number in (FR_NUMBER, *UK_NUMBERS):
            assert number[1:] not in out and number[3:] not in out
        for text in TEXTS:
            assert text.decode() not in out


async def test_connector_id_convention_is_shown_once_learnt(mt, tmp_path, password_hashes):
    up = await mt.upstream()
    d = await start(mt, write_config(tmp_path, password_hashes, up.port), FakeTimers(SUNDAY))
    d.connectors["dead"].id_learner.learnt = "decimal-to-hex"  # what learning from receipts sets
    reply = await asyncio.to_thread(request, d.settings.control_socket_path, "status")
    connectors = {c["name"]: c for c in reply["result"]["connectors"]}
    assert connectors["dead"]["id_convention"] == "decimal-to-hex"
    assert connectors["op"]["id_convention"] == "hex-to-decimal"  # configured: no learner


async def test_status_of_a_daemon_process_killed_and_started_again(mt, tmp_path, password_hashes):
    """``smscenter run`` as a process on the wall clock (binds and connectors stamp the
    monotonic one: shown as wall-clock times); SIGKILL leaves its socket, the next start
    replaces it; SIGTERM removes it."""
    up = await mt.upstream()
    port = free_port()
    text = write_config(tmp_path, password_hashes, up.port).read_text()
    config = tmp_path / "smscenter.toml"
    config.write_text(text.replace(f'listen = ["{HOST}:0"]', f'listen = ["{HOST}:{port}"]'))
    path = load_settings(config).control_socket_path

    def ready() -> dict | None:
        try:
            reply = request(path, "status", timeout=5)
        except ControlUnavailable:
            return None
        return reply["result"] if reply["ok"] else None

    log = open(tmp_path / "daemon.log", "ab")  # noqa: SIM115 - closed at the end
    procs = []
    try:
        for start in range(2):
            before = time.time()
            proc = subprocess.Popen([sys.executable, "-m", "smscenter", "run", "-c", str(config)], cwd=REPO,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env=dict(os.environ, PYTHONPATH=str(REPO)))
            procs.append(proc)
            status = None
            deadline = time.monotonic() + 2 * PATIENCE
            while status is None:
                assert proc.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the daemon never answered on its control socket"
                status = await asyncio.to_thread(ready)
                if status is None or status["connectors"][0]["state"] != "up":
                    status = None
                    await asyncio.sleep(0.1)
            partner = await Partner(port, "acme", "TRX").connect()
            try:
                done = await cli("status", "-c", str(config), "--json")
                assert done.returncode == 0, done.stderr
                status = json.loads(done.stdout)
                after = time.time()
                assert status["pid"] == proc.pid and before <= status["started_at"] <= after
                (bind,) = next(a for a in status["accounts"] if a["system_id"] == "acme")["binds"]
                assert bind["type"] == "transceiver" and before <= bind["since"] <= after
                op = next(c for c in status["connectors"] if c["name"] == "op")
                assert op["state"] == "up" and before <= op["since"] <= after
            finally:
                await partner.close()
            if start == 0:
                proc.kill()  # SIGKILL: the socket file stays behind
                await asyncio.to_thread(proc.wait, PATIENCE)
                assert stat.S_ISSOCK(os.lstat(path).st_mode)
        proc.terminate()
        assert await asyncio.to_thread(proc.wait, PATIENCE) == 0
        assert not path.exists()
        events = [json.loads(line).get("event") for line in (tmp_path / "daemon.log").read_text().splitlines()
                  if line.startswith("{")]
        assert events.count("control_stale_socket_removed") == 1  # at the second start only
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log.close()


# --------------------------------------------------------------------------- 2. the socket


async def test_socket_is_0660_with_its_group_and_goes_with_the_daemon(mt, tmp_path, password_hashes):
    up = await mt.upstream()
    config = write_config(tmp_path, password_hashes, up.port, server=f'control_group = "{own_group()}"')
    d = await start(mt, config)
    path = d.settings.control_socket_path
    assert path == tmp_path / "var" / "smscenter.sock"  # the default: beside the keys folder
    st = os.lstat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_gid == grp.getgrnam(own_group()).gr_gid
    await mt.stop_daemon(d)
    assert not path.exists()  # an orderly stop removes it


async def test_world_writable_folder_is_refused_at_start(tmp_path, password_hashes):
    """``smscenter run`` as a process: exit 1, one line naming the key, nothing opened."""
    folder = tmp_path / "open"
    folder.mkdir()
    folder.chmod(0o777)
    port = free_port()
    config = write_config(tmp_path, password_hashes, free_port(),
                          server=f'control_socket = "{folder}/smscenter.sock"').read_text()
    config = config.replace(f'listen = ["{HOST}:0"]', f'listen = ["{HOST}:{port}"]')
    (tmp_path / "smscenter.toml").write_text(config)
    done = await cli("run", "-c", str(tmp_path / "smscenter.toml"))
    assert done.returncode == 1, done.stdout + done.stderr
    lines = [json.loads(line) for line in (done.stdout + done.stderr).splitlines() if line.startswith("{")]
    failed = [line for line in lines if line["event"] == "start_failed"]
    assert len(failed) == 1, lines
    assert "server.control_socket" in failed[0]["error"] and "writable by every user" in failed[0]["error"]
    assert not (tmp_path / "var" / "smscenter.db").exists()  # refused before the database
    assert not (folder / "smscenter.sock").exists()
    with socket.socket() as probe:
        assert probe.connect_ex((HOST, port)) != 0  # never listened


async def test_stale_socket_is_replaced_and_a_live_one_refused(mt, tmp_path, password_hashes):
    up = await mt.upstream()
    config = write_config(tmp_path, password_hashes, up.port)
    settings = load_settings(config)
    path = settings.control_socket_path
    path.parent.mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX)  # a killed daemon's: bound, never unlinked, nobody listening
    stale.bind(str(path))
    stale.close()
    d = await start(mt, config)
    assert (await asyncio.to_thread(request, path, "status"))["ok"]

    second = Daemon(settings)
    with pytest.raises(ControlSocketError, match="another daemon is listening on"):
        await second.start()
    await second._abort_start()
    assert (await asyncio.to_thread(request, path, "status"))["ok"]  # the first one's socket stayed
    assert not hasattr(second, "engine")  # refused before it opened the database
    await mt.stop_daemon(d)


# --------------------------------------------------------------------------- 3. reload


async def test_reload_verb_prints_the_outcome(mt, tmp_path, password_hashes):
    up = await mt.upstream()
    config = write_config(tmp_path, password_hashes, up.port)
    d = await start(mt, config)
    outcomes = [
        {"ok": True, "changes": ["account beta: throughput 10000 -> 500", "route[0]: connectors"], "errors": [],
         "restart_needed": []},
        {"ok": False, "changes": [], "errors": ["account[1].throughput: Input should be greater than 0"],
         "restart_needed": ["storage.url"]},
    ]
    calls = []

    async def reload() -> dict:  # the test double of Daemon.reload
        calls.append(1)
        return outcomes[len(calls) - 1]

    d.reload = reload
    done = await cli("reload", "-c", str(config))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["reloaded: 2 changes", "  changed: account beta: throughput 10000 -> 500",
                                        "  changed: route[0]: connectors"]
    done = await cli("reload", "-c", str(config))
    assert done.returncode == 1
    assert done.stdout.splitlines() == ["reload refused: the running configuration is unchanged",
                                        "  error: account[1].throughput: Input should be greater than 0",
                                        "  needs a restart: storage.url"]
    assert len(calls) == 2

    async def broken() -> dict:
        raise RuntimeError("half-way")

    d.reload = broken
    done = await cli("reload", "-c", str(config))
    assert done.returncode == 1 and "reload failed: RuntimeError: half-way" in done.stderr
    assert (await asyncio.to_thread(request, d.settings.control_socket_path, "status"))["ok"]  # still serving


async def test_status_and_reload_without_a_daemon(tmp_path, password_hashes):
    config = write_config(tmp_path, password_hashes, free_port())
    path = load_settings(config).control_socket_path
    for verb in ("status", "reload"):
        done = await run_cli_here(verb, "-c", str(config))
        assert done.returncode == 1
        assert done.stderr.strip() == f"smscenter {verb}: no daemon is listening on {path}"
    with pytest.raises(ControlUnavailable, match="no daemon is listening"):
        request(path, "status")
