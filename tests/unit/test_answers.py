"""The API's answers as pure functions: same input, same body; ids round-trip into feedback."""

import pytest

from online_models import answers, ranking
from online_models.customer import CustomerState
from online_models.decay import Decay
from online_models.offers import (
    ArbitrationSettings,
    OfferStats,
    Situation,
    cell_in_words,
    decide,
    offer_from_dict,
)
from online_models.refs import BadRef, DecisionRef, RecommendationRef, SigningKeys, decode_ref

from .helpers import CATALOG, T0, day, purchase

KEYS = SigningKeys.of({"k1": "a test secret, 16+ bytes"})


def test_recommendations_body_issues_one_id_per_item_that_feedback_accepts():
    request = ranking.Request("cart", ("TR-1",), channel="web", k=2)
    items = [ranking.Suggestion("BL-1", 0.9, ["bought with Slim trousers"], "Leather belt", "men/belts", 20.0,
                                {"complement": 0.5}),
             ranking.Suggestion("SK-1", 0.5, ["popular right now"], "Wool socks", "men/socks", 8.0)]
    body = answers.recommendations_body(None, "c-9", request, items, T0, [7, 8], KEYS)
    assert body == answers.recommendations_body(None, "c-9", request, items, T0, [7, 8], KEYS)
    assert body["customer_id"] == "c-9" and body["known_customer"] is False and body["context"] == "cart"
    assert [i["sku"] for i in body["items"]] == ["BL-1", "SK-1"]
    ref = decode_ref(body["items"][0]["recommendation_id"], RecommendationRef, KEYS)
    assert (ref.customer_id, ref.ts_ms, ref.nonce, ref.sku, ref.features[0]) == ("c-9", T0, 7, "BL-1", 0.5)

    envelope = answers.feedback_envelope(None, body["items"][0]["recommendation_id"], "click", None, T0 + 5, KEYS)
    assert envelope["ts"] == T0 + 5 and envelope["sku"] == "BL-1" and envelope["customer_id"] == "c-9"
    again = answers.feedback_envelope(None, body["items"][0]["recommendation_id"], "click", day(1), T0, KEYS)
    assert again["event_id"] == envelope["event_id"] and again["ts"] == day(1)  # a retry counts once
    with pytest.raises(BadRef, match="malformed DecisionRef id"):
        answers.feedback_envelope("d1.garbage", None, "accept", None, T0, KEYS)


def test_decision_body_carries_the_chosen_offer_and_its_id():
    offers = [offer_from_dict({"offer_id": "pts", "kind": "loyalty_points", "value": 10.0})]
    state = None
    situation = Situation(day(200), "web")
    decision = decide(offers, {}, state, situation, CATALOG, ArbitrationSettings(control_share=0.0), seed=1)
    body = answers.decision_body("c-1", decision, situation, nonce=42, signing=KEYS, reveal_profile=True)
    assert body["offer"]["offer_id"] == "pts" and body["offer"]["valid_days"] == offers[0].valid_days
    ref = decode_ref(body["decision_id"], DecisionRef, KEYS)
    assert (ref.offer_id, ref.ts_ms, ref.nonce, ref.control) == ("pts", day(200), 42, False)
    assert answers.suggested_offer(decision) == decision.chosen.summary()
    envelope = answers.feedback_envelope(body["decision_id"], None, "accept", None, day(200), KEYS)
    assert (envelope["offer_id"], envelope["customer_id"], envelope["control"]) == ("pts", "c-1", False)

    nothing = decide([], {}, state, situation, CATALOG, ArbitrationSettings(), seed=1)
    empty = answers.decision_body("c-1", nothing, situation, nonce=42, signing=KEYS, reveal_profile=True)
    assert empty["offer"] is None and empty["decision_id"] is None
    assert answers.suggested_offer(nothing) is None


def test_catalog_search_and_metrics_summary():
    found = answers.search_catalog(CATALOG.values(), "belt", 10)
    assert [p["sku"] for p in found] == ["BL-1", "XX-1"]  # in stock first
    assert answers.search_catalog(CATALOG.values(), "belt", 1) == found[:1]
    assert answers.search_catalog(CATALOG.values(), "zzz", 10) == []

    stats = OfferStats("pts", {"a": [3.0, 1.0], "b": [1.0, 0.0]})
    api_counts = {"requests": 9, "client_errors": 2, "server_errors": 1, "rate_limited": 1, "unavailable": 1, "shed": 0}
    flow_hash = {b"messages": b"10", b"updated_ms": str(T0).encode(), b"prom:0:omnirec_flow_events_total": b"8",
                 b"prom:0:updated_ms": str(T0).encode()}
    summary = answers.metrics_summary(flow_hash, 2, [stats], api_counts, T0 + 1)
    flow = {"events": 8, "dead_letters": 0, "step_errors": 0, "redis_retries": 0, "churn_alerts": 0,
            "consumer_lag": 0, "processes": 1, "updated_ms": T0}
    assert summary == {"flow_messages": 10, "flow_updated_ms": T0, "alerts_today": 2, "offer_impressions": 4.0,
                       "offer_accepts": 1.0, "offer_acceptance_rate": 0.25, "now_ms": T0 + 1,
                       "flow": flow, "api": api_counts}
    assert answers.metrics_summary({}, 0, [], api_counts, T0)["offer_acceptance_rate"] is None
    assert answers.day_start_ms(T0) <= T0 < answers.day_start_ms(T0) + 86_400_000


