"""The planted offer preferences of the simulator, and the NBO benchmark's learning loop."""

import random
from dataclasses import replace

import pytest

from bench import nbo as bench
from omnirec import offer_truth, simulate
from online_models.offers import offer_from_dict

DISCOUNT = offer_from_dict({"offer_id": "d", "kind": "discount", "value": 8.0,
                            "eligibility": {"categories": ["men"]}})
SERVICE = offer_from_dict({"offer_id": "s", "kind": "service", "value": 8.0,
                           "eligibility": {"categories": ["men"]}})
BUNDLE = offer_from_dict({"offer_id": "b", "kind": "bundle", "value": 8.0, "bundle_skus": ["BL-001"],
                          "eligibility": {"categories": ["men"]}})
LOYALTY = offer_from_dict({"offer_id": "l", "kind": "loyalty_points", "value": 8.0})
WIN_BACK = offer_from_dict({"offer_id": "w", "kind": "win_back", "value": 8.0})


def shopper(segment="regular", household="single_man", lapse=None, weights=None):
    return simulate.Customer(
        customer_id="c-00001", household=household, lines=simulate.HOUSEHOLDS[household][1],
        segment=segment, channel_mix=(0.4, 0.3, 0.3), sessions_per_week=1.0,
        category_weights=weights or {"men/trousers": 1.0, "men/shirts": 1.0},
        favourite_brands=("Linea", "Kestrel"), home_store="s-1", lapse_after_days=lapse,
    )


def p(customer, offer):
    return offer_truth.acceptance_probability(customer, offer)


def test_deterministic_and_bounded():
    population = simulate.make_customers(300, 3, simulate.load_demo_catalog())
    again = simulate.make_customers(300, 3, simulate.load_demo_catalog())
    offers = bench.load_offers()
    first = [p(c, o) for c in population for o in offers]
    assert first == [p(c, o) for c in again for o in offers]
    assert all(0 <= x <= offer_truth.CAP for x in first)
    assert max(first) > 0.3 and min(first) < 0.02  # the offers are worth telling apart


def test_taste_is_stable_per_household_and_offer_and_in_range():
    tastes = {(h, o): offer_truth.taste(h, o) for h in simulate.HOUSEHOLDS for o in "abcdefgh"}
    assert all(0.5 <= t <= 2.0 for t in tastes.values())
    assert len(set(tastes.values())) == len(tastes)
    assert offer_truth.taste("couple", "a") == tastes[("couple", "a")]


def test_discount_shoppers_love_discounts_and_bundles_and_ignore_services():
    deal, vip, regular = shopper("discount"), shopper("vip"), shopper("regular")
    assert p(deal, DISCOUNT) > 2 * p(regular, DISCOUNT) > 2 * p(vip, DISCOUNT)
    assert p(deal, BUNDLE) > 1.5 * p(regular, BUNDLE)
    assert p(deal, SERVICE) < 0.3 * p(regular, SERVICE)


def test_vips_like_services_and_loyalty_points_not_discounts():
    vip, regular, deal = shopper("vip"), shopper("regular"), shopper("discount")
    assert p(vip, SERVICE) > 2 * p(regular, SERVICE) > 2 * p(deal, SERVICE)
    assert p(vip, LOYALTY) > 1.5 * p(regular, LOYALTY)
    assert p(vip, DISCOUNT) < p(vip, SERVICE)


def test_lapsing_customers_answer_win_back():
    lapsing, loyal = shopper(lapse=30.0), shopper()
    assert p(lapsing, WIN_BACK) == pytest.approx(4 * p(loyal, WIN_BACK))
    assert p(lapsing, LOYALTY) < p(loyal, LOYALTY)


def test_category_weight_under_the_offer_scales_acceptance():
    menswear = shopper(weights={"men/trousers": 1.0})
    half = shopper(weights={"men/trousers": 1.0, "grocery/coffee": 1.0})
    none = shopper(weights={"grocery/coffee": 1.0})
    assert p(menswear, DISCOUNT) > p(half, DISCOUNT) > p(none, DISCOUNT) > 0
    assert p(menswear, DISCOUNT) / p(none, DISCOUNT) == pytest.approx(1.75 / 0.25)
    assert p(menswear, WIN_BACK) == p(none, WIN_BACK)  # no categories: no affinity


