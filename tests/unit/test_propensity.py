"""The contextual propensity model (online_models/propensity.py) and how decisions use it."""

import math
import random

import pytest

from online_models import keys
from online_models import propensity as fm
from online_models.answers import decision_body, feedback_envelope
from online_models.customer import CustomerState
from online_models.decay import Decay
from online_models.engine import Engine, EngineSettings, Runner
from online_models.events import Feedback, parse_feedback
from online_models.offers import (
    ArbitrationSettings,
    ContactPolicy,
    OfferStats,
    Situation,
    customer_cell,
    decide,
    offer_from_dict,
    propensity,
)
from online_models.refs import SigningKeys

from .helpers import CATALOG, day, purchase

SIGNING = SigningKeys.of({"k1": "a test secret of 16+ chars"})
OPEN = ContactPolicy(max_per_day=10_000, max_per_week=10_000)  # the stream below shows one customer often


def offer(offer_id, **kw):
    return offer_from_dict({"offer_id": offer_id, "kind": "loyalty_points", "value": 10.0, "valid_days": 365,
                            "prior_propensity": 0.2, **kw})


def x_with(**values):
    """A feature vector with the bias and the named features set."""
    x = [0.0] * fm.DIMENSION
    x[0] = 1.0
    for name, value in values.items():
        x[fm.FEATURES.index(name)] = value
    return tuple(x)


def shopper(coffee_orders: int, customer_id: str = "c-1") -> CustomerState:
    """A menswear buyer (6 orders of trousers, weekly) who buys coffee with the first
    ``coffee_orders`` of them: from 2 to 6 the cell is one ("grocery+men|regular": coffee holds
    over a tenth of their decayed interest), while the share of coffee still differs fourfold."""
    state = CustomerState(customer_id)
    for i in range(6):
        skus = ("TR-1", "CF-1") if i < coffee_orders else ("TR-1",)
        state.apply(purchase(f"p{i}", customer=customer_id, skus=skus, ts=day(i * 7), price=40.0), Decay(14))
    return state


def run_policy(contextual: bool, offers, customers, truth, decisions=1200):
    """Decisions for the customers in turn, learning from seeded reactions; the share of the second
    half's decisions that served each customer their best offer, and its expected value."""
    settings = ArbitrationSettings(contextual=contextual, control_share=0.0, policy=OPEN)
    stats: dict[str, OfferStats] = {}
    rng, best, value = random.Random(5), {c.customer_id: 0 for c in customers}, 0.0
    for n in range(decisions):
        state = customers[n % len(customers)]
        chosen = decide(offers, stats, state, Situation(day(45), "web"), CATALOG, settings, seed=n).chosen
        record = stats.setdefault(chosen.offer.offer_id, OfferStats(chosen.offer.offer_id))
        p = truth[(state.customer_id, chosen.offer.offer_id)]
        record.record("impression", chosen.cell, features=chosen.features)
        if rng.random() < p:
            record.record("accept", chosen.cell, features=chosen.features)
        if n >= decisions // 2:
            value += p
            best[state.customer_id] += p == max(truth[(state.customer_id, o.offer_id)] for o in offers)
    half = decisions // 2 // len(customers)
    return {c: n / half for c, n in best.items()}, value / (decisions // 2)


def test_decisions_tell_apart_customers_of_one_cell():
    """Two kinds of customers share a cell; one accepts the treat far more than the other. The
    cell-level policy must pick one offer for both; the contextual one learns to serve each their best."""
    treat, other = offer("treat"), offer("other")
    plain, coffee_lover = shopper(2, "c-plain"), shopper(6, "c-coffee")
    assert len({customer_cell(s, CATALOG) for s in (plain, coffee_lover)}) == 1  # no per-cell learner tells them apart
    truth = {("c-plain", "treat"): 0.08, ("c-coffee", "treat"): 0.40, ("c-plain", "other"): 0.22,
             ("c-coffee", "other"): 0.22}
    contextual, contextual_value = run_policy(True, [treat, other], [plain, coffee_lover], truth)
    cells_only, cells_value = run_policy(False, [treat, other], [plain, coffee_lover], truth)
    # measured (seeded): contextual 0.62 / 1.00 best offer, 0.284 per decision; cells 0.01 / 0.99, 0.240
    assert min(contextual.values()) > 0.55  # each kind mostly gets its best offer, exploring still
    assert min(cells_only.values()) < 0.1  # the plain customers get the treat they do not want
    assert contextual_value > cells_value + 0.03  # of an oracle's 0.31 per decision


def test_exploration_shrinks_as_evidence_grows():
    rng = random.Random(3)
    model = fm.ContextModel()
    x = x_with(fit=0.5, app=1.0)
    spreads, draws = [], []
    for n in (0, 30, 300, 3000):
        while model.shown < n:
            xi = x_with(fit=rng.random(), app=float(rng.random() < 0.5))
            model.learn("impression", xi)
            if rng.random() < 0.2:
                model.learn("accept", xi)
        fitted = model.posterior(0.2, 20.0)
        spreads.append(fitted.spread(x))
        samples = [fitted.sample(x, seed) for seed in range(200)]
        draws.append(max(samples) - min(samples))
    assert spreads == sorted(spreads, reverse=True) and spreads[-1] < spreads[0] / 5
    assert draws == sorted(draws, reverse=True)
    assert fitted.sample(x, 42) == fitted.sample(x, 42)  # seeded


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), "x", None])
def test_non_finite_or_malformed_updates_are_ignored(bad):
    stats = OfferStats("o-1")
    stats.record("impression", "men", features=x_with(fit=0.5))
    before = keys.encode_offer_stats(stats)
    features = list(x_with(fit=0.5))
    features[3] = bad
    assert stats.model.learn("impression", features) is False
    assert stats.model.learn("accept", features[:-1]) is False  # wrong length: an id from another schema
    stats.model.learn("impression", [1e308] * fm.DIMENSION)  # clamped, not blown up
    fitted = stats.model.posterior(0.2, 20.0)
    assert all(math.isfinite(m) for m in fitted.mean)
    assert 0.0 < fitted.propensity(x_with(fit=0.5)) < 1.0
    stats.record("accept", "men", features=features)  # the cell still counts it; the model does not
    assert stats.cells["men"] == [1.0, 1.0] and stats.model.accepted == 0
    assert before != keys.encode_offer_stats(stats)


