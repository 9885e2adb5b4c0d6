"""Crash safety: SIGKILL the daemon in the middle of a load, restart it, and prove nothing
acknowledged is lost (issue 4, "What it must show").

The daemon runs as a real process (``python -m smscenter run -c cfg.toml``) on SQLite or on the
test run's PostgreSQL. Everything else runs in the test process:

- an upstream (``RecordingSmsc``, the simulator with a short receipt delay, hex ids in
  ``submit_sm_resp`` and decimal ids in receipts) that records every ``submit_sm`` it receives
  — duplicates included — and every receipt the daemon acknowledged with deliver_sm_resp;
- a partner (raw asyncio with our codec, TX + RX binds, many submits in flight) that records
  every submit that got ESME_ROK and every receipt it got, answers receipts at once, rebinds
  after the kill and re-submits what was never acknowledged (as a new attempt with its own
  text, as a real partner would).

The message text is unique per attempt and is what the upstream sees, so each acknowledged
message is found in the upstream's record without reading the (encrypted) database.

Phase 1 kills the daemon while the partner submits (after about half the messages were
acknowledged); phase 2 kills it while receipts flow back (after about half the receipts
reached the partner). After each restart we wait — with deadlines — until every acknowledged
message reached the upstream and its receipt reached the partner with our id; duplicates
upstream are counted and must be messages that were in flight at the kill.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from protocol import pdu as P
from protocol.codec import decode, encode
from protocol.constants import CommandId, MessageState, Tag
from protocol.framing import Framer
from protocol.receipt import parse_receipt
from smscenter.tools.simulator import SimulatedSmsc
from tests.integration.conftest import HOST, PASSWORDS
from tests.patience import PATIENCE

REPO = Path(__file__).resolve().parents[2]

N = 300  # messages per phase
CONCURRENCY = 32  # partner submits in flight
WINDOW = 10  # the connector's window
BINDS = 1  # the connector's binds
UPSTREAM_RATE = 300  # the connector's throughput (submit_sm/s): a backlog is queued at the kill
WORKING_SET = 100  # the queue's memory: most of the backlog waits in the database at the kill
KILL_SLACK = 1.0  # a duplicate's first copy reached the upstream at most this long before the kill
WIRE_SLACK = 0.05  # ... or this long after it (already on the wire when the process died)

pytestmark = pytest.mark.timeout(150)


# --- the upstream ------------------------------------------------------------------------------


class RecordingSmsc(SimulatedSmsc):
    """The simulator, recording what it received and which receipts were acknowledged."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.received: list[tuple[float, int, str]] = []  # (monotonic time, upstream id, text)
        self.outcome: dict[int, MessageState] = {}  # upstream id -> state in its receipt
        self.acked_receipts: dict[int, MessageState] = {}  # upstream id -> state, once acked
        self._last = 0

    def _new_id(self) -> int:
        self._last = super()._new_id()
        return self._last

    def _on_submit(self, link, pdu) -> None:
        super()._on_submit(link, pdu)
        self.received.append((time.monotonic(), self._last, pdu.short_message.decode()))

    def _due(self, due) -> None:
        self.outcome[int(due.receipt_id)] = due.state  # receipt ids are decimal
        super()._due(due)

    def _on_ack(self, box, due, fut) -> None:
        if not fut.cancelled() and fut.exception() is None and fut.result().command_status == 0:
            self.acked_receipts[int(due.receipt_id)] = due.state
        super()._on_ack(box, due, fut)

    def texts(self) -> Counter:
        return Counter(text for _, _, text in self.received)


# --- the partner -------------------------------------------------------------------------------


