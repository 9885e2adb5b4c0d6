"""A purge killed with SIGKILL mid-run (``smscenter retention run`` as a process, no pause
between batches, so it is nearly always inside a transaction) leaves only whole messages —
each with all its parts and its receipt, no part or receipt without its message — and
billing totals intact; a second run finishes the job."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import create_engine, func, select

import tests.retention_fixtures as fx
from storage.schema import billing_days, messages, outbox, parts
from tests.integration.optout_fixtures import REPO
from tests.store_helpers import create_schema

pytestmark = pytest.mark.timeout(180)

HASH = "scrypt$16384$8$1$s5Y73IQSiQFNjmd2BA0ncA$3bu9+9yLDyNEF1c0dZdTHrly0o1Wx72udtUvTAl93z4"
N = 6000


def check_whole(conn) -> tuple[int, int]:
    """Every message whole, nothing orphaned; (messages left, billed messages + left)."""
    left = conn.execute(select(func.count()).select_from(messages)).scalar_one()
    per_message = select(parts.c.message_id, func.count().label("n")).group_by(parts.c.message_id).subquery()
    broken = conn.execute(
        select(func.count()).select_from(messages.outerjoin(per_message, per_message.c.message_id == messages.c.id))
        .where(func.coalesce(per_message.c.n, 0) != messages.c.parts_total)
    ).scalar_one()
    assert broken == 0, f"{broken} messages lost some of their parts"
    for table, key in ((parts, parts.c.message_id), (outbox, outbox.c.message_id)):
        orphans = conn.execute(
            select(func.count()).select_from(table).where(~key.in_(select(messages.c.id)))
        ).scalar_one()
        assert orphans == 0, f"{orphans} {table.name} rows without their message"
    receipts = conn.execute(select(func.count()).select_from(outbox)).scalar_one()
    assert receipts == left
    billed = conn.execute(select(func.coalesce(func.sum(billing_days.c.messages), 0))).scalar_one()
    return left, billed + left


def test_sigkill_mid_purge_leaves_whole_messages_and_a_rerun_finishes(tmp_path, monkeypatch):
    path = tmp_path / "smscenter.toml"
    path.write_text(
        '[storage]\nurl = "sqlite:///smscenter.db"\nkeys = "keys"\n[retention]\npurge_batch = 50\npurge_pause = "0s"\n'
        f'[[account]]\nsystem_id = "acme"\npassword = "{HASH}"\n',
        encoding="utf-8",
    )
    url = f"sqlite:///{tmp_path / 'smscenter.db'}"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    asyncio.run(create_schema(f"sqlite:///{tmp_path / 'smscenter.db'}"))
    monkeypatch.setattr(fx, "NOW", time.time())
    engine = create_engine(url)
    with engine.begin() as conn:
        s = fx.Seeder(conn)
        for i in range(N):
            s.message(ended_days_ago=200 + i / 1000, parts_total=1 + i % 3)
    before = N

    proc = subprocess.Popen([sys.executable, "-m", "smscenter", "retention", "run", "-c", str(path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            left = conn.execute(select(func.count()).select_from(messages)).scalar_one()
        if left < N - 500:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with engine.connect() as conn:
        left, total = check_whole(conn)
    assert 0 < left < N, "the kill did not land mid-purge"
    assert total == before

    rerun = subprocess.run([sys.executable, "-m", "smscenter", "retention", "run", "-c", str(path)], env=env,
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    with engine.connect() as conn:
        left, total = check_whole(conn)
    engine.dispose()
    assert left == 0 and total == before
