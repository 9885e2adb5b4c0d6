"""``python -m smscenter.bench_mt`` runs end to end (tiny load, two rounds): the figures are
printed for both paths and the rounds' median ratio; nothing is asserted about speed."""

from __future__ import annotations

import subprocess
import sys


def test_bench_mt_smoke():
    proc = subprocess.run(
        [sys.executable, "-m", "smscenter.bench_mt", "--messages", "60", "--warmup", "10", "--binds", "2",
         "--window", "8", "--rounds", "2", "--timeout", "60"],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert out.count("\ndirect (sink)") == 2 and out.count("\nsmscenter ") == 2
    assert "sink saw 70 submits, sent 70 receipts" in out
    assert "median ratio smscenter/direct, end-to-end:" in out
