"""Measured uplift: control feedback counted apart, gate removals carried from the decision to
the offer's stats, and the report's figures and intervals."""

import orjson
import pytest

from online_models import answers, uplift
from online_models.customer import CustomerState
from online_models.decay import Decay
from online_models.engine import Engine
from online_models.events import Feedback, parse_feedback
from online_models.messages import OfferOutcome
from online_models.offers import (
    ArbitrationSettings,
    OfferStats,
    Situation,
    decide,
    offer_from_dict,
    posterior,
)
from online_models.refs import SigningKeys

from .helpers import CATALOG, T0, day, purchase

KEYS = SigningKeys.of({"k1": "a test secret, 16+ bytes"})

OFFERS = {o["offer_id"]: offer_from_dict(o) for o in [
    {"offer_id": "pts", "kind": "loyalty_points", "value": 4.0},
    {"offer_id": "wb", "kind": "win_back", "value": 10.0},  # unsuitable: they bought yesterday
    {"offer_id": "kids", "kind": "discount", "value": 8.0, "eligibility": {"categories": ["kids"]}},
]}


def shown(decision_seed=1, control_share=0.0):
    state = CustomerState("c-1")
    for n in range(6):
        state.apply(purchase(f"p{n}", ts=day(7 * n)), Decay(14))
    situation = Situation(day(36), "web", churn_score=0.02)
    decision = decide(OFFERS.values(), {}, state, situation, CATALOG, ArbitrationSettings(control_share=control_share),
                      seed=decision_seed)
    return answers.decision_body("c-1", decision, situation, nonce=decision_seed, signing=KEYS,
                                 reveal_profile=True), decision


def feed(engine, state, body, kind, n):
    envelope = answers.feedback_envelope(body["decision_id"], None, kind, None, T0 + n, KEYS)
    feedback = parse_feedback(orjson.dumps(envelope))
    assert isinstance(feedback, Feedback), feedback
    return engine.offer_stats(state, OfferOutcome(feedback))[0]  # as the customer step hands it on


def test_each_gate_s_removals_travel_from_the_decision_to_the_offers_stats():
    body, decision = shown()
    assert body["offer"]["offer_id"] == "pts"
    assert decision.removed_by_gate() == (("eligibility", 1), ("suitability", 1))
    engine = Engine()
    stats = feed(engine, None, body, "impression", 1)
    stats = feed(engine, stats, body, "accept", 2)  # an accept carries no gate counts: one decision, counted once
    assert stats.removed == {"eligibility": 1.0, "suitability": 1.0}
    report = uplift.offers_report(OFFERS, [stats])
    assert report["gates"] == {"eligibility": 1.0, "suitability": 1.0}
    assert report["treated"] == {"impressions": 1.0, "accepts": 1.0, "acceptance": 1.0, "value": 4.0,
                                 "value_per_impression": 4.0}


def test_control_feedback_is_counted_apart_and_never_steers_learning():
    body, decision = shown(control_share=1.0)
    assert body["control"] is True
    engine = Engine()
    stats = feed(engine, None, body, "impression", 1)
    stats = feed(engine, stats, body, "accept", 2)
    assert stats.cells == {} and sum(c[1] for c in stats.control.values()) == 1.0
    offer = OFFERS[body["offer"]["offer_id"]]
    assert posterior(offer, stats, body["cell"]) == posterior(offer, None, body["cell"])


def test_the_report_gives_uplift_with_newcombes_interval_per_offer_and_overall():
    stats = [OfferStats("pts", {"a": [50.0, 40.0], "b": [20.0, 16.0]}, {"a": [80.0, 48.0]}, {"contact": 3.0}),
             OfferStats("kids", {"a": [10.0, 1.0]}, {}, {})]
    report = uplift.offers_report(OFFERS, stats)
    pts = next(r for r in report["offers"] if r["offer_id"] == "pts")
    assert pts["treated"]["impressions"] == 70 and pts["treated"]["accepts"] == 56
    assert pts["treated"]["cells"]["b"] == {"impressions": 20.0, "accepts": 16.0, "acceptance": 0.8, "value": 64.0}
    assert pts["control"]["acceptance"] == 0.6 and pts["control"]["value"] == 192.0
    # Newcombe (1998), example (a): 56/70 − 48/80 = 0.2000, 95 % interval [0.0524, 0.3339]
    assert pts["uplift"]["acceptance"] == {"difference": 0.2, "low": 0.0524, "high": 0.3339}
    kids = next(r for r in report["offers"] if r["offer_id"] == "kids")
    assert kids["uplift"]["acceptance"] is None  # no control impressions yet: no uplift claimed
    assert report["treated"]["impressions"] == 80 and report["control"]["impressions"] == 80
    value = report["uplift"]["value_per_impression"]
    assert value["low"] < value["difference"] < value["high"]
    assert value["difference"] == pytest.approx((56 * 4 + 8) / 80 - 48 * 4 / 80, abs=1e-4)
    lines = uplift.report_lines(report)
    assert lines[1].startswith("kids") and "no control yet" in lines[1]
    assert "+20.0% [+5.2%, +33.4%]" in lines[2]
    assert lines[-1] == "offers removed by each gate (in decisions shown): contact 3"


def test_wilson_interval_stays_within_zero_and_one():
    low, high = uplift.wilson(0, 10)
    assert low == 0.0 and 0.25 < high < 0.35
    assert uplift.wilson(0, 0) is None and uplift.newcombe(1, 2, 0, 0) is None


def test_bad_gate_counts_in_feedback_are_dead_lettered():
    base = {"event_id": "e", "type": "impression", "ts": T0, "customer_id": "c", "offer_id": "pts"}
    for bad in ({"x": -1}, {"x": 1.5}, {"x": True}, [1], {str(i): 1 for i in range(9)}):
        assert not isinstance(parse_feedback(orjson.dumps({**base, "removed": bad})), Feedback), bad
    assert parse_feedback(orjson.dumps({**base, "removed": {"timing": 2}})).removed == (("timing", 2),)
