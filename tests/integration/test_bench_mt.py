"""``python -m smscenter.bench.mt`` runs end to end (tiny load, two rounds): the figures are
printed for both paths and the rounds' median ratio, and the daemon logged no error; nothing
is asserted about speed."""

from __future__ import annotations

import subprocess
import sys


def test_bench_mt_smoke(tmp_path):
    log = tmp_path / "daemon.log"
    proc = subprocess.run(
        [sys.executable, "-m", "smscenter.bench.mt", "--messages", "60", "--warmup", "10", "--binds", "2",
         "--window", "8", "--rounds", "2", "--timeout", "60", "--daemon-log", str(log)],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert out.count("\ndirect (sink)") == 2 and out.count("\nsmscenter ") == 2
    assert "sink saw 70 submits, sent 70 receipts" in out
    assert "median ratio smscenter/direct, end-to-end:" in out
    # The daemon (uvloop, writer process, the whole MT path) logged no error on the way.
    text = log.read_text(errors="replace")
    assert "ready" in text
    assert "[error" not in text and '"level": "error"' not in text, text[-3000:]


def test_bench_mt_pinned_generator_is_a_diagnostic_without_verdict():
    proc = subprocess.run(
        [sys.executable, "-m", "smscenter.bench.mt", "--messages", "40", "--warmup", "5", "--binds", "1",
         "--window", "4", "--timeout", "60", "--pin-generator", "0"],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "load generator pinned to CPU 0 (a diagnostic)" in out
    assert "(generator pinned: no verdict on the 40 % target)" in out and "MISSES" not in out and "meets" not in out
    bad = subprocess.run([sys.executable, "-m", "smscenter.bench.mt", "--pin-generator", "4096"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--pin-generator: CPU 4096" in bad.stderr
