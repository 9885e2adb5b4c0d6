"""``bench.purge_batches`` runs the daemon's purge job to the end on a small file and reports
every message it filled as purged (the benchmark's figures mean something only if it does)."""

from __future__ import annotations

import re

from smscenter.bench import purge_batches


def test_purges_everything_it_filled_and_reports_cpu_per_message(capsys):
    assert purge_batches.main(["--messages", "250", "--batch", "40"]) == 0
    out = capsys.readouterr().out
    purged = re.search(r"purged ([\d,]+) messages in ([\d,]+) batches", out)
    assert purged and purged.group(1) == "250" and int(purged.group(2)) >= 7  # 250 / 40, at least
    assert re.search(r"CPU [\d.]+ s, [\d.]+ us per message", out)
