"""What travels between the engine's steps, and the writes they ask of Redis.

Every message is a frozen dataclass that says where it goes by its type (and its ``key``);
the step graph in ``online_models.engine`` routes by type, so no step ever matches a tag.
Write operations know how to apply themselves to a Redis pipeline (duck-typed: nothing
here imports redis) and which slot they fill, so a sink can keep the last write per slot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from online_models.churn import Alert, Rhythm
from online_models.customer import BasketSignal
from online_models.events import Event, Feedback
from online_models.identity import Merge
from online_models.items import OwnCount, PairUpdate
from online_models.pickling import pickled_by_fields

# --------------------------------------------------------------------------- input


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Raw:
    """A record as read from a topic, kept whole so that a dead letter can carry it back.

    ``received_ms`` is the wall clock when the edge read it (``None`` in offline replays):
    the only wall time the engine ever sees besides heartbeats."""

    topic: str
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes | None
    received_ms: int | None = None

    @property
    def source(self) -> str:
        return f"{self.topic}/{self.partition}"


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the engine could not use, and why. ``raw`` is the record as read when the
    message was one (a parse rejection, or any step failing on a ``Raw``); for a message a step
    derived, it is a synthetic record (topic ``step:<name>``, the step's key, the message's repr)
    and ``step`` names the step that failed on it."""

    raw: Raw
    reason: str
    step: str | None = None


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The wall clock, from the edge's tick source: lets silence move the churn clock."""

    wall_ms: int


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Progress:
    """A partition's watermark moved (to the stream clock)."""

    source: str
    ts_ms: int
    wall_ms: int | None


# --------------------------------------------------------------------------- customers and items


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Forward:
    """A stitched alias hands an event (or its profile, as a ``Merge``) to its customer."""

    customer_id: str
    message: Event | Merge


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class OfferOutcome:
    """Offer feedback the customer step counted for the first time (its event id was not in the
    customer's dedup window): what the offer's statistics learn from, so a client's retry of
    the same feedback is counted once."""

    feedback: Feedback
    implied_impression: bool = False  # the decision's impression was never posted: count one (``offer_trial``)


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class ItemBasket:
    """One item's membership of a basket signal (to that item's counts)."""

    sku: str
    signal: BasketSignal


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class ToNeighbors:
    sku: str
    update: PairUpdate | OwnCount


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class RepeatChange:
    """To an item's repeat counts: how one customer's contribution changed, as
    (bucket, (buyers, repeaters, repeats, log-gaps)) deltas (``online_models.repeats``)."""

    sku: str
    deltas: tuple[tuple[int, tuple[int, int, int, int]], ...]


# --------------------------------------------------------------------------- churn


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class ChurnUpdate:
    """A customer's rhythm changed: move them in their population shard, re-arm their timer.

    ``old_keys`` / ``new_keys`` are the customer's sketch buckets before and after, so the
    shard moves counts without remembering anyone; ``version`` orders one customer's updates."""

    customer_id: str
    shard: int
    rhythm: Rhythm
    old_keys: tuple[int | None, int | None, int | None] | None
    new_keys: tuple[int | None, int | None, int | None]
    version: int
    event_ts: int


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class ShardTick:
    shard: int
    now_ms: int


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class BucketTick:
    bucket: int
    now_ms: int
    finished: bool  # the clock is past the bucket's end: nothing more can be due in it


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Timer:
    """A customer's churn timer (``due_ts`` None: disarmed), with the alert it would raise."""

    customer_id: str
    version: int
    event_ts: int
    due_ts: int | None
    alert: Alert | None


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Fired:
    """A timer bucket's clock passed a customer's due time."""

    timer: Timer


