"""Item statistics: decayed popularity and basket co-occurrence with a lift-style score.

Two keyed steps, both keyed by SKU, because a pair score needs both items' counts:

1. `ItemCounts` (per item): decayed popularity (global and per store) and
   how many baskets it was in (published, so readers have every item's count). For each
   basket it tells every partner item "I was with you" (`PairUpdate`), and itself its own
   count.
2. `ItemNeighbors` (per item): co-counts with each partner. The complement score
   c(a,b)/sqrt(c(a)·c(b)) is computed where it is read (`complements`), with the partners'
   published counts: sums of the same baskets, so the stored bytes do not depend on the
   order in which baskets arrived (1 worker or many).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from online_models import decay, rules
from online_models.customer import BasketSignal
from online_models.events import Product
from online_models.pickling import pickled_by_fields

MAX_NEIGHBORS = 64
PRUNED_NEIGHBORS = 48  # prune with slack so pruning (sorting) happens rarely
MAX_STORES = 32
SHRINK = 0.5  # a pair seen once in half a basket's weight should not top the list


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class PairUpdate:
    partner: str
    log_weight: float


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class OwnCount:
    log_count: float


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Neighbor:
    sku: str
    score: float
    confidence: float  # share of this item's baskets that also held the neighbour
    # how many baskets (decayed, in full-weight baskets at the newest pair's time) held both: a
    # share of 100 % from one basket is no evidence (``rules.enough_baskets``)
    together_baskets: float = math.inf


@dataclass(slots=True)
class ItemCounts:
    sku: str
    log_baskets: float | None = None
    log_popularity: float | None = None
    store_popularity: dict[str, float] = field(default_factory=dict)

    def __deepcopy__(self, memo: dict) -> ItemCounts:
        return ItemCounts(self.sku, self.log_baskets, self.log_popularity, dict(self.store_popularity))

    def apply_signal(
        self, signal: BasketSignal, popularity: decay.Decay, cooccurrence: decay.Decay
    ) -> list[tuple[str, PairUpdate | OwnCount]]:
        """Count one basket this item is in; return the messages for `ItemNeighbors`."""
        pair_weight = cooccurrence.log_weight(signal.weight, signal.ts_ms)
        messages: list[tuple[str, PairUpdate | OwnCount]] = [
            (partner, PairUpdate(self.sku, pair_weight)) for partner in signal.skus if partner != self.sku
        ]
        if signal.counts:
            pop_weight = popularity.log_weight(signal.weight, signal.ts_ms)
            self.log_popularity = decay.log_add(self.log_popularity, pop_weight)
            if signal.store_id:
                decay.add(self.store_popularity, signal.store_id, pop_weight)
                decay.prune(self.store_popularity, MAX_STORES)
            self.log_baskets = decay.log_add(self.log_baskets, pair_weight)
            messages.append((self.sku, OwnCount(self.log_baskets)))
        return messages


@dataclass(slots=True)
class ItemNeighbors:
    """Co-counts of one item with its partners, and its own basket count.

    The complement score also needs each partner's own count; that is read where the score is
    computed (``complements``, with the counts ``ItemCounts`` publish), never copied in here:
    a copy would be the partner's count as of whichever basket happened to arrive last, and
    so depend on the order in which baskets were read."""

    sku: str
    log_count: float | None = None
    last_ts_log: float | None = None
    partners: dict[str, float] = field(default_factory=dict)  # sku → log co-count

    def __deepcopy__(self, memo: dict) -> ItemNeighbors:
        return ItemNeighbors(self.sku, self.log_count, self.last_ts_log, dict(self.partners))

    def apply(self, message: PairUpdate | OwnCount) -> None:
        if isinstance(message, OwnCount):
            self.log_count = _max(self.log_count, message.log_count)
            return
        decay.add(self.partners, message.partner, message.log_weight)
        self.last_ts_log = _max(self.last_ts_log, message.log_weight)
        if len(self.partners) > MAX_NEIGHBORS:
            self.partners = dict(self.candidates(PRUNED_NEIGHBORS))

    def candidates(self, n: int) -> list[tuple[str, float]]:
        """The ``n`` partners seen most often with this item (by decayed co-count)."""
        return sorted(self.partners.items(), key=lambda kv: (-round(kv[1], 9), kv[0]))[:n]  # last bits: order

    def top(self, n: int, partner_counts: Mapping[str, float]) -> list[Neighbor]:
        return complements(self.log_count, self.last_ts_log, self.candidates(len(self.partners)),
                           partner_counts)[:n]


def complements(log_count: float | None, last_ts_log: float | None,
                partners: Iterable[tuple[str, float]], partner_counts: Mapping[str, float]) -> list[Neighbor]:
    """Best complements: cosine of basket co-occurrence, shrunk when evidence is thin.

    ``partner_counts``: each partner's own decayed basket count (log), as ``ItemCounts`` keep it."""
    if log_count is None:
        return []
    ranked = []
    for sku, log_co in partners:
        log_partner = partner_counts.get(sku)
        if log_partner is None:
            continue
        cosine = math.exp(log_co - 0.5 * (log_count + log_partner))
        # Co-count relative to one full-weight basket at the newest pair's time.
        evidence = math.exp(log_co - (last_ts_log or log_co))
        confidence = min(1.0, math.exp(log_co - log_count))
        ranked.append(Neighbor(sku, cosine * evidence / (evidence + SHRINK), confidence, evidence))
    ranked.sort(key=lambda neighbor: (-neighbor.score, neighbor.sku))
    return ranked


@dataclass(slots=True)
class PopularityIndex:
    """Ordered popular SKUs globally, per category (every leaf and every line: a leaf's parent)
    and per store, for candidates and cold start."""

    global_top: list[str] = field(default_factory=list)
    by_category: dict[str, list[str]] = field(default_factory=dict)
    by_store: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        global_scores: Iterable[tuple[str, float]],
        store_scores: Mapping[str, Iterable[tuple[str, float]]],
        catalog: Mapping[str, Product],
        per_list: int = 50,
    ) -> PopularityIndex:
        ranked = [sku for sku, _ in sorted(global_scores, key=lambda kv: (-kv[1], kv[0]))]
        by_category: dict[str, list[str]] = {}
        for sku in ranked:
            product = catalog.get(sku)
            if product is None:
                continue
            # the leaf, and its line (the parent, ``rules.line_of``): the till fills from the basket's line
            line = rules.line_of(product.category)
            for key in (product.category, line) if line != product.category else (product.category,):
                bucket = by_category.setdefault(key, [])
                if len(bucket) < per_list:
                    bucket.append(sku)
        by_store = {
            store: [sku for sku, _ in sorted(scores, key=lambda kv: (-kv[1], kv[0]))][:per_list]
            for store, scores in store_scores.items()
        }
        return cls(ranked[: per_list * 4], by_category, by_store)


def _max(a: float | None, b: float) -> float:
    return b if a is None else max(a, b)
