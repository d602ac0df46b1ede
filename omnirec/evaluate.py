"""Offline quality evaluation: replay a JSONL file through the flow's domain code, in process.

    omnirec evaluate FILE.jsonl [--catalog F] [--k 10] [--json] [--protocol P]
    python -m omnirec.evaluate FILE.jsonl ...

`Replayer` runs the flow's own engine in process (``online_models.engine.Runner``: the same
steps, routing, parser and settings, without Kafka, bytewax or Redis), keeps from its writes
what the API reads of Redis, and answers ``recommend`` the way the API does
(``ranking.lists_to_read`` → neighbour lists decoded from their stored bytes with the published basket
counts → ``ranking.recommend`` with a ``PopularityIndex`` built from the popularity lists). The index is rebuilt once per day of event time (and every
``REBUILD_EVERY_PURCHASES`` purchases), not per event, like the API's periodic refresh.

Protocols (the same evaluation points for omnirec and the baselines):

- ``prequential``: at each purchase of a customer with an earlier purchase, first
  recommend (context "home", the event's store) and score against the distinct SKUs
  bought, then learn the event. Every basket with 2+ distinct SKUs also scores
  cross-sell: the last SKU is hidden, the rest is the cart; a hit if the hidden SKU is
  in the top k.
- ``leave-last-basket-out`` (alias ``leave-last-out``): for customers with 2+ baskets, learn
  everything but each one's last basket (all customers' history in time order), then predict
  those baskets.

Filters (Romanov et al., RecSys 2023), applied to the input before either protocol, so the
engine and every baseline see the same filtered stream (`Filters`): ``--min-item-count N``
keeps items bought in at least N baskets (counted on the whole file) and drops baskets left
empty; then ``--min-baskets N`` keeps customers with at least N baskets; then
``--drop-noise-users`` drops customers whose purchase lines per day of tenure exceed the mean
+ 2σ, and customers whose purchases all fall on one day. The JSON reports what was applied.

Metrics: HR@k, Recall@k (hits ÷ the basket's distinct SKUs) and NDCG@k, each also split into
the basket's *repeat* items (bought by the customer before) and *explore* items: each part is
scored as its own basket over the evaluation points where it is not empty (``n_evaluated``),
and ``recall_share@k`` is the part's hits ÷ the whole basket, over all points, so that the
two shares add up to Recall@k.

Baselines: ``popularity`` (all-time basket counts), ``decayed_popularity`` (the same with
the flow's half-life), ``top_personal`` (the customer's own most frequently bought items,
nothing else), ``gp_topfreq`` (those, then global popularity) and, for
leave-last-basket-out, ``tifu_knn`` (a batch TIFU-KNN fitted on the training baskets:
`omnirec.tifu_knn`). Prequential leaves TIFU-KNN out (it would need a neighbour search over
all customers at every evaluation point) and says so under ``baselines_omitted``. For
cross-sell each excludes the cart's items.

A SKU with no catalog product gets one synthesised from the event item's category (or
"unknown"), so real data without a catalog works (the customer state never reads the
catalog, as in the flow; ranking does).
"""

from __future__ import annotations

import argparse
import heapq
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omnirec import replay
from omnirec.report import print_json_last
from omnirec.settings import Settings
from online_models import decay, keys, ranking
from online_models.answers import (  # the API's read sizes: the same index as it builds
    GLOBAL_LIST,
    STORE_LIST,
)
from online_models.clock import DAY_MS
from online_models.customer import CustomerState
from online_models.engine import Engine, Runner, route
from online_models.events import Event, Product
from online_models.identity import AliasState
from online_models.items import ItemCounts, ItemNeighbors, Neighbor, PopularityIndex
from online_models.messages import DeadLetter, HashPut, Put, Raw, SAdd, ZAdd
from online_models.repeats import ItemRepeats, RepeatModel

PROTOCOLS = ("prequential", "leave-last-basket-out")
PROTOCOL_ALIASES = {"leave-last-out": "leave-last-basket-out"}  # the name before the issue's
BASELINES = ("popularity", "decayed_popularity", "top_personal", "gp_topfreq", "tifu_knn")
STREAMING_BASELINES = BASELINES[:-1]  # computed at every evaluation point of either protocol
TIFU_PREQUENTIAL_NOTE = ("omitted for prequential: a batch TIFU-KNN would need a neighbour search "
                         "over all customers at every evaluation point; see leave-last-basket-out")
PARTS = ("repeat", "explore")  # a basket's items bought by the customer before, and the others
REBUILD_EVERY_PURCHASES = 5000
BASELINE_LIST = 300  # popular items kept per baseline list (k + a cart's size is enough)

Key = tuple[str, str]  # ("c", customer_id) or ("a", alias_id): whose profile an event updates


# ----------------------------------------------------------------------------- reading


def read_records(paths: Iterable[str | Path], settings: Settings, progress=None) -> Iterator[Raw]:
    """Every line of JSONL files as the record the flow would read: on the topic
    `omnirec replay` would produce it to (products to the catalog, events by channel), one
    partition per topic, keyed as producers key it."""
    def lines() -> Iterator[bytes]:
        for path in paths:
            with open(path, "rb") as f:
                for raw in f:
                    if progress is not None:
                        progress(len(raw))
                    if raw.strip():
                        yield raw.strip()

    return replay.as_records(lines(), settings)


# ----------------------------------------------------------------------------- the engine


