"""The event contract: one Kafka message value (bytes) → a typed event, product, or rejection.

Bad input is data, not an exception: `parse_event` never raises, it returns a
`Rejected` whose reason says what was expected, where, and what arrived, so the
flow can dead-letter the original bytes and keep going.

Every number that gets through is finite and bounded (`ParseLimits`): a quantity of 1e308,
or a price that makes quantity × price overflow, is rejected here, so no step downstream
ever adds up to infinity. Timestamps are integers of epoch milliseconds within
`earliest_ts_ms` .. `latest_ts_ms`, whatever form they arrived in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from online_models.clock import DAY_MS
from online_models.learning import clamp_feature
from online_models.pickling import pickled_by_fields

EVENT_TYPES = frozenset({
    "page_view", "product_view", "search", "add_to_cart", "remove_from_cart",
    "purchase", "return", "store_visit", "identify", "survey",
})
FEEDBACK_TYPES = frozenset({"impression", "click", "accept", "dismiss"})
ERASE_TYPE = "erase"  # a tombstone: forget this customer (online_models.erasure)
MAX_ERASED_ALIASES = 64
ANONYMOUS_CUSTOMER = "anonymous"  # the customer id of feedback on an answer for a shopper we did not know
ITEM_EVENTS = frozenset({"add_to_cart", "remove_from_cart", "purchase", "return"})
CHANNELS = frozenset({"web", "app", "store"})
# Nothing a retailer sends predates this; an epoch-seconds value mistaken for ms lands here.
EARLIEST_TS_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
# Nothing a retailer sends is this far ahead (an offline replay has no wall clock to judge by).
LATEST_TS_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z
# What a timestamp can be at all, before any setting: what `datetime` can show (year 1 .. 9999).
MIN_TS_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
MAX_TS_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
MAX_ITEM_QTY = 10_000.0  # per line of a basket
MAX_ITEM_PRICE = 1_000_000.0  # per unit, in the shop's currency


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Item:
    sku: str
    qty: float
    price: float
    category: str | None = None
    brand: str | None = None
    list_price: float | None = None  # the undiscounted price, when the item was on sale

    @property
    def value(self) -> float:
        return self.qty * self.price

    @property
    def discounted(self) -> bool:
        return self.list_price is not None and self.list_price > self.price


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    type: str
    ts_ms: int
    channel: str
    customer_id: str | None = None
    anonymous_id: str | None = None
    loyalty_id: str | None = None
    store_id: str | None = None
    session_id: str | None = None
    order_id: str | None = None
    items: tuple[Item, ...] = ()
    sku: str | None = None
    query: str | None = None
    score: float | None = None

    @property
    def alias_id(self) -> str | None:
        """The pre-login identity an event carries: a web anonymous id or a loyalty card number."""
        if self.anonymous_id:
            return self.anonymous_id
        return f"loyalty:{self.loyalty_id}" if self.loyalty_id else None


@dataclass(frozen=True, slots=True)
class Product:
    sku: str
    name: str
    category: str
    brand: str = ""
    price: float = 0.0
    margin: float = 0.0
    in_stock: bool = True
    attributes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sku": self.sku, "name": self.name, "category": self.category, "brand": self.brand,
            "price": self.price, "margin": self.margin, "in_stock": self.in_stock,
            "attributes": self.attributes,
        }


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Feedback:
    """What a customer did with a served offer or recommendation (topic `recs.feedback`)."""

    event_id: str
    type: str  # impression | click | accept | dismiss
    ts_ms: int
    customer_id: str
    channel: str | None = None
    decision_id: str | None = None
    offer_id: str | None = None
    cell: str | None = None
    control: bool = False
    recommendation_id: str | None = None
    sku: str | None = None
    features: tuple[float, ...] = ()  # the served item's ranking features (recommendations)
    removed: tuple[tuple[str, int], ...] = ()  # offers each gate removed from the decision (impressions)


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Tombstone:
    """An erasure request for one customer (envelope type ``erase``): the flow drops their state
    and that of their aliases, deletes what it wrote of them, and ignores their events with an
    event time before ``ts_ms`` plus the retention (``online_models.erasure``).

    ``ts_ms`` is when the erasure was asked for; ``aliases`` are the anonymous / loyalty ids
    the asker knew of (the flow adds those its own state knows)."""

    event_id: str
    customer_id: str
    ts_ms: int
    aliases: tuple[str, ...] = ()


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Bounds on what counts as a sane message; `stream_ts_ms` is the stream's own clock."""

    max_bytes: int = 65_536
    max_lateness_ms: int = 30 * DAY_MS
    max_future_ms: int = DAY_MS
    earliest_ts_ms: int = EARLIEST_TS_MS  # older: epoch seconds sent as ms, most likely
    latest_ts_ms: int = LATEST_TS_MS  # newer: microseconds sent as ms, or garbage
    max_item_qty: float = MAX_ITEM_QTY
    max_item_price: float = MAX_ITEM_PRICE  # also bounds list prices, product prices and margins


