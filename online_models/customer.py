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

import bisect
import operator
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field
from typing import Any

from online_models import decay, nextbasket, tiers
from online_models.churn import WEB_CHANNELS, Rhythm, RhythmState
from online_models.clock import DAY_MS
from online_models.contacts import Contacts
from online_models.events import Event, Item, Product
from online_models.pickling import pickled_by_fields

MAX_CATEGORIES = 24
MAX_BRANDS = 12
MAX_SKU_INTEREST = 32
MAX_BOUGHT = 64
MAX_RECENT_VIEWS = 20
MAX_BASKET = 40
MAX_STORES = 8
MAX_SEEN_IDS = 64
MAX_ALIASES = 8
MAX_NOT_INTERESTED = 32
MAX_OFFER_TRIALS = 16  # the newest offer decisions whose trial is counted (``offer_trial``)

# How much each kind of interest counts towards affinities: a purchase says more than a look.
INTEREST = {"product_view": 0.1, "add_to_cart": 0.3, "purchase": 1.0}
CART_PAIR_WEIGHT = 0.3
CART_SESSION_MS = DAY_MS  # cart adds this close together count as one basket


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class BasketSignal:
    """Items seen together (one order, or two items of one open cart), for co-occurrence and,
    when ``counts``, for the items' own popularity and basket counts."""

    skus: tuple[str, ...]
    weight: float
    ts_ms: int
    store_id: str | None
    counts: bool = True  # False: a pair of cart items, each already counted when added


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
    bought: dict[str, list[float]] = field(default_factory=dict)  # sku → [orders, last ts, first ts]
    # sku → log-weight, decayed in event time (the personal next-basket vector: ``nextbasket``)
    basket_vector: dict[str, float] = field(default_factory=dict)
    views: dict[str, int] = field(default_factory=dict)  # sku → last view time, the newest MAX_RECENT_VIEWS
    cart: dict[str, float] = field(default_factory=dict)  # sku → qty, as added and removed on the web / app
    cart_ts: dict[str, int] = field(default_factory=dict)  # sku → when last added
    recent_adds: list[tuple[int, str]] = field(default_factory=list)  # (ts, sku) of the last adds, sorted
    store_visits: int = 0
    stores: dict[str, int] = field(default_factory=dict)
    last_store: str | None = None
    last_store_ts: int | None = None
    seen_ids: dict[str, int] = field(default_factory=dict)  # event id → event time, the newest MAX_SEEN_IDS
    contacts: Contacts = field(default_factory=Contacts)
    not_interested: dict[str, int] = field(default_factory=dict)  # sku → when dismissed as a recommendation
    rhythm: RhythmState = field(default_factory=RhythmState)  # what churn needs beyond the above
    churn_keys: tuple[int | None, int | None, int | None] | None = None  # as last told to the shard
    churn_version: int = 0  # updates told to the churn shard so far
    # offer decisions already counted as a trial: decision id → event time of its first feedback,
    # the newest MAX_OFFER_TRIALS (the flow's only: not in the stored profile)
    offer_trials: dict[str, int] = field(default_factory=dict)

    # --- the one entry point the flow calls -------------------------------------------

    def apply(self, event: Event, decay_: decay.Decay) -> list[BasketSignal]:
        """Fold one event in; returns the basket signals the item statistics need.

        A duplicate (an `event_id` seen recently for this customer) changes nothing.
        """
        if not self.remember(event.event_id, event.ts_ms):
            return []
        self._touch(event)
        self.rhythm.observe(event)
        handler = _HANDLERS.get(event.type)
        return handler(self, event, decay_) if handler else []

    def is_duplicate(self, event_id: str) -> bool:
        return event_id in self.seen_ids

    def remember(self, event_id: str, ts_ms: int) -> bool:
        """Record an event id in the bounded dedup window; False if it was already there.

        The window keeps the last ids *to arrive*: a producer's retry follows its original
        closely on the same partition, whatever other topics interleave. (Evicting the oldest
        by event time instead would evict a late-arriving event at once, and count its retry.)"""
        if self.is_duplicate(event_id):
            return False
        self.seen_ids[event_id] = ts_ms
        if len(self.seen_ids) > MAX_SEEN_IDS:
            del self.seen_ids[next(iter(self.seen_ids))]
        return True

    def __setstate__(self, state: Any) -> None:
        """Unpickling (bytewax recovery): a state snapshotted before a field was added gets that
        field's default, not a missing attribute. Pickle hands over (None, {slot: value})."""
        slots = state[1] if isinstance(state, tuple) else state
        for name, spec in CustomerState.__dataclass_fields__.items():
            if name in slots:
                value = slots[name]
            else:
                value = spec.default_factory() if spec.default_factory is not MISSING else spec.default
            object.__setattr__(self, name, value)

    def offer_trial(self, decision_id: str | None, kind: str, ts_ms: int) -> tuple[bool, bool]:
        """One offer decision is one trial, whatever the client posts of it: (count this
        feedback, and does it stand in for the decision's impression). The first feedback of a
        decision opens its trial: an impression, or an accept, click or dismiss whose impression
        was never posted (the report read 100 % acceptance from a client that posted accepts
        only); a later impression of it (a re-render, or the impression arriving after the
        accept) is not a second trial. Feedback without a decision id is counted as it comes."""
        if not decision_id:
            return True, False
        trials = self.offer_trials
        if decision_id in trials:
            return kind != "impression", False
        trials[decision_id] = ts_ms
        if len(trials) > MAX_OFFER_TRIALS:  # the newest by event time, ties by id: any arrival order
            del trials[min(trials, key=lambda d: (trials[d], d))]
        return True, kind != "impression"

    def merge(self, other: CustomerState) -> None:
        """Fold a stitched anonymous / loyalty-card state into this customer's state."""
        if other.customer_id not in self.aliases:  # sorted: merges arrive in any order
            self.aliases = sorted([*self.aliases, other.customer_id])[-MAX_ALIASES:]
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
        nextbasket.merge(self.basket_vector, other.basket_vector)
        for sku, record in other.bought.items():
            self._add_bought(sku, record[0], int(record[1]), int(record[2] if len(record) > 2 else record[1]))
        for sku, ts in other.views.items():
            self._viewed(sku, ts)
        for sku, ts in other.not_interested.items():
            self._not_interested(sku, ts)
        for sku, qty in other.cart.items():  # without add times: they paired in the alias's cart
            self.cart[sku] = self.cart.get(sku, 0) + qty
        if other.last_store_ts is not None and (self.last_store_ts is None or (other.last_store_ts, other.last_store)
                                                > (self.last_store_ts, self.last_store or "")):
            self.last_store, self.last_store_ts = other.last_store, other.last_store_ts
        for event_id, ts in other.seen_ids.items():
            self.remember(event_id, ts)
        self.rhythm.merge(other.rhythm)
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
        return self.interest_shares(catalog)[0]

    def interest_shares(self, catalog: Mapping[str, Product]) -> tuple[dict[str, float], dict[str, float]]:
        """Each category's and each brand's share of the customer's interest: the stored ones
        plus the bare SKUs' interest, attributed through the catalog (the heaviest of each, as
        stored: readers of the stored profile and of the live state agree). Both in one pass
        over the SKUs: a ranking request needs both."""
        categories = decay.top(self.categories, MAX_CATEGORIES)
        brands = decay.top(self.brands, MAX_BRANDS)
        catalog_get, add = catalog.get, decay.add
        for sku, log_w in decay.top(self.sku_interest, MAX_SKU_INTEREST).items():
            product = catalog_get(sku)
            if product is not None:
                if product.category:
                    add(categories, product.category, log_w)
                if product.brand:
                    add(brands, product.brand, log_w)
        return decay.shares(categories), decay.shares(brands)

    @property
    def basket(self) -> dict[str, float]:
        """The open cart: what was added and not removed, nor bought since it was added."""
        return {sku: qty for sku, qty in self.cart.items()
                if self.cart_ts.get(sku, 0) > self.bought.get(sku, (0, -1))[1]}

    @property
    def recent_views(self) -> list[str]:
        """Recently viewed SKUs, oldest first (by view time, whatever order events came in)."""
        return [sku for sku, _ in sorted(self.views.items(), key=lambda kv: (kv[1], kv[0]))]

    def rhythm_view(self) -> Rhythm:
        """The purchase rhythm as the churn model, segments and tiers read it."""
        web = sum(n for channel, n in self.channel_orders.items() if channel in WEB_CHANNELS)
        return Rhythm.of(
            self.rhythm, first_purchase_ts=self.first_purchase_ts, last_purchase_ts=self.last_purchase_ts,
            gross=self.gross, returned=self.returned, web_purchases=web,
            store_purchases=self.orders - web, last_ts=self.last_ts,
        )

    def sketch_keys(self, rhythm: Rhythm) -> tuple[int | None, int | None, int | None]:
        return tiers.sketch_keys(rhythm.value_log(), rhythm.last_purchase_ts, rhythm.purchases)

    # --- event handlers -------------------------------------------------------------------

    def _on_view(self, event: Event, decay_) -> list[BasketSignal]:
        if event.sku:
            self._viewed(event.sku, event.ts_ms)
            self._interest(event.sku, None, INTEREST["product_view"], event.ts_ms, decay_)
        return []

    def _on_add_to_cart(self, event: Event, decay_) -> list[BasketSignal]:
        signals = []
        ts = event.ts_ms
        for item in event.items:
            # A cart pair forms when the second of two adds within a session arrives, at the
            # later add's time, whichever arrives first, and whether or not either has since been
            # removed or bought: adds reach the customer by two paths (direct, or through a
            # stitched alias), removes and purchases by others, in orders that depend on how
            # topics were read. Items merged in from an alias's cart paired there already.
            partners = sorted((max(ts, added), sku) for added, sku in self.recent_adds
                              if sku != item.sku and abs(ts - added) <= CART_SESSION_MS)
            bisect.insort(self.recent_adds, (ts, item.sku))
            del self.recent_adds[:-MAX_BASKET]
            self.cart[item.sku] = self.cart.get(item.sku, 0) + item.qty
            self.cart_ts[item.sku] = max(ts, self.cart_ts.get(item.sku, ts))
            self._interest(item.sku, item, INTEREST["add_to_cart"], event.ts_ms, decay_)
            signals.append(BasketSignal((item.sku,), CART_PAIR_WEIGHT, ts, event.store_id))
            signals.extend(BasketSignal((item.sku, partner), CART_PAIR_WEIGHT, at, event.store_id, counts=False)
                           for at, partner in partners)
        self._bound()
        return signals

    def _on_remove_from_cart(self, event: Event, decay_) -> list[BasketSignal]:
        for item in event.items:
            left = self.cart.get(item.sku, 0) - item.qty
            if left > 0:
                self.cart[item.sku] = left
            else:
                self.cart.pop(item.sku, None)
                self.cart_ts.pop(item.sku, None)
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
            self._interest(item.sku, item, INTEREST["purchase"], event.ts_ms, decay_)
        skus = tuple(dict.fromkeys(item.sku for item in event.items))
        for sku in skus:  # orders, not lines: two lines of one SKU are one purchase of it
            self._add_bought(sku, 1, event.ts_ms, event.ts_ms)
        nextbasket.add_basket(self.basket_vector, skus, event.ts_ms)
        if event.store_id:
            self._visit(event.store_id, event.ts_ms)
        self._bound()
        return [BasketSignal(skus, 1.0, event.ts_ms, event.store_id)]

    def _on_return(self, event: Event, decay_) -> list[BasketSignal]:
        for item in event.items:
            self.returned += item.value
            self.returned_units += item.qty
        return []

    def _on_store_visit(self, event: Event, decay_) -> list[BasketSignal]:
        if event.store_id:
            self.store_visits += 1
            self._visit(event.store_id, event.ts_ms)
        return []

    # --- helpers --------------------------------------------------------------------------

    def _touch(self, event: Event) -> None:
        self.first_ts = _min(self.first_ts, event.ts_ms)
        self.last_ts = _max(self.last_ts, event.ts_ms)
        self.channel_events[event.channel] = self.channel_events.get(event.channel, 0) + 1

    def _viewed(self, sku: str, ts: int) -> None:
        if ts <= self.views.get(sku, ts - 1):
            return
        self.views[sku] = ts
        if len(self.views) > MAX_RECENT_VIEWS:
            oldest = min(self.views, key=lambda s: (self.views[s], s))
            del self.views[oldest]

    def _visit(self, store_id: str, ts: int) -> None:
        self.stores[store_id] = self.stores.get(store_id, 0) + 1
        if self.last_store_ts is None or (ts, store_id) > (self.last_store_ts, self.last_store or ""):
            self.last_store, self.last_store_ts = store_id, ts

    def _interest(self, sku: str, item: Item | None, weight: float, ts_ms: int, decay_: decay.Decay) -> None:
        log_w = decay_.log_weight(weight, ts_ms)
        if item is None or not item.category:
            decay.add(self.sku_interest, sku, log_w)
            return
        decay.add(self.categories, item.category, log_w)
        if item.brand:
            decay.add(self.brands, item.brand, log_w)

    def _add_bought(self, sku: str, orders: float, last_ts: int, first_ts: int) -> None:
        """Plain counts, not decayed: what someone buys again and again is the strongest
        signal of what they will buy next (the personal half of GP-TopFreq). With the first and
        last time, the record is what the item's learned repeat habit needs (``repeats``), and
        it is the same whatever order the orders arrived in."""
        previous = self.bought.get(sku)  # replaced, not changed: ``__deepcopy__`` shares the records
        if previous is None:
            self.bought[sku] = [orders, last_ts, first_ts]
        else:
            first = int(previous[2]) if len(previous) > 2 else int(previous[1])
            self.bought[sku] = [previous[0] + orders, max(previous[1], last_ts), min(first, first_ts)]

    def _bound(self) -> None:
        decay.prune(self.categories, MAX_CATEGORIES)
        decay.prune(self.brands, MAX_BRANDS)
        decay.prune(self.sku_interest, MAX_SKU_INTEREST)
        if len(self.bought) > MAX_BOUGHT:
            keep = sorted(self.bought, key=lambda sku: tuple(self.bought[sku]))[-MAX_BOUGHT:]
            self.bought = {sku: self.bought[sku] for sku in keep}
        if len(self.cart) > MAX_BASKET:
            keep = sorted(self.cart, key=lambda sku: (self.cart_ts.get(sku, 0), sku))[-MAX_BASKET:]
            self.cart = {sku: self.cart[sku] for sku in keep}
            self.cart_ts = {sku: self.cart_ts[sku] for sku in keep if sku in self.cart_ts}
        if len(self.stores) > MAX_STORES:
            keep = sorted(self.stores, key=self.stores.__getitem__)[-MAX_STORES:]
            self.stores = {store: self.stores[store] for store in keep}

    # --- codec support (the byte format lives in online_models.keys) -----------------------

    def record_feedback(self, kind: str, offer_id: str | None, ts_ms: int, channel: str | None,
                        sku: str | None = None) -> None:
        """An offer shown, clicked, accepted or dismissed: the contact policy reads this. A
        recommended item dismissed ("not interested"): ranking keeps it (and, after a few of
        them, its category) out for a while (``rules.not_interested``)."""
        if offer_id:
            self.contacts.record(kind, offer_id, ts_ms, channel)
        elif kind == "dismiss" and sku:
            self._not_interested(sku, ts_ms)

    def _not_interested(self, sku: str, ts_ms: int) -> None:
        self.not_interested[sku] = max(ts_ms, self.not_interested.get(sku, ts_ms))
        if len(self.not_interested) > MAX_NOT_INTERESTED:  # the newest, whatever order they came in
            keep = sorted(self.not_interested, key=lambda k: (self.not_interested[k], k))[-MAX_NOT_INTERESTED:]
            self.not_interested = {k: self.not_interested[k] for k in keep}

    def __deepcopy__(self, memo: dict) -> CustomerState:
        """bytewax copies every touched key's state at each epoch: copy field by field,
        not through the generic (and much slower) deepcopy machinery."""
        clone = CustomerState(*_ALL_FIELDS(self))  # copy.copy goes through __reduce_ex__: 3× slower
        for name in _DICT_FIELDS:
            setattr(clone, name, dict(getattr(self, name)))
        for name in _LIST_FIELDS:
            setattr(clone, name, list(getattr(self, name)))
        clone.bought = dict(self.bought)  # its records are replaced, never changed in place (``_add_bought``)
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
        known["rhythm"] = RhythmState.from_dict(data.get("rhythm") or {})
        if known.get("churn_keys") is not None:
            known["churn_keys"] = tuple(known["churn_keys"])
        known["recent_adds"] = [tuple(add) for add in known.get("recent_adds") or ()]
        return cls(**known)


_DICT_FIELDS = ("channel_orders", "channel_events", "categories", "brands", "sku_interest", "cart", "cart_ts",
                "stores", "views", "seen_ids", "not_interested", "basket_vector", "offer_trials")
_LIST_FIELDS = ("aliases", "recent_adds")
_ALL_FIELDS = operator.attrgetter(*CustomerState.__dataclass_fields__)

_HANDLERS = {
    "product_view": CustomerState._on_view,
    "add_to_cart": CustomerState._on_add_to_cart,
    "remove_from_cart": CustomerState._on_remove_from_cart,
    "purchase": CustomerState._on_purchase,
    "return": CustomerState._on_return,
    "store_visit": CustomerState._on_store_visit,
}


def _min(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def _sum_counts(into: dict[str, int], other: Mapping[str, int]) -> None:
    for key, value in other.items():
        into[key] = into.get(key, 0) + value