class Replayer:
    """The engine run in process (``online_models.engine.Runner``: the flow's own steps and
    routing), the part of Redis the API reads, kept from the engine's writes, and the API's
    `recommend` over it."""

    def __init__(
        self,
        settings: Settings | None = None,
        rules: ranking.Rules | None = None,
        weights: ranking.Weights | None = None,
        rebuild_every_purchases: int = REBUILD_EVERY_PURCHASES,
    ) -> None:
        self.settings = settings or Settings()
        self.rules = rules or ranking.Rules(replenishable=tuple(self.settings.replenishable_categories))
        self.repeats = RepeatModel()  # as the API's refresh builds it, from the items' repeat counts
        self._repeat_states: dict[str, ItemRepeats] = {}
        self.weights = weights  # None: each context's fitted blend (ranking.FITTED)
        self.every_signal = False  # ranking.recommend's: True where the weights are being fitted
        self.engine = Engine(self.settings.engine())
        self.scheme = self.engine.scheme
        self.runner = Runner(self.engine, on_output=self._written)
        self.products: dict[str, Product] = {}  # the catalog + synthesised products: what ranking sees
        self.real_products: set[str] = set()
        self.zsets: dict[str, dict[str, float]] = {}  # popularity and basket counts, as written
        self.sets: dict[str, set[str]] = {}
        self._neighbor_states: dict[str, ItemNeighbors] = {}  # Redis key → the state last written
        self.index = PopularityIndex()
        self.rebuild_every_purchases = rebuild_every_purchases
        self._top: dict[str, list[Neighbor]] = {}  # decoded neighbour lists, dropped on change
        self._built_day: int | None = None
        self._purchases_since_build = 0
        self._index_stale = True

    # --- learning: the flow's steps -----------------------------------------------------------

    def parse(self, raw: Raw) -> list:
        """The flow's parse step (with its per-partition watermark); feed the result to `learn`."""
        return self.runner.apply("parse", raw)

    def learn(self, messages: Iterable) -> None:
        for message in messages:
            if isinstance(message, Product):
                self.add_product(message)
            elif isinstance(message, Event):
                self._synthesise(message)
                if message.type == "purchase":
                    self._purchases_since_build += 1
            self.runner.feed(message)

    def apply(self, event: Event) -> None:
        """Learn one already parsed event (tests, and callers without raw bytes)."""
        self.learn([event])

    def add_product(self, product: Product) -> None:
        """A catalog product: the API reads it for ranking (the flow's state never does)."""
        self.products[product.sku] = product
        self.real_products.add(product.sku)
        self._index_stale = True

    def _written(self, write) -> None:
        """Keep what the API reads of Redis: popularity lists, basket counts, neighbour blobs."""
        if isinstance(write, ZAdd):
            self.zsets.setdefault(write.key, {})[write.member] = write.score
        elif isinstance(write, SAdd):
            self.sets.setdefault(write.key, set()).add(write.member)
        elif isinstance(write, Put) and write.encode is keys.encode_neighbors:
            self._neighbor_states[write.key] = write.value
            self._top.pop(write.key, None)
        elif isinstance(write, HashPut) and write.encode is keys.encode_repeats:
            self._repeat_states[write.field] = write.value

    def _synthesise(self, event: Event) -> None:
        """A SKU without a catalog product gets one from the item's category, for ranking only."""
        for item in event.items:
            if item.sku not in self.products:
                self.products[item.sku] = Product(
                    item.sku, item.sku, item.category or "unknown", item.brand or "", item.price)
        if event.sku and event.sku not in self.products:
            self.products[event.sku] = Product(event.sku, event.sku, "unknown")

    # --- reading (api/store.py) --------------------------------------------------------------

    @property
    def aliases(self) -> dict[str, AliasState]:
        return self.runner.states["aliases"]

    @property
    def customers(self) -> dict[str, CustomerState]:
        return self.runner.states["customers"]

    @property
    def item_counts(self) -> dict[str, ItemCounts]:
        return self.runner.states["item_counts"]

    def key_for(self, event: Event) -> Key:
        """Whose profile this event updates: the customer, a stitched alias's customer, or the alias."""
        alias_id = route(event)
        if alias_id:
            alias = self.aliases.get(alias_id)
            if alias is not None and alias.customer_id:
                return ("c", alias.customer_id)
            return ("a", alias_id)
        return ("c", event.customer_id or "")

    def state(self, key: Key) -> CustomerState | None:
        kind, ident = key
        if kind == "c":
            return self.customers.get(ident)
        alias = self.aliases.get(ident)
        if alias is None:
            return None
        if alias.customer_id:
            return self.customers.get(alias.customer_id)
        return alias.profile

    def neighbors(self, skus: Iterable[str]) -> dict[str, list[Neighbor]]:
        """The neighbour lists of `skus`, decoded from their stored bytes as the API decodes them."""
        out = {}
        counts = self.zsets.get(self.scheme.basket_counts(), {})
        for sku in skus:
            redis_key = self.scheme.neighbors(sku)
            top = self._top.get(redis_key)
            if top is None:
                state = self._neighbor_states.get(redis_key)
                if state is None:
                    continue
                top = self._top[redis_key] = keys.decode_neighbors(keys.encode_neighbors(state), counts)
            if top:
                out[sku] = top
        return out

    def maybe_rebuild(self, ts_ms: int) -> None:
        """Rebuild the popularity index when the event day changed or enough purchases passed."""
        today = ts_ms // DAY_MS
        if today != self._built_day or self._purchases_since_build >= self.rebuild_every_purchases:
            self.rebuild_index()
            self._built_day = today

    def rebuild_index(self) -> None:
        """What the API's refresh builds: the head of the global list and each store's list."""
        global_scores = self.zsets.get(self.scheme.popularity(), {}).items()
        head = heapq.nsmallest(GLOBAL_LIST, global_scores, key=_best_first)
        stores = {store: heapq.nsmallest(STORE_LIST, self.zsets.get(self.scheme.store_popularity(store), {}).items(),
                                         key=_best_first)
                  for store in self.sets.get(self.scheme.store_popularity_index(), ())}
        self.index = PopularityIndex.build(head, stores, self.products)
        self.repeats = RepeatModel.build(self._repeat_states, {sku: p.category for sku, p in self.products.items()},
                                         self.settings.repeat_half_life_days)
        self._top.clear()  # the API's basket counts refresh with its catalog
        self._purchases_since_build = 0
        self._index_stale = False

    def recommend_for(self, state: CustomerState | None, request: ranking.Request) -> list[ranking.Suggestion]:
        wanted = ranking.lists_to_read(state, request, self.weights, self.every_signal)
        neighbors = self.neighbors(wanted)
        extra = ranking.stand_ins(request, neighbors, self.products, self.index)  # as the API's route reads them
        if extra:
            neighbors = {**self.neighbors(extra), **neighbors}
        return ranking.recommend(state, request, neighbors, self.index, self.products,
                                 self.rules, self.weights, repeats=self.repeats, every_signal=self.every_signal)

    def recommend(self, customer_id: str | None, request: ranking.Request,
                  anonymous_id: str | None = None) -> list[ranking.Suggestion]:
        """As `GET /v1/recommendations`: by customer id, or by an anonymous / loyalty alias."""
        if self._index_stale and self._built_day is None:
            self.rebuild_index()
        key: Key = ("c", customer_id) if customer_id else ("a", anonymous_id or "")
        return self.recommend_for(self.state(key), request)


