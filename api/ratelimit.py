"""Per-API-key rate limits: a token bucket per key, in this process.

Each key may make `OMNIREC_RATE_LIMIT_PER_S` requests a second on average, and bursts of up to
`OMNIREC_RATE_LIMIT_BURST`; a request past that is answered 429 with `Retry-After` (whole seconds
until a token is back). The buckets live in the API process: N replicas behind a load balancer
allow N times the rate (a shared limiter in Redis would cost a round trip per request). There is
one bucket per configured key (keyed by its digest), so their number is bounded by the settings.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenBuckets:
    rate_per_s: float  # 0: no limit
    burst: int
    clock: object = time.monotonic
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # key → (tokens, at)

    def take(self, key: str) -> float:
        """0.0 when the request may go ahead (a token is taken), else the seconds to wait."""
        if self.rate_per_s <= 0:
            return 0.0
        now = self.clock()
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate_per_s)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate_per_s


def retry_after(wait_s: float) -> str:
    """The Retry-After header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait_s)))
