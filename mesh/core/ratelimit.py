"""A token bucket with time passed in (sans-IO), for upload and download limits.

``rate`` is bytes per second (``None``: unlimited); ``burst`` the bucket size.  A
transfer may start while the bucket is positive and then drives it negative (debt),
so a chunk larger than the burst is never blocked forever.
"""

from __future__ import annotations


class TokenBucket:
    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float | None, burst: float, *, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = now

    def _refill(self, now: float) -> None:
        if self.rate is not None and now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = max(self._last, now)

    def ready(self, *, now: float) -> bool:
        if self.rate is None:
            return True
        self._refill(now)
        return self._tokens > 0

    def take(self, amount: int, *, now: float) -> None:
        if self.rate is not None:
            self._refill(now)
            self._tokens -= amount

    def ready_at(self, *, now: float) -> float:
        """When :meth:`ready` will next be true."""
        if self.rate is None:
            return now
        self._refill(now)
        if self._tokens > 0:
            return now
        return now + (-self._tokens + 1) / self.rate
