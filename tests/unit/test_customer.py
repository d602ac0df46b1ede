import pickle

import pytest

from online_models import customer as cust
from online_models.customer import CustomerState
from online_models.decay import Decay
from online_models.events import Event, Item
from online_models.identity import AliasState, apply_to_customer

from .helpers import CATALOG, T0, day, event, purchase

DECAY = Decay(14)


def fresh(events, state=None):
    state = state or CustomerState("c-1")
    for e in events:
        state.apply(e, DECAY)
    return state


def test_rfm_and_returns_lower_net_value_not_gross():
    state = fresh([
        purchase("p1", skus=("TR-1", "BL-1"), price=50.0),
        purchase("p2", skus=("SH-1",), price=40.0, ts=day(3), store="s-7"),
        Event("r1", "return", day(5), "store", customer_id="c-1", order_id="o-p1", items=(Item("TR-1", 1, 50.0),)),
    ])
    assert state.orders == 2 and state.gross == 140.0
    assert state.net_value == 90.0
    assert round(state.return_rate, 3) == round(50 / 140, 3)
    assert state.channel_orders == {"web": 1, "store": 1}
    assert state.last_purchase_ts == day(3) and state.last_store == "s-7"


def test_a_duplicate_event_counts_once():
    p = purchase("p1", price=50.0)
    state = fresh([p, p, p])
    assert state.orders == 1 and state.gross == 50.0


def test_affinity_decays_by_event_time_not_wall_time():
    # Trousers long ago, then shirts recently: shirts lead although trousers were bought more often.
    old = [purchase(f"t{i}", skus=("TR-1",), ts=day(i)) for i in range(3)]
    new = [purchase("s1", skus=("SH-1",), ts=day(90))]
    shares = fresh(old + new).category_shares(CATALOG)
    assert shares["men/shirts"] > 0.9 > shares["men/trousers"]
    # The same events replayed a year later give the same shares: only event time matters.
    later = [purchase(e.event_id, skus=(e.items[0].sku,), ts=e.ts_ms + 365 * 86_400_000) for e in old + new]
    assert fresh(later).category_shares(CATALOG) == pytest.approx(shares, rel=1e-9)


def test_sizes_stay_bounded_for_a_long_lived_customer():
    many = [event(f"v{i}", "product_view", ts=day(i / 100), sku=f"SKU-{i}") for i in range(500)]
    buys = [purchase(f"p{i}", skus=(f"SKU-{i}",), ts=day(i / 10)) for i in range(300)]
    state = fresh(many + buys)
    assert len(state.recent_views) == cust.MAX_RECENT_VIEWS
    assert len(state.bought) == cust.MAX_BOUGHT
    assert len(state.seen_ids) == cust.MAX_SEEN_IDS
    assert len(pickle.dumps(state)) < 20_000  # each bytewax epoch copies this per touched key


def test_cart_follows_adds_removes_and_purchase():
    state = fresh([
        Event("a1", "add_to_cart", day(0), "web", customer_id="c-1", items=(Item("TR-1", 2, 50),)),
        Event("a2", "add_to_cart", day(0), "web", customer_id="c-1", items=(Item("BL-1", 1, 20),)),
        Event("r1", "remove_from_cart", day(0), "web", customer_id="c-1", items=(Item("TR-1", 1, 50),)),
    ])
    assert state.basket == {"TR-1": 1, "BL-1": 1}
    fresh([purchase("p1", skus=("TR-1",), ts=day(1))], state)
    assert state.basket == {"BL-1": 1}


def test_identify_hands_the_anonymous_session_to_the_customer():
    alias = AliasState("a-9")
    view = Event("v1", "product_view", day(0), "web", anonymous_id="a-9", sku="TR-1")
    assert alias.apply(view, DECAY).profile_changed
    identify = Event("i1", "identify", day(0), "web", customer_id="c-1", anonymous_id="a-9")
    outcome = alias.apply(identify, DECAY)
    (target, merge), = outcome.forward
    assert target == "c-1" and outcome.linked_to == "c-1"

    customer = fresh([purchase("p1", skus=("SH-1",))])
    apply_to_customer(customer, merge, DECAY)
    assert "a-9" in customer.aliases and "TR-1" in customer.recent_views
    assert "men/trousers" in customer.category_shares(CATALOG)
    apply_to_customer(customer, merge, DECAY)  # a redelivered identify merges once
    assert customer.channel_events["web"] == 2

    # Later anonymous events of the same browser go straight to the customer.
    later = Event("v2", "product_view", day(1), "web", anonymous_id="a-9", sku="BL-1")
    assert alias.apply(later, DECAY).forward == [("c-1", later)]


def test_loyalty_card_at_the_till_is_an_alias():
    e = Event("p1", "purchase", day(0), "store", loyalty_id="L-77", store_id="s-1",
              items=(Item("TR-1", 1, 50),))
    assert e.alias_id == "loyalty:L-77"


def test_a_copy_shares_nothing_mutable_with_the_original():
    import copy

    state = fresh([purchase("p1", skus=("TR-1", "BL-1"), store="s-1"),
                   event("v1", "product_view", sku="SH-1")])
    state.record_feedback("impression", "o-1", day(1), "web")
    clone = copy.deepcopy(state)
    assert clone.to_dict() == state.to_dict()
    fresh([purchase("p2", skus=("TR-1",), ts=day(2))], clone)
    clone.record_feedback("dismiss", "o-1", day(2), "web")
    assert state.orders == 1 and state.bought["TR-1"][0] == 1 and not state.contacts.dismissed
    assert clone.orders == 2 and clone.bought["TR-1"][0] == 2 and state.rhythm.purchases == 1


def test_a_dismissed_recommendation_reaches_the_customer_and_an_anonymous_one_nobody():
    from online_models.engine import Engine, Runner
    from online_models.events import ANONYMOUS_CUSTOMER, Feedback

    runner = Runner(Engine())
    runner.feed(Feedback("f1", "dismiss", T0, "c-9", "web", recommendation_id="r1", sku="BS-1"))
    runner.feed(Feedback("f2", "dismiss", T0, ANONYMOUS_CUSTOMER, "web", recommendation_id="r2", sku="BS-2"))
    runner.feed(Feedback("f3", "click", T0, "c-8", "web", recommendation_id="r3", sku="BS-2"))
    customers = runner.states["customers"]
    assert customers["c-9"].not_interested == {"BS-1": T0}
    assert ANONYMOUS_CUSTOMER not in customers and "c-8" not in customers  # a click changes no profile


def test_a_state_recovered_from_before_a_field_was_added_gets_its_default():
    # bytewax recovery unpickles the snapshots of the running version: a field added since (here
    # the offer trials) must not be a missing attribute that dead-letters every later message
    state = fresh([purchase("p1", skus=("TR-1",))])
    cls, args, (_, slots) = state.__reduce_ex__(4)[:3]
    before = {name: value for name, value in slots.items() if name != "offer_trials"}
    old = CustomerState.__new__(CustomerState)
    old.__setstate__((None, before))
    assert old.offer_trials == {} and old.to_dict() == state.to_dict()
    assert pickle.loads(pickle.dumps(state)).to_dict() == state.to_dict()
