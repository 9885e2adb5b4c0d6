"""``python -m smscenter.bench.subject`` runs end to end on a small database: the export held
every message of the number with its text, the erase removed them, an export afterwards finds
nothing (its exit code says so); nothing is asserted about speed. Bad arguments exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def bench(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smscenter.bench.subject", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_bench_subject_smoke():
    proc = bench("--messages", "3000", "--target", "30", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "subject export: " in proc.stdout and "for 30 messages (30 with their text decrypted)" in proc.stdout
    assert "messages 30 (bench 30), their parts 30" in proc.stdout
    assert "nothing held about +336****32" in proc.stdout
    bad = bench("--messages", "10", "--target", "20", timeout=60)
    assert bad.returncode == 2 and "--target must be between 1 and --messages" in bad.stderr
