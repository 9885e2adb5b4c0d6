"""The real daemon as a benchmark runs it: ``python -m smscenter run`` in a child process
(SQLite durable in a temporary folder, one account, one connector to ``bench/sink.py``), and
the CPU seconds of a process from ``/proc``. Shared by ``bench.mt`` (SMPP partners) and
``bench.http`` (HTTP API clients), so that their figures come from the same daemon set up
the same way.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import socket
import subprocess
import sys
import time

from smscenter.bench.sink import SinkHandle

SYSTEM_ID = "bench"
PASSWORD = "benchpw"
SOURCE = "ACME"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine_busy() -> float:
    """CPU seconds all processes of the machine spent busy (``/proc/stat``, all CPUs)."""
    with open("/proc/stat", "rb") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:7]) - idle) / _CLK_TCK  # user nice system idle iowait irq softirq


def own_cpu(pid: int) -> float:
    """CPU seconds of one process, all threads: utime + stime from ``/proc/<pid>/stat``."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def proc_cpu(pid: int) -> float:
    """CPU seconds of a process and of the processes it started (the daemon's writer
    process), all threads."""
    total = own_cpu(pid)
    for child in children(pid):
        try:
            total += proc_cpu(child)
        except FileNotFoundError:
            pass  # ended meanwhile
    return total


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(c) for c in f.read().split())
        except FileNotFoundError:
            pass
    return out



# =========================================================================== smscenter daemon


def add_sink_options(parser) -> None:
    """The options of the daemon's connector to the sink and of the sink itself, which
    ``config_text`` and the sink read: the same for every benchmark that drives the MT path."""
    parser.add_argument("--up-binds", type=int, default=2, help="smscenter connector binds to the sink")
    parser.add_argument("--up-window", type=int, default=64, help="smscenter connector window per bind")
    parser.add_argument("--receipt-delay", type=float, default=0.02, help="seconds from submit to receipt at the sink")
    parser.add_argument("--sink-window", type=int, default=64, help="receipts in flight per receiver bind at the sink")


def config_text(tmp: str, port: int, sink_port: int, args, password_hash: str, *, account_extra: str = "",
                extra: str = "") -> str:
    """The daemon's configuration: one account (``SYSTEM_ID``, ``--binds`` binds, ``--window``
    in flight), one connector to the sink (``--up-binds``, ``--up-window``), SQLite in ``tmp``.
    ``account_extra``: more keys of the account (each line ending in a newline); ``extra``:
    more sections, at the end."""
    return f"""\
[server]
listen = ["127.0.0.1:{port}"]
system_id = "SMSCENTER"
window = {args.window}

[storage]
url = "sqlite:///{os.path.join(tmp, 'smscenter.db')}"
keys = "{os.path.join(tmp, 'keys')}"

[logging]
level = "{args.log_level}"

[[account]]
system_id = "{SYSTEM_ID}"
password = "{password_hash}"
sender_ids = ["{SOURCE}"]
category = "alert"
throughput = 10000000
allowed_ips = ["127.0.0.0/8"]
max_binds = {max(args.binds, 1)}
window = {args.window}
default_country = "FR"
{account_extra}
[[connector]]
name = "sink"
host = "127.0.0.1"
port = {sink_port}
system_id = "smscntr"
password = "sinkpw"
bind = "transceiver"
binds = {args.up_binds}
window = {args.up_window}
throughput = 10000000
message_id = "{args.message_id}"

[[route]]
destinations = ["*"]
connectors = ["sink"]
{extra}"""


def _die_with_parent() -> None:
    """In the daemon's child process: SIGTERM when the benchmark dies, even by SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Daemon:
    """``python -m smscenter run -c …`` as a child process in its own session (so Ctrl-C on
    the terminal reaches only us, and we stop it in order)."""

    def __init__(self, tmp: str, config: str, source: str | None = None, wrapper: str | None = None) -> None:
        self.log_path = os.path.join(tmp, "daemon.log")
        self._log = open(self.log_path, "wb")
        env = dict(os.environ)
        if source:  # another checkout's smscenter/storage/routing/protocol, e.g. to A/B a change
            env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.abspath(source), env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            shlex.split(wrapper or "") + [sys.executable, "-m", "smscenter", "run", "-c", config],
            cwd=tmp,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", "replace")
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with {self.proc.returncode}:\n{self.log_tail()}")

    def close(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


async def wait_ready(daemon: Daemon, port: int, sink: SinkHandle, up_binds: int, timeout: float = 60.0) -> None:
    """Until the daemon listens and its connector binds are all up at the sink."""
    deadline = time.monotonic() + timeout
    while True:
        daemon.check_alive()
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            if sink.stats()["binds"] >= up_binds:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the daemon was not ready within {timeout:g}s:\n{daemon.log_tail()}")
        await asyncio.sleep(0.1)
