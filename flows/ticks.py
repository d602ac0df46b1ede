"""A clock for timers on event time: every worker emits the stream's clock once a tick.

A lapsing customer sends no events, so nothing keyed by that customer would ever wake up.
Instead the churn shards are woken by this source with the stream's clock: the slowest
partition's event time (so a full-speed replay of history fires the same alerts as living
through it), or — live, once the stream has caught up — the wall clock, so that silence
itself moves time forward.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from bytewax.inputs import DynamicSource, StatelessSourcePartition


def stream_clock(event_time: int | None, wall_ms: int, *, use_wall: bool, catch_up_ms: int) -> int | None:
    """The clock timers follow: event time, or the wall clock when live and caught up."""
    if use_wall and event_time is not None and wall_ms - event_time <= catch_up_ms:
        return max(event_time, wall_ms)
    return event_time


class _Ticks(StatelessSourcePartition[int]):
    def __init__(self, clock: Callable[[], int | None], every_s: float) -> None:
        self._clock = clock
        self._every = timedelta(seconds=every_s)
        self._next = datetime.now(timezone.utc)

    def next_batch(self) -> list[int]:
        self._next = datetime.now(timezone.utc) + self._every
        now = self._clock()
        return [] if now is None else [now]

    def next_awake(self) -> datetime:
        return self._next


class TickSource(DynamicSource[int]):
    def __init__(self, clock: Callable[[], int | None], every_s: float) -> None:
        self.clock = clock
        self.every_s = every_s

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Ticks:
        return _Ticks(self.clock, self.every_s)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000
