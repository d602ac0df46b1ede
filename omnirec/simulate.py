"""Synthetic omnichannel shoppers: a demo catalogue and a seeded stream of event envelopes.

``build_demo_catalog(seed)`` makes the ~300 products of ``data/demo_catalog.jsonl``;
``iter_events(...)`` turns a population of customers into envelopes (see DESIGN.md,
"Event envelope") in event-time order, the same stream for the same seed; ``main(...)``
writes that history to a JSONL file, or plays it live to Kafka at a given rate with
wall-clock timestamps.

Behaviour planted for the models to find:

- every customer shops for a few gender/age lines (a parent of boys never buys girls'
  clothes) and a few non-apparel interests, with favourite brands;
- web sessions start anonymous, browse the preferred categories, fill a cart, and then
  identify and buy online, or buy in a store days later with the loyalty card, or leave;
- complements: trousers come with a belt (60 %), socks (40 %), a shirt (35 %); phones with
  a case that fits them (70 %) and a charger (50 %);
- discount shoppers buy sale items and return about half of what they buy;
- some customers lapse: after a date they only browse, and their surveys score low;
- groceries, cleaning and skincare are bought again on each customer's own cycle.

Product ``margin`` is the gross margin as a share of ``price`` (0.15–0.55).
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import math
import random
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from omnirec import offer_truth
from omnirec.shoppers import Customer
from online_models.clock import DAY_MS, HOUR_MS
from online_models.events import partition_key

CATALOG_PATH = Path(__file__).parent / "data" / "demo_catalog.jsonl"
CATALOG_SEED = 2026

STORES = ("s-1", "s-2", "s-3", "s-4", "s-5")
OPEN_HOURS = {"store": (9, 20), "web": (7, 23), "app": (7, 23)}
STEP_MS = (4_000, 90_000)  # time between two events of one visit
COLOURS = ("navy", "black", "grey", "white", "beige", "olive", "burgundy", "blue")

# ----------------------------------------------------------------------------- catalogue


@dataclass(frozen=True)
class CategorySpec:
    """How to make the products of one category: `count` names from styles × variants."""

    category: str
    prefix: str
    count: int
    styles: tuple[str, ...]
    noun: str
    price_range: tuple[float, float]
    brands: tuple[str, ...]
    variants: tuple[str, ...] = COLOURS
    variant_attribute: str = "color"


ADULT_BRANDS = ("Northway", "Linea", "Harbor & Co")
KIDS_BRANDS = ("Little Oak", "Linea")
ACCESSORY_BRANDS = ("Kestrel", "Northway", "Harbor & Co")

APPAREL = (
    CategorySpec("men/trousers", "TR", 20, ("Slim chino", "Regular fit chino", "Straight leg denim",
                 "Tapered wool", "Cargo", "Linen"), "trousers", (39, 119), ADULT_BRANDS),
    CategorySpec("men/belts", "BL", 12, ("Leather", "Braided leather", "Suede", "Canvas"), "belt",
                 (19, 69), ACCESSORY_BRANDS),
    CategorySpec("men/socks", "SK", 12, ("Cotton crew", "Merino hiking", "Ankle sports"),
                 "socks 3-pack", (7, 19), ADULT_BRANDS),
    CategorySpec("men/shirts", "SH", 18, ("Oxford", "Poplin slim fit", "Flannel check", "Linen",
                 "Denim"), "shirt", (29, 89), ADULT_BRANDS),
    CategorySpec("men/shoes", "FT", 12, ("Leather derby", "Suede loafer", "Canvas"),
                 "shoes", (59, 179), ("Kestrel",)),
    CategorySpec("women/dresses", "DR", 18, ("Wrap", "Midi shirt", "Knitted", "Linen maxi",
                 "Floral tea"), "dress", (39, 149), ADULT_BRANDS),
    CategorySpec("women/trousers", "TR", 16, ("Wide-leg", "High-waist tailored", "Cropped chino",
                 "Straight leg denim"), "trousers", (39, 109), ADULT_BRANDS),
    CategorySpec("women/belts", "BL", 10, ("Slim leather", "Woven", "Chain-buckle"), "belt",
                 (19, 59), ACCESSORY_BRANDS),
    CategorySpec("women/socks", "SK", 10, ("Cotton ankle", "Wool blend", "Patterned crew"),
                 "socks 3-pack", (7, 17), ADULT_BRANDS),
    CategorySpec("women/shirts", "SH", 16, ("Silk", "Cotton poplin", "Oversized linen",
                 "Striped Oxford"), "shirt", (29, 99), ADULT_BRANDS),
    CategorySpec("kids/boys/shirts", "SH", 12, ("Boys' short-sleeve", "Boys' Oxford",
                 "Boys' dinosaur print"), "shirt", (12, 35), KIDS_BRANDS),
    CategorySpec("kids/boys/trousers", "TR", 12, ("Boys' cargo", "Boys' jogger",
                 "Boys' chino"), "trousers", (15, 39), KIDS_BRANDS),
    CategorySpec("kids/girls/dresses", "DR", 12, ("Girls' party", "Girls' jersey",
                 "Girls' floral"), "dress", (15, 49), KIDS_BRANDS),
    CategorySpec("kids/girls/shirts", "SH", 12, ("Girls' frill", "Girls' striped",
                 "Girls' linen"), "blouse", (12, 35), KIDS_BRANDS),
)

PHONES = (("Voltra X5", 699), ("Voltra X5 Pro", 999), ("Voltra X4", 549), ("Voltra A5", 349),
          ("Voltra A3", 249), ("Nimbus One", 799), ("Nimbus One Mini", 599),
          ("Nimbus Fold", 1499), ("Nimbus Lite", 199), ("Nimbus Lite Plus", 279))
CASE_STYLES = (("Clear case", 19), ("Leather folio case", 39))

OTHER = (
    CategorySpec("electronics/chargers", "CH", 10, ("30W USB-C fast", "65W GaN dual-port",
                 "15W wireless", "Car USB-C", "Travel multi-plug"), "charger", (19, 59),
                 ("Voltra", "Nimbus"), ("white", "black"), "color"),
    CategorySpec("electronics/headphones", "HP", 12, ("Wireless noise-cancelling over-ear",
                 "True wireless", "Sports wireless", "Kids' volume-limited"), "headphones",
                 (29, 349), ("Pulse Audio", "Nimbus"), ("black", "white", "blue"), "color"),
    CategorySpec("home/cleaning", "CL", 14, ("Multi-surface spray", "Dishwasher tablets",
                 "Laundry liquid", "Microfibre cloths", "Bathroom cleaner", "Eco washing-up liquid",
                 "Glass cleaner"), "", (2, 14), ("Casa Clean",), ("standard", "large"), "size"),
    CategorySpec("grocery/coffee", "CF", 14, ("Espresso beans", "Single-origin Ethiopia beans",
                 "Decaf ground coffee", "Colombia filter coffee", "Coffee capsules intense",
                 "Coffee capsules lungo", "Cold brew concentrate"), "", (4, 18),
                 ("Roastery No.5",), ("250 g", "1 kg"), "size"),
    CategorySpec("grocery/snacks", "SN", 16, ("Sea salt crisps", "Dark chocolate almonds",
                 "Oat bars", "Salted popcorn", "Trail mix", "Rice crackers", "Protein bites",
                 "Hummus chips"), "", (1, 6), ("Crunchy Fields",), ("single", "multipack"), "size"),
    CategorySpec("beauty/skincare", "SC", 14, ("Hydrating day cream SPF 30", "Gentle foam cleanser",
                 "Vitamin C serum", "Night repair cream", "Hyaluronic serum", "Clay mask",
                 "Lip balm"), "", (6, 45), ("Dermaly",), ("30 ml", "50 ml"), "size"),
)


def build_demo_catalog(seed: int = CATALOG_SEED) -> list[dict[str, Any]]:
    """The demo products, identical for the same seed (the committed file uses CATALOG_SEED)."""
    rng = random.Random(f"omnirec-catalog:{seed}")
    numbers: dict[str, itertools.count] = defaultdict(lambda: itertools.count(1))
    products = []
    for spec in APPAREL:
        products += [_spec_product(rng, spec, i, numbers) for i in range(spec.count)]
    products += _phones_and_cases(rng, numbers)
    for spec in OTHER:
        products += [_spec_product(rng, spec, i, numbers) for i in range(spec.count)]
    return products


def write_demo_catalog(path: str | Path = CATALOG_PATH, seed: int = CATALOG_SEED) -> int:
    products = build_demo_catalog(seed)
    Path(path).write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in products))
    return len(products)


def load_demo_catalog(path: str | Path = CATALOG_PATH) -> list[dict[str, Any]]:
    with open(path, "rb") as lines:
        return [orjson.loads(line) for line in lines if line.strip()]


def _spec_product(rng: random.Random, spec: CategorySpec, index: int, numbers) -> dict[str, Any]:
    style = spec.styles[index % len(spec.styles)]
    variant = spec.variants[(index // len(spec.styles)) % len(spec.variants)]
    name = f"{style} {spec.noun}".strip() + f", {variant}"
    attributes = {spec.variant_attribute: variant}
    line = _apparel_line(spec.category)
    if line:
        attributes["line"] = line
    return _product(rng, spec, numbers, name, rng.choice(spec.brands), attributes)


def _phones_and_cases(rng: random.Random, numbers) -> list[dict[str, Any]]:
    phones = CategorySpec("electronics/phones", "PH", 0, (), "", (0, 0), ())
    cases = CategorySpec("electronics/phone-cases", "PC", 0, (), "", (0, 0), ())
    products = []
    for model, list_price in PHONES:
        brand = model.split()[0]
        products.append(_product(rng, phones, numbers, f"{model} smartphone 128 GB", brand,
                                 {"model": model, "storage_gb": 128}, price=list_price - 0.01))
    for model, _ in PHONES:
        for style, case_price in CASE_STYLES:
            products.append(_product(rng, cases, numbers, f"{style} for {model}",
                                     rng.choice(("Harbor & Co", model.split()[0])),
                                     {"fits": model}, price=case_price - 0.01))
    return products


def _product(rng: random.Random, spec: CategorySpec, numbers, name: str, brand: str,
             attributes: dict[str, Any], price: float | None = None) -> dict[str, Any]:
    price = price if price is not None else _retail_price(rng.uniform(*spec.price_range))
    margin = rng.uniform(0.15, 0.55)
    if rng.random() < 0.2 and not spec.category.startswith(("grocery", "home")):
        discount = rng.choice((20, 30, 40, 50))
        attributes = {**attributes, "on_sale": True, "list_price": price, "discount_pct": discount}
        price = _retail_price(price * (100 - discount) / 100)
        margin = rng.uniform(0.15, 0.25)
    return {
        "type": "product", "sku": f"{spec.prefix}-{next(numbers[spec.prefix]):03d}", "name": name,
        "category": spec.category, "brand": brand, "price": price, "margin": round(margin, 2),
        "in_stock": rng.random() >= 0.05, "attributes": attributes,
    }


def _retail_price(raw: float) -> float:
    if raw >= 10:
        return round(max(1, round(raw)) - 0.01, 2)
    return round(max(0.5, round(raw, 1)) - 0.01, 2)


def _apparel_line(category: str) -> str | None:
    """'kids/boys/shirts' → 'kids/boys'; 'men/socks' → 'men'; non-apparel → None."""
    head, _, _ = category.rpartition("/")
    return head if head.split("/")[0] in ("men", "women", "kids") else None


def _kind(category: str) -> str:
    return category.rpartition("/")[2]


# ----------------------------------------------------------------------------- customers

HOUSEHOLDS = {  # household → (share of customers, apparel lines it shops for)
    "single_man": (0.22, ("men",)),
    "single_woman": (0.26, ("women",)),
    "mother_of_boys": (0.12, ("women", "kids/boys")),
    "father_of_boys": (0.08, ("men", "kids/boys")),
    "mother_of_girls": (0.12, ("women", "kids/girls")),
    "father_of_girls": (0.05, ("men", "kids/girls")),
    "couple": (0.10, ("men", "women")),
    "family": (0.05, ("men", "women", "kids/boys", "kids/girls")),
}
BROWSE_KINDS = {"trousers": 1.0, "shirts": 1.0, "shoes": 0.6, "dresses": 1.0, "socks": 0.15}
INTERESTS = {  # category → (share of customers interested, browsing weight)
    "electronics/phones": (0.25, 0.3), "electronics/headphones": (0.3, 0.5),
    "grocery/coffee": (0.45, 0.6), "grocery/snacks": (0.35, 0.4),
    "home/cleaning": (0.4, 0.4), "beauty/skincare": (0.35, 0.5),
}
REPLENISH_CYCLE_DAYS = {"grocery/coffee": (10, 25), "grocery/snacks": (7, 20),
                        "home/cleaning": (20, 45), "beauty/skincare": (30, 60)}
COMPLEMENTS = {  # kind of a basket item → (kind of its complement in the same line, probability)
    "trousers": (("belts", 0.60), ("socks", 0.40), ("shirts", 0.35)),
    "dresses": (("belts", 0.15),),
    "phones": (("phone-cases", 0.70), ("chargers", 0.50)),
}
CHANNEL_MIXES = {  # shopper habit → weights of web, app, store visits
    "web_first": (0.6, 0.15, 0.25), "app_first": (0.15, 0.6, 0.25),
    "store_first": (0.25, 0.05, 0.7), "omnichannel": (0.35, 0.3, 0.35),
}
SEGMENTS = {"regular": 0.8, "vip": 0.08, "discount": 0.12}
SESSIONS_PER_WEEK = {"regular": 1.0, "vip": 2.5, "discount": 1.6}
RETURN_RATE = {"regular": 0.05, "vip": 0.03, "discount": 0.5}
LAPSING_SHARE = 0.2


class CatalogIndex:
    """Products by category, with the weighted choice a shopper makes among them."""

    def __init__(self, products: Iterable[dict[str, Any]]):
        self.by_category: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.by_sku: dict[str, dict[str, Any]] = {}
        for product in products:
            if product.get("type", "product") == "product":
                self.by_category[product["category"]].append(product)
                self.by_sku[product["sku"]] = product
        self.brands = sorted({p["brand"] for ps in self.by_category.values() for p in ps})

    def has(self, category: str) -> bool:
        return bool(self.by_category.get(category))

    def pick(self, rng: random.Random, category: str, customer: Customer, *,
             in_stock: bool = True, fits: Callable[[dict], bool] | None = None) -> dict | None:
        candidates = [p for p in self.by_category.get(category, ())
                      if (p["in_stock"] or not in_stock) and (fits is None or fits(p))]
        if not candidates:
            return None
        weights = [self._appeal(rank, p, customer) for rank, p in enumerate(candidates)]
        return rng.choices(candidates, weights)[0]

    @staticmethod
    def _appeal(rank: int, product: dict[str, Any], customer: Customer) -> float:
        appeal = 1.0 / (rank + 1) ** 0.6  # earlier skus are the bestsellers
        if product["brand"] in customer.favourite_brands:
            appeal *= 4
        if customer.segment == "discount" and product["attributes"].get("on_sale"):
            appeal *= 12
        return appeal


def make_customers(n_customers: int, seed: int, catalog: Sequence[dict] | CatalogIndex,
                   days: float | None = 90) -> list[Customer]:
    """The population behind `iter_events` with the same arguments."""
    index = catalog if isinstance(catalog, CatalogIndex) else CatalogIndex(catalog)
    return [_make_customer(_customer_rng(seed, i), i, index, days) for i in range(n_customers)]


def _customer_rng(seed: int, index: int) -> random.Random:
    return random.Random(f"omnirec-sim:{seed}:{index}")


def _weighted(rng: random.Random, shares: dict[str, Any]) -> str:
    names = list(shares)
    weights = [v[0] if isinstance(v, tuple) else v for v in shares.values()]
    return rng.choices(names, weights)[0]


def _make_customer(rng: random.Random, index: int, catalog: CatalogIndex,
                   days: float | None) -> Customer:
    household = _weighted(rng, HOUSEHOLDS)
    segment = _weighted(rng, SEGMENTS)
    customer = Customer(
        customer_id=f"c-{index + 1:05d}",
        household=household,
        lines=HOUSEHOLDS[household][1],
        segment=segment,
        channel_mix=CHANNEL_MIXES[rng.choice(list(CHANNEL_MIXES))],
        sessions_per_week=SESSIONS_PER_WEEK[segment] * rng.lognormvariate(0, 0.4),
        category_weights=_category_weights(rng, HOUSEHOLDS[household][1], catalog),
        favourite_brands=tuple(rng.sample(catalog.brands, 2)),
        home_store=rng.choice(STORES),
        lapse_after_days=_lapse_day(rng, days),
    )
    _plan_replenishment(rng, customer, catalog)
    return customer


def _category_weights(rng: random.Random, lines: tuple[str, ...],
                      catalog: CatalogIndex) -> dict[str, float]:
    weights = {}
    for line in lines:
        for kind, weight in BROWSE_KINDS.items():
            if catalog.has(f"{line}/{kind}"):
                weights[f"{line}/{kind}"] = weight * rng.gammavariate(2, 0.5)
    for category, (share, weight) in INTERESTS.items():
        if "women" in lines and category == "beauty/skincare":
            share = 0.6
        if rng.random() < share and catalog.has(category):
            weights[category] = weight * rng.gammavariate(2, 0.5)
    return weights


def _lapse_day(rng: random.Random, days: float | None) -> float | None:
    if rng.random() >= LAPSING_SHARE:
        return None
    low, high = (0.25 * days, 0.7 * days) if days else (20, 60)
    return rng.uniform(low, high)


def _plan_replenishment(rng: random.Random, customer: Customer, catalog: CatalogIndex) -> None:
    for category, (low, high) in REPLENISH_CYCLE_DAYS.items():
        if category in customer.category_weights and rng.random() < 0.7:
            staple = catalog.pick(rng, category, customer)
            if staple:
                customer.staples[category] = staple["sku"]
                customer.replenish_days[category] = rng.uniform(low, high)


# ----------------------------------------------------------------------------- events


def format_ts(ts_ms: int) -> str:
    """Epoch milliseconds → '2026-11-25T10:15:00.123Z'."""
    moment = datetime.fromtimestamp(ts_ms // 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def iter_events(n_customers: int, start_ts_ms: int, seed: int,
                catalog: Sequence[dict[str, Any]], *, days: float | None = 90,
                lapse_within_days: float | None = None) -> Iterator[dict]:
    """Envelopes of `n_customers` shoppers over `days` (None: endless), in event-time order.
    Lapses fall at 25–70 % of `days`, or of `lapse_within_days` for an endless stream: the live
    demo's history, so that by the time it goes live some customers have stayed away for weeks
    (without it, days 20–60)."""
    index = CatalogIndex(catalog)
    end_ms = math.inf if days is None else start_ts_ms + int(days * DAY_MS)
    lives = []
    for i in range(n_customers):
        rng = _customer_rng(seed, i)
        customer = _make_customer(rng, i, index, days if days is not None else lapse_within_days)
        lives.append(Shopper(customer, index, rng).events(start_ts_ms, end_ms))
    for _ts, event in heapq.merge(*lives, key=lambda timed: timed[0]):
        yield event


@dataclass
class Visit:
    """One session (web/app) or one store visit: a clock and the identities events carry."""

    shopper: Shopper
    channel: str
    ts_ms: int
    customer_id: str | None
    anonymous_id: str | None = None
    session_id: str | None = None
    store_id: str | None = None

    def emit(self, kind: str, **fields: Any) -> None:
        self.ts_ms += self.shopper.rng.randint(*STEP_MS)
        place = {"store_id": self.store_id} if self.channel == "store" else {
            "session_id": self.session_id}
        self.shopper.schedule(self.ts_ms, {
            "event_id": self.shopper.new_id(), "type": kind, "ts": format_ts(self.ts_ms),
            "channel": self.channel, "customer_id": self.customer_id,
            "anonymous_id": self.anonymous_id, **place, **fields,
        })


class Shopper:
    """One customer's life: an agenda of visits turned into time-ordered envelopes."""

    def __init__(self, customer: Customer, catalog: CatalogIndex, rng: random.Random):
        self.customer = customer
        self.catalog = catalog
        self.rng = rng
        self.cookie = self._new_anonymous_id()
        self._pending: list[tuple[int, int, dict]] = []
        self._sequence = itertools.count()
        self._orders = itertools.count(1)
        self._lapse_ms: float = math.inf

    # --- the agenda ------------------------------------------------------------------

    def events(self, start_ms: int, end_ms: float) -> Iterator[tuple[int, dict]]:
        if self.customer.lapse_after_days is not None:
            self._lapse_ms = start_ms + self.customer.lapse_after_days * DAY_MS
        for ts, action in self._agenda(start_ms, end_ms):
            yield from self._release(until=ts)
            action(ts)
        yield from self._release(until=end_ms)

    def _agenda(self, start_ms: int, end_ms: float) -> Iterator[tuple[int, Callable]]:
        plans = [(self._next_visit_ts(start_ms), -1, None)]
        for order, (category, cycle) in enumerate(self.customer.replenish_days.items()):
            plans.append((start_ms + int(self.rng.uniform(0, cycle) * DAY_MS), order, category))
        heapq.heapify(plans)
        while plans and plans[0][0] < end_ms:
            ts, order, category = heapq.heappop(plans)
            if category is None:
                yield ts, self.visit
                heapq.heappush(plans, (self._next_visit_ts(ts), order, None))
            elif ts < self._lapse_ms:
                yield ts, lambda at, c=category: self.replenish(at, c)
                cycle = self.customer.replenish_days[category] * self.rng.uniform(0.8, 1.25)
                heapq.heappush(plans, (ts + int(cycle * DAY_MS), order, category))

    def _next_visit_ts(self, after_ms: int) -> int:
        per_day = self.customer.sessions_per_week / 7
        if after_ms >= self._lapse_ms:
            per_day *= 0.15
        gap_ms = max(2 * HOUR_MS, int(self.rng.expovariate(per_day) * DAY_MS))
        return after_ms + gap_ms

    def _release(self, until: float) -> Iterator[tuple[int, dict]]:
        while self._pending and self._pending[0][0] <= until:
            ts, _, event = heapq.heappop(self._pending)
            yield ts, event

    def schedule(self, ts_ms: int, event: dict) -> None:
        heapq.heappush(self._pending, (ts_ms, next(self._sequence), event))

    # --- visits ------------------------------------------------------------------------

    def visit(self, ts_ms: int) -> None:
        channel = self.rng.choices(("web", "app", "store"), self.customer.channel_mix)[0]
        if channel == "store" and not self.is_lapsed(ts_ms):
            self.shop_in_store(self.store_visit(ts_ms))
        else:
            self.browse_online(self.online_visit(ts_ms, "app" if channel == "app" else "web"))

    def replenish(self, ts_ms: int, category: str) -> None:
        basket = [self.item(self.catalog.by_sku[self.customer.staples[category]])]
        if self.rng.random() < self.customer.channel_mix[2]:
            visit = self.store_visit(ts_ms)
            visit.emit("store_visit")
            self.purchase(visit, basket)
            return
        visit = self.online_visit(ts_ms, self.rng.choice(("web", "app")))
        for item in basket:
            visit.emit("product_view", sku=item["sku"])
            visit.emit("add_to_cart", items=[item])
        self.checkout_online(visit, basket)

    def browse_online(self, visit: Visit) -> None:
        category = self.preferred_category()
        visit.emit("page_view", page="home")
        if self.rng.random() < 0.3:
            visit.emit("search", query=self.search_query(category))
        visit.emit("page_view", page=f"category/{category}")
        viewed = self.view_products(visit, category, self.rng.randint(2, 6))
        if self.rng.random() < 0.25:
            viewed += self.view_products(visit, self.preferred_category(), 1)
        wants_cart = self.rng.random() < (0.6 if self.customer.segment != "regular" else 0.45)
        if self.is_lapsed(visit.ts_ms) or not wants_cart:
            self.maybe_identify(visit, 0.15)
            return
        basket = self.fill_cart(visit, viewed)
        if basket:
            self.decide_on_cart(visit, basket)

    def shop_in_store(self, visit: Visit) -> None:
        visit.emit("store_visit")
        if self.rng.random() < 0.85:
            basket = self.with_complements(self.main_items(self.rng.randint(1, 2)))
            if basket:
                self.purchase(visit, basket)

    def fill_cart(self, visit: Visit, viewed: list[dict]) -> list[dict]:
        in_stock = [p for p in viewed if p["in_stock"]]
        if not in_stock:
            return []
        basket = self.with_complements([self.item(in_stock[-1])])
        for item in basket:
            visit.emit("add_to_cart", items=[item])
        if len(basket) > 1 and self.rng.random() < 0.1:
            removed = basket.pop(self.rng.randrange(1, len(basket)))
            visit.emit("remove_from_cart", items=[removed])
        return basket

    def decide_on_cart(self, visit: Visit, basket: list[dict]) -> None:
        outcome = self.rng.random()
        if outcome < 0.45:
            self.checkout_online(visit, basket)
        elif outcome < 0.7:
            self.maybe_identify(visit, 0.3)
            self.buy_in_store_later(visit.ts_ms, basket)
        else:
            self.maybe_identify(visit, 0.2)

    def checkout_online(self, visit: Visit, basket: list[dict]) -> None:
        visit.emit("page_view", page="checkout")
        self.maybe_identify(visit, 1.0)
        self.purchase(visit, basket)

    def buy_in_store_later(self, after_ms: int, basket: list[dict]) -> None:
        ts_ms = after_ms + int(self.rng.uniform(1, 7) * DAY_MS)
        if self.is_lapsed(ts_ms):
            return
        visit = self.store_visit(ts_ms)
        visit.emit("store_visit")
        self.purchase(visit, basket)

    def purchase(self, visit: Visit, basket: list[dict]) -> None:
        if self.is_lapsed(visit.ts_ms + STEP_MS[1]):
            return
        order_id = f"o-{self.customer.customer_id[2:]}-{next(self._orders):04d}"
        visit.emit("purchase", order_id=order_id, items=basket)
        self.maybe_return(visit, order_id, basket)
        if self.rng.random() < 0.08:
            self.survey(visit.ts_ms + int(self.rng.uniform(1, 3) * DAY_MS))

    def maybe_return(self, bought: Visit, order_id: str, basket: list[dict]) -> None:
        rate = RETURN_RATE[self.customer.segment]
        returned = [item for item in basket if self.rng.random() < rate]
        if not returned:
            return
        ts_ms = bought.ts_ms + int(self.rng.uniform(3, 21) * DAY_MS)
        if self.rng.random() < 0.5:
            visit = self.store_visit(ts_ms)
        else:
            visit = self.online_visit(ts_ms, "web", identified=True)
        visit.emit("return", order_id=order_id, items=returned)

    def survey(self, ts_ms: int) -> None:
        if self.customer.lapse_after_days is not None:
            score = self.rng.randint(0, 6)
        elif self.customer.segment == "discount":
            score = self.rng.randint(4, 9)
        else:
            score = self.rng.randint(6, 10)
        self.online_visit(ts_ms, "web", identified=True).emit("survey", score=score)

    def maybe_identify(self, visit: Visit, probability: float) -> None:
        if visit.customer_id is None and self.rng.random() < probability:
            visit.customer_id = self.customer.customer_id
            visit.emit("identify")

    # --- building blocks -------------------------------------------------------------

    def store_visit(self, ts_ms: int) -> Visit:
        store = self.customer.home_store if self.rng.random() < 0.8 else self.rng.choice(STORES)
        return Visit(self, "store", self._open_at(ts_ms, "store"), self.customer.customer_id,
                     store_id=store)

    def online_visit(self, ts_ms: int, channel: str, identified: bool = False) -> Visit:
        session_id = f"sess-{self.rng.getrandbits(48):012x}"
        ts_ms = self._open_at(ts_ms, channel)
        if channel == "app" or identified:
            return Visit(self, channel, ts_ms, self.customer.customer_id, session_id=session_id)
        if self.rng.random() < 0.3:  # cookies cleared, another device
            self.cookie = self._new_anonymous_id()
        return Visit(self, channel, ts_ms, None, anonymous_id=self.cookie, session_id=session_id)

    def view_products(self, visit: Visit, category: str, count: int) -> list[dict]:
        viewed = []
        for _ in range(count):
            product = self.catalog.pick(self.rng, category, self.customer, in_stock=False)
            if product:
                visit.emit("product_view", sku=product["sku"])
                viewed.append(product)
        return viewed

    def main_items(self, count: int) -> list[dict]:
        products = [self.catalog.pick(self.rng, self.preferred_category(), self.customer)
                    for _ in range(count)]
        unique = {p["sku"]: p for p in products if p}
        return [self.item(p) for p in unique.values()]

    def with_complements(self, basket: list[dict]) -> list[dict]:
        added: dict[str, dict] = {}
        for item in basket:
            line = item["category"].rpartition("/")[0]
            for kind, probability in COMPLEMENTS.get(_kind(item["category"]), ()):
                if self.rng.random() < probability:
                    extra = self.complement(f"{line}/{kind}", item)
                    if extra and extra["sku"] not in {i["sku"] for i in basket}:
                        added.setdefault(extra["sku"], self.item(extra))
        return basket + list(added.values())

    def complement(self, category: str, item: dict) -> dict | None:
        model = self.catalog.by_sku[item["sku"]]["attributes"].get("model")
        fits = (lambda p: p["attributes"].get("fits") == model) if model else None
        return self.catalog.pick(self.rng, category, self.customer, fits=fits)

    def item(self, product: dict) -> dict:
        several = _kind(product["category"]) == "socks" or product["category"].startswith(
            ("grocery", "home"))
        qty = self.rng.choice((1, 1, 2, 3)) if several else 1
        item = {"sku": product["sku"], "qty": qty, "price": product["price"],
                "category": product["category"], "brand": product["brand"]}
        if product["attributes"].get("on_sale"):  # the till knows the undiscounted price
            item["list_price"] = product["attributes"]["list_price"]
        return item

    def preferred_category(self) -> str:
        weights = self.customer.category_weights
        return self.rng.choices(list(weights), list(weights.values()))[0]

    def search_query(self, category: str) -> str:
        product = self.catalog.pick(self.rng, category, self.customer, in_stock=False)
        words = product["name"].split(",")[0].lower().split() if product else [_kind(category)]
        return " ".join(words[-2:])

    def is_lapsed(self, ts_ms: float) -> bool:
        return ts_ms >= self._lapse_ms

    def new_id(self) -> str:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4).hex

    def _new_anonymous_id(self) -> str:
        return f"a-{self.rng.getrandbits(64):016x}"

    def _open_at(self, ts_ms: int, channel: str) -> int:
        """`ts_ms` if the channel is busy then, else a random moment of its next open hours."""
        opens, closes = OPEN_HOURS[channel]
        day_ms = ts_ms - ts_ms % DAY_MS
        hour = (ts_ms - day_ms) / HOUR_MS
        if opens <= hour < closes:
            return ts_ms
        if hour >= closes:
            day_ms += DAY_MS
        return day_ms + opens * HOUR_MS + self.rng.randrange((closes - opens - 1) * HOUR_MS)