class _Invalid(ValueError):
    pass


def partition_key(obj: dict[str, Any]) -> str | None:
    """The key producers should send an envelope with: the session's anonymous id (or the
    loyalty card) when it has one, else the customer id. A session's events, its `identify`
    included, then share a partition and keep their order, which stitching relies on."""
    key = obj.get("anonymous_id") or obj.get("loyalty_id") or obj.get("customer_id")
    return None if key is None else str(key)


def parse_event(
    raw: bytes | None, *, stream_ts_ms: int | None = None, now_ms: int | None = None,
    limits: ParseLimits = ParseLimits(),
) -> Event | Tombstone | Rejected:
    """Parse one envelope.

    `stream_ts_ms` is the newest event time seen so far on the message's own partition:
    an event far behind it is rejected as late. `now_ms` is the wall clock when the message
    was read: an event far ahead of it is rejected as from the future (without it, nothing
    is). A replay of history is never "from the future", and a sparse partition running
    ahead does not make another partition's events late.

    An ``erase`` envelope is a `Tombstone`; it is never late nor early (an erasure is asked
    for in wall time, whatever the event times of the stream it joins).
    """
    try:
        obj = _load_object(raw, limits)
        if obj.get("type") == ERASE_TYPE:
            return _build_tombstone(obj)
        event = _build_event(obj, limits)
        _check_time(event.ts_ms, stream_ts_ms, limits, now_ms)
        return event
    except _Invalid as exc:
        return Rejected(str(exc))


def parse_product(raw: bytes | None, *, limits: ParseLimits = ParseLimits()) -> Product | Rejected:
    try:
        obj = _load_object(raw, limits)
        return product_from_dict(obj, limits)
    except _Invalid as exc:
        return Rejected(str(exc))


def parse_feedback(raw: bytes | None, *, limits: ParseLimits = ParseLimits()) -> Feedback | Rejected:
    try:
        obj = _load_object(raw, limits)
        kind = _req_str(obj, "type")
        if kind not in FEEDBACK_TYPES:
            raise _Invalid(f"unknown feedback type {kind!r}; expected one of {sorted(FEEDBACK_TYPES)}")
        if "ts" not in obj or obj["ts"] is None:
            raise _Invalid("missing field 'ts'")
        feedback = Feedback(
            event_id=_req_str(obj, "event_id"), type=kind, ts_ms=parse_ts(obj["ts"]),
            customer_id=_req_str(obj, "customer_id"), channel=_opt_str(obj, "channel"),
            decision_id=_opt_str(obj, "decision_id"), offer_id=_opt_str(obj, "offer_id"),
            cell=_opt_str(obj, "cell"), control=_bool(obj, "control", default=False),
            recommendation_id=_opt_str(obj, "recommendation_id"), sku=_opt_str(obj, "sku"),
            features=_features(obj, "features"), removed=_removed(obj, "removed"),
        )
        if not (feedback.offer_id or feedback.sku):
            raise _Invalid("feedback needs 'offer_id' (an offer) or 'sku' (a recommendation)")
        _check_time(feedback.ts_ms, None, limits)
        return feedback
    except _Invalid as exc:
        return Rejected(str(exc))


MAX_GATES = 8