class PartnerLink:
    """One bind to the daemon: requests with futures, receipts answered at once."""

    def __init__(self, partner: "Partner", kind: type) -> None:
        self.partner = partner
        self.kind = kind
        self.pending: dict[int, asyncio.Future] = {}
        self.seq = 0
        self.open = False
        self.task: asyncio.Task | None = None

    async def connect(self, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection(HOST, port)
        self.framer = Framer()
        self.open = True
        self.task = asyncio.get_running_loop().create_task(self._read())
        resp = await asyncio.wait_for(self.request(self.kind(system_id="acme", password=PASSWORDS["acme"])), PATIENCE)
        if resp.command_status != 0:
            self.close()
            raise ConnectionError(f"bind refused: 0x{resp.command_status:X}")

    def request(self, pdu: P.Pdu) -> asyncio.Future:
        if not self.open:
            raise ConnectionError("not connected")
        self.seq += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.seq] = fut
        self.writer.write(encode(pdu, self.seq))
        return fut

    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                self.framer.feed(data)
                for frame in self.framer.frames():
                    pdu = decode(frame)
                    if pdu.is_response:
                        fut = self.pending.pop(pdu.sequence_number, None)
                        if fut is not None and not fut.done():
                            fut.set_result(pdu)
                    elif pdu.command_id == CommandId.DELIVER_SM:
                        self.partner.on_deliver(pdu)
                        self.writer.write(encode(pdu.response()))
                    elif pdu.command_id in (CommandId.ENQUIRE_LINK, CommandId.UNBIND):
                        self.writer.write(encode(pdu.response()))
        except (ConnectionError, OSError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        self.open = False
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("connection lost"))
        self.pending.clear()
        self.writer.close()


@dataclass
class Received:
    our_id: str
    text_id: str
    state: MessageState


@dataclass
class Partner:
    port: int
    acked: dict[str, str] = field(default_factory=dict)  # text -> our id (ESME_ROK)
    attempts: int = 0  # submit_sm written
    not_acked: Counter = field(default_factory=Counter)  # why attempts failed
    receipts: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tx: PartnerLink | None = None
        self.rx: PartnerLink | None = None
        self.tx_up = asyncio.Event()
        self.stopped = False
        self.binds = 0
        self.keeper = asyncio.get_running_loop().create_task(self._keep_bound())

    # receipts

    def on_deliver(self, pdu: P.Pdu) -> None:
        assert pdu.esm_class & 0x04, "only receipts are expected"
        tlv_id = pdu.tlv(Tag.RECEIPTED_MESSAGE_ID)
        text = parse_receipt(pdu.short_message)
        self.receipts.append(Received(tlv_id, text.message_id, MessageState(pdu.tlv(Tag.MESSAGE_STATE))))

    def receipt_ids(self) -> set[str]:
        return {r.our_id for r in self.receipts}

    # binds

    async def _keep_bound(self) -> None:
        while not self.stopped:
            for attr, kind in (("tx", P.BindTransmitter), ("rx", P.BindReceiver)):
                link = getattr(self, attr)
                if link is not None and link.open:
                    continue
                if attr == "tx":
                    self.tx_up.clear()
                link = PartnerLink(self, kind)
                try:
                    await link.connect(self.port)
                except (ConnectionError, OSError, TimeoutError):
                    continue
                setattr(self, attr, link)
                self.binds += 1
                if attr == "tx":
                    self.tx_up.set()
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self.stopped = True
        self.keeper.cancel()
        await asyncio.gather(self.keeper, return_exceptions=True)
        for link in (self.tx, self.rx):
            if link is not None and link.open:
                link.close()

    # submits

    async def submit_all(self, tag: str, count: int) -> None:
        """Submit ``count`` messages, ``CONCURRENCY`` in flight, until each got ESME_ROK."""
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int) -> None:
            async with sem:
                attempt = 0
                while True:
                    await self.tx_up.wait()
                    link = self.tx
                    attempt += 1
                    text = f"{tag}-{i:04d}-a{attempt}"
                    pdu = P.SubmitSm(
                        source_addr_ton=5,
                        source_addr="ACME",
                        dest_addr_ton=1,
                        dest_addr_npi=1,
                        destination_addr=f"336{10_000_000 + 1000 * (tag == 'p2') + i:08d}",
                        registered_delivery=1,
                        short_message=text.encode(),
                    )
                    try:
                        fut = link.request(pdu)
                        self.attempts += 1
                        resp = await asyncio.wait_for(fut, PATIENCE)
                    except (ConnectionError, TimeoutError) as exc:
                        self.not_acked[type(exc).__name__] += 1
                        await asyncio.sleep(0.05)
                        continue
                    if resp.command_status == 0:
                        self.acked[text] = resp.message_id
                        return
                    self.not_acked[f"0x{resp.command_status:X}"] += 1
                    await asyncio.sleep(0.1)

        await asyncio.gather(*(one(i) for i in range(count)))


