"""Time: the one home of the time constants, and the stream's clocks as keyed state.

Everything in the engine runs on event time. Two clocks are state of their own, so that a
restarted flow, two workers or two processes see the same times:

``PartitionClock``
    The newest event time of one (topic, partition). Lateness is judged against it: at full
    replay speed a sparse partition runs ahead in event time, and that must not make a busy
    partition's events look late.

``StreamClock``
    The clock churn timers follow: the slowest *active* partition's event time, so a replay
    of history fires the alerts of living through it. A partition whose watermark has not
    moved for ``idle_ms`` of wall time stops holding it back (a lapsing customer's partition
    may be the silent one); live, once the stream is within ``catch_up_ms`` of the wall
    clock, silence itself moves time forward. Wall time only ever arrives in messages (the
    edge stamps it); nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS


@dataclass(slots=True)
class PartitionClock:
    newest_ts: int | None = None

    def __deepcopy__(self, memo: dict) -> PartitionClock:
        return PartitionClock(self.newest_ts)  # copied before each message (engine.guard) and each epoch

    def advance(self, ts_ms: int) -> bool:
        """Move to ``ts_ms`` if it is newer; True when the watermark moved."""
        if self.newest_ts is None or ts_ms > self.newest_ts:
            self.newest_ts = ts_ms
            return True
        return False


@dataclass(frozen=True, slots=True)
class ClockSettings:
    use_wall_clock: bool = True
    catch_up_ms: int = HOUR_MS
    idle_ms: int = 5_000
    bucket_ms: int = HOUR_MS  # churn timers are filed in buckets of this much event time
    lookback_ms: int = 30 * DAY_MS  # first timer bucket: this far behind the first event (late events)
    settle_ms: int = 5_000  # wall time the clock lags: events parsed are through every step by then


@dataclass(slots=True)
class StreamClock:
    """Watermark per partition, the wall time each last moved, and what has been ticked."""

    partitions: dict[str, int] = field(default_factory=dict)
    moved_at: dict[str, int] = field(default_factory=dict)  # wall ms
    wall_ms: int | None = None
    now_ms: int | None = None  # the last clock value told downstream
    open_bucket: int | None = None  # the first timer bucket not yet finished
    history: list[list[int]] = field(default_factory=list)  # [wall ms, event time] samples, oldest first

    def __deepcopy__(self, memo: dict) -> StreamClock:
        return StreamClock(dict(self.partitions), dict(self.moved_at), self.wall_ms, self.now_ms, self.open_bucket,
                           [list(sample) for sample in self.history])

    def progress(self, partition: str, ts_ms: int, wall_ms: int | None) -> None:
        if partition not in self.partitions:
            self.history.clear()  # samples taken before this partition was seen could run ahead of it
        if ts_ms > self.partitions.get(partition, ts_ms - 1):
            self.partitions[partition] = ts_ms
            if wall_ms is not None:
                self.moved_at[partition] = wall_ms
                self.heartbeat(wall_ms)

    def heartbeat(self, wall_ms: int) -> None:
        if self.wall_ms is None or wall_ms > self.wall_ms:
            self.wall_ms = wall_ms

    def event_time(self, settings: ClockSettings) -> int | None:
        if not self.partitions:
            return None
        wall = self.wall_ms
        active = [ts for key, ts in self.partitions.items()
                  if wall is None or key not in self.moved_at or wall - self.moved_at[key] < settings.idle_ms]
        return min(active) if active else max(self.partitions.values())

    def current(self, settings: ClockSettings) -> int | None:
        """Event time, or the wall clock when live and caught up, as it was ``settle_ms`` of wall
        time ago: an event the parser has seen may still be on its way to the alert gates (at
        replay speed that is hours of event time), and a timer must not fire before the events
        that would cancel it arrive. Never goes back."""
        now = self.event_time(settings)
        if now is None:
            return self.now_ms
        wall = self.wall_ms
        if settings.use_wall_clock and wall is not None and wall - now <= settings.catch_up_ms:
            now = max(now, wall)
        if wall is not None and settings.settle_ms > 0:
            now = self._settled(wall, now, settings.settle_ms)
        if now is None:
            return self.now_ms
        return now if self.now_ms is None else max(now, self.now_ms)

    def _settled(self, wall: int, now: int, settle_ms: int) -> int | None:
        if self.history and wall - self.history[-1][0] < settle_ms // 50:
            self.history[-1][1] = max(self.history[-1][1], now)  # one sample per 1/50 of the lag
        else:
            self.history.append([wall, now])
        settled = None
        while self.history and self.history[0][0] <= wall - settle_ms:
            settled = self.history.pop(0)[1]
        if settled is not None:
            self.history.insert(0, [wall - settle_ms, settled])  # still the clock until a newer one settles
        return settled
