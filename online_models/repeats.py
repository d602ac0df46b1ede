"""Repeat purchase, learned from the stream: how often each item is bought again, and after how long.

Nothing here reads a category or SKU name. What comes back after a purchase (coffee, nappies)
and what stays out (a belt, a phone) follows from what customers actually did:

- per customer and item, ``CustomerState.bought`` holds ``[orders, last ts, first ts]``;
- each change of such a record tells the item's ``ItemRepeats`` (a keyed step, by SKU) what the
  customer now contributes, as integer counts in 30-day buckets of event time:
  one *buyer* (at the first purchase), one *repeater* if they bought it in 2+ orders, their
  *repeats* (orders − 1) and the log of their mean gap in milli-units (at the last purchase);
- a reader (the API's refresh, the evaluators) builds a ``RepeatModel`` from the items' buckets
  and the catalog: decayed sums as of ``now`` per item and per category at every level, each
  level shrunk towards its parent (global → top category → … → item), so a new item inherits its
  category's habit until its own buyers say otherwise.

Integer counts in fixed buckets make the stored state a function of the customers' final
records alone: retracting the old contribution and adding the new one commutes, so 1 worker,
2 processes, any batching and replays after kill -9 write the same bytes. Decay is applied only
when the model is read.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from online_models.clock import DAY_MS

BUCKET_MS = 30 * DAY_MS
KEPT_BUCKETS = 24  # two years of buckets behind the newest; older ones no longer count
GAP_SCALE = 1000  # log-gaps are summed as integers in milli-units of log(1 + days)
PRIOR_BUYERS = 5.0  # how many buyers' worth of evidence the parent level's habit is worth
# The pseudo-item whose *buyers* count the shoppers who bought anything (filed by the bucket of
# their first purchase, like an item's buyers): no SKU is empty (the parser refuses one).
SHOPPERS = ""

# Field order of a bucket's counts.
BUYERS, REPEATERS, REPEATS, LOG_GAPS = range(4)
Counts = tuple[int, int, int, int]


def bucket_of(ts_ms: int) -> int:
    return int(ts_ms) // BUCKET_MS


def contribution(record: Sequence[float] | None) -> dict[int, Counts]:
    """What one customer's record of one item adds to the item's buckets.

    ``record`` is ``[orders, last ts, first ts]`` (an older 2-field record has first = last).

    >>> contribution([1, 5 * DAY_MS, 5 * DAY_MS])
    {0: (1, 0, 0, 0)}
    >>> contribution([3, 40 * DAY_MS, 20 * DAY_MS])  # a buyer on day 20; two gaps of 10 days (log 11)
    {0: (1, 0, 0, 0), 1: (0, 1, 2, 4796)}
    """
    if record is None:
        return {}
    orders, last = int(record[0]), int(record[1])
    first = int(record[2]) if len(record) > 2 else last
    out: dict[int, list[int]] = {bucket_of(first): [1, 0, 0, 0]}
    if orders >= 2:
        repeats = orders - 1
        mean_gap_days = max(0.0, (last - first) / DAY_MS / repeats)
        at = out.setdefault(bucket_of(last), [0, 0, 0, 0])
        at[REPEATERS] += 1
        at[REPEATS] += repeats
        at[LOG_GAPS] += round(GAP_SCALE * repeats * math.log1p(mean_gap_days))
    return {bucket: tuple(counts) for bucket, counts in out.items()}  # type: ignore[misc]


def change(before: Sequence[float] | None, after: Sequence[float] | None) -> tuple[tuple[int, Counts], ...]:
    """The bucket deltas that turn ``before``'s contribution into ``after``'s (empty if equal)."""
    old, new = contribution(before), contribution(after)
    deltas = []
    for bucket in sorted(old.keys() | new.keys()):
        a, b = old.get(bucket, (0, 0, 0, 0)), new.get(bucket, (0, 0, 0, 0))
        delta = tuple(y - x for x, y in zip(a, b, strict=True))
        if any(delta):
            deltas.append((bucket, delta))
    return tuple(deltas)  # type: ignore[return-value]


def shoppers_change(first_before: int | None, first_after: int | None) -> tuple[tuple[int, Counts], ...]:
    """The deltas of ``SHOPPERS`` when a customer's first purchase moves from ``first_before``
    (None: had not bought) to ``first_after``: one buyer, filed by the bucket of that purchase.

    >>> shoppers_change(None, 5 * DAY_MS), shoppers_change(40 * DAY_MS, 5 * DAY_MS)
    (((0, (1, 0, 0, 0)),), ((0, (1, 0, 0, 0)), (1, (-1, 0, 0, 0))))
    """
    def record(ts: int | None) -> list[int] | None:
        return None if ts is None else [1, ts, ts]
    return change(record(first_before), record(first_after))


def changes(before: Mapping[str, Sequence[float]], after: Mapping[str, Sequence[float]]
            ) -> list[tuple[str, tuple[tuple[int, Counts], ...]]]:
    """Per SKU whose record changed, its bucket deltas (SKUs sorted: a stable order of emits).
    A record that left ``after`` (evicted from the bounded history) keeps its contribution."""
    out = []
    for sku in sorted(after):
        previous = before.get(sku)
        if previous is not None and list(previous) == list(after[sku]):
            continue
        deltas = change(previous, after[sku])
        if deltas:
            out.append((sku, deltas))
    return out


@dataclass(slots=True)
class ItemRepeats:
    """One item's repeat-purchase counts by 30-day bucket (the newest ``KEPT_BUCKETS`` + 1).

    A delta for a bucket already behind the window is ignored, and buckets that fall behind are
    dropped, so the final state depends only on the newest bucket ever seen: order-free."""

    sku: str
    buckets: dict[int, list[int]] = field(default_factory=dict)
    newest: int | None = None

    def __deepcopy__(self, memo: dict) -> ItemRepeats:
        return ItemRepeats(self.sku, {b: list(c) for b, c in self.buckets.items()}, self.newest)

    def apply(self, deltas: Iterable[tuple[int, Sequence[int]]]) -> None:
        for bucket, delta in deltas:
            self.newest = bucket if self.newest is None else max(self.newest, bucket)
            if bucket < self.newest - KEPT_BUCKETS:
                continue
            counts = self.buckets.setdefault(bucket, [0, 0, 0, 0])
            for index, value in enumerate(delta):
                counts[index] += value
            if not any(counts):
                del self.buckets[bucket]
        floor = (self.newest or 0) - KEPT_BUCKETS
        for bucket in [b for b in self.buckets if b < floor]:
            del self.buckets[bucket]

    def newest_counted(self) -> int | None:
        """The newest bucket that holds counts: what is published, not ``newest`` (the newest a
        delta ever named). A contribution added and then retracted is seen in some orders of
        reading and not in others (two hosts wrote 683 against 684)."""
        return max(self.buckets, default=None)

    def to_dict(self) -> dict:
        return {"newest": self.newest_counted(), "buckets": {str(b): c for b, c in sorted(self.buckets.items())}}

    @classmethod
    def from_dict(cls, sku: str, data: Mapping) -> ItemRepeats:
        return cls(sku, {int(b): list(c) for b, c in data.get("buckets", {}).items()}, data.get("newest"))


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class RepeatView:
    """How an item is rebought, as of the model's ``now``.

    ``share``: the share of its buyers who bought it in two or more orders (shrunk towards its
    category's); ``cycle_days``: their usual gap between two purchases (None: never rebought,
    nor anything above it); ``buyers``: the decayed number of buyers behind the item's own figure.
    """

    share: float
    cycle_days: float | None
    buyers: float


NOTHING_KNOWN = RepeatView(0.0, None, 0.0)


@dataclass(slots=True)
class _Level:
    buyers: float = 0.0
    repeaters: float = 0.0
    repeats: float = 0.0
    log_gaps: float = 0.0

    def add(self, other: _Level) -> None:
        self.buyers += other.buyers
        self.repeaters += other.repeaters
        self.repeats += other.repeats
        self.log_gaps += other.log_gaps


@dataclass(slots=True)
class RepeatModel:
    """Repeat-purchase habits of items and categories, as of one ``now`` (see the module doc)."""

    views: dict[str, RepeatView] = field(default_factory=dict)  # sku → view
    categories: dict[str, RepeatView] = field(default_factory=dict)  # every level → view
    overall: RepeatView = NOTHING_KNOWN
    # The share of shoppers who bought the store's ``BAR_RANK``-th most bought item: what a
    # popular suggestion achieves, the bar a bought item's rebuy share must reach to come back
    # (``rules.may_recommend_again``). None until shoppers are counted.
    bar: float | None = None

    @classmethod
    def build(cls, items: Mapping[str, ItemRepeats], category_of: Mapping[str, str],
              half_life_days: float, now_ms: int | None = None) -> RepeatModel:
        """``category_of``: SKU → category path ("a/b/c"); an item without one sits at the top.
        Decay runs to ``now_ms``, by default the newest bucket in the data: a replay of last
        year's history is read as of its own end, not as a year of silence."""
        newest = max((item.newest for item in items.values() if item.newest is not None), default=0)
        now_bucket = bucket_of(now_ms) if now_ms is not None else newest
        rate = math.log(2) / max(half_life_days / (BUCKET_MS / DAY_MS), 1e-9)
        own: dict[str, _Level] = {sku: _decayed(item, now_bucket, rate) for sku, item in items.items()}
        shoppers = own.pop(SHOPPERS, _Level()).buyers
        levels: dict[str, _Level] = {}
        overall = _Level()
        for sku, level in own.items():
            overall.add(level)
            for prefix in _prefixes(category_of.get(sku, "")):
                levels.setdefault(prefix, _Level()).add(level)
        top = _shrunk(overall, None)
        categories: dict[str, RepeatView] = {}
        for prefix in sorted(levels, key=lambda p: p.count("/")):  # parents before children
            parent = categories.get(prefix.rsplit("/", 1)[0]) if "/" in prefix else top
            categories[prefix] = _shrunk(levels[prefix], parent or top)
        views = {}
        for sku, level in own.items():
            category = category_of.get(sku, "")
            views[sku] = _shrunk(level, categories.get(category, top) if category else top)
        return cls(views, categories, top, _popular_bar(own, shoppers))

    def view(self, sku: str, category: str = "") -> RepeatView:
        """The item's habit; an item nobody bought yet gets its category's (or the overall one)."""
        found = self.views.get(sku)
        if found is not None:
            return found
        return self.categories.get(category, self.overall) if category else self.overall