def _removed(obj: dict[str, Any], name: str) -> tuple[tuple[str, int], ...]:
    """An optional object gate → offers it removed (small non-negative integers, a few gates)."""
    value = obj.get(name)
    if value is None:
        return ()
    if not isinstance(value, dict) or len(value) > MAX_GATES:
        raise _Invalid(f"field '{name}' must be an object of at most {MAX_GATES} gates; got {_show(value)}")
    out = []
    for gate, n in value.items():
        if (not isinstance(gate, str) or not 0 < len(gate) <= 32 or isinstance(n, bool) or not isinstance(n, int)
                or not 0 <= n <= 10_000):
            raise _Invalid(f"field '{name}' must map gate names to counts 0..10000; got {_show(value)}")
        out.append((gate, n))
    return tuple(sorted(out))


def product_from_dict(obj: dict[str, Any], limits: ParseLimits = ParseLimits()) -> Product:
    """Raises `_Invalid` on a bad product; use `parse_product` for untrusted bytes."""
    attributes = obj.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise _Invalid(f"field 'attributes' must be an object; got {_show(attributes)}")
    return Product(
        sku=_req_str(obj, "sku"),
        name=_opt_str(obj, "name") or _req_str(obj, "sku"),
        category=_req_str(obj, "category").strip("/").lower(),
        brand=_opt_str(obj, "brand") or "",
        price=_bounded(obj, "price", default=0.0, high=limits.max_item_price),
        margin=_bounded(obj, "margin", default=0.0, low=-limits.max_item_price, high=limits.max_item_price),
        in_stock=_bool(obj, "in_stock", default=True),
        attributes=attributes,
    )


def parse_ts(value: Any) -> int:
    """ISO-8601 with a zone, or epoch milliseconds → epoch milliseconds, within the years
    1 .. 9999 (anything else raises `_Invalid`, a `ValueError`, never an overflow).

    >>> parse_ts("2026-11-25T10:15:00Z"), parse_ts("1795601700000"), parse_ts(1.7956017e12)
    (1795601700000, 1795601700000, 1795601700000)
    >>> parse_ts("²")
    Traceback (most recent call last):
    ...
    online_models.events._Invalid: field 'ts' is not ISO-8601; got '²'
    """
    if isinstance(value, bool):
        raise _Invalid(f"field 'ts' must be ISO-8601 or epoch milliseconds; got {value!r}")
    if isinstance(value, (int, float)):
        if not (isinstance(value, int) or math.isfinite(value)):
            raise _Invalid(f"field 'ts' must be finite; got {value}")
        return _ts_in_range(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():  # str.isdigit() is also true of '²' and '٣'
            if len(text) > 18:
                raise _Invalid(f"field 'ts' is out of range: {_show(value)} epoch ms is not within the years 1 to 9999")
            return _ts_in_range(int(text))
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                raise _Invalid(f"field 'ts' needs a time zone (e.g. 'Z'); got {_show(value)}")
            ms = int(moment.timestamp() * 1000)
        except (ValueError, OverflowError, OSError) as exc:
            if isinstance(exc, _Invalid):
                raise
            raise _Invalid(f"field 'ts' is not ISO-8601; got {_show(value)}") from None
        return _ts_in_range(ms)
    raise _Invalid(f"field 'ts' must be ISO-8601 or epoch milliseconds; got {_show(value)}")


def _ts_in_range(ms: int | float) -> int:
    if not MIN_TS_MS <= ms <= MAX_TS_MS:
        raise _Invalid(f"field 'ts' is out of range: {_show_number(ms)} epoch ms is not within the years 1 to 9999")
    return int(ms)


def format_ts(ts_ms: int) -> str:
    """Epoch ms → ISO-8601 in UTC; a value no calendar can show comes back as its number."""
    try:
        moment = datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc)
    except (ValueError, OverflowError, OSError):
        return f"{_show_number(ts_ms)} epoch ms"
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- internals -------------------------------------------------------------------------


