"""Requests-per-minute limits, one token bucket per client (an API key, or an address).

A bucket holds up to a minute's worth of requests and refills continuously, so a client may
burst up to its limit and then goes at the limit's pace. A refused request learns how long
until its next token, which the ingress sends as `Retry-After`. Each ingress replica counts
on its own: with N ingress replicas a client may get up to N times its limit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

# Full buckets say nothing a missing one would not, so past this many clients they are
# dropped, which bounds the memory a flood of new addresses can take.
MAX_BUCKETS = 10_000


@dataclass
class Bucket:
    per_minute: float
    tokens: float
    updated: float

    def refill(self, now: float) -> None:
        earned = (now - self.updated) * self.per_minute / 60
        self.tokens = min(self.per_minute, self.tokens + earned)
        self.updated = now


class RateLimiter:
    """Token buckets by client id; `clock` is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.buckets: dict[str, Bucket] = {}

    def take(self, client: str, per_minute: float) -> float | None:
        """Spend one request of `client`'s `per_minute`; None when allowed, else the seconds
        until it would be."""
        now = self.clock()
        bucket = self.buckets.setdefault(client, Bucket(per_minute, per_minute, now))
        bucket.per_minute = per_minute
        bucket.refill(now)
        if bucket.tokens < 1:
            return (1 - bucket.tokens) * 60 / per_minute
        bucket.tokens -= 1
        if len(self.buckets) > MAX_BUCKETS:
            self._drop_full(now)
        return None

    def _drop_full(self, now: float) -> None:
        for client, bucket in list(self.buckets.items()):
            bucket.refill(now)
            if bucket.tokens >= bucket.per_minute:
                del self.buckets[client]


def retry_after_header(seconds: float) -> str:
    """`Retry-After` in whole seconds (RFC 9110), rounded up so a client never comes back
    early, and at least 1."""
    return str(max(1, math.ceil(seconds)))
