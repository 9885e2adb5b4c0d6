"""Start order (issue 17, item 4): the listeners' ports are taken and storage is open before
any connector connects, so a start that fails on a port in use sends nothing upstream.

A first daemon (in this process) queues a message while its upstream refuses binds, and
stops. Then the SMPP (or the HTTP, or the API's) port is taken by another socket and the daemon is started
as a process, ``python -m smscenter run``: it exits 1 with one log line naming the address,
and the upstream — accepting binds by now — received no connection at all (checked behind a
barrier: a connection of our own, accepted after any the daemon made). Last, the same
daemon started with the port free delivers the queued message: there was something to send.
"""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from protocol.constants import CommandStatus
from smscenter.config import load_settings
from smscenter.app.daemon import Daemon
from tests.integration.conftest import HOST
from tests.integration.mt_fixtures import RawPartner, free_port
from tests.integration.optout_fixtures import run_cli
from tests.integration.upstream import Upstream, wait_for
from tests.patience import PATIENCE

pytestmark = pytest.mark.timeout(120)


def write_config(tmp_path, password_hash: str, smpp_port: int, http_port: int, upstream_port: int,
                 api_port: int | None = None):
    (tmp_path / "var").mkdir(exist_ok=True)
    path = tmp_path / "smscenter.toml"
    path.write_text(f"""
[server]
listen = ["{HOST}:{smpp_port}"]
shutdown_grace = "500ms"
failed_bind_delay = "50ms"

[http]
listen = "{HOST}:{http_port}"
{f'[api]{chr(10)}listen = "{HOST}:{api_port}"' if api_port else ""}

[storage]
url = "sqlite:///var/smscenter.db"
keys = "var/keys"

[logging]
level = "info"
format = "json"

[[account]]
system_id = "acme"
password = "{password_hash}"
sender_ids = ["ACME"]
category = "alert"

[[connector]]
name = "op-a"
host = "{HOST}"
port = {upstream_port}
system_id = "gw"
password = "pw"
reconnect_min = "50ms"
reconnect_max = "100ms"

[[route]]
destinations = ["*"]
connectors = ["op-a"]
""")
    return path


async def queue_one_message(config) -> None:
    """Start the daemon here, submit one message while the upstream refuses binds, stop."""
    daemon = Daemon(load_settings(config))
    await daemon.start()
    try:
        partner = await RawPartner.bind(daemon.server.addresses[0][1])
        [resp] = await partner.submit_pipelined([("33612345678", b"queued before the failed start")])
        assert resp.status == 0
        await partner.close()
    finally:
        await asyncio.wait_for(daemon.stop(), PATIENCE)


@pytest.mark.parametrize("taken", ["smpp", "http", "api"])
async def test_a_port_in_use_fails_the_start_before_anything_goes_upstream(tmp_path, password_hashes, taken):
    upstream = await Upstream().start()
    upstream.bind_status = CommandStatus.ESME_RBINDFAIL
    smpp_port, http_port, api_port = free_port(), free_port(), free_port()
    config = write_config(tmp_path, password_hashes["acme"], smpp_port, http_port, upstream.port, api_port)
    port = {"smpp": smpp_port, "http": http_port, "api": api_port}[taken]
    blocker = socket.socket()
    try:
        await queue_one_message(config)
        assert upstream.submits == []
        upstream.bind_status = CommandStatus.ESME_ROK
        connections_before, binds_before = upstream.connections, upstream.bind_attempts

        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind((HOST, port))
        blocker.listen()
        done = await run_cli("run", "-c", str(config))

        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr  # no traceback, nothing else
        event = json.loads(lines[0])
        assert event["event"] == "start_failed" and event["level"] == "error"
        assert f"{HOST}:{port}" in event["error"] and taken.upper() in event["error"], event
        assert done.stdout == ""

        # Barrier: our own connection, accepted once every earlier one was.
        _, writer = await asyncio.open_connection(HOST, upstream.port)
        await wait_for(lambda: upstream.connections == connections_before + 1)
        writer.close()
        assert upstream.connections == connections_before + 1, "the failed start connected upstream"
        assert upstream.bind_attempts == binds_before
        assert upstream.submits == []

        # The control: with the port free, the same daemon sends what was queued.
        blocker.close()
        daemon = Daemon(load_settings(config))
        await daemon.start()
        try:
            await wait_for(lambda: upstream.submits)
            assert upstream.submits[0].short_message == b"queued before the failed start"
        finally:
            await asyncio.wait_for(daemon.stop(), PATIENCE)
    finally:
        blocker.close()
        await upstream.close()
