"""The control socket: how ``smscenter status`` and ``smscenter reload`` reach the running daemon.

A Unix socket (``[server] control_socket``, mode 0660, group ``[server] control_group``), so
that the file system says who may ask — the daemon's user and the group's members — as for
PostgreSQL's or Docker's sockets. The protocol is the smallest that does: one request per
connection, one line of JSON each way::

    → {"command": "status"}
    ← {"ok": true, "result": {...}}          or   {"ok": false, "error": "why"}

The daemon fills ``ControlServer.commands`` (name → async function of the request, returning
a JSON-able dict); this module knows no command. ``request`` is the client the CLI verbs use.

The socket file doubles as the mark that a daemon runs: at start, one that answers refuses
the start (another daemon listens on it); one nobody answers (a killed daemon's) is replaced.
A path whose permissions would let others write is refused (``ControlSocketError``, naming
the key): a folder writable by every user without the sticky bit (anyone could put their own
socket in its place and collect the commands), or a file there that is not a socket, is not
ours, or is writable by others.
"""

from __future__ import annotations

import asyncio
import grp
import json
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from smscenter.runtime.timers import RealTimers, Timers

log = structlog.get_logger("smscenter.control")

KEY = "server.control_socket"
MODE = 0o660
#: A request is one short line; anything longer is refused before it is parsed.
MAX_REQUEST = 64 * 1024
#: A client that connects and sends nothing is dropped after this long.
REQUEST_TIMEOUT = 10.0
#: Commands logged at debug only: monitoring may poll them every few seconds.
QUIET_COMMANDS = frozenset({"status"})

Command = Callable[[dict], Awaitable[dict]]


class ControlSocketError(Exception):
    """The control socket cannot be opened safely; the message names the key and the fix."""


class ControlUnavailable(Exception):
    """The client could not get an answer (no daemon, no permission, no reply)."""


# --------------------------------------------------------------------------- the daemon's side


class ControlServer:
    """Listens on the control socket and answers each request from ``commands``.

    ``state`` is "starting" until the daemon is up, "ready", then "stopping": requests
    outside "ready" are answered with it, not run against half-built components.
    """

    def __init__(self, path: Path, group: str | None = None, timers: Timers | None = None) -> None:
        self.path = Path(path)
        self.group = group
        self.timers: Timers = timers if timers is not None else RealTimers()
        self.commands: dict[str, Command] = {}
        self.state = "starting"
        self._server: asyncio.AbstractServer | None = None
        self._made: tuple | None = None  # the socket file we made: we remove only that one

    async def start(self) -> None:
        sock = open_socket(self.path, self.group)
        self._made = _identity(self.path)
        try:
            self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_REQUEST)
        except BaseException:
            sock.close()
            self._unlink()
            raise

    async def close(self) -> None:
        """Stop listening and remove the socket file (ours only: not a successor's)."""
        self.state = "stopping"
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._unlink()

    def _unlink(self) -> None:
        try:
            if self._made is not None and _identity(self.path) == self._made:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        self._made = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with self.timers.timeout(REQUEST_TIMEOUT):
                    line = await reader.readline()
            except TimeoutError:
                reply = _error(f"no request within {REQUEST_TIMEOUT:g}s")
            except ValueError:  # the line passed MAX_REQUEST
                reply = _error(f"request longer than {MAX_REQUEST} bytes")
            else:
                reply = await self._answer(line, _peer_uid(writer))
            writer.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
            await writer.drain()
        except ConnectionError:
            pass  # the client left: nobody to answer
        finally:
            writer.close()

    async def _answer(self, line: bytes, uid: int | None) -> dict:
        try:
            request = json.loads(line)
        except ValueError:
            request = None
        if not isinstance(request, dict) or not isinstance(request.get("command"), str):
            return _error('bad request: expected one line of JSON such as {"command": "status"}')
        name = request["command"]
        if self.state != "ready":
            return _error(f"the daemon is {self.state}")
        command = self.commands.get(name)
        if command is None:
            return _error(f"unknown command {name!r} (known: {', '.join(sorted(self.commands))})")
        if name in QUIET_COMMANDS:  # monitoring may poll it
            log.debug("control_command", command=name, uid=uid)
        else:
            log.info("control_command", command=name, uid=uid)
        try:
            result = await command(request)
        except Exception as exc:  # noqa: BLE001 - the client gets the reason, the daemon goes on
            log.error("control_command_failed", command=name, error=f"{type(exc).__name__}: {exc}")
            return _error(f"{name} failed: {type(exc).__name__}: {exc}")
        return {"ok": True, "result": result}


