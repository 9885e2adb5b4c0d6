"""``python -m smscenter.bench.binds`` runs end to end (a small flood, one round): a line per
set-up, the partner's bind answered ESME_ROK in each; nothing is asserted about speed."""

from __future__ import annotations

import subprocess
import sys


def test_bench_binds_smoke():
    proc = subprocess.run(
        [sys.executable, "-m", "smscenter.bench.binds", "--flood", "20", "--rounds", "1"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = {line.split("  ")[0]: line for line in proc.stdout.splitlines()[1:]}
    assert set(lines) == {"no flood", "default caps", "all checked"}, proc.stdout
    for line in lines.values():
        assert " 0x0 " in line, line  # the partner bound (status column)
    bad = subprocess.run([sys.executable, "-m", "smscenter.bench.binds", "--flood", "0"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "counts must be positive" in bad.stderr
