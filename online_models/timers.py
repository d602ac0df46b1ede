"""Churn timers on event time, kept in keyed state that stays small.

A lapsing customer sends no events, so their alert cannot be raised on an event of theirs.
Each change of their rhythm yields a ``Timer`` (from ``PopulationShard.update``): the event
time at which their score will cross the threshold if they stay silent, and the alert that
would then be raised (it cannot change in silence). Two keyed states carry it:

``TimerBucket`` (key: the due time's bucket of ``bucket_ms``)
    Holds the timers due in its bucket. When the stream's clock has passed the bucket's end
    (``BucketTick``) it fires them all; a timer that arrives at a bucket already finished
    fires at once. A bucket holds the timers due in one slice of event time, not a population.

``AlertGate`` (key: the customer)
    The customer's newest timer and the episode already alerted. A bucket may fire a timer
    that a newer one has replaced; the gate drops it. A newer timer whose event came after
    the pending due time means the customer lapsed before coming back: the pending alert is
    raised then. So the alerts raised do not depend on whether a firing or a newer timer
    arrives first. One alert per lapse episode (an episode is the last purchase time).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from online_models.churn import Alert
from online_models.messages import Fired, Timer


@dataclass(slots=True)
class TimerBucket:
    timers: dict[str, Timer] = field(default_factory=dict)
    finished: bool = False

    def __deepcopy__(self, memo: dict) -> TimerBucket:
        return TimerBucket(dict(self.timers), self.finished)  # timers are frozen

    def arm(self, timer: Timer) -> list[Fired]:
        if self.finished:
            return [Fired(timer)]
        current = self.timers.get(timer.customer_id)
        if current is None or timer.version > current.version:
            self.timers[timer.customer_id] = timer
        return []

    def finish(self) -> list[Fired]:
        """The clock passed the bucket's end: every timer in it is due."""
        fired = [Fired(timer) for _, timer in sorted(self.timers.items())]
        self.timers.clear()
        self.finished = True
        return fired


@dataclass(slots=True)
class AlertGate:
    version: int = 0
    pending: Timer | None = None
    alerted_episode: int | None = None
    erased_until: int | None = None  # the customer was erased: timers of events before this are void

    def __deepcopy__(self, memo: dict) -> AlertGate:
        return AlertGate(self.version, self.pending, self.alerted_episode, self.erased_until)

    def erase(self, until_ms: int) -> list[Alert]:
        """The customer was erased: nothing pending is raised, nor any timer of an event before
        ``until_ms`` (one may still sit in a bucket, or be in flight)."""
        self.pending = None
        self.erased_until = max(until_ms, self.erased_until or until_ms)
        return []

    def _void(self, timer: Timer) -> bool:
        return self.erased_until is not None and timer.event_ts < self.erased_until

    def on_timer(self, timer: Timer) -> list[Alert]:
        if self._void(timer):
            return []
        alerts = []
        pending = self.pending
        if pending is not None and pending.due_ts is not None and pending.due_ts <= timer.event_ts:
            alerts = self._raise(pending)  # they lapsed before this event brought them back
        if timer.version > self.version:
            self.version = timer.version
            self.pending = timer if self._armable(timer) else None
        return alerts

    def on_fired(self, fired: Fired) -> list[Alert]:
        timer = fired.timer
        if self._void(timer):
            return []
        if timer.version < self.version:
            return []  # replaced by a newer timer (raised by it, if it lapsed before)
        if timer.version > self.version:  # the firing overtook its own timer
            self.version = timer.version
            self.pending = timer if self._armable(timer) else None
        if self.pending is None or self.pending.version != timer.version:
            return []
        return self._raise(self.pending)

    def _armable(self, timer: Timer) -> bool:
        return timer.due_ts is not None and timer.alert is not None and timer.alert.episode != self.alerted_episode

    def _raise(self, timer: Timer) -> list[Alert]:
        self.pending = None
        if timer.alert is None or timer.alert.episode == self.alerted_episode:
            return []
        self.alerted_episode = timer.alert.episode
        return [timer.alert]
