"""``bench_submit`` drives the real ``Pipeline.handle`` and checks every submit was answered
and queued (it raises otherwise)."""

import asyncio

import smscenter.bench.submit as bench_submit


def test_every_submit_answered_and_queued(capsys):
    assert asyncio.run(bench_submit.run(130)) > 0
    assert bench_submit.main(["--messages", "20"]) == 0
    assert "20 submit_sm in" in capsys.readouterr().out
