"""Token buckets for account and connector throughput.

A bucket holds at most ``burst`` tokens (by default one second's worth) and refills at
``rate`` per second. The clock is passed in so tests need no sleeps.
"""

from __future__ import annotations


class TokenBucket:
    __slots__ = ("rate", "burst", "_tokens", "_stamp")

    def __init__(self, rate: float, now: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(rate, 1.0))
        self._tokens = self.burst
        self._stamp = now

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def try_take(self, now: float, n: float = 1.0) -> bool:
        """Take ``n`` tokens if there are enough; False means "over the rate"."""
        if now > self._stamp:  # _refill, inlined: this runs for every submit_sm
            tokens = self._tokens + (now - self._stamp) * self.rate
            self._tokens = tokens if tokens < self.burst else self.burst
            self._stamp = now
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False

    def delay(self, now: float, n: float = 1.0) -> float:
        """Seconds until ``n`` tokens will be available (0 if they are now)."""
        self._refill(now)
        missing = n - self._tokens
        return 0.0 if missing <= 0 else missing / self.rate

    def set_rate(self, rate: float, now: float) -> None:
        """A new rate (a config reload): the tokens earned so far are kept, up to the new
        burst, so a partner neither gains a burst nor loses its place."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._refill(now)
        self.rate = float(rate)
        self.burst = float(max(rate, 1.0))
        self._tokens = min(self._tokens, self.burst)

    def owe(self, n: float) -> None:
        """Take ``n`` more tokens than there are (after a ``try_take`` of the burst): a
        request bigger than the burst is paid by the requests after it waiting."""
        self._tokens -= n

    def give_back(self, n: float = 1.0) -> None:
        """Return tokens taken but not used (never past ``burst``)."""
        self._tokens = min(self.burst, self._tokens + n)

    def drain(self, now: float) -> None:
        """Empty the bucket: used when the peer says we are too fast (ESME_RTHROTTLED)."""
        self._refill(now)
        self._tokens = min(self._tokens, 0.0)


class RateMeter:
    """Events per second over the last ``span`` seconds, counted in one-second slots: what
    ``smscenter status`` shows as a connector's rate. One add is an index and an increment
    (it runs for every submit); reading sums ``span`` slots."""

    __slots__ = ("_counts", "_seconds", "span")

    def __init__(self, span: int = 10) -> None:
        self.span = span
        self._counts = [0] * span
        self._seconds = [-1] * span

    def add(self, now: float) -> None:
        second = int(now)
        i = second % self.span
        if self._seconds[i] != second:
            self._seconds[i] = second
            self._counts[i] = 0
        self._counts[i] += 1

    def per_second(self, now: float) -> float:
        """Events in the last ``span`` whole seconds (the current one included), per second."""
        second = int(now)
        recent = sum(n for n, s in zip(self._counts, self._seconds) if second - self.span < s <= second)
        return recent / self.span