def _best_first(kv: tuple[str, float]) -> tuple[float, str]:
    """Highest score first, ties by SKU (as `PopularityIndex.build` orders them)."""
    return (-kv[1], kv[0])


# ----------------------------------------------------------------------------- baselines


@dataclass
class Baselines:
    """Popularity, decayed popularity and GP-TopFreq on the same stream, as lists per key."""

    half_life_days: float
    counts: dict[str, int] = field(default_factory=dict)
    decayed: dict[str, float] = field(default_factory=dict)  # sku → forward-decay log-weight
    personal: dict[Key, dict[str, list[int]]] = field(default_factory=dict)  # sku → [count, last ts]
    top_counts: list[str] = field(default_factory=list)
    top_decayed: list[str] = field(default_factory=list)
    keep_baskets: bool = False  # keep each key's baskets in time order (for TIFU-KNN)
    baskets: dict[Key, list[tuple[int, tuple[str, ...]]]] = field(default_factory=dict)
    tifu: dict[Key, list[str]] = field(default_factory=dict)  # TIFU-KNN's ranked list per key

    def __post_init__(self) -> None:
        self._decay = decay.Decay(self.half_life_days)

    def learn(self, key: Key, skus: Iterable[str], ts_ms: int) -> None:
        skus = tuple(skus)
        if self.keep_baskets and skus:
            self.baskets.setdefault(key, []).append((ts_ms, skus))
        mine = self.personal.setdefault(key, {})
        log_w = self._decay.log_weight(1.0, ts_ms)
        for sku in skus:
            self.counts[sku] = self.counts.get(sku, 0) + 1
            decay.add(self.decayed, sku, log_w)
            entry = mine.get(sku)
            if entry is None:
                mine[sku] = [1, ts_ms]
            else:
                entry[0] += 1
                entry[1] = max(entry[1], ts_ms)

    def merge(self, alias: Key, customer: Key) -> None:
        """A stitched alias's history becomes the customer's."""
        if alias in self.baskets:
            merged = self.baskets.pop(alias) + self.baskets.get(customer, [])
            self.baskets[customer] = sorted(merged, key=lambda b: b[0])  # stable: same-ts order kept
        theirs = self.personal.pop(alias, None)
        if not theirs:
            return
        mine = self.personal.setdefault(customer, {})
        for sku, (count, ts) in theirs.items():
            entry = mine.get(sku)
            if entry is None:
                mine[sku] = [count, ts]
            else:
                entry[0] += count
                entry[1] = max(entry[1], ts)

    def rebuild(self) -> None:
        self.top_counts = [sku for sku, _ in heapq.nsmallest(BASELINE_LIST, self.counts.items(), key=_best_first)]
        self.top_decayed = [sku for sku, _ in heapq.nsmallest(BASELINE_LIST, self.decayed.items(), key=_best_first)]

    def recommend(self, name: str, key: Key, k: int, exclude: Iterable[str] = ()) -> list[str]:
        skip = set(exclude)
        if name == "popularity":
            return _fill([], self.top_counts, k, skip, self.counts)
        if name == "decayed_popularity":
            return _fill([], self.top_decayed, k, skip, self.decayed)
        if name in ("top_personal", "gp_topfreq"):
            mine = self.personal.get(key) or {}
            # most often bought first, then the most recently bought, then by SKU
            ranked = sorted(mine.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))
            chosen = [sku for sku, _ in ranked if sku not in skip][:k]
            if name == "top_personal":
                return chosen
            return _fill(chosen, self.top_counts, k, skip, self.counts)
        if name == "tifu_knn":
            return [sku for sku in self.tifu.get(key, ()) if sku not in skip][:k]
        raise ValueError(f"unknown baseline {name!r}")

    def fit_tifu(self, keys: Iterable[Key], depths: Mapping[Key, int], **params: Any) -> None:
        """TIFU-KNN's lists for `keys`, from every key's kept baskets (`keep_baskets`), ranked
        `depths[key]` deep (k plus the largest cart the key is scored with)."""
        from omnirec import tifu_knn

        owners = sorted(self.baskets)
        row = {key: i for i, key in enumerate(owners)}
        wanted = [key for key in dict.fromkeys(keys) if key in row]
        histories = [[skus for _, skus in self.baskets[key]] for key in owners]
        lists = tifu_knn.predict(histories, [row[key] for key in wanted],
                                 depth=[depths.get(key, 10) for key in wanted], **params)
        self.tifu = dict(zip(wanted, lists))