def test_without_the_profile_scope_next_best_offer_reveals_no_profile_facts():
    """A web shop's key (`recommend`) gets the offer and why it won, but not the customer's cell,
    what they never buy, their contact history or their value; the till's key (`profile`) gets it all."""
    state = CustomerState("c-1")
    for i in range(3):
        state.apply(purchase(f"p{i}", skus=("TR-1", "BL-1"), ts=day(i * 40)), Decay(14))
    offers = [offer_from_dict({"offer_id": "care", "kind": "service", "value": 10.0}),
              offer_from_dict({"offer_id": "pts", "kind": "loyalty_points", "value": 10.0}),  # timing: too short
              offer_from_dict({"offer_id": "kids-10", "kind": "discount", "value": 5.0,
                               "eligibility": {"categories": ["kids"]}}),
              offer_from_dict({"offer_id": "app-only", "kind": "service", "value": 5.0,
                               "eligibility": {"channels": ["app"]}})]
    situation = Situation(day(100), "web")
    decision = decide(offers, {}, state, situation, CATALOG, ArbitrationSettings(control_share=0.0), seed=1)
    full = answers.decision_body("c-1", decision, situation, nonce=1, signing=KEYS, reveal_profile=True)
    public = answers.decision_body("c-1", decision, situation, nonce=1, signing=KEYS, reveal_profile=False)
    assert full["cell"] and full["not_eligible"]["kids-10"] == "eligibility: customer never buys kids"
    assert any(cell_in_words(full["cell"]) in r for r in full["reasons"])  # the cell, in words
    assert public["cell"] is None
    assert "next purchase expected" in full["not_eligible"]["pts"]
    assert public["not_eligible"] == {"kids-10": "not for this customer", "pts": "not for this customer",
                                      "app-only": full["not_eligible"]["app-only"]}
    assert "channel" in public["not_eligible"]["app-only"]  # the situation is no secret
    assert public["reasons"] and not any(cell_in_words(full["cell"]) in r or full["cell"] in r
                                         for r in public["reasons"])
    assert public["offer"] == full["offer"]


def test_an_alert_whose_customer_bought_since_the_lapse_is_no_longer_listed():
    away, back = CustomerState("c-away"), CustomerState("c-back")
    for state in (away, back):
        state.apply(purchase("p1", customer=state.customer_id, ts=day(0)), Decay(14))
    back.apply(purchase("p2", customer="c-back", ts=day(40)), Decay(14))  # came back after the alert
    alerts = [{"id": "1-0", "customer_id": "c-away", "episode": day(0), "value_at_risk": 500.0},
              {"id": "2-0", "customer_id": "c-back", "episode": day(0), "value_at_risk": 900.0},
              {"id": "3-0", "customer_id": "c-old", "value_at_risk": 300.0}]  # raised before episodes existed
    still_away = [a for a, state in zip(alerts, (away, back, None)) if not answers.came_back(a, state)]
    assert [a["id"] for a in answers.alerts_by_value(still_away, 100.0)] == ["1-0", "3-0"]


def test_an_alert_reads_as_the_customer_is_now_not_as_when_it_was_raised():
    """The audit found alerts saying "last bought 14 days ago" 25 days on, and a value at risk of
    888 for a customer who had since sent most of it back."""
    from online_models.events import Event, Item
    from online_models.profile import Population

    state = CustomerState("c-1")
    for n in range(4):
        state.apply(purchase(f"p{n}", ts=day(7 * n), price=100.0), Decay(14))
    population = Population()
    raised = {"id": "1-0", "customer_id": "c-1", "episode": day(21), "ts_ms": day(21 + 18)}
    answers.refreshed_alert(raised, state, population, day(21 + 18))
    then = dict(raised)
    assert then["reasons"][0].startswith("last bought 18 days ago")
    answers.refreshed_alert(raised, state, population, day(21 + 25))
    assert raised["reasons"][0].startswith("last bought 25 days ago")
    state.apply(Event("r1", "return", day(21 + 20), "web", customer_id="c-1", order_id="o-p3",
                      items=(Item("TR-1", 1, 100.0),)), Decay(14))
    answers.refreshed_alert(raised, state, population, day(21 + 25))
    assert raised["value_at_risk"] < then["value_at_risk"]
    assert "sent back their last purchase" in raised["reasons"]
