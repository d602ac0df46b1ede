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


@dataclass(slots=True)
class StreamClock:
    """Watermark per partition, the wall time each last moved, and what has been ticked."""

    partitions: dict[str, int] = field(default_factory=dict)
    moved_at: dict[str, int] = field(default_factory=dict)  # wall ms
    wall_ms: int | None = None
    now_ms: int | None = None  # the last clock value told downstream
    open_bucket: int | None = None  # the first timer bucket not yet finished

    def __deepcopy__(self, memo: dict) -> StreamClock:
        return StreamClock(dict(self.partitions), dict(self.moved_at), self.wall_ms, self.now_ms, self.open_bucket)

    def progress(self, partition: str, ts_ms: int, wall_ms: int | None) -> None:
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
        """Event time, or the wall clock when live and caught up; never goes back."""
        now = self.event_time(settings)
        if now is None:
            return self.now_ms
        if settings.use_wall_clock and self.wall_ms is not None and self.wall_ms - now <= settings.catch_up_ms:
            now = max(now, self.wall_ms)
        return now if self.now_ms is None else max(now, self.now_ms)
