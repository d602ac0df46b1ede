"""Value tiers, RFM cells and behaviour segments from streaming sketches (pure, event time).

Value is *net* (after returns) and *decayed* on event time with forward decay (see
``decay.py``): a customer's value is carried as ``L = log(Σ w_i·e^{λ t_i})``, the log of
the forward-decayed net spend. All customers' values shrink by the same factor as time
passes, so the order of ``L`` never changes in silence and a sketch over ``L`` never has
to be rewritten; ``value_at(L, now)`` turns it back into money.

``Sketch`` is a sparse fixed-width histogram over a real key (``L``, a day number, a
log-frequency). It is small (a few hundred buckets), mergeable (add the counts), picklable
(two plain dicts), and supports *moves*: a customer whose value changes takes its unit out
of the old bucket and puts it into the new one, so the sketch describes customers' current
values, not the history of updates. Quantiles are exact up to one bucket width (2 % of
value for the default ``VALUE_WIDTH``).

Sharding: the flow keeps one ``PopulationSketch`` per shard key (``shard_of(customer_id)``,
a fixed number of logical shards, so nothing depends on the number of workers) and never a
single global hot key. Readers ``merge`` the shards' sketches; a shard's own sketch is a
uniform hash sample of the population, so it also estimates the global tiers by itself.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from online_models import rules
from online_models.clock import DAY_MS

VALUE_WIDTH = math.log(1.02)  # value buckets: 2 % wide
FREQ_WIDTH = 0.05  # log1p(purchases) buckets
DAY_WIDTH = 1.0  # last-purchase day buckets
NONPOSITIVE = "none"  # the bucket of customers whose net value is zero or negative

DEFAULT_TIERS: tuple[tuple[str, float], ...] = (("platinum", 0.05), ("gold", 0.15))
DEFAULT_REST = "standard"


def shard_of(customer_id: str, shards: int) -> int:
    """The logical shard of a customer (stable across processes, unlike ``hash``)."""
    return zlib.crc32(customer_id.encode()) % shards


def value_at(log_value: float | None, rate_per_ms: float, now_ms: int) -> float:
    """Money value at ``now_ms`` of a forward-decayed log value (``None`` → 0)."""
    if log_value is None:
        return 0.0
    return math.exp(log_value - rate_per_ms * now_ms)


# --------------------------------------------------------------------------- the sketch


@dataclass(slots=True)
class Sketch:
    """A sparse fixed-width histogram with deletions: bucket index → count.

    ``add(key)`` / ``remove(key)`` take a real key; ``None`` (no value, or a non-positive
    value in log space) has a bucket of its own that sorts below every other bucket.
    """

    width: float = VALUE_WIDTH
    counts: dict[int, int] = field(default_factory=dict)
    none: int = 0

    def copy(self) -> Sketch:
        return Sketch(self.width, dict(self.counts), self.none)

    def bucket(self, key: float | None) -> int | None:
        return None if key is None else math.floor(key / self.width)

    def add(self, key: float | None, n: int = 1) -> None:
        self.add_bucket(self.bucket(key), n)

    def remove(self, key: float | None, n: int = 1) -> None:
        self.add_bucket(self.bucket(key), -n)

    def add_bucket(self, bucket: int | None, n: int = 1) -> None:
        # Counts may dip below zero for a moment (one customer's move out of a bucket can arrive
        # before another's move in): keeping them makes moves commute.
        if bucket is None:
            self.none += n
            return
        count = self.counts.get(bucket, 0) + n
        if count:
            self.counts[bucket] = count
        else:
            self.counts.pop(bucket, None)

    def move(self, old_bucket: int | None, new_bucket: int | None, known: bool = True) -> None:
        """One customer's unit from ``old_bucket`` to ``new_bucket`` (``known=False``: new)."""
        if known:
            if old_bucket == new_bucket:
                return
            self.add_bucket(old_bucket, -1)
        self.add_bucket(new_bucket, 1)

    @property
    def total(self) -> int:
        return self.none + sum(self.counts.values())

    def merge(self, other: Sketch) -> Sketch:
        if not math.isclose(self.width, other.width):
            raise ValueError(f"cannot merge sketches of widths {self.width} and {other.width}")
        for bucket, count in other.counts.items():
            self.add_bucket(bucket, count)
        self.none += other.none
        return self

    @classmethod
    def merged(cls, sketches: Iterable[Sketch], width: float | None = None) -> Sketch:
        items = list(sketches)
        out = cls(width=width if width is not None else (items[0].width if items else VALUE_WIDTH))
        for item in items:
            out.merge(item)
        return out

    def midpoint(self, bucket: int) -> float:
        return (bucket + 0.5) * self.width

    def quantile(self, q: float) -> float | None:
        """The key below which a share ``q`` of customers lie (``None``: within the none bucket)."""
        total = self.total
        if total == 0:
            return None
        target = q * total
        seen = float(self.none)
        if target < seen:
            return None
        for bucket in sorted(self.counts):
            count = self.counts[bucket]
            if seen + count >= target:
                inside = (target - seen) / count  # interpolate inside the bucket
                return (bucket + inside) * self.width
            seen += count
        return (max(self.counts) + 1) * self.width

    def cdf(self, key: float | None) -> float:
        """Mid-rank share of customers below ``key`` (ties count half), in [0, 1]."""
        total = self.total
        if total == 0:
            return 0.5
        bucket = self.bucket(key)
        if bucket is None:
            return 0.5 * self.none / total
        below = self.none + sum(c for b, c in self.counts.items() if b < bucket)
        return (below + 0.5 * self.counts.get(bucket, 0)) / total

    def to_dict(self) -> dict[str, Any]:
        return {"width": self.width, "counts": {str(k): v for k, v in self.counts.items()},
                "none": self.none}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sketch:
        return cls(width=float(data["width"]),
                   counts={int(k): int(v) for k, v in data.get("counts", {}).items()},
                   none=int(data.get("none", 0)))