def _load_object(raw: bytes | None, limits: ParseLimits) -> dict[str, Any]:
    if raw is None:
        raise _Invalid("empty message: no value")
    if len(raw) > limits.max_bytes:
        raise _Invalid(f"message of {len(raw)} bytes exceeds the limit of {limits.max_bytes}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _Invalid(f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise _Invalid(f"envelope must be a JSON object; got {type(obj).__name__}")
    return obj


def _build_event(obj: dict[str, Any], limits: ParseLimits) -> Event:
    kind = _req_str(obj, "type")
    if kind not in EVENT_TYPES:
        raise _Invalid(f"unknown event type {kind!r}; expected one of {sorted(EVENT_TYPES)}")
    if "ts" not in obj or obj["ts"] is None:
        raise _Invalid("missing field 'ts'")
    channel = _req_str(obj, "channel")
    if channel not in CHANNELS:
        raise _Invalid(f"field 'channel' must be one of {sorted(CHANNELS)}; got {channel!r}")
    event = Event(
        event_id=_req_str(obj, "event_id"),
        type=kind,
        ts_ms=parse_ts(obj["ts"]),
        channel=channel,
        customer_id=_opt_str(obj, "customer_id"),
        anonymous_id=_opt_str(obj, "anonymous_id"),
        loyalty_id=_opt_str(obj, "loyalty_id"),
        store_id=_opt_str(obj, "store_id"),
        session_id=_opt_str(obj, "session_id"),
        order_id=_opt_str(obj, "order_id"),
        items=_items(obj, limits) if kind in ITEM_EVENTS else (),
        sku=_opt_str(obj, "sku"),
        query=_opt_str(obj, "query"),
        score=_number(obj, "score", default=None),
    )
    _check_type_rules(event)
    return event


def _build_tombstone(obj: dict[str, Any]) -> Tombstone:
    if "ts" not in obj or obj["ts"] is None:
        raise _Invalid("missing field 'ts'")
    aliases = obj.get("aliases") or []
    if (not isinstance(aliases, list) or len(aliases) > MAX_ERASED_ALIASES
            or not all(isinstance(a, str) and a.strip() for a in aliases)):
        raise _Invalid(f"field 'aliases' must be a list of at most {MAX_ERASED_ALIASES} non-empty strings; "
                       f"got {_show(aliases)}")
    return Tombstone(event_id=_req_str(obj, "event_id"), customer_id=_req_str(obj, "customer_id"),
                     ts_ms=parse_ts(obj["ts"]), aliases=tuple(sorted(set(aliases))))


def _check_type_rules(event: Event) -> None:
    if not (event.customer_id or event.anonymous_id or event.loyalty_id):
        raise _Invalid("event needs one of 'customer_id', 'anonymous_id' or 'loyalty_id'")
    if event.type == "identify" and not (event.customer_id and event.alias_id):
        raise _Invalid("identify needs 'customer_id' and 'anonymous_id' or 'loyalty_id'")
    if event.type == "product_view" and not event.sku:
        raise _Invalid("product_view needs field 'sku'")
    if event.type == "survey" and (event.score is None or not 0 <= event.score <= 10):
        raise _Invalid(f"survey needs field 'score' between 0 and 10; got {event.score!r}")


def _items(obj: dict[str, Any], limits: ParseLimits) -> tuple[Item, ...]:
    raw_items = obj.get("items")
    if not isinstance(raw_items, list) or not raw_items:
        raise _Invalid(f"field 'items' must be a non-empty list; got {_show(raw_items)}")
    return tuple(_item(raw, index, limits) for index, raw in enumerate(raw_items))


def _item(raw: Any, index: int, limits: ParseLimits) -> Item:
    where = f"items[{index}]"
    if not isinstance(raw, dict):
        raise _Invalid(f"{where} must be an object; got {_show(raw)}")
    qty = _number(raw, "qty", default=1, where=where)
    if qty <= 0:
        raise _Invalid(f"field '{where}.qty' must be > 0; got {qty:g}")
    if qty > limits.max_item_qty:
        raise _Invalid(f"field '{where}.qty' must be <= {limits.max_item_qty:g}; got {qty:g}")
    category = _opt_str(raw, "category", where=where)
    list_price = _bounded(raw, "list_price", default=None, high=limits.max_item_price, where=where)
    return Item(
        sku=_req_str(raw, "sku", where=where),
        qty=qty,
        price=_bounded(raw, "price", default=0.0, high=limits.max_item_price, where=where),
        category=category.strip("/").lower() if category else None,
        brand=_opt_str(raw, "brand", where=where),
        list_price=list_price,
    )


def _check_time(ts_ms: int, stream_ts_ms: int | None, limits: ParseLimits, now_ms: int | None = None) -> None:
    if ts_ms < limits.earliest_ts_ms:
        raise _Invalid(f"timestamp {ts_ms} is before {format_ts(limits.earliest_ts_ms)[:10]}; "
                       "epoch seconds sent as ms?")
    if ts_ms > limits.latest_ts_ms:
        raise _Invalid(f"timestamp {ts_ms} is after {format_ts(limits.latest_ts_ms)[:10]}; "
                       "microseconds sent as ms?")
    # The future is judged against the wall clock only: a quiet day on a partition is no reason
    # to reject its next event, and an offline replay of history has no "now".
    if now_ms is not None and ts_ms > now_ms + limits.max_future_ms:
        ahead_h = (ts_ms - now_ms) / 3_600_000
        raise _Invalid(f"timestamp {format_ts(ts_ms)} is {ahead_h:.1f} h ahead of the clock")
    if stream_ts_ms is None:
        return
    if ts_ms < stream_ts_ms - limits.max_lateness_ms:
        late_d = (stream_ts_ms - ts_ms) / DAY_MS
        raise _Invalid(f"timestamp {format_ts(ts_ms)} is {late_d:.1f} days behind the stream")


def _field(where: str | None, name: str) -> str:
    return f"{where}.{name}" if where else name


def _req_str(obj: dict[str, Any], name: str, *, where: str | None = None) -> str:
    value = obj.get(name)
    if value is None:
        raise _Invalid(f"missing field '{_field(where, name)}'")
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"field '{_field(where, name)}' must be a non-empty string; got {_show(value)}")
    return value