BAR_RANK = 10  # a recommendation list's length: the popular suggestions a repeat must beat


def _popular_bar(own: Mapping[str, _Level], shoppers: float) -> float | None:
    """The share of shoppers who bought the ``BAR_RANK``-th most bought item (None: no shoppers
    counted yet, or fewer items). Compared with an item's rebuy share, both are "bought (again)
    at least once" over the same decayed window: an item whose buyers rebuy it less often than
    shoppers buy a popular item is better left out once bought (a belt, a sofa)."""
    if shoppers <= 0 or len(own) < BAR_RANK:
        return None
    buyers = heapq.nlargest(BAR_RANK, (level.buyers for level in own.values()))[-1]
    return min(1.0, max(0.0, buyers / shoppers))


def _decayed(item: ItemRepeats, now_bucket: int, rate: float) -> _Level:
    level = _Level()
    for bucket, counts in item.buckets.items():
        weight = math.exp(-rate * max(0, now_bucket - bucket))
        level.buyers += weight * counts[BUYERS]
        level.repeaters += weight * counts[REPEATERS]
        level.repeats += weight * counts[REPEATS]
        level.log_gaps += weight * counts[LOG_GAPS] / GAP_SCALE
    return level


def _shrunk(level: _Level, parent: RepeatView | None) -> RepeatView:
    """The level's own figures, pulled towards its parent's by ``PRIOR_BUYERS`` buyers' worth."""
    buyers = max(level.buyers, 0.0)
    prior_share = parent.share if parent else 0.0
    share = (max(level.repeaters, 0.0) + PRIOR_BUYERS * prior_share) / (buyers + PRIOR_BUYERS) if parent else (
        level.repeaters / buyers if buyers > 0 else 0.0)
    repeats = max(level.repeats, 0.0)
    parent_cycle = parent.cycle_days if parent else None
    if parent_cycle is not None:
        log_cycle = (level.log_gaps + PRIOR_BUYERS * math.log1p(parent_cycle)) / (repeats + PRIOR_BUYERS)
        cycle: float | None = math.expm1(log_cycle)
    elif repeats > 0:
        cycle = math.expm1(level.log_gaps / repeats)
    else:
        cycle = None
    return RepeatView(min(1.0, max(0.0, share)), cycle, buyers)


def _prefixes(category: str) -> list[str]:
    """'a/b/c' → ['a', 'a/b', 'a/b/c']."""
    parts = [part for part in category.split("/") if part] if category else []
    return ["/".join(parts[: depth + 1]) for depth in range(len(parts))]


def days_since(record: Sequence[float] | None, now_ms: int) -> float | None:
    """Days since the customer last bought the item (None: never)."""
    if record is None:
        return None
    return max(0.0, (now_ms - int(record[1])) / DAY_MS)


def own_cycle_days(record: Sequence[float]) -> float | None:
    """The customer's own mean gap between orders of the item (None: bought in one order)."""
    orders, last = int(record[0]), int(record[1])
    first = int(record[2]) if len(record) > 2 else last
    return (last - first) / DAY_MS / (orders - 1) if orders >= 2 else None
