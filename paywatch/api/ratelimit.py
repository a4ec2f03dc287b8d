"""Per-tenant token buckets for ingest and the query API: 429 with ``Retry-After``.

Why in-process: each ingest or API process enforces the configured rate on its own, so N
processes behind a load balancer admit up to N times the rate for one tenant. That keeps
the check O(1) and free of any shared store (a Postgres or Redis round trip per request
would cost more than the refusal saves); size the rate per process.

Memory is bounded: at most ``max_keys`` buckets are kept, least recently used evicted. An
evicted tenant starts again with a full bucket, which only ever favours a tenant that has
been quiet the longest.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from prometheus_client import Counter

DEFAULT_MAX_KEYS = 100_000


class TokenBuckets:
    """One token bucket per key: ``rate`` tokens a second, holding at most ``burst``.

    ``rate`` 0 turns limiting off (every call is admitted, nothing is stored).
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
        refused: Counter | None = None,
    ) -> None:
        if rate < 0 or max_keys <= 0 or (rate > 0 and burst < 1):
            raise ValueError("rate must be >= 0, burst >= 1 and max_keys > 0")
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._clock = clock
        self._refused = refused
        # key -> [tokens, when they were counted]; a list so a hit mutates in place.
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        """False when the rate is 0 (limiting off)."""
        return self.rate > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float:
        """Take one token for ``key``: 0.0 when admitted, else seconds until one is due."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = [self.burst, now]
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = now - bucket[1]
            if elapsed > 0:
                bucket[0] = min(self.burst, bucket[0] + elapsed * self.rate)
                bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return 0.0
        if self._refused is not None:
            self._refused.inc()
        return (1.0 - bucket[0]) / self.rate


def retry_after(wait: float) -> int:
    """The ``Retry-After`` value for a wait: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(wait))