# --------------------------------------------------------------------------- value tiers


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    min_log_value: float | None  # lower boundary (forward log value); None: no lower bound
    customer_share: float
    revenue_share: float


@dataclass(frozen=True, slots=True)
class ValueTiers:
    """Tier boundaries over (forward-decayed, log) net value.

    ``shares`` lists the top tiers from the best down as (name, share); customers below the
    last boundary get ``rest``. With ``basis="customers"`` (default) a share is a share of
    customers (top 5 % → platinum, next 15 % → gold); with ``basis="revenue"`` it is a share
    of net revenue (platinum = the best customers who together make the top 50 %, ...).
    Each tier reports both its share of customers and its share of revenue.
    """

    tiers: tuple[Tier, ...]
    rest: str = DEFAULT_REST

    @classmethod
    def from_sketch(cls, sketch: Sketch, shares: Sequence[tuple[str, float]] = DEFAULT_TIERS,
                    rest: str = DEFAULT_REST, basis: str = "customers") -> ValueTiers:
        if basis not in ("customers", "revenue"):
            raise ValueError(f"basis must be 'customers' or 'revenue'; got {basis!r}")
        if sum(share for _, share in shares) > 1.0 + 1e-9:
            raise ValueError("tier shares add up to more than 1")
        buckets = sorted(sketch.counts, reverse=True)  # best first
        total_n = sketch.total
        top = max((sketch.midpoint(b) for b in buckets), default=0.0)
        money = {b: sketch.counts[b] * math.exp(sketch.midpoint(b) - top) for b in buckets}
        total_money = sum(money.values())
        tiers: list[Tier] = []
        cum_target = 0.0
        index = 0
        n_seen = 0
        money_seen = 0.0
        for name, share in shares:
            cum_target += share
            n_start, money_start = n_seen, money_seen
            boundary = None
            while index < len(buckets):
                b = buckets[index]
                done = (n_seen / total_n if basis == "customers" else
                        money_seen / total_money if total_money else 1.0)
                if done >= cum_target - 1e-12:
                    break
                n_seen += sketch.counts[b]
                money_seen += money[b]
                boundary = b * sketch.width
                index += 1
            if boundary is None:
                boundary = (buckets[index] + 1) * sketch.width if index < len(buckets) else math.inf
            tiers.append(Tier(
                name, boundary,
                (n_seen - n_start) / total_n if total_n else 0.0,
                (money_seen - money_start) / total_money if total_money else 0.0,
            ))
        tiers.append(Tier(rest, None, 1.0 - n_seen / total_n if total_n else 1.0,
                          1.0 - money_seen / total_money if total_money else 1.0))
        return cls(tuple(tiers), rest)

    def tier_of_log(self, log_value: float | None) -> str:
        if log_value is not None:
            for tier in self.tiers:
                if tier.min_log_value is not None and log_value >= tier.min_log_value:
                    return tier.name
        return self.rest

    def tier_of(self, value: float) -> str:
        """Tier of a plain (undecayed or already decayed) value, for a sketch fed with log(value)."""
        return self.tier_of_log(math.log(value) if value > 0 else None)

    def to_dict(self) -> dict[str, Any]:
        return {"rest": self.rest, "tiers": [
            {"name": t.name, "min_log_value": t.min_log_value,
             "customer_share": round(t.customer_share, 6), "revenue_share": round(t.revenue_share, 6)}
            for t in self.tiers]}


