"""Item statistics: decayed popularity and basket co-occurrence with a lift-style score.

Two keyed steps, both keyed by SKU, because a pair score needs both items' counts:

1. `ItemCounts` (per item): decayed popularity (global and per store) and
   how many baskets it was in. For each basket it tells every partner item "I was with
   you, and my basket count is now N" (`PairUpdate`), and itself its own count.
2. `ItemNeighbors` (per item): co-counts with each partner and each partner's count,
   so the complement score c(a,b)/sqrt(c(a)·c(b)) can be computed without reading any
   other key. Counts only grow in forward-decay log space, so taking the max of what
   arrives converges to the same value whatever the order (1 worker or many).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from online_models import decay
from online_models.customer import BasketSignal
from online_models.events import Product

MAX_NEIGHBORS = 64
PRUNED_NEIGHBORS = 48  # prune with slack so pruning (sorting) happens rarely
MAX_STORES = 32
SHRINK = 0.5  # a pair seen once in half a basket's weight should not top the list


@dataclass(frozen=True, slots=True)
class PairUpdate:
    partner: str
    log_weight: float
    partner_log_count: float


@dataclass(frozen=True, slots=True)
class OwnCount:
    log_count: float


@dataclass(frozen=True, slots=True)
class Neighbor:
    sku: str
    score: float
    confidence: float  # share of this item's baskets that also held the neighbour


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
        is_new = signal.new_sku is None or signal.new_sku == self.sku
        pop_weight = popularity.log_weight(signal.weight, signal.ts_ms)
        if is_new:
            self.log_popularity = decay.log_add(self.log_popularity, pop_weight)
            if signal.store_id:
                decay.add(self.store_popularity, signal.store_id, pop_weight)
                decay.prune(self.store_popularity, MAX_STORES)
        pair_weight = cooccurrence.log_weight(signal.weight, signal.ts_ms)
        if is_new:
            self.log_baskets = decay.log_add(self.log_baskets, pair_weight)
        if self.log_baskets is None:  # a cart partner we have never counted: nothing to pair
            return []
        partners = [sku for sku in signal.skus if sku != self.sku]
        if not is_new:
            partners = [signal.new_sku]
        messages: list[tuple[str, PairUpdate | OwnCount]] = [
            (partner, PairUpdate(self.sku, pair_weight, self.log_baskets)) for partner in partners
        ]
        if is_new:
            messages.append((self.sku, OwnCount(self.log_baskets)))
        return messages


@dataclass(slots=True)
class ItemNeighbors:
    sku: str
    log_count: float | None = None
    last_ts_log: float | None = None
    partners: dict[str, list[float]] = field(default_factory=dict)  # sku → [log co-count, log count]

    def __deepcopy__(self, memo: dict) -> ItemNeighbors:
        return ItemNeighbors(self.sku, self.log_count, self.last_ts_log,
                             {sku: list(entry) for sku, entry in self.partners.items()})

    def apply(self, message: PairUpdate | OwnCount) -> None:
        if isinstance(message, OwnCount):
            self.log_count = _max(self.log_count, message.log_count)
            return
        entry = self.partners.get(message.partner)
        if entry is None:
            self.partners[message.partner] = [message.log_weight, message.partner_log_count]
        else:
            entry[0] = decay.log_add(entry[0], message.log_weight)
            entry[1] = max(entry[1], message.partner_log_count)
        self.last_ts_log = _max(self.last_ts_log, message.log_weight)
        if len(self.partners) > MAX_NEIGHBORS:
            keep = sorted(self.partners, key=lambda sku: self.partners[sku][0])[-PRUNED_NEIGHBORS:]
            self.partners = {sku: self.partners[sku] for sku in keep}

    def top(self, n: int) -> list[Neighbor]:
        """Best complements: cosine of basket co-occurrence, shrunk when evidence is thin."""
        if self.log_count is None:
            return []
        ranked = []
        for sku, (log_co, log_partner) in self.partners.items():
            cosine = math.exp(log_co - 0.5 * (self.log_count + log_partner))
            # Co-count relative to one full-weight basket at the newest pair's time.
            evidence = math.exp(log_co - (self.last_ts_log or log_co))
            confidence = min(1.0, math.exp(log_co - self.log_count))
            ranked.append(Neighbor(sku, cosine * evidence / (evidence + SHRINK), confidence))
        ranked.sort(key=lambda neighbor: (-neighbor.score, neighbor.sku))
        return ranked[:n]


@dataclass(slots=True)
class PopularityIndex:
    """Ordered popular SKUs globally, per category and per store, for candidates and cold start."""

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
            bucket = by_category.setdefault(product.category, [])
            if len(bucket) < per_list:
                bucket.append(sku)
        by_store = {
            store: [sku for sku, _ in sorted(scores, key=lambda kv: (-kv[1], kv[0]))][:per_list]
            for store, scores in store_scores.items()
        }
        return cls(ranked[: per_list * 4], by_category, by_store)


def _max(a: float | None, b: float) -> float:
    return b if a is None else max(a, b)
