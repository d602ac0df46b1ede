"""The personal next-basket model: the decayed item vector, timing against the cycle, and the
explore pool from what others bought with the customer's items."""

import random
from dataclasses import replace

from online_models import keys, nextbasket
from online_models.customer import CustomerState
from online_models.decay import Decay
from online_models.items import Neighbor, PopularityIndex
from online_models.ranking import Request, Weights, anchors, recommend

from .helpers import CATALOG, day, purchase

DECAY = Decay(14)
POPULAR = PopularityIndex(global_top=["PH-1", "GD-1", "BL-1", "TR-2"])


def customer(*events):
    state = CustomerState("c-1")
    for e in events:
        state.apply(e, DECAY)
    return state


def rank_of(sku, suggestions):
    return [s.sku for s in suggestions].index(sku)


def weekly_and_monthly():
    """Coffee every 7 days (last on day 21); socks every 28 days, bought as often and more lately
    (last on day 24)."""
    coffee = [purchase(f"cf{n}", skus=("CF-1",), ts=day(7 * n)) for n in range(4)]
    socks = [purchase(f"sk{n}", skus=("SK-1",), ts=day(-60 + 28 * n)) for n in range(4)]
    return customer(*sorted(coffee + socks, key=lambda e: e.ts_ms))


def test_a_weekly_item_at_its_cycle_ranks_above_an_item_bought_as_often_that_is_not_due():
    state = weekly_and_monthly()
    due_day = recommend(state, Request("home", k=10, now_ms=day(28)), {}, POPULAR, CATALOG)
    assert rank_of("CF-1", due_day) < rank_of("SK-1", due_day)
    assert "you usually buy this about now" in due_day[rank_of("CF-1", due_day)].reasons


def test_a_weekly_item_is_more_due_a_week_after_its_last_purchase_than_the_day_after():
    state = weekly_and_monthly()

    def due(now):
        out = recommend(state, Request("home", k=10, now_ms=now), {}, POPULAR, CATALOG)
        return out[rank_of("CF-1", out)].features["due"]

    assert due(day(28)) > 2 * due(day(22))


def test_timing_peaks_at_the_cycle_and_a_lapsed_habit_keeps_a_floor():
    assert nextbasket.timing(7, 7) == 1.0
    assert nextbasket.timing(1, 7) < nextbasket.timing(5, 7) < 1.0
    assert nextbasket.timing(365, 7) == nextbasket.OVERDUE_FLOOR
    assert nextbasket.timing(3, None) == 1.0  # nothing known of the timing: no penalty


def test_a_neighbours_item_shows_up_in_the_explore_pool():
    # Trousers, bought three times, then five other items: the trousers are no longer among the
    # recent buys the home page takes as anchors, but they are the heaviest in the vector.
    trousers = [purchase(f"tr{n}", skus=("TR-1",), ts=day(n)) for n in range(3)]
    others = [purchase(f"o{n}", skus=(sku,), ts=day(3 + n)) for n, sku in
              enumerate(("SK-1", "BL-1", "CF-1", "PH-1", "GD-1"))]
    state = customer(*trousers, *others)
    request = Request("home", k=10, now_ms=day(9))
    assert "TR-1" in anchors(state, request)  # its co-purchase list is fetched by the caller
    neighbours = {"TR-1": [Neighbor("SH-1", 0.6, 0.3)]}  # others bought shirts with those trousers
    out = recommend(state, request, neighbours, POPULAR, CATALOG, weights=Weights(neighbours=1.0))
    shirt = out[rank_of("SH-1", out)]
    assert shirt.features["neighbours"] > 0 and "complement" not in shirt.features
    assert "bought by customers who buy what you buy" in shirt.reasons
    assert "SH-1" not in state.bought  # the explore pool: an item this customer never bought


def test_the_vector_weighs_recent_baskets_more_and_is_bounded_however_long_the_history():
    state = customer(*[purchase(f"p{n}", skus=(f"SKU-{n}",), ts=day(n)) for n in range(500)])
    assert len(state.basket_vector) <= 2 * nextbasket.MAX_VECTOR
    weights = nextbasket.personal(state.basket_vector)
    assert weights["SKU-499"] == 1.0 and weights["SKU-498"] < 1.0
    assert "SKU-0" not in state.basket_vector  # the oldest baskets were dropped
    stored = keys.decode_profile(keys.encode_customer(state))
    assert isinstance(stored, CustomerState)
    assert len(stored.basket_vector) == nextbasket.MAX_VECTOR
    assert set(stored.basket_vector) == {f"SKU-{n}" for n in range(500 - nextbasket.MAX_VECTOR, 500)}


def test_the_vector_is_the_same_whatever_order_orders_arrive_in_or_whoever_held_them():
    orders = [purchase(f"p{n}", skus=("TR-1", f"SKU-{n % 7}"), ts=day(n)) for n in range(30)]
    in_order = customer(*orders)
    shuffled = customer(*random.Random(3).sample(orders, len(orders)))
    assert keys.encode_customer(in_order) == keys.encode_customer(shuffled)
    # an anonymous alias's orders, merged in when it is stitched, count as the customer's own
    state = customer(*orders[:20])
    alias = CustomerState("anon-1")
    for order in orders[20:]:
        alias.apply(replace(order, customer_id="anon-1"), DECAY)
    state.merge(alias)
    assert {s: round(w, 6) for s, w in nextbasket.personal(state.basket_vector).items()} == {
        s: round(w, 6) for s, w in nextbasket.personal(in_order.basket_vector).items()}
