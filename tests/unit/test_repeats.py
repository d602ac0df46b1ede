"""Repeat purchase learned from the stream: what comes back after a purchase follows what
customers did, in category names the code has never seen, and the learned counts are the same
whatever order the purchases arrived in."""

from __future__ import annotations

import random

import pytest

from omnirec.evaluate import Replayer
from omnirec.settings import Settings
from online_models import keys, ranking
from online_models.clock import DAY_MS
from online_models.engine import Engine, Runner
from online_models.events import Event, Item, Product
from online_models.repeats import SHOPPERS, ItemRepeats, RepeatModel, change, contribution

T0 = 1_780_000_000_000
WEEKLY, ONCE = "zq-17", "kk-4"  # a consumable and a durable, in categories no setting names
CATALOG = [Product(WEEKLY, "Tin of qorp", "qx/ab", price=4.0), Product(ONCE, "Vundle", "vv/zz", price=40.0),
           Product("pp-1", "Plim", "qx/cd", price=3.0)]


def purchase(event_id: str, customer: str, day: float, *skus: str) -> Event:
    items = tuple(Item(sku, 1, 5.0, next(p.category for p in CATALOG if p.sku == sku)) for sku in skus)
    return Event(event_id, "purchase", T0 + int(day * DAY_MS), "store", customer_id=customer,
                 store_id="st-1", items=items)


def crowd() -> list[Event]:
    """Twenty customers buy the qorp every week for eight weeks; each buys one vundle once."""
    events = []
    for n in range(20):
        who = f"p-{n}"
        events.append(purchase(f"{who}-v", who, n / 10, ONCE))
        events += [purchase(f"{who}-w{week}", who, 7 * week + n / 10, WEEKLY, "pp-1") for week in range(8)]
    return events


def test_a_weekly_item_comes_back_near_its_cycle_and_a_bought_once_item_stays_out():
    replayer = Replayer(Settings())  # no OMNIREC_REPLENISHABLE_CATEGORIES: nothing is named
    for product in CATALOG:
        replayer.add_product(product)
    replayer.learn(sorted(crowd(), key=lambda e: e.ts_ms))
    shopper = [purchase("me-1", "me", 60, WEEKLY, ONCE)]
    replayer.learn(shopper)
    replayer.rebuild_index()
    state = replayer.customers["me"]

    habit = replayer.repeats.view(WEEKLY)
    assert habit.share > 0.9 and habit.cycle_days == pytest.approx(7, rel=0.15)
    assert replayer.repeats.view(ONCE).share < 0.1

    def home(day: float) -> list[ranking.Suggestion]:
        request = ranking.Request("home", k=5, now_ms=T0 + int(day * DAY_MS))
        return replayer.recommend_for(state, request)

    due = home(60 + 7)  # a week after their purchase: the qorp is due
    assert WEEKLY in [s.sku for s in due] and ONCE not in [s.sku for s in due]
    # bought once by this shopper: the timing is the crowd's, and the reason says so
    assert {"you bought this before", "shoppers usually buy this again about now"} <= set(
        next(s for s in due if s.sku == WEEKLY).reasons)
    # Just bought, it still may come back, but it counts less than when due.
    score = {day: next((s.score for s in home(day) if s.sku == WEEKLY), 0.0) for day in (60.1, 67)}
    assert 0 < score[60.1] < score[67]


def test_a_new_item_inherits_its_category_habit():
    replayer = Replayer(Settings())
    fresh = Product("zq-99", "New qorp", "qx/ab")
    for product in [*CATALOG, fresh]:
        replayer.add_product(product)
    replayer.learn(sorted(crowd(), key=lambda e: e.ts_ms))
    replayer.rebuild_index()
    assert replayer.repeats.view("zq-99", "qx/ab").share > 0.5  # nobody bought it yet
    assert replayer.repeats.view("vv-new", "vv/zz").share < replayer.repeats.view("zq-99", "qx/ab").share


def test_learned_counts_do_not_depend_on_the_order_purchases_arrive_in():
    events = crowd()
    written = []
    for seed in range(3):
        shuffled = list(events)
        random.Random(seed).shuffle(shuffled)  # across and within customers
        runner = Runner(Engine(Settings().engine()))
        runner.feed_all(shuffled)
        written.append({sku: keys.encode_repeats(state) for sku, state in runner.states["item_repeats"].items()})
    assert written[0] == written[1] == written[2] and set(written[0]) == {WEEKLY, ONCE, "pp-1", SHOPPERS}


def test_a_changed_record_moves_only_its_own_contribution():
    week = 7 * DAY_MS
    item = ItemRepeats("x")
    item.apply(change(None, [1, 0, 0]))
    item.apply(change([1, 0, 0], [2, week, 0]))
    item.apply(change([2, week, 0], [3, 2 * week, 0]))
    direct = ItemRepeats("x")
    direct.apply(tuple(contribution([3, 2 * week, 0]).items()))
    assert item.to_dict() == direct.to_dict()
    model = RepeatModel.build({"x": item}, {"x": "a/b"}, half_life_days=180)
    assert model.view("x").cycle_days == pytest.approx(7, rel=0.01) and model.view("x").share == 1.0


def test_the_bar_a_bought_item_must_clear_is_what_a_popular_item_reaches():
    """In a store of many items where even the popular ones reach few shoppers, an item that one
    buyer in twelve buys again comes back; one that one buyer in fifty buys again stays out."""
    often, seldom = "gg-1", "dd-1"
    shelf = [Product(f"ss-{n}", f"Shelf {n}", f"s{n}/x", price=2.0) for n in range(16)]
    catalog = [Product(often, "Jar of plom", "gq/ab", price=3.0), Product(seldom, "Trake", "dq/zz", price=30.0),
               *shelf]
    events = []
    for n in range(100):  # 100 shoppers, each takes one shelf item: the popular ones reach 6 %
        who = f"c-{n}"
        events.append(Event(f"{who}-s", "purchase", T0 + n * 60_000, "store", customer_id=who, store_id="st-1",
                            items=(Item(shelf[n % 16].sku, 1, 2.0, shelf[n % 16].category),)))
    for n in range(48):  # 48 buy each item once; 4 of them buy the jar twice, 1 the trake twice
        who = f"c-{n}"
        for sku, category, again in ((often, "gq/ab", n < 4), (seldom, "dq/zz", n == 4)):
            for order in range(2 if again else 1):
                events.append(Event(f"{who}-{sku}-{order}", "purchase", T0 + (n + 20 * order) * DAY_MS // 4, "store",
                                    customer_id=who, store_id="st-1", items=(Item(sku, 1, 3.0, category),)))
    replayer = Replayer(Settings())
    for product in catalog:
        replayer.add_product(product)
    replayer.learn(sorted(events, key=lambda e: e.ts_ms))
    replayer.learn([Event("me-1", "purchase", T0 + 30 * DAY_MS, "web", customer_id="me",
                          items=(Item(often, 1, 3.0, "gq/ab"), Item(seldom, 1, 30.0, "dq/zz")))])
    replayer.rebuild_index()

    bar = replayer.repeats.bar
    assert bar is not None and bar < 0.1  # the popular items reach few shoppers: the bar is learned low
    assert replayer.repeats.view(seldom).share < bar < replayer.repeats.view(often).share < 0.1
    shown = [s.sku for s in replayer.recommend_for(
        replayer.customers["me"], ranking.Request("home", k=10, now_ms=T0 + 31 * DAY_MS))]
    assert often in shown and seldom not in shown