# --- the daemon ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


class Daemon:
    def __init__(self, tmp_path: Path, config: Path, port: int) -> None:
        self.tmp_path = tmp_path
        self.config = config
        self.port = port
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def log_tail(self) -> str:
        path = self.tmp_path / "daemon.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    async def start(self) -> None:
        self.starts += 1
        with open(self.tmp_path / "daemon.log", "ab") as log:
            log.write(f"--- start {self.starts}\n".encode())
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "smscenter", "run", "-c", str(self.config)],
                cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONPATH=str(REPO)),
            )
        deadline = time.monotonic() + 20
        while not await asyncio.to_thread(port_open, self.port):
            assert self.proc.poll() is None, f"the daemon exited:\n{self.log_tail()}"
            assert time.monotonic() < deadline, f"the daemon never listened:\n{self.log_tail()}"
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, f"the daemon died:\n{self.log_tail()}"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    async def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, 15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


def write_config(tmp_path: Path, port: int, upstream_port: int, password_hash: str, db_url: str) -> Path:
    path = tmp_path / "smscenter.toml"
    path.write_text(
        f"""
[server]
listen = ["{HOST}:{port}"]
shutdown_grace = "1s"
failed_bind_delay = "50ms"

[storage]
url = "{db_url}"
keys = "var/keys"

[logging]
level = "warning"
format = "json"

[queue]
working_set = {WORKING_SET}

[[account]]
system_id = "acme"
password = "{password_hash}"
sender_ids = ["ACME"]
category = "alert"
throughput = 100000
window = 64

[[connector]]
name = "op-a"
host = "{HOST}"
port = {upstream_port}
system_id = "smscenter"
password = "pw"
bind = "transceiver"
binds = {BINDS}
window = {WINDOW}
throughput = {UPSTREAM_RATE}
message_id = "hex-to-decimal"
reconnect_min = "100ms"
reconnect_max = "500ms"
response_timeout = "5s"

[[route]]
destinations = ["*"]
connectors = ["op-a"]
"""
    )
    return path


async def wait_for(what: str, predicate, timeout: float, details=lambda: "") -> None:
    deadline = time.monotonic() + max(timeout, PATIENCE)
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}\n{details()}")
        await asyncio.sleep(0.02)


# --- the test ----------------------------------------------------------------------------------


@dataclass
class PhaseReport:
    name: str
    acked: int
    attempts: int
    reached_upstream: int
    duplicates: int
    in_flight: int  # reached the upstream within KILL_SLACK before the kill
    oldest_duplicate: float  # seconds between its first copy and the kill
    receipts_acked_upstream: int
    receipts_at_partner: int
    duplicate_receipts: int