# --------------------------------------------------------------------------- RFM


def sketch_keys(log_value: float | None, last_purchase_ts: int | None,
                purchases: int) -> tuple[int | None, int | None, int | None]:
    """A customer's buckets in the value, recency and frequency sketches."""
    return (
        None if log_value is None else math.floor(log_value / VALUE_WIDTH),
        None if last_purchase_ts is None else math.floor(last_purchase_ts / DAY_MS / DAY_WIDTH),
        None if purchases <= 0 else math.floor(math.log1p(purchases) / FREQ_WIDTH),
    )


@dataclass(slots=True)
class PopulationSketch:
    """The per-shard sketches behind tiers and RFM: value, recency (last purchase day), frequency.

    Counts per bucket only: each update names the customer's old and new buckets
    (``sketch_keys``, remembered with the customer), so the sketch never grows with the
    number of customers and moves commute (any order of updates gives the same counts).
    """

    value: Sketch = field(default_factory=lambda: Sketch(VALUE_WIDTH))
    recency: Sketch = field(default_factory=lambda: Sketch(DAY_WIDTH))
    frequency: Sketch = field(default_factory=lambda: Sketch(FREQ_WIDTH))

    def move(self, old: tuple[int | None, int | None, int | None] | None,
             new: tuple[int | None, int | None, int | None]) -> None:
        for sketch, o, n in zip((self.value, self.recency, self.frequency), old or (None,) * 3, new):
            sketch.move(o, n, known=old is not None)

    def remove(self, old: tuple[int | None, int | None, int | None]) -> None:
        """One customer out of the sketches, from the buckets they were last counted in."""
        for sketch, bucket in zip((self.value, self.recency, self.frequency), old):
            sketch.add_bucket(bucket, -1)

    def copy(self) -> PopulationSketch:
        return PopulationSketch(self.value.copy(), self.recency.copy(), self.frequency.copy())

    def merge(self, other: PopulationSketch) -> PopulationSketch:
        """Fold another shard's sketches in (shards hold disjoint customers)."""
        self.value.merge(other.value)
        self.recency.merge(other.recency)
        self.frequency.merge(other.frequency)
        return self

    @classmethod
    def merged(cls, shards: Iterable[PopulationSketch]) -> PopulationSketch:
        out = cls()
        for shard in shards:
            out.merge(shard)
        return out

    def tiers(self, shares: Sequence[tuple[str, float]] = DEFAULT_TIERS, rest: str = DEFAULT_REST,
              basis: str = "customers") -> ValueTiers:
        return ValueTiers.from_sketch(self.value, shares, rest, basis)

    def rfm(self, log_value: float | None, last_purchase_ts: int | None, purchases: int) -> str:
        """RFM cell "R F M", each a quintile score 1–5 (5 = most recent / frequent / valuable)."""
        return rfm_cell(self, log_value, last_purchase_ts, purchases)

    def to_dict(self) -> dict[str, Any]:
        """The sketches (what readers merge)."""
        return {"value": self.value.to_dict(), "recency": self.recency.to_dict(),
                "frequency": self.frequency.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PopulationSketch:
        return cls(Sketch.from_dict(data["value"]), Sketch.from_dict(data["recency"]),
                   Sketch.from_dict(data["frequency"]))


def quintile(share_below: float) -> int:
    return min(5, max(1, 1 + int(share_below * 5)))


def rfm_cell(sketches: PopulationSketch, log_value: float | None, last_purchase_ts: int | None,
             purchases: int) -> str:
    r = quintile(sketches.recency.cdf(None if last_purchase_ts is None else last_purchase_ts / DAY_MS))
    f = quintile(sketches.frequency.cdf(math.log1p(purchases) if purchases > 0 else None))
    m = quintile(sketches.value.cdf(log_value))
    return f"{r}{f}{m}"


# --------------------------------------------------------------------------- segments

# The retail rules (new, lapsed, returner) and their thresholds live in ``rules``; only the
# channel-mix segments are defined here.
BROWSER_MIN_DAYS = 3
_T = rules.DEFAULT

SEGMENT_RULES: dict[str, str] = {
    "prospect": "no purchase yet",
    "new": (f"first purchase less than {_T.new_customer_days:g} days ago, and at most "
            f"{_T.new_customer_max_orders} orders so far"),
    "loyal": (f"bought on at least {_T.loyal_min_purchases} days over at least {_T.loyal_min_tenure_days:g} "
              "days, and still buying to their rhythm"),
    "lapsed": (f"no purchase for more than max({_T.lapsed_min_days:g} days, {_T.lapsed_gaps:g}× their "
               "usual gap between purchases)"),
    "lapsing": (f"no purchase for more than max({_T.lapsing_min_days:g} days, {_T.lapsing_gaps:g}× their "
                "usual gap between purchases), not yet lapsed"),
    "returner": (f"returned {_T.returner_rate:.0%} or more of the value bought, over at least "
                 f"{_T.returner_min_purchases} purchases"),
    "omnichannel": "bought both in store and on the web / app",
    "web_browses_store_buys": (f"buys only in store but browsed the web / app on at least "
                               f"{BROWSER_MIN_DAYS} days"),
    "store_only": "buys only in store, (almost) no web / app activity",
    "web_only": "buys only on the web / app, never visited a store",
}
# The primary segment is the first that applies, in this order.
# "lapsing" comes last: every customer of the retention list is lapsing, and their channel habit
# says more there; it is in ``segments`` for offers and the profile.
SEGMENT_ORDER = ("prospect", "new", "lapsed", "returner", "loyal", "omnichannel", "web_browses_store_buys",
                 "store_only", "web_only", "lapsing")


def segments(rhythm: Any, now_ms: int) -> list[str]:
    """Every behaviour segment whose rule (``SEGMENT_RULES``) holds for a ``churn.Rhythm``."""
    out: list[str] = []
    if rhythm.purchases == 0:
        return ["prospect"]
    tenure = (now_ms - rhythm.first_purchase_ts) / DAY_MS if rhythm.first_purchase_ts is not None else 0.0
    orders = rhythm.web_purchases + rhythm.store_purchases  # orders, where rhythm.purchases counts days
    if rhythm.first_purchase_ts is not None and rules.is_new_customer(tenure, orders):
        out.append("new")
    days_since = (now_ms - rhythm.last_purchase_ts) / DAY_MS
    usual = rules.usual_gap_days(rhythm.gap_n, rhythm.gap_mean)
    stage = rules.lapse_stage(days_since, usual, rhythm.purchases)
    if stage is not None:  # "lapsed" (gone), or "lapsing" (slipping away: the retention list's customers)
        out.append(stage)
    returner = rules.returns_a_lot(rhythm.return_rate(), rhythm.purchases)
    if returner:
        out.append("returner")
    if not returner and rules.is_loyal(rhythm.purchases, tenure, days_since, usual):
        out.append("loyal")
    store, web = rhythm.store_purchases, rhythm.web_purchases
    if store and web:
        out.append("omnichannel")
    elif store and not web:
        out.append("web_browses_store_buys" if rhythm.web_days >= BROWSER_MIN_DAYS else "store_only")
    elif web and not store:
        if rhythm.store_visit_days == 0:
            out.append("web_only")
        else:
            out.append("omnichannel")  # buys online, shows up in store: counts as omnichannel
    return out


def segment(rhythm: Any, now_ms: int) -> str:
    """The primary segment: the first of ``SEGMENT_ORDER`` that applies."""
    found = segments(rhythm, now_ms)
    for name in SEGMENT_ORDER:
        if name in found:
            return name
    return "unknown"
