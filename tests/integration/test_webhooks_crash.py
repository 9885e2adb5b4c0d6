"""Crash safety of the webhooks (issue 16): the daemon as a real process (``python -m
smscenter run``), SIGKILLed and restarted, on SQLite or PostgreSQL; the upstream, the partner
and the HTTPS receiver in the test process (the pieces of ``test_crash.py``).

1. The receiver is down: every receipt the daemon acknowledged upstream waits in the
   backlog. SIGKILL, restart with the receiver up: every one of them reaches it, signed.
2. The receiver is up and receiving: SIGKILL in the middle, restart: every receipt reaches
   it; a duplicate only for a request in flight at the kill (unanswered, or answered with its
   delete not yet committed), so at most ``account_in_flight`` of them over the whole test.
"""

from __future__ import annotations

import socket
from collections import Counter

import pytest

from tests.integration.test_crash import Daemon, Partner, RecordingSmsc, free_port, wait_for, write_config
from tests.integration.webhook_receiver import SECRET, Receiver, self_signed

N = 100  # messages per phase
ACCOUNT_IN_FLIGHT = 8

pytestmark = pytest.mark.timeout(150)


def with_webhooks(config, receiver_port: int, ca) -> None:
    text = config.read_text()
    account = (f'receipt_url = "https://127.0.0.1:{receiver_port}/receipts"\n'
               f'webhook_secret = "{SECRET}"\nwebhook_ca = "{ca}"\n')
    text = text.replace("window = 64\n", "window = 64\n" + account, 1)
    text += f'\n[webhooks]\nretry_min = "100ms"\nretry_max = "500ms"\naccount_in_flight = {ACCOUNT_IN_FLIGHT}\n'
    config.write_text(text)


async def test_sigkill_loses_no_webhook(tmp_path, password_hashes, db_url):
    smsc = RecordingSmsc(delay=(0.05, 0.2), outcomes="DELIVRD=80,UNDELIV=20", id_format="hex",
                         receipt_id_format="decimal", seed=7, retry_after=0.2)
    await smsc.start()
    cert, key = self_signed(tmp_path)
    # The receiver's port, held bound but not listening while it is down (refused), so that
    # no other test's listener takes it meanwhile (parallel runs).
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    receiver_port = held.getsockname()[1]
    port = free_port()
    config = write_config(tmp_path, port, smsc.port, password_hashes["acme"], db_url)
    with_webhooks(config, receiver_port, cert)
    daemon = Daemon(tmp_path, config, port)
    partner: Partner | None = None
    receiver: Receiver | None = None
    try:
        await daemon.start()
        partner = Partner(port)

        def details() -> str:
            got = {h.json["message_id"] for h in receiver.acknowledged()} if receiver else set()
            return (f"partner acked={len(partner.acked)} upstream receipts acked={len(smsc.acked_receipts)} "
                    f"webhooks={len(got)}\n{daemon.log_tail()}")

        # 1. Receiver down: every receipt is acknowledged upstream, so its row is committed.
        await partner.submit_all("w1", N)
        w1 = set(partner.acked.values())
        await wait_for("every upstream receipt acknowledged", lambda: len(smsc.acked_receipts) >= N, 30, details)
        daemon.kill()
        receiver = await Receiver(cert, key, sock=held).start()
        await daemon.start()
        await wait_for("every phase-1 receipt reached the webhook",
                       lambda: w1 <= {h.json["message_id"] for h in receiver.acknowledged()}, 30, details)
        assert all(h.signed_by(SECRET) for h in receiver.hits)

        # 2. Receiver up: kill while webhooks flow.
        before = len(receiver.hits)
        await partner.submit_all("w2", N)
        w2 = set(partner.acked.values()) - w1
        await wait_for("half the phase-2 webhooks", lambda: len(
            w2 & {h.json["message_id"] for h in receiver.acknowledged()}) >= N // 2, 30, details)
        daemon.kill()
        await daemon.start()
        await wait_for("every phase-2 receipt reached the webhook",
                       lambda: w2 <= {h.json["message_id"] for h in receiver.acknowledged()}, 30, details)
        assert await daemon.stop() == 0, daemon.log_tail()
        # Kills are expected; an error on the way (a failed read, a pump that died) is not.
        errors = [line for line in (tmp_path / "daemon.log").read_text(errors="replace").splitlines()
                  if '"level": "error"' in line or '"level": "critical"' in line]
        assert not errors, "\n".join(errors[:5])

        copies = Counter(h.json["message_id"] for h in receiver.acknowledged())
        assert set(copies) == w1 | w2
        # The first kill had nothing in flight (the receiver was down); at the second, at most
        # account_in_flight requests were (a row stays in flight until its delete committed):
        # phase-1 rows answered just before it count too.
        duplicates = sum(n - 1 for n in copies.values())
        assert duplicates <= ACCOUNT_IN_FLIGHT, copies
        assert all(h.signed_by(SECRET) for h in receiver.hits[before:])
        print(f"\n[{db_url.split(':')[0]}] webhooks: {len(w1) + len(w2)} receipts, "
              f"{len(receiver.hits)} requests, {duplicates} duplicates after the kill in flight")
    finally:
        if partner is not None:
            await partner.stop()
        await daemon.stop()
        if receiver is not None:
            await receiver.stop()
        await smsc.stop(0.5)
