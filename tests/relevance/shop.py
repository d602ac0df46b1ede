"""A pet and aquatics shop the code has never seen: its own category codes, its own shoppers.

Nothing here is named in the code or in the settings: every rule must find its way from the
stream alone. The population teaches the flow what goes with what (a dog bed with a lead,
and in multi-pet homes with a cat toy), what is rebought (food, litter) and what is bought
once (beds, filters). The personas (``P_*``) are planted among them with known needs; the
tests in this package ask the real API what it does with each one.

Time is relative to ``now_ms`` (the wall clock when the shop is built): the API answers for
"now", and the flow replays this history on event time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from online_models.events import DAY_MS

STORE = "st-harbour"

# sku, name, category code, brand, price
PRODUCTS = [
    ("WW-DB1", "Orthopaedic dog bed", "pt/dg/beds", "Snooze", 60.0),
    ("WW-DB2", "Donut dog bed", "pt/dg/beds", "Snooze", 55.0),
    ("WW-DB3", "Travel dog bed", "pt/dg/beds", "Roamer", 45.0),
    ("WW-DL1", "Reflective dog lead", "pt/dg/leads", "Roamer", 15.0),
    ("WW-DL2", "Rope dog lead", "pt/dg/leads", "Roamer", 12.0),
    ("WW-DL3", "Retractable dog lead", "pt/dg/leads", "Roamer", 22.0),
    ("WW-DW1", "Steel dog bowl", "pt/dg/bowls", "Snooze", 9.0),
    ("WW-DF1", "Adult dog kibble 10 kg", "pt/dg/food", "Barkwell", 40.0),
    ("WW-DT1", "Chew rope toy", "pt/dg/toys", "Barkwell", 7.0),
    ("WW-CT1", "Feather cat wand", "pt/ct/toys", "Purrfect", 6.0),
    ("WW-CB1", "Cat cave bed", "pt/ct/beds", "Purrfect", 35.0),
    ("WW-CL1", "Clumping cat litter", "pt/ct/litter", "Purrfect", 12.0),
    ("WW-CF1", "Salmon cat pouches", "pt/ct/food", "Purrfect", 8.0),
    ("AQ-FL1", "Canister filter", "aq/fw/filters", "Clearwater", 120.0),
    ("AQ-FF1", "Tropical flake food", "aq/fw/food", "Clearwater", 6.0),
    ("AQ-PL1", "Java fern", "aq/fw/plants", "Greenreef", 5.0),
    ("AQ-HT1", "Aquarium heater", "aq/fw/heaters", "Clearwater", 30.0),
]
CATALOG = [{"sku": sku, "name": name, "category": category, "brand": brand, "price": price}
           for sku, name, category, brand, price in PRODUCTS]
PRICE = {sku: price for sku, _, _, _, price in PRODUCTS}
CATEGORY = {sku: category for sku, _, category, _, _ in PRODUCTS}

WIN_BACK = {"offer_id": "ww-come-back", "name": "Come back: 15% off your next visit", "kind": "win_back",
            "value": 10.0, "cost": 6.0, "valid_days": 30, "prior_propensity": 0.2}
DOG_DISCOUNT = {"offer_id": "ww-dog-10", "name": "10% off everything for dogs", "kind": "discount",
                "value": 8.0, "eligibility": {"categories": ["pt/dg"]}, "prior_propensity": 0.2}
POINTS = {"offer_id": "ww-points", "name": "Double points on food", "kind": "loyalty_points",
          "value": 3.0, "prior_propensity": 0.1}
LEAD_BUNDLE = {"offer_id": "ww-lead-bundle", "name": "A lead at half price with a bed", "kind": "bundle",
               "value": 6.0, "bundle_skus": ["WW-DL1"], "prior_propensity": 0.2}
OFFERS = [WIN_BACK, DOG_DISCOUNT, POINTS, LEAD_BUNDLE]

# The personas: each one plants a known need.
P_ACTIVE = "ww-active"  # buys dog food every 4 days for months, last yesterday: no win-back
P_LAPSING_HIGH = "ww-lapsing-high"  # spent 312 a week on food for six weeks, silent for 60 days
P_LAPSING_LOW = "ww-lapsing-low"  # spent 96 a week for six weeks, silent for 50 days
P_ZERO = "ww-zero"  # returned their only purchase: worth 0.00
P_BARGAIN = "ww-bargain"  # buys only on discount and sends half of it back
P_AQUARIST = "ww-aquarist"  # fish food every 10 days; a canister filter yesterday
P_BEDS = "ww-bed-lover"  # has bought dog beds before; now holds another at the till
P_PICKY = "ww-picky"  # a cat and dog home; excludes things per request
P_DISMISS = "ww-dismisser"  # a dog owner who dismisses leads
P_NEWBIE = "ww-newbie"  # one purchase, five days ago
P_BUSY = "ww-busy"  # twelve purchases in 24 days: recent, but no newcomer
P_DEAL = "ww-deal"  # a fair share on discount, nothing sent back: a deal seeker, no returner
P_SLOW = "ww-slow"  # buys every 60 days, last yesterday: the next purchase is far off
P_GONE = "ww-gone"  # bought three times, ten days apart, then nothing for 200 days
P_DEAR = "ww-dear"  # pays 45 an item on average: a dear complement is in their range


@dataclass
class Shop:
    now_ms: int
    events: list[dict] = field(default_factory=list)
    orders: dict[str, int] = field(default_factory=dict)  # purchases per customer

    def buy(self, customer: str, days_ago: float, skus: list[str], discount: float = 0.0, qty: int = 1) -> str:
        n = self.orders.get(customer, 0)
        self.orders[customer] = n + 1
        order = f"o-{customer}-{n}"
        items = [{"sku": sku, "qty": qty, "price": round(PRICE[sku] * (1 - discount), 2),
                  **({"list_price": PRICE[sku]} if discount else {})} for sku in skus]
        self.events.append({"event_id": f"e-{order}", "type": "purchase", "ts": self.ts(days_ago),
                            "channel": "store", "customer_id": customer, "store_id": STORE,
                            "order_id": order, "items": items})
        return order

    def give_back(self, customer: str, days_ago: float, order: str, skus: list[str], discount: float = 0.0) -> None:
        items = [{"sku": sku, "qty": 1, "price": round(PRICE[sku] * (1 - discount), 2)} for sku in skus]
        self.events.append({"event_id": f"r-{order}", "type": "return", "ts": self.ts(days_ago),
                            "channel": "store", "customer_id": customer, "store_id": STORE,
                            "order_id": order, "items": items})

    def ts(self, days_ago: float) -> int:
        return self.now_ms - int(days_ago * DAY_MS)

    def sorted_events(self) -> list[dict]:
        return sorted(self.events, key=lambda e: (e["ts"], e["event_id"]))


def build(now_ms: int, seed: int = 7) -> Shop:
    shop = Shop(now_ms)
    rng = random.Random(seed)
    _population(shop, rng)
    _personas(shop)
    return shop


def _population(shop: Shop, rng: random.Random) -> None:
    """Who teaches the stream: dog homes, cat homes, multi-pet homes and fish keepers."""
    for c in range(30):  # dog homes: a bed with a lead; kibble every fortnight
        customer = f"ww-dog-{c}"
        first = rng.uniform(40, 80)
        shop.buy(customer, first, ["WW-DB1", "WW-DL1"] if c % 5 else ["WW-DB1", "WW-DW1"])
        for n in range(1, 4):
            shop.buy(customer, first - 14 * n + rng.uniform(-1, 1), ["WW-DF1"] + (["WW-DT1"] if n == 2 else []))
    for c in range(10):  # multi-pet homes: the dog bed with a cat toy
        shop.buy(f"ww-multi-{c}", rng.uniform(20, 70), ["WW-DB1", "WW-CT1"] + (["WW-DL1"] if c % 2 else []))
    shop.buy("ww-stock-up", 30, ["WW-DB1", "WW-DF1"])  # once, the bed with kibble: a token pair
    for c in range(15):  # a second dog bed bought on its own (rarely with the first: no pair)
        shop.buy(f"ww-donut-{c}", rng.uniform(5, 60), ["WW-DB2"] if c else ["WW-DB2", "WW-DB1"])
    for c in range(20):  # cat homes: litter and pouches every fortnight, a toy once
        customer = f"ww-cat-{c}"
        first = rng.uniform(40, 80)
        shop.buy(customer, first, ["WW-CL1", "WW-CT1", "WW-CB1"] if c % 2 else ["WW-CL1", "WW-CF1"])
        for n in range(1, 4):
            shop.buy(customer, first - 14 * n + rng.uniform(-1, 1), ["WW-CL1", "WW-CF1"])
    for c in range(15):  # fish keepers: the filter once, flakes every ten days
        customer = f"ww-fish-{c}"
        first = rng.uniform(40, 80)
        shop.buy(customer, first, ["AQ-FL1", "AQ-PL1", "AQ-FF1"] if c % 3 else ["AQ-FL1", "AQ-HT1", "AQ-FF1"])
        for n in range(1, 4):
            shop.buy(customer, first - 10 * n + rng.uniform(-1, 1), ["AQ-FF1"])
    for c in range(8):  # dog homes that try another lead
        shop.buy(f"ww-walker-{c}", rng.uniform(10, 60), ["WW-DL2", "WW-DT1"] if c % 2 else ["WW-DL3", "WW-DW1"])


def _personas(shop: Shop) -> None:
    for n in range(30):  # every 4 days for 120 days; the last one yesterday
        shop.buy(P_ACTIVE, 1 + 4 * (29 - n), ["WW-DF1"])
    for week in range(6):
        shop.buy(P_LAPSING_HIGH, 60 + 7 * (5 - week), ["WW-DF1", "WW-CL1"], qty=6)  # 312 a week
        shop.buy(P_LAPSING_LOW, 50 + 7 * (5 - week), ["WW-DF1", "WW-CF1"], qty=2)  # 96 a week
    zero = shop.buy(P_ZERO, 70, ["WW-DB1", "WW-DL1"])
    shop.give_back(P_ZERO, 66, zero, ["WW-DB1", "WW-DL1"])
    for n in range(4):  # all on 40% off, half of it sent back
        order = shop.buy(P_BARGAIN, 30 - 6 * n, ["WW-DB2", "WW-DL3"], discount=0.4)
        if n % 2:
            shop.give_back(P_BARGAIN, 28 - 6 * n, order, ["WW-DB2", "WW-DL3"], discount=0.4)
    for n in range(5):  # flakes every 10 days, the filter yesterday
        shop.buy(P_AQUARIST, 41 - 10 * n, ["AQ-FF1"])
    shop.buy(P_AQUARIST, 1, ["AQ-FL1"])
    shop.buy(P_BEDS, 30, ["WW-DB3"])
    shop.buy(P_BEDS, 20, ["WW-DW1", "WW-DT1"])
    shop.buy(P_PICKY, 20, ["WW-CL1", "WW-CF1", "WW-DF1"])
    shop.buy(P_PICKY, 6, ["WW-CL1", "WW-CF1", "WW-DT1"])
    shop.buy(P_DISMISS, 12, ["WW-DF1", "WW-DT1"])
    shop.buy(P_DISMISS, 3, ["WW-DF1"])
    shop.buy(P_NEWBIE, 5, ["WW-CF1"])
    for n in range(12):
        shop.buy(P_BUSY, 2 + 2 * (11 - n), ["AQ-FF1", "AQ-PL1"])
    for n in range(3):
        shop.buy(P_DEAL, 9 - 4 * n, ["WW-DF1"], discount=0.3 if n == 1 else 0.0)
        shop.buy(P_DEAL, 9 - 4 * n, ["WW-CF1"], discount=0.3)
        shop.buy(P_SLOW, 1 + 60 * n, ["WW-DF1"])
        shop.buy(P_GONE, 200 + 10 * n, ["WW-CL1"])
    shop.buy(P_DEAR, 15, ["WW-DB2", "WW-CB1"])