def _identity(path: Path) -> tuple:
    """Tells our socket file from a successor's at the same path (an inode may be reused)."""
    st = os.lstat(path)
    return (st.st_dev, st.st_ino, st.st_ctime_ns)


def _error(text: str) -> dict:
    return {"ok": False, "error": text}


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    """Who asked (SO_PEERCRED: pid, uid, gid), for the log line."""
    sock = writer.get_extra_info("socket")
    try:
        _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                              struct.calcsize("3i")))
    except (AttributeError, OSError):
        return None
    return uid


def open_socket(path: Path, group: str | None) -> socket.socket:
    """Check the place, replace a stale socket, bind and listen: a socket mode 0660 (group
    ``group``) at ``path``. Raises ``ControlSocketError`` naming the key."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        mode = os.stat(folder).st_mode
    except OSError as exc:
        raise ControlSocketError(f"{KEY}: cannot use the folder {folder}: {exc.strerror or exc}") from None
    if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
        raise ControlSocketError(
            f"{KEY}: its folder {folder} is writable by every user (mode {stat.S_IMODE(mode):04o}) without "
            f"the sticky bit: anyone could put their own socket in its place; chmod o-w {folder}, or choose "
            "another folder"
        )
    _remove_stale(path)
    gid = _group_id(group)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # Made owner-only, then opened to the group: never connectable by others, not even
        # between bind and chmod. (The umask is the process's: changed only for this call,
        # and only made stricter.)
        previous = os.umask(0o177)
        try:
            sock.bind(str(path))
        finally:
            os.umask(previous)
        if gid is not None:
            try:
                os.chown(path, -1, gid)
            except OSError as exc:
                os.unlink(path)
                raise ControlSocketError(
                    f"server.control_group: cannot give {path} to group {group!r}: {exc.strerror or exc} "
                    "(the daemon's user must be a member of it)"
                ) from None
        os.chmod(path, MODE)
        sock.listen(64)
        sock.setblocking(False)
    except ControlSocketError:
        sock.close()
        raise
    except OSError as exc:
        sock.close()
        raise ControlSocketError(f"{KEY}: cannot listen on {path}: {exc.strerror or exc}") from None
    return sock


def _group_id(group: str | None) -> int | None:
    if group is None:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ControlSocketError(f"server.control_group: no group named {group!r} on this machine") from None


def _remove_stale(path: Path) -> None:
    """Remove a killed daemon's socket at ``path``; refuse anything else found there."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ControlSocketError(f"{KEY}: cannot look at {path}: {exc.strerror or exc}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlSocketError(f"{KEY}: {path} exists and is not a socket: remove it or choose another path")
    if st.st_uid != os.geteuid():
        raise ControlSocketError(f"{KEY}: {path} belongs to uid {st.st_uid}, not to this daemon's user: remove it")
    if st.st_mode & stat.S_IWOTH:
        raise ControlSocketError(
            f"{KEY}: {path} is writable by every user (mode {stat.S_IMODE(st.st_mode):04o}): someone else may "
            "have made it; remove it"
        )
    if _answers(path):
        raise ControlSocketError(f"{KEY}: another daemon is listening on {path}")
    os.unlink(path)
    log.info("control_stale_socket_removed", path=str(path))


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:
            return True  # something holds it (a full backlog, a timeout): not ours to remove
    return True


# --------------------------------------------------------------------------- the CLI's side


def request(path: Path | str, command: str, timeout: float = 30.0, **arguments: Any) -> dict:
    """Send one command to the daemon on ``path``; its reply (``{"ok": …}``). Raises
    ``ControlUnavailable`` with a sentence for the administrator when there is none."""
    path = str(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlUnavailable(f"no daemon is listening on {path}") from None
        except PermissionError:
            raise ControlUnavailable(
                f"cannot use {path}: permission denied (it is mode 0660: run as the daemon's user or a "
                "member of [server] control_group)"
            ) from None
        except OSError as exc:
            raise ControlUnavailable(f"cannot connect to {path}: {exc.strerror or exc}") from None
        chunks = []
        try:
            sock.sendall(json.dumps({"command": command, **arguments}).encode() + b"\n")
            while not chunks or not chunks[-1].endswith(b"\n"):
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
        except TimeoutError:
            raise ControlUnavailable(f"the daemon on {path} did not answer within {timeout:g}s") from None
        except OSError as exc:
            raise ControlUnavailable(f"the daemon on {path} closed the connection: {exc.strerror or exc}") from None
    try:
        reply = json.loads(b"".join(chunks))
    except ValueError:
        raise ControlUnavailable(f"the daemon on {path} sent no readable answer") from None
    if not isinstance(reply, dict) or "ok" not in reply:
        raise ControlUnavailable(f"the daemon on {path} sent no readable answer")
    return reply
