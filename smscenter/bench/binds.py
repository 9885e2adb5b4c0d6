"""Bind-flood benchmark: ``python -m smscenter.bench.binds``.

How long does a partner's bind take while another address floods the listener with wrong
binds? ``--flood`` sockets (300) from 127.0.0.2 each send one bind with a wrong password (each
for another system_id, as an enumerating attacker would) at once; right after, a partner binds
from 127.0.0.1 with the right password (``smpplib``, an independent client) and the time from
its connect to its ``bind_resp`` is printed, with how much of the flood was answered by then.

Two server set-ups, each on a fresh ``PartnerServer`` in its own process (so the load
generator does not share its event loop or GIL), ``--rounds`` times:

- ``default caps``: the shipped ``[server]`` defaults (``bind_checks_per_ip = 4``), the
  per-IP socket caps raised so the flood's sockets reach the bind guard: most of the flood is
  refused at once (ESME_RBINDFAIL) without any scrypt;
- ``all checked``: ``bind_checks_per_ip`` and ``bind_checks`` raised above the flood, so
  every wrong bind queues an scrypt check: this shows the fair check pool (the partner's check
  goes next, not after the 300).

A baseline round without a flood comes first. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import statistics
import sys
import tempfile
import time

SYSTEM_ID = "bench"
PASSWORD = "benchpw"
ATTACKER = "127.0.0.2"
PARTNER = "127.0.0.1"


# =========================================================================== server side


def serve(conn, password_hash: str) -> None:
    """Child process: start a server per request from the parent, until told to stop."""
    from smscenter.config import settings_from_dict
    from smscenter.app.logs import configure_logging
    from smscenter.smpp.server import PartnerServer

    configure_logging("error")
    tmp = tempfile.mkdtemp(prefix="bench-binds-")

    class Accept:
        def handle(self, bind, pdu) -> None:
            bind.respond(pdu.response())

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = None
        while True:
            command, arg = await loop.run_in_executor(None, conn.recv)
            if server is not None and command in ("start", "quit"):
                await server.stop(0.2)
                server = None
            if command == "quit":
                conn.send(None)
                return
            if command == "start":
                settings = settings_from_dict(
                    {
                        "server": {"listen": [f"{PARTNER}:0"], "bind_timeout": "60s", "inactivity_timeout": "120s", **arg},
                        "storage": {"url": "sqlite:///:memory:", "keys": os.path.join(tmp, "keys")},
                        "account": [{"system_id": SYSTEM_ID, "password": password_hash, "category": "alert"}],
                    },
                    base_dir=tmp,
                )
                server = PartnerServer(settings, Accept())
                await server.start()
                conn.send(server.addresses[0][1])
            elif command == "stats":
                assert server is not None
                conn.send({"checks_started": server.guard.executor.started, "failed": dict(server.guard.failed)})

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


# =========================================================================== load side


def partner_bind(port: int) -> tuple[float, int]:
    """Connect and bind with the right password; (seconds to bind_resp, status)."""
    import smpplib.client
    import smpplib.exceptions

    started = time.perf_counter()
    client = smpplib.client.Client(PARTNER, port, timeout=60, allow_unknown_opt_params=True)
    client.connect()
    try:
        try:
            resp = client.bind_transceiver(system_id=SYSTEM_ID, password=PASSWORD)
            status = int(resp.status)
        except smpplib.exceptions.PDUError as exc:
            status = int(exc.args[1])
        elapsed = time.perf_counter() - started
        if status == 0:
            client.unbind()
    finally:
        client.disconnect()
    return elapsed, status


async def one_round(port: int, flood: int) -> tuple[float, int, int]:
    """The flood, then the partner's bind: (its latency, its status, flood answered by then)."""
    from protocol import pdu as P
    from protocol.codec import encode

    loop = asyncio.get_running_loop()
    socks = []
    for _ in range(flood):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.bind((ATTACKER, 0))
        socks.append(sock)
    await asyncio.gather(*(loop.sock_connect(s, (PARTNER, port)) for s in socks))
    answered = [False] * flood

    async def read_answer(n: int, sock: socket.socket) -> None:
        try:
            data = await loop.sock_recv(sock, 4096)
        except OSError:
            data = b""
        answered[n] = True
        del data

    readers = [asyncio.create_task(read_answer(n, s)) for n, s in enumerate(socks)]
    for n, sock in enumerate(socks):
        sock.send(encode(P.BindTransceiver(system_id=f"user{n}", password="guess"), n + 1))
    await asyncio.sleep(0.05)  # let the server read the flood before the partner comes
    latency, status = await asyncio.to_thread(partner_bind, port)
    done = sum(answered)
    for task in readers:
        task.cancel()
    for sock in socks:
        sock.close()
    return latency, status, done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m smscenter.bench.binds", description=__doc__.split("\n\n")[0])
    parser.add_argument("--flood", type=int, default=300, help="simultaneous wrong binds from 127.0.0.2")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per set-up")
    args = parser.parse_args(argv)
    if args.flood <= 0 or args.rounds <= 0:
        parser.error("counts must be positive")

    from smscenter.runtime.passwords import hash_password

    room = {"max_connections": args.flood + 100, "max_connections_per_ip": args.flood + 10,
            "max_unbound_per_ip": args.flood + 10}
    setups = [
        ("no flood", 0, {}),
        ("default caps", args.flood, room),
        ("all checked", args.flood, {**room, "bind_checks_per_ip": args.flood + 10, "bind_checks": args.flood + 10}),
    ]
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=serve, args=(child, hash_password(PASSWORD)), daemon=True)
    proc.start()
    print(f"{'set-up':<14} {'flood':>5} {'bind p50':>9} {'bind max':>9} {'status':>6} "
          f"{'flood answered before it':>25} {'scrypt checks run':>18}")
    try:
        for name, flood, server in setups:
            latencies, statuses, answered, checks = [], set(), [], []
            for _ in range(args.rounds):
                parent.send(("start", server))
                port = parent.recv()
                latency, status, done = asyncio.run(one_round(port, flood))
                parent.send(("stats", None))
                stats = parent.recv()
                latencies.append(latency)
                statuses.add(status)
                answered.append(done)
                checks.append(stats["checks_started"])
            print(
                f"{name:<14} {flood:>5} {statistics.median(latencies) * 1000:>7.0f}ms {max(latencies) * 1000:>7.0f}ms "
                f"{','.join(f'{s:#x}' for s in sorted(statuses)):>6} "
                f"{f'{min(answered)}-{max(answered)} of {flood}':>25} {f'{min(checks)}-{max(checks)}':>18}",
                flush=True,
            )
    finally:
        parent.send(("quit", None))
        parent.recv()
        proc.join(5)
    print(f"(cores: {len(os.sched_getaffinity(0))}; scrypt n=2^14 r=8: the partner's own check is in its latency)",
          file=sys.stderr)


if __name__ == "__main__":
    main()