def check_phase(name: str, tag: str, partner: Partner, smsc: RecordingSmsc, kill_time: float) -> PhaseReport:
    """Everything acknowledged reached the upstream; every receipt reached the partner with
    our id; duplicates upstream are few and were in flight at the kill."""
    acked = {text: our_id for text, our_id in partner.acked.items() if text.startswith(tag + "-")}
    received = [(t, n, text) for t, n, text in smsc.received if text.startswith(tag + "-")]
    copies = Counter(text for _, _, text in received)
    missing = [text for text in acked if copies[text] == 0]
    assert not missing, f"{len(missing)} acknowledged messages never reached the upstream: {missing[:5]}"

    # Duplicates: the same attempt (same text) submitted upstream more than once. Only a
    # message that was in flight at the kill may be sent again: written upstream, its
    # submit_sm_resp not yet durably recorded. "In flight" here: its first copy reached the
    # upstream at most KILL_SLACK before the kill (a group commit takes milliseconds).
    duplicated = {text for text, n in copies.items() if n > 1}
    first_seen: dict[str, float] = {}
    for t, _, text in received:
        first_seen.setdefault(text, t)
    # Bytes the daemon wrote just before SIGKILL still reach the upstream a moment after it.
    in_flight = {text for text, t in first_seen.items() if kill_time - KILL_SLACK <= t <= kill_time + WIRE_SLACK}
    late = {text: round(kill_time - first_seen[text], 3) for text in duplicated - in_flight}
    assert not late, f"duplicates of messages that were not in flight at the kill (s before it): {late}"
    duplicates = sum(copies[t] - 1 for t in duplicated)
    assert duplicates <= len(in_flight)
    max_age = max((kill_time - first_seen[t] for t in duplicated), default=0.0)

    # Receipts: each acknowledged message got one with our id, text and TLV agreeing.
    by_id = {}
    for r in partner.receipts:
        assert r.our_id == r.text_id, "receipted_message_id and the text id differ"
        by_id.setdefault(r.our_id, []).append(r)
    upstream_ids_of = {}
    for _, n, text in received:
        upstream_ids_of.setdefault(text, []).append(n)
    for text, our_id in acked.items():
        got = by_id.get(our_id)
        assert got, f"no receipt for {text} ({our_id})"
        outcomes = {smsc.outcome.get(n) for n in upstream_ids_of[text]}
        assert {r.state for r in got} <= outcomes, f"{text}: receipt state {got} not among {outcomes}"
    # Every upstream receipt the daemon acknowledged reached the partner (with our id),
    # unless it was for the first copy of a duplicate (the copy the daemon never recorded).
    ours = {n: text for _, n, text in received}
    for n in smsc.acked_receipts:
        text = ours.get(n)
        if text is None or text in duplicated:
            continue
        if text in acked:
            assert acked[text] in by_id, f"upstream receipt {n} for {text} never reached the partner"
    phase_receipts = [r for r in partner.receipts if r.our_id in set(acked.values())]
    return PhaseReport(
        name=name,
        acked=len(acked),
        attempts=sum(1 for _ in received),
        reached_upstream=len(copies),
        duplicates=duplicates,
        in_flight=len(in_flight),
        oldest_duplicate=max_age,
        receipts_acked_upstream=sum(1 for n in smsc.acked_receipts if ours.get(n, "").startswith(tag + "-")),
        receipts_at_partner=len({r.our_id for r in phase_receipts}),
        duplicate_receipts=len(phase_receipts) - len({r.our_id for r in phase_receipts}),
    )


