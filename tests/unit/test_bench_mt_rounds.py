"""The rounds' summary of ``bench_mt``: the median ratio and its verdict, flagged when the
direct path's own rate moved between rounds (the machine's speed changed meanwhile)."""

from __future__ import annotations

from smscenter.bench.mt import Result, _print_rounds


def _result(path: str, rate: float) -> Result:
    return Result(path, messages=1000, receipts=1000, e2e_seconds=1000 / rate, mt_seconds=0.1)


def _rounds(*pairs: tuple[float, float]):
    return [(_result("direct", direct), _result("smscenter", ours)) for direct, ours in pairs]


def test_steady_rounds_give_the_median_and_its_verdict(capsys):
    _print_rounds(_rounds((10_000, 3_000), (11_000, 3_300), (10_500, 4_300)))
    out = capsys.readouterr().out
    assert "median ratio smscenter/direct, end-to-end: 30 % (MISSES the 40 % target)" in out
    assert "UNSTEADY" not in out


def test_a_reference_that_moved_between_rounds_flags_the_verdict(capsys):
    # 2026-11-29: the direct path fell to 6.3–7.4k/s in two rounds of three, smscenter did not
    # move, and the median ratio came out at 41 %.
    _print_rounds(_rounds((11_730, 3_163), (6_329, 3_062), (7_400, 3_050)))
    out = capsys.readouterr().out
    assert "median ratio smscenter/direct, end-to-end: 41 % (meets the 40 % target)" in out
    assert "UNSTEADY: the direct path ran at 6,329–11,730/s across the rounds (85% apart)" in out
    assert "the verdict is unreliable" in out


def test_incomplete_rounds_are_left_out(capsys):
    runs = _rounds((10_000, 3_000), (4_000, 3_000))
    runs[1][1].missing = 5
    _print_rounds(runs)
    out = capsys.readouterr().out
    assert "  2: incomplete" in out and "UNSTEADY" not in out
    assert "median ratio smscenter/direct, end-to-end: 30 %" in out
