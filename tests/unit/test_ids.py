"""``storage.ids``: time-ordered 64-bit ids that never go back — not when the clock steps
back, not across a restart (``seed``), not when two threads draw at once."""

from __future__ import annotations

import threading

import pytest

from storage.ids import EPOCH_MS, NODE_BITS, SEQ_BITS, IdGenerator, id_time

T0 = 1_800_000_000.0


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_ids_increase_and_carry_their_time():
    clock = Clock()
    gen = IdGenerator(node=3, clock=clock)
    ids = [gen.next() for _ in range(10)]
    assert ids == sorted(set(ids))
    assert id_time(ids[0]) == pytest.approx(T0, abs=0.001)
    assert (ids[0] >> SEQ_BITS) & ((1 << NODE_BITS) - 1) == 3
    assert len(str(ids[0])) <= 20


def test_clock_stepping_back_does_not_make_ids_go_back():
    clock = Clock()
    gen = IdGenerator(clock=clock)
    first = gen.next()
    clock.t -= 3600
    assert gen.next() > first


def test_more_than_4096_in_one_millisecond_borrow_the_next():
    gen = IdGenerator(clock=Clock())
    ids = [gen.next() for _ in range(5000)]
    assert ids == sorted(set(ids))


@pytest.mark.parametrize("their_node", [0, 5, 1023])
def test_seed_puts_ids_past_what_storage_holds(their_node):
    # Storage holds an id an hour ahead of our clock (the clock went back while we were
    # down, or another node's clock runs ahead).
    ahead_ms = int((T0 + 3600) * 1000) - EPOCH_MS
    stored = (ahead_ms << (NODE_BITS + SEQ_BITS)) | (their_node << SEQ_BITS) | 4095
    gen = IdGenerator(node=5, clock=Clock())
    gen.seed(stored + 1)
    assert gen.next() > stored
    assert gen.next() > stored


def test_seed_never_moves_the_generator_back():
    gen = IdGenerator(clock=Clock())
    last = gen.next()
    gen.seed(1)
    gen.seed(0)
    assert gen.next() > last


def test_ids_are_unique_across_threads():
    gen = IdGenerator(clock=Clock())  # a frozen clock: every id comes from the sequence
    out: list[list[int]] = [[] for _ in range(4)]

    def draw(bucket: list[int]) -> None:
        for _ in range(3000):
            bucket.append(gen.next())

    threads = [threading.Thread(target=draw, args=(b,)) for b in out]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for b in out for i in b]
    assert len(set(every)) == len(every) == 12000