async def test_sigkill_under_load_loses_nothing(tmp_path, password_hashes, db_url):
    started = time.monotonic()
    smsc = RecordingSmsc(delay=(0.1, 0.4), outcomes="DELIVRD=80,UNDELIV=20", id_format="hex",
                         receipt_id_format="decimal", seed=4, retry_after=0.2)
    await smsc.start()
    port = free_port()
    daemon = Daemon(tmp_path, write_config(tmp_path, port, smsc.port, password_hashes["acme"], db_url), port)
    partner: Partner | None = None
    reports: list[PhaseReport] = []
    try:
        await daemon.start()
        partner = Partner(port)

        def details() -> str:
            return (f"partner: acked={len(partner.acked)} receipts={len(partner.receipts)} "
                    f"attempts={partner.attempts} not_acked={dict(partner.not_acked)}\n"
                    f"upstream: {smsc.stats()} received={len(smsc.received)}\n{daemon.log_tail()}")

        # Phase 1: kill while the partner submits.
        submitting = asyncio.get_running_loop().create_task(partner.submit_all("p1", N))
        await wait_for("half the messages are acknowledged", lambda: len(partner.acked) >= N // 2, 30, details)
        daemon.kill()
        kill_time = time.monotonic()
        in_flight_partner = partner.attempts - len(partner.acked) - sum(partner.not_acked.values())
        await daemon.start()
        await asyncio.wait_for(submitting, 30)
        p1 = {text: our_id for text, our_id in partner.acked.items()}
        await wait_for("every acknowledged message reached the upstream",
                       lambda: all(smsc.texts()[t] for t in p1), 20, details)
        await wait_for("every receipt reached the partner",
                       lambda: set(p1.values()) <= partner.receipt_ids(), 20, details)
        reports.append(check_phase("submits", "p1", partner, smsc, kill_time))

        # Phase 2: kill while receipts flow (upstream → daemon → partner).
        smsc.delay = (0.3, 2.0)
        resent_before = smsc.receipts_sent - smsc.receipts_acked
        await partner.submit_all("p2", N)
        p2 = {t: i for t, i in partner.acked.items() if t.startswith("p2-")}
        await wait_for("half the phase-2 receipts reached the partner",
                       lambda: len(set(p2.values()) & partner.receipt_ids()) >= N // 2, 30, details)
        daemon.kill()
        kill_time_2 = time.monotonic()
        receipts_at_kill = len(set(p2.values()) & partner.receipt_ids())
        await daemon.start()
        await wait_for("every acknowledged message reached the upstream",
                       lambda: all(smsc.texts()[t] for t in p2), 20, details)
        await wait_for("every phase-2 receipt reached the partner",
                       lambda: set(p2.values()) <= partner.receipt_ids(), 30, details)
        reports.append(check_phase("receipts", "p2", partner, smsc, kill_time_2))
        # Upstream receipts the daemon never answered (it died) and got again after the restart.
        receipts_resent = smsc.receipts_sent - smsc.receipts_acked - resent_before
        ids = list(partner.acked.values())
        assert len(set(ids)) == len(ids), "one of our ids was given to two messages"
        assert all(i.isdigit() and len(i) <= 20 for i in ids)
        assert await daemon.stop() == 0, daemon.log_tail()
        # Kills and restarts are expected; a bug on the way (an exception in a callback, a
        # dispatch that failed) is not, even when the checks above still pass.
        errors = [line for line in (tmp_path / "daemon.log").read_text(errors="replace").splitlines()
                  if '"level": "error"' in line or '"level": "critical"' in line]
        assert not errors, "\n".join(errors[:5])
    finally:
        if partner is not None:
            await partner.stop()
        await daemon.stop()
        await smsc.stop(0.5)

    elapsed = time.monotonic() - started
    for r in reports:
        print(f"\n[{db_url.split(':')[0]}] kill during {r.name}: acked={r.acked} "
              f"upstream_submits={r.attempts} distinct={r.reached_upstream} duplicates={r.duplicates} "
              f"(in flight {r.in_flight}, oldest {r.oldest_duplicate * 1000:.0f} ms before the kill) "
              f"receipts_acked_upstream={r.receipts_acked_upstream} "
              f"receipts_at_partner={r.receipts_at_partner} duplicate_receipts={r.duplicate_receipts}")
    print(f"partner: attempts={partner.attempts} not_acked={dict(partner.not_acked)} binds={partner.binds} "
          f"in_flight_at_kill_1={in_flight_partner} receipts_at_kill_2={receipts_at_kill} "
          f"upstream_receipts_resent_2={receipts_resent} elapsed={elapsed:.1f}s")