def _opt_str(obj: dict[str, Any], name: str, *, where: str | None = None) -> str | None:
    value = obj.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return str(value)  # numeric ids from tills are common; keep them as text
    if not isinstance(value, str):
        raise _Invalid(f"field '{_field(where, name)}' must be a string; got {_show(value)}")
    return value


def _number(obj: dict[str, Any], name: str, *, default: Any, where: str | None = None) -> Any:
    value = obj.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(f"field '{_field(where, name)}' must be a number; got {_show(value)}")
    if not math.isfinite(value):
        raise _Invalid(f"field '{_field(where, name)}' must be finite; got {value}")
    return value


def _bounded(obj: dict[str, Any], name: str, *, default: Any, high: float, low: float = 0.0,
             where: str | None = None) -> Any:
    """A finite number within [low, high] (``default`` when absent), as a float."""
    value = _number(obj, name, default=default, where=where)
    if value is None:
        return None
    if value < low:
        raise _Invalid(f"field '{_field(where, name)}' must be >= {low:g}; got {value:g}")
    if value > high:
        raise _Invalid(f"field '{_field(where, name)}' must be <= {high:g}; got {value:g}")
    return float(value)


def _features(obj: dict[str, Any], name: str) -> tuple[float, ...]:
    """Ranking features sent back with feedback: finite, at most 64, each clamped to the ranker's
    range (``learning.FEATURE_BOUND``), so that they cannot blow up its weights."""
    value = obj.get(name) or []
    if not isinstance(value, list) or len(value) > 64 or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
    ):
        raise _Invalid(f"field '{name}' must be a list of at most 64 finite numbers")
    return tuple(clamp_feature(v) for v in value)


def _bool(obj: dict[str, Any], name: str, *, default: bool) -> bool:
    value = obj.get(name, default)
    if not isinstance(value, bool):
        raise _Invalid(f"field '{name}' must be true or false; got {_show(value)}")
    return value


def _show_number(value: int | float) -> str:
    return f"{value:.6g}" if isinstance(value, float) else _show(value)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