def _fill(chosen: list[str], ranked: list[str], k: int, skip: set[str], scores: Mapping[str, Any]) -> list[str]:
    have = set(chosen)
    for sku in ranked:
        if len(chosen) >= k:
            return chosen
        if sku not in skip and sku not in have:
            chosen.append(sku)
            have.add(sku)
    if len(chosen) < k and len(ranked) < len(scores):  # a huge cart exhausted the list
        for sku, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0])):
            if len(chosen) >= k:
                break
            if sku not in skip and sku not in have:
                chosen.append(sku)
                have.add(sku)
    return chosen


# ----------------------------------------------------------------------------- metrics


def score_list(recommended: list[str], bought: Iterable[str], k: int) -> tuple[float, float, float]:
    """(hit, recall, NDCG) at k with binary relevance; the ideal DCG has min(k, |bought|) hits."""
    relevant = set(bought)
    if not relevant:
        return 0.0, 0.0, 0.0
    top = recommended[:k]
    hits = 0
    dcg = 0.0
    for rank, sku in enumerate(top):
        if sku in relevant:
            hits += 1
            dcg += 1.0 / math.log2(rank + 2)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(relevant))))
    return (1.0 if hits else 0.0), hits / len(relevant), dcg / ideal


@dataclass
class Tally:
    n: int = 0
    hits: float = 0.0
    recall: float = 0.0
    ndcg: float = 0.0
    cross_n: int = 0
    cross_hits: int = 0
    # part → [points where the part is not empty, hits, recall, NDCG, hits ÷ whole basket]
    parts: dict[str, list[float]] = field(default_factory=lambda: {p: [0, 0.0, 0.0, 0.0, 0.0] for p in PARTS})

    def add(self, recommended: list[str], bought: list[str], k: int,
            before: Iterable[str] | None = None) -> None:
        """Score one basket; with `before` (what the customer bought earlier) also its repeat
        and explore parts."""
        hit, recall, ndcg = score_list(recommended, bought, k)
        self.n += 1
        self.hits += hit
        self.recall += recall
        self.ndcg += ndcg
        if before is None:
            return
        earlier = set(before)
        basket = list(dict.fromkeys(bought))
        top = set(recommended[:k])
        for part, items in (("repeat", [s for s in basket if s in earlier]),
                            ("explore", [s for s in basket if s not in earlier])):
            tally = self.parts[part]
            if items:
                p_hit, p_recall, p_ndcg = score_list(recommended, items, k)
                tally[0] += 1
                tally[1] += p_hit
                tally[2] += p_recall
                tally[3] += p_ndcg
                tally[4] += len(top.intersection(items)) / len(basket)

    def add_cross(self, recommended: list[str], hidden: str, k: int) -> None:
        self.cross_n += 1
        self.cross_hits += hidden in recommended[:k]

    def merge(self, other: Tally) -> None:
        self.n += other.n
        self.hits += other.hits
        self.recall += other.recall
        self.ndcg += other.ndcg
        self.cross_n += other.cross_n
        self.cross_hits += other.cross_hits
        for part, values in other.parts.items():
            mine = self.parts[part]
            for i, value in enumerate(values):
                mine[i] += value

    def figures(self, k: int) -> dict[str, float | int]:
        def mean(total: float, n: int) -> float:
            return round(total / n, 4) if n else 0.0

        return {
            f"hit_rate@{k}": mean(self.hits, self.n),
            f"recall@{k}": mean(self.recall, self.n),
            f"ndcg@{k}": mean(self.ndcg, self.n),
            f"cross_sell_hit_rate@{k}": mean(self.cross_hits, self.cross_n),
            "n_evaluated": self.n,
            "n_cross_sell": self.cross_n,
            **{part: {f"hit_rate@{k}": mean(values[1], int(values[0])),
                      f"recall@{k}": mean(values[2], int(values[0])),
                      f"ndcg@{k}": mean(values[3], int(values[0])),
                      f"recall_share@{k}": mean(values[4], self.n),
                      "n_evaluated": int(values[0])}
               for part, values in self.parts.items()},
        }


