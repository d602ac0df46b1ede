"""The simulator: a deterministic, time-ordered stream with the planted behaviour in it."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from itertools import islice

import orjson
import pytest

from omnirec import simulate
from omnirec.settings import Settings
from omnirec.simulate import (
    CATALOG_PATH,
    CATALOG_SEED,
    DAY_MS,
    build_demo_catalog,
    format_ts,
    iter_events,
    iter_messages,
    load_demo_catalog,
    make_customers,
)
from online_models.events import Event, Rejected, parse_event, parse_ts

START_MS = 1_790_000_000_000  # 2026-09-21T14:13:20Z
CUSTOMERS, DAYS, SEED = 300, 120, 7

REQUIRED = {
    "page_view": {"page"},
    "product_view": {"sku"},
    "search": {"query"},
    "add_to_cart": {"items"},
    "remove_from_cart": {"items"},
    "purchase": {"order_id", "items"},
    "return": {"order_id", "items"},
    "store_visit": set(),
    "identify": set(),
    "survey": {"score"},
}
ENVELOPE = {"event_id", "type", "ts", "channel", "customer_id", "anonymous_id"}
TS_FORMAT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(scope="module")
def catalog():
    return load_demo_catalog()


@pytest.fixture(scope="module")
def events(catalog):
    return list(iter_events(CUSTOMERS, START_MS, SEED, catalog, days=DAYS))


@pytest.fixture(scope="module")
def purchases(events):
    return [e for e in events if e["type"] == "purchase"]


def _kinds(event):
    return {item["category"].rpartition("/")[2] for item in event["items"]}


# ----------------------------------------------------------------------------- catalogue


def test_committed_catalog_is_the_generated_one(catalog):
    assert catalog == build_demo_catalog(CATALOG_SEED)
    assert CATALOG_PATH.read_bytes().count(b"\n") == len(catalog)


def test_catalog_products_are_complete_and_plausible(catalog):
    assert 280 <= len(catalog) <= 320
    assert len({p["sku"] for p in catalog}) == len(catalog)
    for product in catalog:
        assert set(product) == {"type", "sku", "name", "category", "brand", "price", "margin",
                                "in_stock", "attributes"}
        assert product["type"] == "product"
        assert re.fullmatch(r"[A-Z]{2}-\d{3}", product["sku"])
        assert product["price"] > 0 and 0.15 <= product["margin"] <= 0.55
    assert 9 <= len({p["brand"] for p in catalog}) <= 15
    out_of_stock = sum(not p["in_stock"] for p in catalog) / len(catalog)
    assert 0.01 < out_of_stock < 0.1


def test_catalog_has_the_kinds_the_demo_talks_about(catalog):
    prefixes = {p["sku"][:2] for p in catalog}
    assert {"TR", "BL", "SK", "SH", "PH", "PC", "CH"} <= prefixes
    categories = {p["category"] for p in catalog}
    assert {"men/trousers", "men/belts", "kids/boys/shirts", "kids/girls/dresses",
            "electronics/phone-cases", "grocery/coffee", "home/cleaning"} <= categories


# ----------------------------------------------------------------------------- the stream


def test_same_seed_same_stream_other_seed_other_stream(catalog):
    first = list(islice(iter_events(40, START_MS, 3, catalog, days=30), 3000))
    again = list(islice(iter_events(40, START_MS, 3, catalog, days=30), 3000))
    other = list(islice(iter_events(40, START_MS, 4, catalog, days=30), 3000))
    assert first == again
    assert first != other


def test_events_are_in_event_time_order_within_the_horizon(events):
    times = [parse_ts(e["ts"]) for e in events]
    assert times == sorted(times)
    assert START_MS <= times[0] and times[-1] <= START_MS + DAYS * DAY_MS


def test_every_event_has_the_fields_of_its_type(events):
    assert {e["type"] for e in events} == set(REQUIRED)
    for event in events:
        assert ENVELOPE | REQUIRED[event["type"]] <= set(event), event
        assert re.fullmatch(r"[0-9a-f]{32}", event["event_id"])
        assert TS_FORMAT.match(event["ts"])
        assert event["customer_id"] or event["anonymous_id"]
        if event["channel"] == "store":
            assert event["store_id"] in {"s-1", "s-2", "s-3", "s-4", "s-5"}
            assert event["customer_id"]
        else:
            assert event["channel"] in {"web", "app"} and event["session_id"]
        for item in event.get("items", ()):
            assert set(item) - {"list_price"} == {"sku", "qty", "price", "category", "brand"}
            assert item.get("list_price", item["price"]) >= item["price"]
            assert item["qty"] > 0
    assert len({e["event_id"] for e in events}) == len(events)


def test_identify_links_the_anonymous_session_to_the_customer(events):
    identifies = [e for e in events if e["type"] == "identify"]
    assert identifies
    assert all(e["anonymous_id"] and re.fullmatch(r"c-\d{5}", e["customer_id"])
               for e in identifies)


def test_every_event_passes_the_contract_parser(events):
    parsed = [parse_event(orjson.dumps(e)) for e in events]
    assert all(isinstance(p, Event) for p in parsed), next(
        p for p in parsed if isinstance(p, Rejected))


def test_web_sessions_start_anonymous_and_some_end_in_a_later_store_purchase(events):
    first_of_session = {}
    for event in events:
        if event["channel"] == "web" and event["type"] == "page_view":
            first_of_session.setdefault(event["session_id"], event)
    anonymous = [e for e in first_of_session.values() if e["customer_id"] is None]
    assert len(anonymous) > 0.5 * len(first_of_session)
    store_purchases = [e for e in events if e["type"] == "purchase" and e["channel"] == "store"]
    assert len({e["customer_id"] for e in store_purchases}) > CUSTOMERS / 3


# ----------------------------------------------------------------------------- planted behaviour


def test_trousers_come_with_belts_socks_and_shirts(purchases):
    with_trousers = [p for p in purchases if "trousers" in _kinds(p)]
    assert len(with_trousers) > 200

    def share(baskets, kind):
        return sum(kind in _kinds(b) for b in baskets) / len(baskets)

    assert share(with_trousers, "belts") > 0.45
    assert share(with_trousers, "belts") > 3 * share(purchases, "belts")
    assert share(with_trousers, "socks") > 2 * share(purchases, "socks")


def test_phones_come_with_a_case_that_fits(purchases, catalog):
    by_sku = {p["sku"]: p for p in catalog}
    with_phone = [p for p in purchases if "phones" in _kinds(p)]
    assert len(with_phone) >= 20
    with_case = [p for p in with_phone if "phone-cases" in _kinds(p)]
    assert len(with_case) > 0.5 * len(with_phone)
    for basket in with_case:
        models = {by_sku[i["sku"]]["attributes"].get("model") for i in basket["items"]}
        fits = {by_sku[i["sku"]]["attributes"].get("fits") for i in basket["items"]}
        assert fits - {None} <= models


def test_parents_of_boys_never_buy_girls_clothes(purchases, catalog):
    customers = make_customers(CUSTOMERS, SEED, catalog, days=DAYS)
    boys_only = {c.customer_id for c in customers
                 if "kids/boys" in c.lines and "kids/girls" not in c.lines}
    assert len(boys_only) > 20
    bought = defaultdict(set)
    for purchase in purchases:
        for item in purchase["items"]:
            bought[purchase["customer_id"]].add(item["category"])
    assert any(c.startswith("kids/boys/") for cid in boys_only for c in bought[cid])
    assert not any(c.startswith("kids/girls/") for cid in boys_only for c in bought[cid])


def test_discount_shoppers_buy_on_sale_and_return_about_half(events, catalog):
    by_sku = {p["sku"]: p for p in catalog}
    segment = {c.customer_id: c.segment for c in make_customers(CUSTOMERS, SEED, catalog, DAYS)}
    bought, returned, on_sale = Counter(), Counter(), Counter()
    orders = {}
    for event in events:
        who = segment.get(event["customer_id"])
        if event["type"] == "purchase":
            orders[event["order_id"]] = event
            bought[who] += len(event["items"])
            on_sale[who] += sum(bool(by_sku[i["sku"]]["attributes"].get("on_sale"))
                                for i in event["items"])
        elif event["type"] == "return":
            order = orders[event["order_id"]]  # returns follow their purchase
            assert order["customer_id"] == event["customer_id"]
            assert {i["sku"] for i in event["items"]} <= {i["sku"] for i in order["items"]}
            returned[who] += len(event["items"])
    assert 0.35 < returned["discount"] / bought["discount"] < 0.6
    assert returned["regular"] / bought["regular"] < 0.1
    assert on_sale["discount"] / bought["discount"] > 2 * on_sale["regular"] / bought["regular"]


def test_lapsed_customers_stop_buying(purchases, catalog):
    lapse_ms = {c.customer_id: START_MS + c.lapse_after_days * DAY_MS
                for c in make_customers(CUSTOMERS, SEED, catalog, DAYS) if c.lapse_after_days}
    assert len(lapse_ms) > 0.1 * CUSTOMERS
    late = [p for p in purchases
            if p["customer_id"] in lapse_ms and parse_ts(p["ts"]) >= lapse_ms[p["customer_id"]]]
    assert late == []
    assert any(p["customer_id"] in lapse_ms for p in purchases)


def test_replenishable_items_are_bought_again_and_again(purchases):
    repeats = Counter((p["customer_id"], i["sku"]) for p in purchases for i in p["items"]
                      if i["category"].startswith(("grocery/", "home/cleaning")))
    regulars = [key for key, times in repeats.items() if times >= 4]
    assert len(regulars) > CUSTOMERS / 5


# ----------------------------------------------------------------------------- messages and main


def test_messages_are_clean_by_default_and_carry_bad_ones_and_duplicates_on_demand(events):
    sample = events[:4000]
    clean = list(iter_messages(sample, SEED))
    assert len(clean) == len(sample)
    assert all(isinstance(parse_event(m.value), Event) for m in clean)

    noisy = list(iter_messages(sample, SEED, bad_fraction=0.05, duplicate_fraction=0.05))
    rejected = [m for m in noisy if isinstance(parse_event(m.value), Rejected)]
    assert 100 < len(rejected) < 320
    reasons = {parse_event(m.value).reason.split(" ")[0] for m in rejected}
    assert {"not", "unknown", "field"} <= reasons  # bad JSON, unknown type, negative qty
    values = Counter(m.value for m in noisy)
    assert 100 < sum(n - 1 for n in values.values()) < 320


def test_message_key_is_the_session_or_else_the_customer(events):
    for message, event in zip(iter_messages(events[:500], SEED), events[:500]):
        assert message.key == (event.get("anonymous_id") or event["customer_id"]).encode()
        assert message.channel == event["channel"]


def test_main_writes_catalog_then_history_to_a_file(tmp_path, catalog):
    out = tmp_path / "history.jsonl"
    count = simulate.main(customers=20, seed=5, out=out, days=14, start_ts_ms=START_MS)
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert lines[: len(catalog)] == catalog
    assert len(lines) == len(catalog) + count and count > 100
    expected = list(iter_events(20, START_MS, 5, catalog, days=14))
    assert lines[len(catalog):] == expected


class FakeProducer:
    def __init__(self):
        self.records = []

    def produce(self, topic, value, key, on_delivery):
        self.records.append((topic, key, value))

    def poll(self, _timeout):
        return 0

    def flush(self, _timeout):
        return 0


def test_live_mode_sends_now_stamped_events_to_the_topic_of_their_channel(monkeypatch):
    producer = FakeProducer()
    monkeypatch.setattr(simulate, "make_producer", lambda settings: producer)
    settings = Settings(topic_web="t.web", topic_store="t.store")
    before = simulate._now_ms()
    sent = simulate.main(customers=30, rate=20_000, duration=0.2, seed=1, settings=settings,
                         bad_fraction=0.0, duplicate_fraction=0.0)
    assert sent == len(producer.records) > 100
    for topic, key, value in producer.records:
        event = orjson.loads(value)
        assert topic == ("t.store" if event["channel"] == "store" else "t.web")
        assert key == (event.get("anonymous_id") or event["customer_id"]).encode()
        assert abs(parse_ts(event["ts"]) - before) < 60_000


def test_format_ts_is_iso_with_milliseconds_and_z():
    assert format_ts(1_790_000_000_123) == "2026-09-21T14:13:20.123Z"
    assert parse_ts(format_ts(START_MS + 7)) == START_MS + 7
