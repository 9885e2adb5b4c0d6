"""``python -m smscenter.bench.http`` runs end to end (tiny load: one recipient per request,
then ten): the figures are printed for both runs, every accepted message reached the sink,
and the daemon logged no error; nothing is asserted about speed."""

from __future__ import annotations

import subprocess
import sys


def test_bench_http_smoke(tmp_path):
    log = tmp_path / "daemon.log"
    proc = subprocess.run(
        [sys.executable, "-m", "smscenter.bench.http", "--messages", "60", "--warmup", "10", "--recipients", "1,10",
         "--concurrency", "4", "--timeout", "60", "--daemon-log", str(log)],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["1"], ["10"])]
    assert [(r[0], r[1], r[2]) for r in rows] == [("1", "60", "60"), ("10", "6", "60")], out
    assert out.count("sink saw 70 submits for 70 messages accepted") == 2, out
    text = log.read_text(errors="replace")
    assert text.count("api_listening") == 2
    assert "[error" not in text and '"level": "error"' not in text, text[-3000:]


def test_bench_http_refuses_bad_options():
    bad = subprocess.run([sys.executable, "-m", "smscenter.bench.http", "--recipients", "0"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--recipients" in bad.stderr