def test_state_stays_bounded_and_order_does_not_matter():
    rng = random.Random(9)
    decisions = []  # each decision's feedback: its impression, then maybe its accept
    for n in range(4000):
        x = x_with(fit=rng.random(), discount_share=rng.random(), since_gap=rng.random(), line_0_3=rng.random())
        decisions.append([("impression", f"cell-{n % 7}", x)] + ([("accept", f"cell-{n % 7}", x)] * (rng.random() < 0.2)))
    sizes, states = [], []
    for shuffled in (decisions, list(reversed(decisions)), rng.sample(decisions, len(decisions))):
        order = [fb for decision in shuffled for fb in decision]  # customers' feedback interleaved otherwise
        stats = OfferStats("o-1")
        for i, (kind, cell, x) in enumerate(order):
            stats.record(kind, cell, features=x)
            if i in (200, len(order) - 1):
                sizes.append(len(keys.encode_offer_stats(stats)))
        states.append(keys.encode_offer_stats(stats))
    assert states[0] == states[1] == states[2]  # sums of quantised features are exact: same input, same bytes
    assert len(stats.model.gram) == fm.DIMENSION * (fm.DIMENSION + 1) // 2
    assert sizes[1] < 1.5 * sizes[0]  # 20× the feedback, about the same size (a few more digits)


def test_cold_start_is_the_offers_prior_and_old_state_decides_by_its_cells():
    o = offer("o-1", prior_propensity=0.07)
    x = x_with(fit=0.8)
    assert propensity(o, None, "men", x) == pytest.approx(0.07)
    assert propensity(o, OfferStats("o-1"), "men", x) == pytest.approx(0.07)
    old = b'{"v":1,"offer_id":"o-1","cells":{"men":[40.0,20.0]}}'  # stored before the contextual model
    stats = keys.decode_offer_stats(old)
    assert stats.model.shown == 0
    assert propensity(o, stats, "men", x) == propensity(o, stats, "men") == pytest.approx((1.4 + 20) / 60)
    assert b'"model"' not in keys.encode_offer_stats(stats)  # stored as before until it learns
    stats.record("impression", "men", features=x)
    again = keys.decode_offer_stats(keys.encode_offer_stats(stats))
    assert keys.encode_offer_stats(again) == keys.encode_offer_stats(stats)
    assert again.model.shown == 1 and propensity(o, again, "men", x) != propensity(o, stats, "men")
    other_schema = orjson_blob({**stats.to_dict(), "model": {**stats.model.to_dict(), "schema": 0}})
    assert keys.decode_offer_stats(other_schema).model.shown == 0  # another feature schema: dropped, not misread


def orjson_blob(data):
    import orjson

    return orjson.dumps({"v": keys.SCHEMA_VERSION, **data})


def test_the_decision_id_carries_the_features_to_the_flow_and_not_to_the_ranker():
    state = shopper(2)
    situation = Situation(day(45), "web")
    decision = decide([offer("coffee", eligibility={"categories": ["grocery"]})], {}, state, situation, CATALOG,
                      ArbitrationSettings(control_share=0.0), seed=1)
    body = decision_body("c-1", decision, situation, nonce=3, signing=SIGNING, reveal_profile=True)
    envelope = feedback_envelope(body["decision_id"], None, "impression", None, day(45), SIGNING)
    assert envelope["features"] == list(decision.chosen.features)
    assert len(envelope["features"]) == fm.DIMENSION and envelope["features"][fm.FEATURES.index("fit")] > 0
    import orjson

    feedback = parse_feedback(orjson.dumps(envelope))
    assert isinstance(feedback, Feedback) and feedback.features == decision.chosen.features
    runner = Runner(Engine(EngineSettings()))
    runner.feed(feedback)
    assert runner.states["offer_stats"]["coffee"].model.shown == 1
    assert runner.states["ranker"] == {}  # offer features are not ranking features
