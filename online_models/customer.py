"""Per-customer state on event time: identity, RFM and net value, affinities, basket.

The flow keeps one `CustomerState` per customer (and one per anonymous / loyalty
alias until it is stitched). Every list is bounded so the per-key snapshot bytewax
copies at each epoch stays small, however long a customer lives.

The state never consults the catalog: an item that arrives with its category counts
towards that category; one that arrives bare (a product view carries only a SKU) counts
towards its SKU, and readers map SKUs to categories with the catalog they hold. So the
stored state depends only on the customer's events, not on whether the catalog topic
happened to be read before them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from online_models import decay
from online_models.churn import Rhythm
from online_models.contacts import Contacts
from online_models.events import Event, Item, Product

MAX_CATEGORIES = 24
MAX_BRANDS = 12
MAX_SKU_INTEREST = 32
MAX_BOUGHT = 64
MAX_RECENT_VIEWS = 20
MAX_BASKET = 40
MAX_STORES = 8
MAX_SEEN_IDS = 64
MAX_ALIASES = 8

# How much each kind of interest counts towards affinities: a purchase says more than a look.
INTEREST = {"product_view": 0.1, "add_to_cart": 0.3, "purchase": 1.0}
CART_PAIR_WEIGHT = 0.3


@dataclass(frozen=True, slots=True)
class BasketSignal:
    """Items seen together (one order, or one open cart), for co-occurrence and popularity."""

    skus: tuple[str, ...]
    weight: float
    ts_ms: int
    store_id: str | None
    new_sku: str | None = None  # for a cart add: only pairs with the added item are new


@dataclass(slots=True)
class CustomerState:
    customer_id: str
    aliases: list[str] = field(default_factory=list)
    first_ts: int | None = None
    last_ts: int | None = None
    first_purchase_ts: int | None = None
    last_purchase_ts: int | None = None
    orders: int = 0
    units: float = 0.0
    gross: float = 0.0
    returned: float = 0.0
    returned_units: float = 0.0
    discounted: float = 0.0  # value bought below list price
    channel_orders: dict[str, int] = field(default_factory=dict)
    channel_events: dict[str, int] = field(default_factory=dict)
    categories: dict[str, float] = field(default_factory=dict)  # category → log-weight
    brands: dict[str, float] = field(default_factory=dict)
    sku_interest: dict[str, float] = field(default_factory=dict)  # SKU → log-weight, no category sent
    bought: dict[str, list[float]] = field(default_factory=dict)  # sku → [times bought, last ts]
    recent_views: list[str] = field(default_factory=list)
    basket: dict[str, float] = field(default_factory=dict)  # sku → qty
    store_visits: int = 0
    stores: dict[str, int] = field(default_factory=dict)
    last_store: str | None = None
    survey_score: float | None = None
    seen_ids: list[str] = field(default_factory=list)
    contacts: Contacts = field(default_factory=Contacts)
    rhythm: Rhythm = field(default_factory=Rhythm)  # purchase rhythm and churn signals

    # --- the one entry point the flow calls -------------------------------------------

    def apply(self, event: Event, decay_: decay.Decay) -> list[BasketSignal]:
        """Fold one event in; returns the basket signals the item statistics need.

        A duplicate (an `event_id` seen recently for this customer) changes nothing.
        """
        if not self.remember(event.event_id):
            return []
        self._touch(event)
        self.rhythm.observe(event)
        handler = _HANDLERS.get(event.type)
        return handler(self, event, decay_) if handler else []

    def is_duplicate(self, event_id: str) -> bool:
        return event_id in self.seen_ids

    def remember(self, event_id: str) -> bool:
        """Record an event id in the bounded dedup window; False if it was already there."""
        if self.is_duplicate(event_id):
            return False
        self.seen_ids.append(event_id)
        if len(self.seen_ids) > MAX_SEEN_IDS:
            del self.seen_ids[0]
        return True

    def merge(self, other: CustomerState) -> None:
        """Fold a stitched anonymous / loyalty-card state into this customer's state."""
        if other.customer_id not in self.aliases:
            self.aliases = (self.aliases + [other.customer_id])[-MAX_ALIASES:]
        self.first_ts = _min(self.first_ts, other.first_ts)
        self.last_ts = _max(self.last_ts, other.last_ts)
        self.first_purchase_ts = _min(self.first_purchase_ts, other.first_purchase_ts)
        self.last_purchase_ts = _max(self.last_purchase_ts, other.last_purchase_ts)
        self.orders += other.orders
        self.discounted += other.discounted
        self.units += other.units
        self.gross += other.gross
        self.returned += other.returned
        self.returned_units += other.returned_units
        _sum_counts(self.channel_orders, other.channel_orders)
        _sum_counts(self.channel_events, other.channel_events)
        _sum_counts(self.stores, other.stores)
        self.store_visits += other.store_visits
        for key, value in other.categories.items():
            decay.add(self.categories, key, value)
        for key, value in other.brands.items():
            decay.add(self.brands, key, value)
        for key, value in other.sku_interest.items():
            decay.add(self.sku_interest, key, value)
        for sku, (times, ts) in other.bought.items():
            self._add_bought(sku, times, int(ts))
        self.recent_views = (self.recent_views + other.recent_views)[-MAX_RECENT_VIEWS:]
        for sku, qty in other.basket.items():
            self.basket[sku] = self.basket.get(sku, 0) + qty
        self.seen_ids = (self.seen_ids + other.seen_ids)[-MAX_SEEN_IDS:]
        if not self.rhythm.purchases:  # rhythms do not add up; keep the one that has purchases
            self.rhythm = other.rhythm.copy()
        self._bound()

    # --- derived figures ----------------------------------------------------------------

    @property
    def net_value(self) -> float:
        return self.gross - self.returned

    @property
    def return_rate(self) -> float:
        return self.returned / self.gross if self.gross > 0 else 0.0

    @property
    def discount_share(self) -> float:
        """Share of what the customer bought that was bought below list price."""
        return self.discounted / self.gross if self.gross > 0 else 0.0

    def category_shares(self, catalog: Mapping[str, Product]) -> dict[str, float]:
        return decay.shares(self._resolved(catalog, "category", self.categories))

    def brand_shares(self, catalog: Mapping[str, Product]) -> dict[str, float]:
        return decay.shares(self._resolved(catalog, "brand", self.brands))

    def _resolved(self, catalog: Mapping[str, Product], attribute: str, known: dict[str, float]):
        """`known` plus the bare SKUs' interest, attributed through the catalog."""
        merged = dict(known)
        for sku, log_w in self.sku_interest.items():
            product = catalog.get(sku)
            if product is not None and getattr(product, attribute):
                decay.add(merged, getattr(product, attribute), log_w)
        return merged

    def bought_recently(self, sku: str) -> bool:
        return sku in self.bought

    # --- event handlers -------------------------------------------------------------------

    def _on_view(self, event: Event, decay_) -> list[BasketSignal]:
        if event.sku:
            if event.sku in self.recent_views:
                self.recent_views.remove(event.sku)
            self.recent_views = (self.recent_views + [event.sku])[-MAX_RECENT_VIEWS:]
            self._interest(event.sku, None, INTEREST["product_view"], event.ts_ms, decay_)
        return []

    def _on_add_to_cart(self, event: Event, decay_) -> list[BasketSignal]:
        signals = []
        for item in event.items:
            already = tuple(sku for sku in self.basket if sku != item.sku)
            self.basket[item.sku] = self.basket.get(item.sku, 0) + item.qty
            self._interest(item.sku, item, INTEREST["add_to_cart"], event.ts_ms, decay_)
            signals.append(BasketSignal(
                (item.sku, *already), CART_PAIR_WEIGHT, event.ts_ms, event.store_id, item.sku,
            ))
        self._bound()
        return signals

    def _on_remove_from_cart(self, event: Event, decay_) -> list[BasketSignal]:
        for item in event.items:
            left = self.basket.get(item.sku, 0) - item.qty
            if left > 0:
                self.basket[item.sku] = left
            else:
                self.basket.pop(item.sku, None)
        return []

    def _on_purchase(self, event: Event, decay_) -> list[BasketSignal]:
        self.orders += 1
        self.first_purchase_ts = _min(self.first_purchase_ts, event.ts_ms)
        self.last_purchase_ts = _max(self.last_purchase_ts, event.ts_ms)
        self.channel_orders[event.channel] = self.channel_orders.get(event.channel, 0) + 1
        for item in event.items:
            self.units += item.qty
            self.gross += item.value
            if item.discounted:
                self.discounted += item.value
            self.basket.pop(item.sku, None)
            self._interest(item.sku, item, INTEREST["purchase"], event.ts_ms, decay_)
            self._add_bought(sku=item.sku, times=1, ts=event.ts_ms)
        if event.store_id:
            self._visit(event.store_id)
        self._bound()
        skus = tuple(dict.fromkeys(item.sku for item in event.items))
        return [BasketSignal(skus, 1.0, event.ts_ms, event.store_id)]

    def _on_return(self, event: Event, decay_) -> list[BasketSignal]:
        for item in event.items:
            self.returned += item.value
            self.returned_units += item.qty
        return []

    def _on_store_visit(self, event: Event, decay_) -> list[BasketSignal]:
        if event.store_id:
            self.store_visits += 1
            self._visit(event.store_id)
        return []

    def _on_survey(self, event: Event, decay_) -> list[BasketSignal]:
        self.survey_score = event.score
        return []

    # --- helpers --------------------------------------------------------------------------

    def _touch(self, event: Event) -> None:
        self.first_ts = _min(self.first_ts, event.ts_ms)
        self.last_ts = _max(self.last_ts, event.ts_ms)
        self.channel_events[event.channel] = self.channel_events.get(event.channel, 0) + 1

    def _visit(self, store_id: str) -> None:
        self.stores[store_id] = self.stores.get(store_id, 0) + 1
        self.last_store = store_id

    def _interest(self, sku: str, item: Item | None, weight: float, ts_ms: int, decay_: decay.Decay) -> None:
        log_w = decay_.log_weight(weight, ts_ms)
        if item is None or not item.category:
            decay.add(self.sku_interest, sku, log_w)
            return
        decay.add(self.categories, item.category, log_w)
        if item.brand:
            decay.add(self.brands, item.brand, log_w)

    def _add_bought(self, sku: str, times: float, ts: int) -> None:
        """Plain counts, not decayed: what someone buys again and again is the strongest
        signal of what they will buy next (the personal half of GP-TopFreq)."""
        previous = self.bought.get(sku)
        if previous is None:
            self.bought[sku] = [times, ts]
        else:
            self.bought[sku] = [previous[0] + times, max(previous[1], ts)]

    def _bound(self) -> None:
        decay.prune(self.categories, MAX_CATEGORIES)
        decay.prune(self.brands, MAX_BRANDS)
        decay.prune(self.sku_interest, MAX_SKU_INTEREST)
        if len(self.bought) > MAX_BOUGHT:
            keep = sorted(self.bought, key=lambda sku: tuple(self.bought[sku]))[-MAX_BOUGHT:]
            self.bought = {sku: self.bought[sku] for sku in keep}
        if len(self.basket) > MAX_BASKET:
            self.basket = dict(list(self.basket.items())[-MAX_BASKET:])
        if len(self.stores) > MAX_STORES:
            keep = sorted(self.stores, key=self.stores.__getitem__)[-MAX_STORES:]
            self.stores = {store: self.stores[store] for store in keep}

    # --- codec support (the byte format lives in online_models.keys) -----------------------

    def record_feedback(self, kind: str, offer_id: str | None, ts_ms: int, channel: str | None) -> None:
        """An offer shown, clicked, accepted or dismissed: the contact policy reads this."""
        if offer_id:
            self.contacts.record(kind, offer_id, ts_ms, channel)

    def __deepcopy__(self, memo: dict) -> CustomerState:
        """bytewax copies every touched key's state at each epoch: copy field by field,
        not through the generic (and much slower) deepcopy machinery."""
        clone = copy.copy(self)
        for name in _DICT_FIELDS:
            setattr(clone, name, dict(getattr(self, name)))
        for name in _LIST_FIELDS:
            setattr(clone, name, list(getattr(self, name)))
        clone.bought = {sku: list(entry) for sku, entry in self.bought.items()}
        clone.contacts = self.contacts.copy()
        clone.rhythm = self.rhythm.copy()
        return clone

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["contacts"] = self.contacts.to_dict()
        data["rhythm"] = self.rhythm.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CustomerState:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        known["contacts"] = Contacts.from_dict(data.get("contacts"))
        known["rhythm"] = Rhythm.from_dict(data.get("rhythm") or {})
        return cls(**known)


_DICT_FIELDS = ("channel_orders", "channel_events", "categories", "brands", "sku_interest", "basket", "stores")
_LIST_FIELDS = ("aliases", "recent_views", "seen_ids")

_HANDLERS = {
    "product_view": CustomerState._on_view,
    "add_to_cart": CustomerState._on_add_to_cart,
    "remove_from_cart": CustomerState._on_remove_from_cart,
    "purchase": CustomerState._on_purchase,
    "return": CustomerState._on_return,
    "store_visit": CustomerState._on_store_visit,
    "survey": CustomerState._on_survey,
}


def _min(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def _sum_counts(into: dict[str, int], other: Mapping[str, int]) -> None:
    for key, value in other.items():
        into[key] = into.get(key, 0) + value