# ----------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class Filters:
    """Romanov et al.'s preprocessing (RecSys 2023), as options; 0 / False is off.

    Applied to purchases in this order, once each (not iterated to a fixed point):
    `min_item_count` keeps the SKUs bought in at least that many baskets over the whole file
    and drops baskets left empty; `min_baskets` keeps the customers left with at least that
    many baskets; `drop_noise_users` then drops customers whose purchase lines (distinct SKUs
    per basket, summed) per day of tenure (last purchase day − first) exceed the mean + 2σ
    over customers, and customers whose purchases all fall on one day. Other events pass as
    they are. A customer is resolved as at the end of the stream (a stitched alias is its
    customer), and a duplicate event id counts once.
    """

    min_baskets: int = 0
    min_item_count: int = 0
    drop_noise_users: bool = False

    @property
    def active(self) -> bool:
        return self.min_baskets > 1 or self.min_item_count > 1 or self.drop_noise_users

    def fit(self, events: Iterable[Event]) -> FilterPlan:
        """Which customers and SKUs stay, from one pass over the parsed stream."""
        stream = [e for e in events if isinstance(e, Event) and e.type in ("purchase", "identify")]
        links = _links(stream)
        baskets: dict[str, tuple[str, int, tuple[str, ...]]] = {}  # event id → (who, day, skus)
        for event in stream:
            if event.type == "purchase" and event.event_id not in baskets:
                baskets[event.event_id] = (_who(event, links), event.ts_ms // DAY_MS,
                                           tuple(dict.fromkeys(i.sku for i in event.items)))
        stats: dict[str, Any] = {
            "customers_before": len({w for w, _, _ in baskets.values()}),
            "items_before": len({s for _, _, skus in baskets.values() for s in skus}),
            "baskets_before": len(baskets)}
        counts: dict[str, int] = {}
        for _, _, skus in baskets.values():
            for sku in skus:
                counts[sku] = counts.get(sku, 0) + 1
        items = {sku for sku, n in counts.items() if n >= self.min_item_count}
        kept = [(w, day, tuple(s for s in skus if s in items)) for w, day, skus in baskets.values()]
        kept = [b for b in kept if b[2]]
        stats["items_with_min_count"] = len(items)
        per_user: dict[str, list[tuple[int, int]]] = {}
        for w, day, skus in kept:
            per_user.setdefault(w, []).append((day, len(skus)))
        users = {w for w, bs in per_user.items() if len(bs) >= self.min_baskets}
        stats["customers_with_min_baskets"] = len(users)
        if self.drop_noise_users:
            one_day = {w for w in users if len({d for d, _ in per_user[w]}) == 1}
            rates = {w: sum(n for _, n in per_user[w]) / (max(d for d, _ in per_user[w])
                                                         - min(d for d, _ in per_user[w]))
                     for w in users - one_day}
            noisy: set[str] = set()
            if rates:
                mean = sum(rates.values()) / len(rates)
                sd = math.sqrt(sum((r - mean) ** 2 for r in rates.values()) / len(rates))
                noisy = {w for w, r in rates.items() if r > mean + 2 * sd}
                stats["noise_lines_per_day_threshold"] = round(mean + 2 * sd, 4)
            stats["noise_users_one_day"] = len(one_day)
            stats["noise_users_dense"] = len(noisy)
            users -= one_day | noisy
        final = [b for b in kept if b[0] in users]
        stats.update({"customers": len(users), "items": len({s for _, _, skus in final for s in skus}),
                      "baskets": len(final), "lines": sum(len(skus) for _, _, skus in final)})
        return FilterPlan(self, frozenset(users), frozenset(items), stats, links)

    def describe(self) -> dict[str, Any]:
        return {"min_baskets": self.min_baskets, "min_item_count": self.min_item_count,
                "drop_noise_users": self.drop_noise_users}


@dataclass(frozen=True)
class FilterPlan:
    """A fitted `Filters`: the customers and SKUs kept, and what the filter did."""

    filters: Filters
    customers: frozenset[str]
    items: frozenset[str]
    stats: dict[str, Any]
    links: dict[str, str] = field(default_factory=dict)

    def apply(self, event: Event) -> Event | None:
        """The purchase with only its kept SKUs, or None if it goes; other events pass."""
        if event.type != "purchase":
            return event
        if _who(event, self.links) not in self.customers:
            return None
        items = tuple(i for i in event.items if i.sku in self.items)
        if not items:
            return None
        return event if len(items) == len(event.items) else replace(event, items=items)

    def report(self) -> dict[str, Any]:
        return {**self.filters.describe(), **self.stats}


def _links(stream: Iterable[Event]) -> dict[str, str]:
    """Alias → customer, from the stream's `identify` events (the first link wins)."""
    links: dict[str, str] = {}
    for record in stream:
        if isinstance(record, Event) and record.type == "identify" and record.customer_id and record.alias_id:
            links.setdefault(record.alias_id, record.customer_id)
    return links


def _who(event: Event, links: Mapping[str, str]) -> str:
    """Who a purchase belongs to, as at the end of the stream: an alias later stitched by
    `identify` counts as its customer."""
    alias_id = route(event)
    if alias_id:
        return f"c:{links[alias_id]}" if alias_id in links else f"a:{alias_id}"
    return f"c:{event.customer_id}"


def fit_filters(paths: Iterable[str | Path], settings: Settings, filters: Filters) -> FilterPlan:
    """One pass of the flow's parse step over the files, then `Filters.fit`."""
    replayer = Replayer(settings)
    events = (m for raw in read_records(paths, settings) for m in replayer.parse(raw) if isinstance(m, Event))
    return filters.fit(events)


# ----------------------------------------------------------------------------- the protocols


def cross_sell_split(bought: list[str]) -> tuple[tuple[str, ...], str] | None:
    """How a purchase scores cross-sell: the last distinct item hidden, the others the basket
    (None under two items).

    >>> cross_sell_split(["a", "b", "c"]), cross_sell_split(["a"])
    ((('a', 'b'), 'c'), None)
    """
    return (tuple(bought[:-1]), bought[-1]) if len(bought) >= 2 else None


