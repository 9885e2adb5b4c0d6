"""Data-subject request benchmark: ``python -m smscenter.bench.subject``.

How long ``smscenter subject export`` and ``subject erase`` take for one number in a big
database. In a temporary folder (SQLite), ``--messages`` ended messages are inserted in bulk
by ``bench.purge.fill`` (one part and one receipt each, encrypted with the daemon's keys),
``--target`` of them — spread evenly over the whole id range, as a person's messages are
over months — to one number, whose parts and receipts are real encrypted PDUs. Then the two
verbs run as an administrator runs them (``python -m smscenter``, a process each, the
default ``purge_batch`` and ``purge_pause``), and the script checks that the export held
``--target`` messages with their text and that the erase removed them.

Printed: the fill's time and rate, the database size, and each verb's wall time (process
start included). Figures are printed, never asserted. Nothing listens on any port; every
process has a time limit (``--timeout``); the temporary folder is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from smscenter.bench.mt import PASSWORD, PAYLOAD, SYSTEM_ID
from smscenter.bench.purge import _db_size, fill

NUMBER = "+33698765432"


def _config_text(tmp: str, password_hash: str) -> str:
    return f"""\
[storage]
url = "sqlite:///{os.path.join(tmp, 'smscenter.db')}"
keys = "{os.path.join(tmp, 'keys')}"

[[account]]
system_id = "{SYSTEM_ID}"
password = "{password_hash}"
"""


def _verb(args: list[str], timeout: float) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "smscenter", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    return time.perf_counter() - started, done


def run(args) -> int:
    from smscenter.runtime.passwords import hash_password

    if not 0 < args.target <= args.messages:
        print("--target must be between 1 and --messages", file=sys.stderr)
        return 2
    step = args.messages // args.target

    def is_target(i: int) -> bool:
        return i % step == 0 and i // step < args.target

    with tempfile.TemporaryDirectory(prefix="bench-subject-") as tmp:
        took = fill(tmp, args.messages, number=lambda i: NUMBER if is_target(i) else "+3361%07d" % i,
                    readable=is_target)
        size = _db_size(tmp)
        print(f"N = {args.messages:,} ended messages (1 part, 1 receipt each), {args.target:,} of them to one "
              f"number; inserted in {took:.1f} s ({args.messages / took:,.0f} messages/s); database "
              f"{size / 1e6:.1f} MB; SQLite, {os.cpu_count()} CPUs", flush=True)
        config = os.path.join(tmp, "smscenter.toml")
        with open(config, "w") as f:
            f.write(_config_text(tmp, hash_password(PASSWORD)))
        out = os.path.join(tmp, "export.json")
        seconds, done = _verb(["subject", "export", "-c", config, "--number", NUMBER, "--output", out], args.timeout)
        if done.returncode != 0:
            print(f"export failed ({done.returncode}): {done.stderr.strip()}")
            return 1
        with open(out, encoding="utf-8") as f:
            doc = json.load(f)
        texts = sum(1 for m in doc["messages"] if m.get("text") == PAYLOAD.decode())
        print(f"subject export: {seconds:.2f} s for {len(doc['messages']):,} messages ({texts:,} with their "
              f"text decrypted), {os.path.getsize(out) / 1e6:.1f} MB of JSON", flush=True)
        seconds, done = _verb(["subject", "erase", "-c", config, "--number", NUMBER], args.timeout)
        if done.returncode != 0:
            print(f"erase failed ({done.returncode}): {done.stderr.strip()}")
            return 1
        print(f"subject erase: {seconds:.2f} s (purge_batch 100, purge_pause 20ms); it said: "
              + " ".join(done.stdout.split()), flush=True)
        seconds, done = _verb(["subject", "export", "-c", config, "--number", NUMBER], args.timeout)
        print(f"export after the erase: {seconds:.2f} s, exit {done.returncode}: {done.stderr.strip()}")
        print(f"database after: {_db_size(tmp) / 1e6:.1f} MB")
        return 0 if texts == args.target and "nothing held" in done.stderr else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smscenter.bench.subject", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000, help="ended messages to fill")
    parser.add_argument("--target", type=int, default=1_000, help="how many of them go to the one number")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds each verb may take")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
