"""The control socket's rules and protocol (``smscenter/app/control.py``), over a real Unix socket
in a temporary folder, and the config keys that place it; the rate meter ``status`` shows.

What is proved: the socket is made 0660 (group given); what others could write is refused
with the key named — a world-writable folder without the sticky bit, a path that is not a
socket, a socket writable by others — while a sticky world-writable folder (``/tmp``-like) is
fine; a stale socket is replaced, a live one refused; requests get one line of JSON back
(bad JSON, unknown command, a daemon not ready, a request too long, a command that fails);
the client says "no daemon is listening on <path>" when none does.
"""

from __future__ import annotations

import asyncio
import grp
import json
import os
import socket
import stat

import pytest

from smscenter.config import ConfigError, settings_from_dict
from smscenter.app.control import (
    MAX_REQUEST,
    ControlServer,
    ControlSocketError,
    ControlUnavailable,
    open_socket,
    request,
)
from smscenter.runtime.ratelimit import RateMeter


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "run"
    path.mkdir(mode=0o750)
    return path


def own_group() -> str:
    return grp.getgrgid(os.getgid()).gr_name


async def ask(path, line: bytes) -> dict:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(line)
    await writer.drain()
    answer = await asyncio.wait_for(reader.readline(), 30)
    writer.close()
    return json.loads(answer)


# --------------------------------------------------------------------------- the socket file


def test_socket_is_0660_with_the_group(folder):
    sock = open_socket(folder / "ctl.sock", own_group())
    try:
        st = os.lstat(folder / "ctl.sock")
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
        assert st.st_gid == grp.getgrnam(own_group()).gr_gid
    finally:
        sock.close()


def test_world_writable_folder_without_sticky_bit_is_refused(folder):
    folder.chmod(0o777)
    with pytest.raises(ControlSocketError, match=r"server.control_socket: its folder .* writable by every user"):
        open_socket(folder / "ctl.sock", None)
    assert not (folder / "ctl.sock").exists()


def test_sticky_world_writable_folder_is_accepted(folder):
    folder.chmod(0o1777)  # like /tmp: others cannot remove or replace our file
    open_socket(folder / "ctl.sock", None).close()


def test_a_file_that_is_not_a_socket_is_refused_and_kept(folder):
    (folder / "ctl.sock").write_text("mine")
    with pytest.raises(ControlSocketError, match="exists and is not a socket"):
        open_socket(folder / "ctl.sock", None)
    assert (folder / "ctl.sock").read_text() == "mine"


