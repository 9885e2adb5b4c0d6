"""Instructions per submit_sm in the submit path, in-process: ``python -m smscenter.bench.submit``.

Why: the MT benchmark under callgrind (``bench.mt --daemon-wrapper``) counts the whole daemon,
but needs the machine quiet enough for its binds (an scrypt check each) to answer within the
load generator's timeout. This one counts only what a submit_sm costs from
``Pipeline.handle`` to its ``submit_sm_resp`` — the SMPP door, the planner's policies, the
rows and upstream parts, the answer — with a store whose commits are already done and no
socket, so that a change to that path can be weighed on any machine.

``--callgrind`` runs itself twice under ``valgrind --tool=callgrind`` (``--messages`` and
4 × ``--messages`` submits), and prints (total(4n) − total(n)) / 3n: the instructions per
submit, without the start-up. Without it, it runs ``--messages`` submits and prints the wall
time per submit (noisy on a shared machine; instructions are not).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEXT = b"Hello from the benchmark, message text of ordinary length"


class _Store:
    """Commits at once: the future is done when the pipeline adds its callback."""

    def add_message(self, row, parts):
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


class _Dispatcher:
    def __init__(self) -> None:
        self.queued = 0

    def enqueue(self, message) -> None:
        self.queued += 1


class _Link:
    def __init__(self) -> None:
        self.answered = 0

    def respond(self, response) -> None:
        self.answered += 1


async def run(count: int) -> float:
    """``count`` submit_sm through ``Pipeline.handle``; the seconds they took."""
    from protocol import pdu as P
    from routing.routes import RouteRule, RouteTable
    from storage.crypto import FieldCipher, Keyring
    from storage.ids import IdGenerator

    from smscenter.pipeline.accounts import AccountState, PartnerBind
    from smscenter.config import Account
    from smscenter.runtime.passwords import hash_password
    from smscenter.smpp.handler import Pipeline
    from smscenter.runtime.ratelimit import TokenBucket
    from smscenter.pipeline.submit import SubmitPlanner

    tmp = tempfile.TemporaryDirectory()
    # A clock that stands still: the cipher never looks at its keys folder for a new key
    # (once a second of wall time), whose cost would follow the machine's speed, not the
    # submits.
    cipher = FieldCipher(Keyring.open(Path(tmp.name) / "keys", database_has_data=False), clock=lambda: 0.0)
    account = Account.model_validate(
        {"system_id": "bench", "password": hash_password("x"), "sender_ids": ["BENCH"], "category": "alert"}
    )
    link = _Link()
    bind = PartnerBind(AccountState(account, TokenBucket(100, 0.0)), link=link, bind_type="transceiver")
    routes = RouteTable([RouteRule(("*",), ("up",))])
    dispatcher = _Dispatcher()
    pipeline = Pipeline(SubmitPlanner(routes, cipher, IdGenerator()), _Store(), dispatcher, None, routes, cipher)
    pdus = [
        P.SubmitSm(sequence_number=i + 1, source_addr="BENCH", source_addr_ton=5, dest_addr_ton=1, dest_addr_npi=1,
                   destination_addr="3361%07d" % i, registered_delivery=1, short_message=TEXT)
        for i in range(count)
    ]
    started = time.perf_counter()
    for i, pdu in enumerate(pdus):
        pipeline.handle(bind, pdu)
        if i % 64 == 63:  # a partner's window: the commits' callbacks run
            await asyncio.sleep(0)
    await asyncio.sleep(0)
    took = time.perf_counter() - started
    tmp.cleanup()
    if link.answered != count or dispatcher.queued != count:
        raise RuntimeError(f"{link.answered} answered, {dispatcher.queued} queued of {count}")
    return took


def _instructions(count: int) -> int:
    """Instructions of one run of ``count`` submits under callgrind (its summary line)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-m",
             "smscenter.bench.submit", "--messages", str(count)],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        with open(out) as f:
            for line in f:
                if line.startswith("summary:"):
                    return int(line.split()[1])
    raise RuntimeError("no summary line in the callgrind output")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smscenter.bench.submit", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=500, help="submit_sm per run (callgrind: n and 4n)")
    parser.add_argument("--callgrind", action="store_true", help="count instructions per submit under callgrind")
    args = parser.parse_args(argv)
    if args.messages <= 0:
        parser.error("--messages must be positive")
    if args.callgrind:
        small, large = _instructions(args.messages), _instructions(4 * args.messages)
        print(f"{small} instructions for {args.messages} submits, {large} for {4 * args.messages}: "
              f"{(large - small) / (3 * args.messages):,.0f} instructions per submit_sm")
        return 0
    took = asyncio.run(run(args.messages))
    print(f"{args.messages} submit_sm in {took:.3f} s: {took / args.messages * 1e6:.1f} µs each (wall time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