class Evaluator:
    """Scores omnirec and the baselines at the same evaluation points."""

    def __init__(self, k: int = 10, settings: Settings | None = None,
                 rules: ranking.Rules | None = None, weights: ranking.Weights | None = None,
                 shard: tuple[int, int] = (0, 1), tick=None, protocol: str = "prequential",
                 plan: FilterPlan | None = None, tifu: Mapping[str, Any] | None = None) -> None:
        self.k = k
        self.shard = shard
        self.tick = tick or (lambda n: None)
        self._points = 0
        self.settings = settings or Settings()
        self.replayer = Replayer(self.settings, rules, weights)
        self.plan = plan
        self.tifu_params = dict(tifu or {})
        self.names = BASELINES if protocol == "leave-last-basket-out" else STREAMING_BASELINES
        self.baselines = Baselines(self.settings.half_life_days, keep_baskets="tifu_knn" in self.names)
        self.tallies = {name: Tally() for name in ("omnirec", *self.names)}
        self.counts = {"events": 0, "products": 0, "rejected": 0, "duplicates": 0, "purchases": 0}
        if plan is not None:
            self.counts["filtered_out"] = 0
        self._baseline_day: int | None = None
        self._baseline_purchases = 0

    # --- shared steps -----------------------------------------------------------------------

    def learn(self, event: Event, messages: list) -> None:
        """Learn one event (and what its parse emitted with it) into the engine and the
        baselines (identity included)."""
        rep = self.replayer
        key = rep.key_for(event)
        if event.type == "purchase":
            state = rep.state(key)
            if state is None or not state.is_duplicate(event.event_id):
                self.baselines.learn(key, dict.fromkeys(i.sku for i in event.items), event.ts_ms)
                self._baseline_purchases += 1
        if event.type == "identify" and event.customer_id and event.alias_id:
            alias = rep.aliases.get(event.alias_id)
            if alias is None or alias.customer_id != event.customer_id:
                self.baselines.merge(("a", event.alias_id), ("c", event.customer_id))
        rep.learn(messages)

    def refresh(self, ts_ms: int, force: bool = False) -> None:
        """Rebuild the index and the baseline lists on the same cadence."""
        if force:
            self.replayer.rebuild_index()
        else:
            self.replayer.maybe_rebuild(ts_ms)
        today = ts_ms // DAY_MS
        if force or today != self._baseline_day or self._baseline_purchases >= REBUILD_EVERY_PURCHASES:
            self.baselines.rebuild()
            self._baseline_day = today
            self._baseline_purchases = 0

    def evaluate(self, event: Event, key: Key, state: CustomerState | None) -> None:
        """Score one purchase: the home list if the customer has bought before, and cross-sell."""
        point, self._points = self._points, self._points + 1
        if point % self.shard[1] != self.shard[0]:
            return
        k = self.k
        bought = list(dict.fromkeys(item.sku for item in event.items))
        rep, base = self.replayer, self.baselines
        if state is not None and state.orders >= 1:
            before = base.personal.get(key, {}).keys()  # what this customer bought earlier
            request = ranking.Request("home", channel=event.channel, store_id=event.store_id, k=k,
                                      now_ms=event.ts_ms)
            self.tallies["omnirec"].add([s.sku for s in rep.recommend_for(state, request)], bought, k, before)
            for name in self.names:
                self.tallies[name].add(base.recommend(name, key, k), bought, k, before)
        held_out = cross_sell_split(bought)
        if held_out is not None:
            cart, hidden = held_out
            request = ranking.Request("cart", skus=cart, channel=event.channel, store_id=event.store_id, k=k,
                                      now_ms=event.ts_ms)
            self.tallies["omnirec"].add_cross([s.sku for s in rep.recommend_for(state, request)], hidden, k)
            for name in self.names:
                self.tallies[name].add_cross(base.recommend(name, key, k, exclude=cart), hidden, k)

    def _take(self, raw: Raw) -> tuple[Event | None, list]:
        """Parse one record as the flow does; products and dead letters are learnt at once."""
        messages = self.replayer.parse(raw)
        event = next((m for m in messages if isinstance(m, Event)), None)
        if event is not None and self.plan is not None:
            kept = self.plan.apply(event)
            if kept is None:  # filtered out: the engine never sees it (its clock still moves)
                self.counts["filtered_out"] += 1
                self.replayer.learn([m for m in messages if not isinstance(m, Event)])
                return None, []
            if kept is not event:
                messages = [kept if m is event else m for m in messages]
                event = kept
        if event is None:
            for message in messages:
                if isinstance(message, DeadLetter):
                    self.counts["rejected"] += 1
                elif isinstance(message, Product):
                    self.counts["products"] += 1
            self.replayer.learn(messages)
            return None, []
        self.counts["events"] += 1
        return event, messages

    # --- prequential ------------------------------------------------------------------------

    def prequential(self, records: Iterable[Raw]) -> None:
        rep = self.replayer
        for record in records:
            event, messages = self._take(record)
            if event is None:
                continue
            if event.type == "purchase":
                self.counts["purchases"] += 1
                self.refresh(event.ts_ms)
                key = rep.key_for(event)
                state = rep.state(key)
                if state is not None and state.is_duplicate(event.event_id):
                    self.counts["duplicates"] += 1
                else:
                    self.evaluate(event, key, state)
            self.learn(event, messages)

    # --- leave-last-basket-out ----------------------------------------------------------------

    def leave_last_out(self, records: Iterable[Raw], size: int = 0) -> None:
        """`size` (bytes read) scales the progress ticks of the replay and the scoring phases."""
        stream: list[tuple[Event, list]] = []
        for record in records:
            event, messages = self._take(record)
            if event is not None:
                stream.append((event, messages))
        held = held_out_baskets([event for event, _ in stream])
        last_ts = None
        pending: list[Event] = []
        per_record = size / max(1, len(stream))
        for index, (event, messages) in enumerate(stream):
            if index % 1000 == 0:
                self.tick(int(per_record * 1000))
            last_ts = event.ts_ms
            if event.type == "purchase":
                self.counts["purchases"] += 1
            if index in held:
                pending.append(event)
                self.replayer.learn([m for m in messages if not isinstance(m, Event)])  # its clock moves
                continue
            self.learn(event, messages)
        if last_ts is not None:
            self.refresh(last_ts, force=True)
        rep = self.replayer
        if "tifu_knn" in self.names:
            self.fit_tifu(pending)
        per_basket = size / max(1, len(pending))
        for index, event in enumerate(pending):
            if index % 100 == 0:
                self.tick(int(per_basket * 100))
            key = rep.key_for(event)
            self.evaluate(event, key, rep.state(key))

    def fit_tifu(self, pending: list[Event]) -> None:
        """Batch TIFU-KNN over every customer's training baskets, for the held-out baskets this
        shard scores (the i-th held-out basket is evaluation point i)."""
        mine = [event for index, event in enumerate(pending) if index % self.shard[1] == self.shard[0]]
        depths: dict[Key, int] = {}
        for event in mine:
            key = self.replayer.key_for(event)
            depths[key] = max(depths.get(key, 0), self.k + len({i.sku for i in event.items}))
        self.baselines.fit_tifu(list(depths), depths, **self.tifu_params)

    def results(self) -> dict[str, Any]:
        return _figures(self.tallies, self.k)


