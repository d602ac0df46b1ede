"""Heartbeats: the wall clock, once a tick, for the engine's stream clock.

A lapsing customer sends no events, so nothing keyed by that customer would ever wake up.
The engine's churn clock follows event time (the slowest active partition), so a full-speed
replay of history fires the same alerts as living through it; heartbeats tell it the wall
time, so that a partition gone silent stops holding it back and, live and caught up,
silence itself moves time forward. This is the one place the flow reads the clock for timers.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from bytewax.inputs import DynamicSource, StatelessSourcePartition

from flows.steps import wall_ms
from online_models.messages import Heartbeat


class _Heartbeats(StatelessSourcePartition[Heartbeat]):
    def __init__(self, every_s: float) -> None:
        self._every = timedelta(seconds=every_s)
        self._next = datetime.now(timezone.utc)

    def next_batch(self) -> list[Heartbeat]:
        self._next = datetime.now(timezone.utc) + self._every
        return [Heartbeat(wall_ms())]

    def next_awake(self) -> datetime:
        return self._next


class HeartbeatSource(DynamicSource[Heartbeat]):
    def __init__(self, every_s: float) -> None:
        self.every_s = every_s

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Heartbeats:
        return _Heartbeats(self.every_s)
