"""The stored customer profile: compact (msgpack, schema v2), deterministic, and v1 JSON still read."""

from __future__ import annotations

import orjson
import pytest

from online_models import keys
from online_models.customer import CustomerState
from online_models.decay import Decay
from online_models.events import Item
from tests.unit.helpers import day, event, purchase

DECAY = Decay(14.0)


def busy_customer(order: int = 1) -> CustomerState:
    """A customer with purchases, views, a cart, a return, a store visit and a survey; ``order``
    reverses the order of the events (topics read in another order)."""
    events = [
        purchase("p1", skus=("TR-1", "BL-1"), ts=day(0), store="s-1"),
        event("v1", "product_view", ts=day(1), sku="SH-1"),
        event("v2", "product_view", ts=day(2), sku="SK-1"),
        event("a1", "add_to_cart", ts=day(3), items=(Item("SH-1", 1, 40.0, "men/shirts", "Linea"),)),
        purchase("p2", skus=("TR-1",), ts=day(10), price=49.9),
        event("r1", "return", ts=day(11), items=(Item("BL-1", 1, 20.0),)),
        event("s1", "store_visit", ts=day(12), channel="store", store_id="s-2"),
        event("q1", "survey", ts=day(13), score=8),
    ][::order]
    state = CustomerState("c-1")
    for e in events:
        state.apply(e, DECAY)
    state.record_feedback("impression", "winback-15", day(14), "web")
    state.record_feedback("dismiss", None, day(14), "web", sku="SK-1")
    return state


def test_a_profile_reads_back_as_the_customer_it_was():
    state = busy_customer()
    back = keys.decode_profile(keys.encode_customer(state))
    assert back.customer_id == "c-1" and back.orders == 2
    assert back.net_value == pytest.approx(state.net_value)
    assert back.bought == state.bought
    assert back.recent_views == state.recent_views
    assert back.basket == state.basket
    assert back.last_ts == state.last_ts and back.last_store == "s-2"
    assert back.rhythm.purchases == state.rhythm.purchases and back.rhythm.survey_score == 8.0
    assert back.contacts.shown == state.contacts.shown and back.not_interested == state.not_interested
    assert back.categories == pytest.approx(state.categories, abs=1e-4)
    assert keys.encode_customer(back) == keys.encode_customer(state)  # decode → encode keeps the bytes


def test_a_long_history_of_visit_days_packs_and_reads_back():
    state = busy_customer()
    for n in range(0, 400, 3):  # more days than the window holds: its mask is hundreds of bits wide
        state.apply(event(f"w{n}", "product_view", ts=day(20 + n), sku="SH-1"), DECAY)
    back = keys.decode_profile(keys.encode_customer(state))
    assert back.rhythm.visit_days == state.rhythm.visit_days and state.rhythm.visit_days.mask.bit_length() > 64


def test_the_bytes_do_not_depend_on_the_order_events_arrived_in():
    assert keys.encode_customer(busy_customer(1)) == keys.encode_customer(busy_customer(-1))


def test_a_profile_is_much_smaller_than_its_json():
    state = busy_customer()
    as_json = orjson.dumps({"v": 1, "kind": "customer", "state": state.to_dict()})
    assert len(keys.encode_customer(state)) < len(as_json) / 3


def test_profiles_and_links_written_as_v1_json_still_read():
    state = busy_customer()
    data = state.to_dict()
    data.pop("seen_ids")
    v1 = orjson.dumps({"v": 1, "kind": "customer", "state": data}, option=orjson.OPT_SORT_KEYS)
    back = keys.decode_profile(v1)
    assert back.bought == state.bought and back.net_value == pytest.approx(state.net_value)
    assert keys.decode_profile(orjson.dumps({"v": 1, "kind": "link", "alias": "a-1", "customer_id": "c-1"})) == "c-1"
    assert keys.decode_profile(keys.encode_link("a-1", "c-1")) == "c-1"


def test_an_unknown_schema_version_is_refused():
    import msgpack

    with pytest.raises(keys.SchemaMismatch):
        keys.decode_profile(msgpack.packb([99, 0, "c-1"]))
    with pytest.raises(keys.SchemaMismatch):
        keys.decode_profile(orjson.dumps({"v": 7, "kind": "customer", "state": {}}))