# ----------------------------------------------------------------------------- messages

LIVE_BAD_FRACTION = 0.005
LIVE_DUPLICATE_FRACTION = 0.01


class Message(NamedTuple):
    """One Kafka record: `channel` picks the topic ('store' → store topic, else web)."""

    channel: str
    key: bytes | None
    value: bytes


def iter_messages(events: Iterable[dict], seed: int, *, bad_fraction: float = 0.0,
                  duplicate_fraction: float = 0.0) -> Iterator[Message]:
    """Serialise envelopes; add malformed messages and producer-retry duplicates on demand.

    Bad messages come in addition to the valid ones (bad JSON, an unknown type, a negative
    quantity), each with its own event id; a duplicate repeats a message byte for byte.
    """
    rng = random.Random(f"omnirec-messages:{seed}")
    for event in events:
        message = to_message(event)
        yield message
        if rng.random() < duplicate_fraction:
            yield message
        if rng.random() < bad_fraction:
            yield bad_message(rng, event)


def to_message(event: dict) -> Message:
    key = partition_key(event)
    return Message(event["channel"], key.encode() if key else None, orjson.dumps(event))


def bad_message(rng: random.Random, event: dict) -> Message:
    broken = dict(event, event_id=uuid.UUID(int=rng.getrandbits(128), version=4).hex)
    flaw = rng.choice(("bad_json", "unknown_type", "negative_qty"))
    if flaw == "unknown_type":
        broken["type"] = "teleport"
    elif flaw == "negative_qty":
        sku = event.get("sku") or (event.get("items") or [{}])[0].get("sku") or "TR-001"
        broken.update(type="add_to_cart", items=[{"sku": sku, "qty": -2, "price": 10.0}])
    message = to_message(broken)
    if flaw == "bad_json":
        message = message._replace(value=message.value[: len(message.value) // 2])
    return message


# ----------------------------------------------------------------------------- main


def main(customers: int = 200, rate: float = 50.0, duration: float | None = None,
         seed: int = 42, settings=None, out: str | Path | None = None, *,
         days: float = 90, start_ts_ms: int | None = None, bad_fraction: float | None = None,
         duplicate_fraction: float | None = None, with_catalog: bool = True,
         history_days: float = 0.0) -> int:
    """Write `days` of history to `out` (a path or '-'), or, without `out`, play live to Kafka.

    File mode ignores `rate` and `duration`; it starts `days` before today (UTC midnight)
    unless `start_ts_ms` is given, puts the catalogue first, and adds no bad or duplicate
    lines unless asked. Live mode sends `rate` events/s for `duration` seconds (None:
    until interrupted), stamps each with the wall clock, and by default adds 0.5 % bad
    messages and 1 % duplicates. Returns the number of messages written.
    """
    catalog = load_demo_catalog()
    if out is not None:
        start = start_ts_ms if start_ts_ms is not None else _midnight_ms() - int(days * DAY_MS)
        events = iter_events(customers, start, seed, catalog, days=days)
        messages = iter_messages(events, seed, bad_fraction=bad_fraction or 0.0,
                                 duplicate_fraction=duplicate_fraction or 0.0)
        return write_jsonl(out, messages, catalog if with_catalog else ())
    from omnirec.settings import get_settings

    settings = settings or get_settings()
    now = _now_ms()
    events = iter_events(customers, now - int(history_days * DAY_MS), seed, catalog, days=None,
                         lapse_within_days=history_days or None)
    sent = 0
    if history_days > 0:
        past, events = _split_at(events, now)
        sent += produce_live(iter_messages(past, seed), settings, rate=float("inf"), duration=None)
    messages = iter_messages(
        _stamped_now(events), seed,
        bad_fraction=LIVE_BAD_FRACTION if bad_fraction is None else bad_fraction,
        duplicate_fraction=LIVE_DUPLICATE_FRACTION if duplicate_fraction is None
        else duplicate_fraction)
    return sent + produce_live(messages, settings, rate, duration)


def write_jsonl(out: str | Path, messages: Iterable[Message],
                products: Iterable[dict] = ()) -> int:
    """Products first, then one message per line; returns the number of messages."""
    if str(out) == "-":
        return _write_lines(sys.stdout.buffer, messages, products)
    with open(out, "wb") as sink:
        return _write_lines(sink, messages, products)


def _write_lines(sink, messages: Iterable[Message], products: Iterable[dict]) -> int:
    for product in products:
        sink.write(orjson.dumps(product) + b"\n")
    count = 0
    for message in messages:
        sink.write(message.value + b"\n")
        count += 1
    sink.flush()
    return count


def produce_live(messages: Iterable[Message], settings, rate: float,
                 duration: float | None) -> int:
    """Send `messages` at `rate` per second to the channel's topic, keyed by customer."""
    producer = make_producer(settings)
    failures: list = []
    started = time.monotonic()
    sent = 0
    try:
        for message in messages:
            due = started + sent / rate
            if duration is not None and due - started >= duration:
                break
            _sleep_until(due, producer)
            topic = settings.topic_store if message.channel == "store" else settings.topic_web
            _produce(producer, topic, message, failures)
            sent += 1
    except KeyboardInterrupt:
        pass
    finally:
        producer.flush(30)
    print(f"simulate: {sent} messages sent, {len(failures)} failed", file=sys.stderr)
    return sent


def make_producer(settings):
    from confluent_kafka import Producer

    from omnirec.replay import producer_config

    return Producer(producer_config(settings, **{"client.id": "omnirec-simulate"}))


def _produce(producer, topic: str, message: Message, failures: list) -> None:
    def on_delivery(error, _record) -> None:
        if error is not None:
            failures.append(error)

    while True:
        try:
            producer.produce(topic, value=message.value, key=message.key,
                             on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.05)


def _sleep_until(due: float, producer) -> None:
    producer.poll(0)
    wait = due - time.monotonic()
    if wait > 0:
        time.sleep(wait)


def _split_at(events: Iterator[dict], now_ms: int) -> tuple[list[dict], Iterator[dict]]:
    """The finite past of an endless event stream, and the rest (its first event kept)."""
    past = []
    for event in events:
        if parse_ts_ms(event["ts"]) >= now_ms:
            return past, itertools.chain([event], events)
        past.append(event)
    return past, iter(())


def parse_ts_ms(ts: str) -> int:
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


def _stamped_now(events: Iterable[dict]) -> Iterator[dict]:
    for event in events:
        yield {**event, "ts": format_ts(_now_ms())}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _midnight_ms() -> int:
    now = _now_ms()
    return now - now % DAY_MS


def _cli(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m omnirec.simulate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0, help="live: events per second")
    parser.add_argument("--duration", type=float, default=None, help="live: seconds")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--days", type=float, default=90, help="file: days of history")
    parser.add_argument("--history-days", type=float, default=0.0,
                        help="live: first send this many days of past at full speed")
    parser.add_argument("--out", help="write JSONL here ('-' for stdout) instead of Kafka")
    parser.add_argument("--write-catalog", action="store_true",
                        help=f"regenerate {CATALOG_PATH.name} and exit")
    args = parser.parse_args(argv)
    if args.write_catalog:
        print(f"{write_demo_catalog()} products → {CATALOG_PATH}", file=sys.stderr)
        return
    main(customers=args.customers, rate=args.rate, duration=args.duration, seed=args.seed,
         out=args.out, days=args.days, history_days=args.history_days)


if __name__ == "__main__":
    _cli()


# ----------------------------------------------------------------------------- offer reactions


def react_to_offers(settings=None, api_url: str = "http://127.0.0.1:8000", api_key: str | None = None,
                    customers: int = 200, rate: float = 5.0, duration: float | None = None,
                    seed: int = 42, *, offers_path: str | Path | None = None, client=None,
                    max_decisions: int | None = None) -> dict[str, int]:
    """Live shoppers answer the offers the API serves them, with the planted preferences.

    For random customers of the population `main(customers=…, seed=…)` plays live, asks
    GET /v1/customers/{id}/next-best-offer (on a channel drawn from the customer's habits),
    posts an `impression` to POST /v1/feedback, then `accept` or `dismiss` as
    `omnirec.offer_truth.react` decides (an ignored offer gets no further feedback).
    `rate` decisions per second for `duration` seconds (None: until interrupted, or
    `max_decisions`). `client` is any httpx-like client (tests pass the app's TestClient).
    Returns counts: decisions, no_offer, accept, dismiss, ignore, errors.
    """
    import httpx

    from online_models.offers import offer_from_dict

    path = Path(offers_path) if offers_path else Path(__file__).parent / "data" / "demo_offers.json"
    known = {o.offer_id: o for o in map(offer_from_dict, orjson.loads(Path(path).read_bytes()))}
    population = make_customers(customers, seed, load_demo_catalog(), days=None)
    rng = random.Random(f"omnirec-offer-reactions:{seed}")
    key = api_key
    if key is None and settings is not None and getattr(settings, "api_keys", None):
        key = next(iter(settings.api_keys))
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    http = client or httpx.Client(base_url=api_url, timeout=5.0)
    counts = dict.fromkeys(("decisions", "no_offer", "accept", "dismiss", "ignore", "errors"), 0)
    started = time.monotonic()
    try:
        while max_decisions is None or counts["decisions"] < max_decisions:
            due = started + counts["decisions"] / rate
            if duration is not None and due - started >= duration:
                break
            time.sleep(max(0.0, due - time.monotonic()))
            counts["decisions"] += 1
            customer = rng.choice(population)
            channel = rng.choices(("web", "app", "store"), customer.channel_mix)[0]
            params = {"channel": channel}
            if channel == "store":
                params["store_id"] = customer.home_store
            try:
                answer = http.get(f"/v1/customers/{customer.customer_id}/next-best-offer",
                                  params=params, headers=headers)
                answer.raise_for_status()
                body = answer.json()
                if not body.get("offer") or not body.get("decision_id"):
                    counts["no_offer"] += 1
                    continue
                served = body["offer"]
                offer = known.get(served["offer_id"]) or offer_from_dict(
                    {"offer_id": served["offer_id"], "kind": served["kind"], "value": served["value"]})
                reaction = offer_truth.react(customer, offer, rng)
                for event in ("impression", reaction):
                    if event != "ignore":
                        http.post("/v1/feedback", json={"decision_id": body["decision_id"], "event": event},
                                  headers=headers).raise_for_status()
                counts[reaction] += 1
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                counts["errors"] += 1
                if counts["errors"] <= 3:
                    print(f"react_to_offers: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        if client is None:
            http.close()
    print(f"react_to_offers: {counts}", file=sys.stderr)
    return counts
