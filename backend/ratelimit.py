"""Token-bucket rate limits by key, pure and synchronous (the clock is injected).

Used by the herd servers (lines per remote address, reports per client ID) and by the gateway
(requests per address, reports per client ID).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

__all__ = ["MAX_BUCKETS", "RateLimiter"]

# Buckets kept per limiter. A bucket is dropped once it has refilled (burst / rate seconds
# after its last use: 2 s, as the burst is twice the rate), so the table only grows under a
# flood of distinct addresses or client IDs (one open batch names up to 1,000). 65,536
# buckets keyed by 256-character client IDs take about 43 MB (measured); past the cap the
# least recently used bucket goes, which can give that key back at most one burst.
MAX_BUCKETS = 65_536


class RateLimiter:
    """Token buckets by key: ``rate`` per second, at most ``burst`` at once.

    Pure and synchronous; ``clock`` gives monotonic seconds (inject one in tests). A key's
    bucket starts full. Memory is bounded: a bucket that has refilled is forgotten (it is the
    same as a new one), and at most ``max_keys`` are kept.
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_keys: int = MAX_BUCKETS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be > 0, burst >= 1 and max_keys >= 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        # key -> (tokens, when they were counted); oldest use first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _level(self, key: str, now: float) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            return self.burst
        tokens, then = bucket
        return min(self.burst, tokens + (now - then) * self.rate)

    def take(self, keys: Iterable[str]) -> float:
        """Charge one token to each distinct key: all of them or none.

        Returns 0.0 when charged, else the seconds until every key could pay (nothing is
        charged then, so a refused request costs no budget).
        """
        now = self._clock()
        wanted = list(dict.fromkeys(keys))
        levels = [self._level(key, now) for key in wanted]
        short = max((1.0 - level for level in levels), default=0.0)
        if short > 0:
            return short / self.rate
        for key, level in zip(wanted, levels, strict=True):
            self._buckets[key] = (level - 1.0, now)
            self._buckets.move_to_end(key)
        self._evict(now)
        return 0.0

    def _evict(self, now: float) -> None:
        # Oldest use first: everything unused for burst / rate seconds is full and goes;
        # the first bucket still refilling stops the sweep (all later ones were used later).
        while self._buckets:
            key = next(iter(self._buckets))
            if self._level(key, now) < self.burst and len(self._buckets) <= self.max_keys:
                break
            del self._buckets[key]
