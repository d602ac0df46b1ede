"""Time decay on event time, in log space (forward decay, Cormode et al. 2009).

A weight w added at event time t is stored as log(w) + λt. Sums of such terms are
comparable across keys updated at different times without ever rewriting them, which
is what lets Redis hold absolute scores (ZADD) that stay ordered correctly as time
passes. The decayed value at `now` is exp(stored − λ·now).
"""

from __future__ import annotations

import math

from online_models.clock import DAY_MS


class Decay:
    """Converts between event time and log-weights for one half-life."""

    __slots__ = ("rate_per_ms",)

    def __init__(self, half_life_days: float) -> None:
        if half_life_days <= 0:
            raise ValueError(f"half_life_days must be > 0; got {half_life_days}")
        self.rate_per_ms = math.log(2) / (half_life_days * DAY_MS)

    def log_weight(self, weight: float, ts_ms: int) -> float:
        return math.log(weight) + self.rate_per_ms * ts_ms

    def value_at(self, log_weight: float, now_ms: int) -> float:
        return math.exp(log_weight - self.rate_per_ms * now_ms)


def log_add(a: float | None, b: float) -> float:
    """log(exp(a) + exp(b)) without overflow; `a=None` means an empty sum."""
    if a is None:
        return b
    if a < b:
        a, b = b, a
    return a + math.log1p(math.exp(b - a))


def add(counter: dict[str, float], key: str, log_weight: float) -> None:
    counter[key] = log_add(counter.get(key), log_weight)


def prune(counter: dict[str, float], keep: int) -> None:
    """Bound a counter: past twice `keep` keys, back to the 1.5 × `keep` heaviest (heaviest as of
    any common time). The slack makes pruning rare, so that the `keep` heaviest (what readers
    use, ``top``) rarely depend on the order in which contributions arrived."""
    if len(counter) <= 2 * keep:
        return
    for key in sorted(counter, key=lambda k: (counter[k], k))[: len(counter) - (3 * keep) // 2]:
        del counter[key]


def top(counter: dict[str, float], keep: int) -> dict[str, float]:
    """The `keep` heaviest keys of a counter (ties by key)."""
    if len(counter) <= keep:
        return dict(counter)
    return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:keep])


def shares(counter: dict[str, float]) -> dict[str, float]:
    """Each key's share of the decayed total; shares do not depend on `now`."""
    if not counter:
        return {}
    top = max(counter.values())
    weights = {key: math.exp(value - top) for key, value in counter.items()}
    total = sum(weights.values())
    return {key: weight / total for key, weight in weights.items()}