def _figures(tallies: Mapping[str, Tally], k: int) -> dict[str, Any]:
    out: dict[str, Any] = dict(tallies["omnirec"].figures(k))
    out["baselines"] = {name: tallies[name].figures(k) for name in BASELINES if name in tallies}
    if "tifu_knn" not in tallies:
        out["baselines_omitted"] = {"tifu_knn": TIFU_PREQUENTIAL_NOTE}
    return out


def held_out_baskets(stream: list[Event]) -> set[int]:
    """Positions of each customer's last purchase, for customers with 2+ purchases.

    A customer is resolved as at the end of the stream: an alias later stitched by
    `identify` counts as its customer.
    """
    links = _links(stream)
    seen: dict[str, set[str]] = {}
    last: dict[str, int] = {}
    for index, record in enumerate(stream):
        if not isinstance(record, Event) or record.type != "purchase":
            continue
        who = _who(record, links)
        ids = seen.setdefault(who, set())
        if record.event_id in ids:
            continue
        ids.add(record.event_id)
        last[who] = index
    return {index for who, index in last.items() if len(seen[who]) >= 2}


# ----------------------------------------------------------------------------- entry points


def run(file: str | Path, catalog: str | Path | None = None, k: int = 10,
        protocol: str = "prequential", settings: Settings | None = None,
        rules: ranking.Rules | None = None, weights: ranking.Weights | None = None,
        progress: bool = True, workers: int | None = None, filters: Filters | None = None,
        tifu: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate one file; returns the figures (omnirec's at top level, baselines under a key,
    the filters applied under ``filters``).

    With `workers` > 1 (default: 2 where there are 2+ cores) each worker process replays the
    whole file and scores every `workers`-th evaluation point; the sums are merged, so the
    figures do not depend on the number of workers. `tifu` overrides TIFU-KNN's parameters
    (`omnirec.tifu_knn.predict`'s keywords).
    """
    protocol = PROTOCOL_ALIASES.get(protocol, protocol)
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}; got {protocol!r}")
    settings = settings or Settings()
    filters = filters or Filters()
    paths = ([Path(catalog)] if catalog else []) + [Path(file)]
    size = sum(p.stat().st_size for p in paths)
    total = size * (1 if protocol == "prequential" else 3)
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    workers = max(1, workers)
    started = time.perf_counter()
    plan = fit_filters(paths, settings, filters) if filters.active else None
    args = (paths, k, protocol, settings, rules, weights, plan, dict(tifu or {}))
    with _Progress(total, progress, f"{protocol}, {workers} worker{'s' if workers > 1 else ''}") as bar:
        if workers == 1:
            evaluator = _shard(*args, shard=(0, 1), tick=bar.advance)
            tallies, counts = evaluator.tallies, evaluator.counts
        else:
            tallies, counts = _run_forked(args, workers, bar)
    results = _figures(tallies, k)
    applied = plan.report() if plan is not None else {**filters.describe(), "applied": False}
    if plan is not None:
        applied["applied"] = True
    return {"file": str(file), "protocol": protocol, "k": k, **results, "filters": applied,
            **({"tifu_knn_params": _tifu_params(tifu)} if "tifu_knn" in results["baselines"] else {}),
            **counts, "workers": workers, "seconds": round(time.perf_counter() - started, 1)}


def _tifu_params(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    from omnirec import tifu_knn

    params = {"k": tifu_knn.N_NEIGHBORS, "within_decay": tifu_knn.WITHIN_DECAY,
              "group_decay": tifu_knn.GROUP_DECAY, "alpha": tifu_knn.ALPHA,
              "n_groups": tifu_knn.N_GROUPS, "metric": "cosine", "within": "history"}
    params.update(overrides or {})
    return params


def _shard(paths, k, protocol, settings, rules, weights, plan, tifu, shard, tick) -> Evaluator:
    evaluator = Evaluator(k, settings, rules, weights, shard=shard, tick=tick, protocol=protocol,
                          plan=plan, tifu=tifu)
    records = read_records(paths, settings, tick)
    if protocol == "prequential":
        evaluator.prequential(records)
    else:
        evaluator.leave_last_out(records, sum(p.stat().st_size for p in paths))
    return evaluator


def _run_forked(args, workers: int, bar: _Progress):
    # spawn, not fork: forking a process that already runs threads (pytest, a Kafka client,
    # a Redis pool) can leave a child with a held lock or a half-copied heap (it died with
    # SIGSEGV in CI). A spawned child imports the engine afresh; args are plain and picklable.
    ctx = multiprocessing.get_context("spawn")
    done = [ctx.Value("q", 0, lock=False) for _ in range(workers)]
    pipes, procs = [], []
    for index in range(workers):
        receive, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker, args=(args, (index, workers), done[index], send), daemon=True)
        proc.start()
        send.close()
        pipes.append(receive)
        procs.append(proc)
    outcomes: list[Any] = [None] * workers
    pending = set(range(workers))
    while pending:
        for index in list(pending):
            if pipes[index].poll(0.1):
                try:
                    outcomes[index] = pipes[index].recv()
                except EOFError:
                    outcomes[index] = ("error", f"worker {index} died (exit code {procs[index].exitcode})")
                pending.discard(index)
            elif not procs[index].is_alive() and not pipes[index].poll(0):
                outcomes[index] = ("error", f"worker {index} died (exit code {procs[index].exitcode})")
                pending.discard(index)
        bar.update(min(value.value for value in done))
    for proc in procs:
        proc.join()
    errors = [outcome[1] for outcome in outcomes if outcome[0] == "error"]
    if errors:
        raise RuntimeError("; ".join(errors))
    tallies = {name: Tally() for name in outcomes[0][1]}
    for _, shard_tallies, counts in outcomes:
        for name, tally in shard_tallies.items():
            tallies[name].merge(tally)
    return tallies, outcomes[0][2]


def _worker(args, shard, done, send) -> None:
    def tick(n: int) -> None:
        done.value += n

    try:
        evaluator = _shard(*args, shard=shard, tick=tick)
        send.send(("ok", evaluator.tallies, evaluator.counts))
    except BaseException as exc:  # noqa: BLE001 - report any failure, never hang the parent
        import traceback

        send.send(("error", f"worker {shard[0]}: {exc!r}\n{traceback.format_exc()}"))
    finally:
        send.close()


class _Progress:
    """A rich progress bar on stderr (a no-op when disabled)."""

    def __init__(self, total: int, enabled: bool, label: str) -> None:
        self.total, self.enabled, self.label = total, enabled, label
        self._bar = None
        self._task = None
        self._pending = 0

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(TextColumn(f"evaluate ({self.label})"), BarColumn(), TaskProgressColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True))
            self._task = self._bar.add_task("evaluate", total=self.total)
            self._bar.start()
        return self

    def advance(self, n: int) -> None:
        self._pending += n
        if self._pending >= 1 << 18 and self._bar is not None:
            self._bar.advance(self._task, self._pending)
            self._pending = 0

    def update(self, completed: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=completed)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=self.total)
            self._bar.stop()


def render(result: dict[str, Any], stream=None) -> None:
    from rich.console import Console
    from rich.table import Table

    k = result["k"]
    filters = result.get("filters") or {}
    applied = (f"; filters: min baskets {filters.get('min_baskets')}, min item count "
               f"{filters.get('min_item_count')}, noise users "
               f"{'dropped' if filters.get('drop_noise_users') else 'kept'} → "
               f"{filters.get('customers', 0):,} customers, {filters.get('items', 0):,} items"
               if filters.get("applied") else "; no filter")
    table = Table(title=f"omnirec evaluate: {Path(result['file']).name} ({result['protocol']}, k={k})",
                  caption=(f"{result['events']:,} events, {result['purchases']:,} purchases, "
                           f"{result['rejected']:,} rejected, {result['duplicates']:,} duplicates; "
                           f"{result['seconds']} s{applied}"))
    table.add_column("model")
    for title in (f"HR@{k}", f"Recall@{k}", f"NDCG@{k}", "n", f"Recall@{k} repeat", f"Recall@{k} explore",
                  f"cross-sell HR@{k}", "n cross-sell"):
        table.add_column(title, justify="right")
    rows = [("omnirec", result)] + list(result["baselines"].items())
    for name, fig in rows:
        table.add_row(name, f"{fig[f'hit_rate@{k}']:.4f}", f"{fig[f'recall@{k}']:.4f}",
                      f"{fig[f'ndcg@{k}']:.4f}", f"{fig['n_evaluated']:,}",
                      f"{fig['repeat'][f'recall@{k}']:.4f}", f"{fig['explore'][f'recall@{k}']:.4f}",
                      f"{fig[f'cross_sell_hit_rate@{k}']:.4f}", f"{fig['n_cross_sell']:,}")
    console = Console(file=stream or sys.stdout, width=140)
    console.print(table)
    for name, why in (result.get("baselines_omitted") or {}).items():
        console.print(f"{name}: {why}")


def main(file, catalog=None, k: int = 10, as_json: bool = False, protocol: str = "prequential",
         filters: Filters | None = None, plot: str | Path | None = None) -> dict[str, Any]:
    """`omnirec evaluate FILE [--catalog F] [--k 10] [--json]`: table, and with --json a JSON last line."""
    result = run(file, catalog, k, protocol, progress=True, filters=filters)
    render(result)
    if plot:
        from omnirec.quality_plot import plot_results

        plot_results([result], plot)
        print(f"wrote {plot}", file=sys.stderr)
    if as_json:
        print_json_last(result)
    return result


def cli(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m omnirec.evaluate",
                                     description="Offline quality evaluation of a JSONL event file.")
    parser.add_argument("file", type=Path)
    parser.add_argument("--catalog", type=Path, default=None)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--json", dest="as_json", action="store_true")
    parser.add_argument("--protocol", choices=(*PROTOCOLS, *PROTOCOL_ALIASES), default="prequential")
    parser.add_argument("--min-baskets", type=int, default=0,
                        help="keep customers with at least N baskets (Romanov et al.: 5)")
    parser.add_argument("--min-item-count", type=int, default=0,
                        help="keep items bought in at least N baskets (Romanov et al.: 10)")
    parser.add_argument("--drop-noise-users", action="store_true",
                        help="drop customers above mean + 2 sd purchase lines per day, or buying on one day only")
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG of omnirec vs the baselines")
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error("--k must be >= 1")
    filters = Filters(args.min_baskets, args.min_item_count, args.drop_noise_users)
    return main(args.file, args.catalog, args.k, args.as_json, args.protocol, filters, args.plot)


if __name__ == "__main__":
    cli()