def test_population_segments_differ_as_documented():
    population = simulate.make_customers(2000, 11, simulate.load_demo_catalog())
    kids, care = (next(o for o in bench.load_offers() if o.offer_id == i) for i in ("kids-10", "tech-care"))

    def mean(segment, offer):
        values = [p(c, offer) for c in population if c.segment == segment]
        return sum(values) / len(values)

    assert mean("discount", kids) > 2 * mean("vip", kids)
    assert mean("vip", care) > 2 * mean("discount", care)


def test_react_follows_the_probability_and_is_seeded():
    deal = shopper("discount")
    p_accept = p(deal, DISCOUNT)
    draws = [offer_truth.react(deal, DISCOUNT, random.Random(f"r{i}")) for i in range(4000)]
    assert draws == [offer_truth.react(deal, DISCOUNT, random.Random(f"r{i}")) for i in range(4000)]
    assert set(draws) == {"accept", "dismiss", "ignore"}
    assert draws.count("accept") / 4000 == pytest.approx(p_accept, abs=0.03)
    expected_dismiss = offer_truth.DISMISS_SHARE * (1 - p_accept)
    assert draws.count("dismiss") / 4000 == pytest.approx(expected_dismiss, abs=0.03)
    capped = replace(deal, category_weights={"men/trousers": 1.0}, household="single_man")
    assert p(capped, replace(DISCOUNT, kind="discount")) <= offer_truth.CAP


def _bench_run(learn: bool):
    world = bench.build_world(customers=400, seed=5, history_days=45, decision_days=30)
    return bench.run(world, decisions=3000, seed=5, decision_days=30, window=500, learn=learn)


@pytest.fixture(scope="module")
def learnt():
    return _bench_run(learn=True)


def _late(result) -> float:
    """served ÷ oracle over the last three windows (1,500 decisions)."""
    late = result.windows[-3:]
    return sum(w["served"] for w in late) / sum(w["oracle"] for w in late)


def test_benchmark_learns_above_random_and_above_its_start(learnt):
    first, last = learnt.windows[0], learnt.windows[-1]
    assert learnt.decisions == 3000 and len(learnt.windows) == 6
    assert last["served"] > 1.3 * last["random"]
    assert last["served_vs_oracle"] > last["random_vs_oracle"] + 0.2
    assert _late(learnt) > first["served_vs_oracle"]  # (the first window already learns fast)


def test_benchmark_learning_beats_the_priors_alone(learnt):
    frozen = _bench_run(learn=False)  # same customers and moments, offer stats never updated
    assert not frozen.stats
    assert _late(learnt) > _late(frozen) + 0.08


def test_benchmark_feeds_back_like_the_flow(learnt):
    impressions = sum(s.totals()[0] for s in learnt.stats.values())
    controls = sum(w["control"] for w in learnt.windows)
    assert impressions == learnt.decisions - controls  # control decisions are not learnt from
    assert 0 < controls < 0.05 * learnt.decisions
    accepts = sum(s.totals()[1] for s in learnt.stats.values())
    assert 0.05 * impressions < accepts < 0.5 * impressions


class _Answer:
    def __init__(self, body):
        self.body = body

    def raise_for_status(self):
        return None

    def json(self):
        return self.body


class _FakeApi:
    """Serves tech-care to everyone and records the feedback posted back."""

    def __init__(self):
        self.gets, self.posts = [], []

    def get(self, path, params=None, headers=None):
        self.gets.append((path, params, headers))
        offer = {"offer_id": "tech-care", "kind": "service", "value": 15.0}
        return _Answer({"offer": offer, "decision_id": f"d-{len(self.gets)}"})

    def post(self, path, json=None, headers=None):
        self.posts.append((path, json))
        return _Answer({"accepted": True})


def test_live_reactions_post_an_impression_then_the_planted_answer():
    api = _FakeApi()
    counts = simulate.react_to_offers(None, api_key="k", customers=50, rate=1e6, seed=3,
                                      client=api, max_decisions=200)
    assert counts["decisions"] == 200 and counts["errors"] == 0
    assert counts["accept"] + counts["dismiss"] + counts["ignore"] == 200
    assert all(path.startswith("/v1/customers/c-") for path, _, _ in api.gets)
    assert api.gets[0][2] == {"Authorization": "Bearer k"}
    impressions = [body for _, body in api.posts if body["event"] == "impression"]
    answers = [body["event"] for _, body in api.posts if body["event"] != "impression"]
    assert len(impressions) == 200
    assert answers.count("accept") == counts["accept"] > 0
    assert answers.count("dismiss") == counts["dismiss"] > 0
