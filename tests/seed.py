"""Seed data shared by the integration and browser tests: a tiny catalog where trousers come
with a belt, everybody buys coffee and a few buy socks."""

from __future__ import annotations

TS = 1_795_601_700_000  # 2026-11-25T10:15:00Z
CATALOG = [
    {"sku": "TR-1", "name": "Slim trousers", "category": "men/trousers", "brand": "Northway", "price": 50},
    {"sku": "BL-1", "name": "Leather belt", "category": "men/belts", "brand": "Northway", "price": 20},
    {"sku": "SK-1", "name": "Wool socks", "category": "men/socks", "brand": "Linea", "price": 8},
    {"sku": "CF-1", "name": "Coffee", "category": "grocery/coffee", "brand": "Bean", "price": 9},
]


def purchase(n: int, customer: str, skus, minutes: int = 0, ts: int | None = None, **extra) -> dict:
    """The customer's n-th store purchase, an hour after the previous one unless `ts` is given."""
    return {"event_id": f"p-{customer}-{n}", "type": "purchase", "ts": ts or TS + (n * 60 + minutes) * 60_000,
            "channel": "store", "customer_id": customer, "store_id": "s-1", "order_id": f"o-{customer}-{n}",
            "items": [{"sku": sku, "qty": 1, "price": 10.0} for sku in skus], **extra}


def history(customers: int = 20) -> list[dict]:
    """Two baskets per customer; trousers come with a belt except for c-0, c-3, c-6, …"""
    events = []
    for c in range(customers):
        cid = f"c-{c}"
        events.append(purchase(0, cid, ["TR-1", "BL-1", "CF-1"] if c % 3 else ["TR-1", "CF-1"]))
        events.append(purchase(1, cid, ["CF-1"] + (["SK-1"] if c % 4 == 0 else [])))
    return events