# --------------------------------------------------------------------------- writes


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Put:
    """SET key to a state's bytes. ``value`` may be a live state: the sink encodes the last
    write per key once per batch (``encode`` is a codec function of ``online_models.keys``)."""

    key: str
    value: Any
    encode: Callable[[Any], bytes]
    ttl_s: int | None = None  # expire unless rewritten within this long (anonymous profiles)

    @property
    def slot(self) -> tuple[str, str | None]:
        return (self.key, None)

    def apply(self, pipe) -> None:
        pipe.set(self.key, self.encode(self.value), ex=self.ttl_s)


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class HashPut:
    key: str
    field: str
    value: Any
    encode: Callable[[Any], bytes]

    @property
    def slot(self) -> tuple[str, str | None]:
        return (self.key, self.field)

    def apply(self, pipe) -> None:
        pipe.hset(self.key, self.field, self.encode(self.value))


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class ZAdd:
    key: str
    member: str
    score: float

    @property
    def slot(self) -> tuple[str, str | None]:
        return (self.key, self.member)

    def apply(self, pipe) -> None:
        pipe.zadd(self.key, {self.member: self.score})


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class SAdd:
    key: str
    member: str

    @property
    def slot(self) -> tuple[str, str | None]:
        return (self.key, "\x00" + self.member)

    def apply(self, pipe) -> None:
        pipe.sadd(self.key, self.member)


# An alert goes into the stream once, however often a resumed flow replays it.
ADD_ALERT_ONCE = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then
  return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'alert', ARGV[1])
end
return false
"""
ALERT_SEEN_TTL_S = 180 * 86_400


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class AddAlert:
    key: str
    seen_key: str
    payload: bytes
    maxlen: int

    @property
    def slot(self) -> tuple[str, str | None]:
        return (self.seen_key, None)

    def apply(self, pipe) -> None:
        pipe.eval(ADD_ALERT_ONCE, 2, self.key, self.seen_key, self.payload, self.maxlen, ALERT_SEEN_TTL_S)


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Delete:
    """DEL key: an erased customer's profile or alias (``online_models.erasure``)."""

    key: str

    @property
    def slot(self) -> tuple[str, str | None]:
        return (self.key, None)

    def apply(self, pipe) -> None:
        pipe.delete(self.key)


# One customer's churn alerts out of the stream, with their `seen` keys (same hash tag as the
# stream). The id is looked for as plain text first (cheap), then each candidate is decoded: an
# id that JSON escapes (quotes, backslashes, control characters) skips the plain-text filter.
DELETE_ALERTS_OF = r"""
local id, seen_prefix = ARGV[1], ARGV[2]
local plain = not string.find(id, '[%c"\\]')
local removed, seen = 0, 0
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'alert' and (not plain or string.find(fields[i + 1], id, 1, true)) then
      local ok, alert = pcall(cjson.decode, fields[i + 1])
      if ok and alert['customer_id'] == id then
        redis.call('XDEL', KEYS[1], entry[1])
        if type(alert['alert_id']) == 'string' then seen = seen + redis.call('DEL', seen_prefix .. alert['alert_id']) end
        removed = removed + 1
      end
    end
  end
end
return {removed, seen}
"""


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class DeleteAlerts:
    """Remove one customer's entries from the churn-alert stream, and their `seen` keys; the
    script answers [entries removed, seen keys removed]."""

    key: str  # the alert stream
    seen_prefix: str  # ``KeyScheme.churn_alert_seen("")``: an alert's seen key is this + its id
    customer_id: str

    @property
    def slot(self) -> tuple[str, str | None]:
        return (self.key, "\x01erase:" + self.customer_id)

    def apply(self, pipe) -> None:
        pipe.eval(DELETE_ALERTS_OF, 1, self.key, self.customer_id, self.seen_prefix)


Write = Put | HashPut | ZAdd | SAdd | AddAlert | Delete | DeleteAlerts
WRITE_TYPES = (Put, HashPut, ZAdd, SAdd, AddAlert, Delete, DeleteAlerts)


def coalesce(writes) -> dict[tuple[str, str | None], Write]:
    """The last write per slot wins: values are absolute, so nothing is lost."""
    latest: dict[tuple[str, str | None], Write] = {}
    for write in writes:
        latest[write.slot] = write
    return latest
