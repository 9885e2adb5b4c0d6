"""``python -m smscenter.bench.flood`` runs end to end (a small flood): its figures are printed
and every query was answered; nothing is asserted about speed."""

from __future__ import annotations

import re
import subprocess
import sys


def test_bench_flood_smoke():
    proc = subprocess.run(
        [sys.executable, "-m", "smscenter.bench.flood", "--queries", "3000", "--submit-rate", "20"],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "answered 3,000 in" in out and "unanswered" not in out
    assert "ESME_RSYSERR" not in out
    assert re.search(r"daemon RSS: before \d+ MB, peak \d+ MB \(\+\d+\), after \d+ MB", out), out
    assert re.search(r"other partner: [\d,]+ submits at 20/s, ESME_ROK [\d,]+; latency p50", out), out


def test_bench_flood_default_flood_refusals_unbind_the_flooder():
    proc = subprocess.run(
        [sys.executable, "-m", "smscenter.bench.flood", "--queries", "5000", "--flood-refusals", "1000"],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # not every query answered: unbound
    assert "the session was closed (session_flooding?)" in proc.stdout