def stale_socket(path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()  # bound, never listened on, never removed: what a SIGKILL leaves


def test_a_socket_others_may_write_is_refused(folder):
    stale_socket(folder / "ctl.sock")
    os.chmod(folder / "ctl.sock", 0o666)
    with pytest.raises(ControlSocketError, match=r"writable by every user \(mode 0666\)"):
        open_socket(folder / "ctl.sock", None)


def test_a_stale_socket_is_replaced(folder):
    stale_socket(folder / "ctl.sock")
    with socket.socket(socket.AF_UNIX) as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(str(folder / "ctl.sock"))
    sock = open_socket(folder / "ctl.sock", None)
    try:
        with socket.socket(socket.AF_UNIX) as probe:
            probe.connect(str(folder / "ctl.sock"))  # ours now: it listens
    finally:
        sock.close()


def test_a_live_socket_is_refused(folder):
    live = open_socket(folder / "ctl.sock", None)
    try:
        with pytest.raises(ControlSocketError, match="another daemon is listening on"):
            open_socket(folder / "ctl.sock", None)
        assert stat.S_ISSOCK(os.lstat(folder / "ctl.sock").st_mode)  # left alone
    finally:
        live.close()


def test_an_unknown_group_is_refused(folder):
    with pytest.raises(ControlSocketError, match="server.control_group: no group named"):
        open_socket(folder / "ctl.sock", "no-such-group-here")


# --------------------------------------------------------------------------- the protocol


async def test_requests_and_answers(folder):
    server = ControlServer(folder / "ctl.sock")
    await server.start()
    try:

        async def hello(req: dict) -> dict:
            return {"hello": req.get("name", "?")}

        async def broken(req: dict) -> dict:
            raise RuntimeError("boom")

        server.commands.update(hello=hello, broken=broken)
        assert await ask(server.path, b'{"command": "hello"}\n') == {"ok": False, "error": "the daemon is starting"}
        server.state = "ready"
        assert await ask(server.path, b'{"command": "hello", "name": "ops"}\n') == {"ok": True,
                                                                                 "result": {"hello": "ops"}}
        assert (await ask(server.path, b"status please\n"))["error"].startswith("bad request")
        assert (await ask(server.path, b'["hello"]\n'))["error"].startswith("bad request")
        assert await ask(server.path, b'{"command": "nope"}\n') == {
            "ok": False, "error": "unknown command 'nope' (known: broken, hello)"}
        assert await ask(server.path, b'{"command": "broken"}\n') == {
            "ok": False, "error": "broken failed: RuntimeError: boom"}
        assert (await ask(server.path, b"x" * (MAX_REQUEST + 10) + b"\n"))["error"] == (
            f"request longer than {MAX_REQUEST} bytes")
        # The client the CLI uses (blocking: in a thread, the server runs on this loop).
        assert await asyncio.to_thread(request, server.path, "hello", name="cli") == {
            "ok": True, "result": {"hello": "cli"}}
    finally:
        await server.close()
    assert not server.path.exists()


async def test_close_leaves_a_successors_socket(folder):
    server = ControlServer(folder / "ctl.sock")
    await server.start()
    os.unlink(server.path)
    successor = open_socket(server.path, None)  # another daemon took the path meanwhile
    try:
        await server.close()
        assert server.path.exists()
    finally:
        successor.close()


def test_client_without_a_daemon(folder):
    with pytest.raises(ControlUnavailable, match=f"^no daemon is listening on {folder}/ctl.sock$"):
        request(folder / "ctl.sock", "status")
    stale_socket(folder / "ctl.sock")
    with pytest.raises(ControlUnavailable, match="no daemon is listening on"):
        request(folder / "ctl.sock", "status")


# --------------------------------------------------------------------------- config keys


def settings(tmp_path, **server):
    return settings_from_dict({"server": server, "storage": {"keys": "state/keys"}}, base_dir=tmp_path)


def test_default_socket_is_beside_the_keys_folder(tmp_path):
    assert settings(tmp_path).control_socket_path == tmp_path / "state" / "smscenter.sock"
    assert settings(tmp_path, control_socket="ctl/s.sock").control_socket_path == tmp_path / "ctl" / "s.sock"


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError) as err:
        settings(tmp_path, control_socket="/" + "x" * 120, control_group="no-such-group-here")
    assert [e.split(":")[0] for e in err.value.errors] == ["server.control_socket", "server.control_group"]
    assert "a Unix socket path has at most 107" in err.value.errors[0]
    with pytest.raises(ConfigError, match="server.control_group"):
        settings(tmp_path, control_group="")
    assert settings(tmp_path, control_group=own_group()).server.control_group == own_group()


# --------------------------------------------------------------------------- the rate meter


def test_rate_meter_counts_the_last_ten_seconds():
    meter = RateMeter()
    for i in range(50):
        meter.add(1000.0 + i * 0.1)  # 10 per second for 5 s
    assert meter.per_second(1004.9) == 5.0
    assert meter.per_second(1009.9) == 5.0  # still within the 10 s
    assert meter.per_second(1012.0) == 2.0  # 1000-1002 fell out
    assert meter.per_second(1030.0) == 0.0
    meter.add(1030.5)
    assert meter.per_second(1030.5) == 0.1


# --------------------------------------------------------------------------- status's counts


async def test_held_count_reads_a_range_of_the_due_index(tmp_path):
    """``status``'s held messages: a range of ix_parts_due (the parts due later), never a
    pass over every part — a million messages due now must not slow it (README figures)."""
    import time

    from sqlalchemy import create_engine, event

    from storage import db
    from storage.store import Store

    engine = db.create_engine(f"sqlite:///{tmp_path}/smscenter.db")
    await db.upgrade(engine)
    statements = []
    event.listen(engine.sync_engine, "before_cursor_execute",
                 lambda conn, cursor, statement, params, *_: statements.append((statement, params)))
    assert await Store(engine, None).held_by_country(time.time()) == {}
    await engine.dispose()
    statement, params = statements[-1]
    plain = create_engine(f"sqlite:///{tmp_path}/smscenter.db")
    with plain.connect() as conn:
        plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params))
    plain.dispose()
    assert "SEARCH parts USING INDEX ix_parts_due (next_attempt_at>?)" in plan, plan
    assert "SCAN parts" not in plan, plan
