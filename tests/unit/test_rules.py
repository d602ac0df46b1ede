"""The retail rules (online_models/rules.py): each rule on its edges, in plain numbers."""

import math

import pytest

from online_models import rules
from online_models.rules import (
    DEFAULT,
    Thresholds,
    bought_together,
    clears_value_floor,
    far_above_basket,
    has_rhythm,
    is_deal_seeker,
    is_discount_driven_returner,
    is_lapsed,
    is_lapsing,
    is_loyal,
    is_new_customer,
    lapse_stage,
    may_recommend_again,
    not_interested,
    offer_suitability,
    relates,
    returns_a_lot,
    usual_gap_days,
    value_floor,
)

# --- discount-driven returner ----------------------------------------------------------------


def test_returns_a_lot_needs_the_rate_and_more_than_one_purchase():
    assert returns_a_lot(0.35, 2)  # the threshold itself counts
    assert not returns_a_lot(0.34, 10)
    assert not returns_a_lot(1.0, 1)  # one returned first order brands no one
    assert returns_a_lot(0.2, 2, Thresholds(returner_rate=0.2))


def test_discount_driven_returner_needs_both_habits():
    assert is_discount_driven_returner(0.5, 0.35, 2)
    assert not is_discount_driven_returner(0.49, 0.9, 5)  # returns a lot, but pays full price
    assert not is_discount_driven_returner(1.0, 0.34, 5)  # always on discount, keeps what they buy
    assert not is_discount_driven_returner(1.0, 1.0, 1)  # too little history


def test_the_discount_driven_returner_is_a_deal_seeker_but_not_the_other_way_round():
    for share, rate in [(0.5, 0.35), (0.9, 0.9), (0.6, 0.5)]:
        assert is_discount_driven_returner(share, rate, 3) and is_deal_seeker(share, rate)
    assert is_deal_seeker(0.35, 0.0) and not is_discount_driven_returner(0.35, 0.0, 3)
    assert is_deal_seeker(0.0, 0.25) and not is_deal_seeker(0.34, 0.24)


# --- usual purchase gap ----------------------------------------------------------------------


def test_usual_gap_is_the_geometric_mean_of_the_gaps():
    assert usual_gap_days(2, (math.log(10) + math.log(20)) / 2) == pytest.approx(math.sqrt(200))
    assert usual_gap_days(1, math.log(42)) == pytest.approx(42)
    assert usual_gap_days(0, 0.0) is None


def test_usual_gap_is_shrunk_towards_the_population():
    prior = math.log(60)
    assert usual_gap_days(0, 0.0, prior) == pytest.approx(60)  # no gap: the population's
    one = usual_gap_days(1, math.log(6), prior)
    many = usual_gap_days(50, math.log(6), prior)
    assert one == pytest.approx(math.exp((math.log(6) + 2 * prior) / 3))
    assert 6 < many < one < 60  # the more gaps, the closer to the customer's own
    assert usual_gap_days(2, math.log(6), prior, prior_weight=0.0) == pytest.approx(6)


def test_a_rhythm_needs_three_purchase_days():
    assert not has_rhythm(2) and has_rhythm(3) and has_rhythm(2, Thresholds(rhythm_min_purchases=2))


# --- lapsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("days, gap, stage", [
    (14, 2.0, None),  # a weekly-or-faster buyer is never lapsing within 14 days
    (14.5, 2.0, "lapsing"),
    (25, 10.0, None), (25.5, 10.0, "lapsing"),  # 2.5 × their gap
    (35, None, None), (35.5, None, "lapsing"),  # no gap known: 2.5 × 14 days
    (180, 7.0, "lapsing"), (180.5, 7.0, "lapsed"),  # gone after 180 days ...
    (300, 100.0, "lapsing"), (300.5, 100.0, "lapsed"),  # ... or 3 × a long gap
    (0, None, None),
])
def test_lapse_stage(days, gap, stage):
    assert lapse_stage(days, gap, 5) == stage
    assert is_lapsing(days, gap, 5) == (stage is not None)
    assert is_lapsed(days, gap, 5) == (stage == "lapsed")


def test_one_or_two_purchases_are_no_habit_to_lapse_from_but_a_long_silence_is_gone():
    # the profile said "lapsing" for a buyer of two orders whom no churn alert could follow
    assert lapse_stage(60, None, 2) is None and lapse_stage(60, None, 3) == "lapsing"
    assert lapse_stage(60, 10.0, 2) is None and not is_lapsing(60, 10.0, 2)
    assert lapse_stage(181, None, 1) == "lapsed" and is_lapsing(181, None, 1)


def test_lapsed_always_implies_lapsing():
    for purchase_days in (1, 2, 3, 10):
        for gap in (None, 1.0, 7.0, 30.0, 90.0, 365.0):
            for days in range(0, 2000, 5):
                assert not is_lapsed(days, gap, purchase_days) or is_lapsing(days, gap, purchase_days)


def test_new_customer_needs_a_short_tenure_and_few_purchases():
    assert is_new_customer(0, 1) and is_new_customer(29.9, 2) and not is_new_customer(30, 1)
    assert not is_new_customer(3, 53)  # 53 orders are a regular, however recent the first
    assert not is_new_customer(3, 3) and not is_new_customer(3, 0)


def test_loyal_needs_many_purchases_over_time_and_no_lapse():
    assert is_loyal(6, 90, 3, 14.0)
    assert not is_loyal(5, 300, 3, 14.0)  # too few purchase days
    assert not is_loyal(20, 60, 3, 3.0)  # not long enough
    assert not is_loyal(20, 300, 40, 10.0)  # silent for 4 gaps: lapsing, not loyal


# --- repeat purchase ---------------------------------------------------------------------------


def test_may_recommend_again_follows_the_learned_share_and_the_overrides():
    # Learned: the share of the item's buyers who bought it again, or the customer's own repeats.
    assert may_recommend_again("q7/x", repeat_share=0.1) and not may_recommend_again("q7/x", repeat_share=0.09)
    assert may_recommend_again("q7/x", repeat_share=0.0, own_orders=2)
    assert not may_recommend_again("q7/x", repeat_share=0.0, own_orders=1)
    assert not may_recommend_again("grocery/coffee")  # a name alone brings nothing back
    # Overrides: the catalog flag and the configured categories.
    categories = ("grocery", "home/cleaning")
    assert may_recommend_again("grocery/coffee", replenishable_categories=categories)
    assert may_recommend_again("home/cleaning", replenishable_categories=categories)
    assert not may_recommend_again("home/cleaning-tools", replenishable_categories=categories)  # a prefix is a level
    assert not may_recommend_again("men/trousers", replenishable_categories=categories)
    assert may_recommend_again("men/trousers", flagged_replenishable=True)


def test_not_interested():
    day = 86_400_000
    dismissed = {"a": 0, "b": 10 * day, "c": 20 * day, "d": 21 * day}
    category_of = {"a": "x/1", "b": "x/1", "c": "y/2", "d": "y/2"}
    skus, categories = not_interested(dismissed, category_of, now_ms=35 * day)
    assert skus == {"b", "c", "d"} and categories == {"y/2"}  # "a" is 35 days old; x/1 has one left
    assert not_interested({}, {}, 0) == (set(), set())


def test_bought_together_needs_a_tenth_of_the_baskets():
    assert bought_together(0.1) and not bought_together(0.099)


def test_far_above_basket():
    assert far_above_basket(90.01, 30.0) and not far_above_basket(90.0, 30.0)
    assert not far_above_basket(500.0, 30.0, usual_item_price=200.0)  # their history says otherwise
    assert not far_above_basket(500.0, 0.0)  # no priced basket: nothing to compare with


# --- value floor -------------------------------------------------------------------------------


def test_value_floor_is_half_the_median_and_zero_value_never_clears_it():
    assert value_floor(200.0) == 100.0
    assert value_floor(None) == value_floor(0.0) == 0.0
    assert value_floor(200.0, Thresholds(value_floor_share_of_median=0.25, value_floor_min=80.0)) == 80.0
    assert clears_value_floor(100.01, 200.0) and not clears_value_floor(100.0, 200.0)
    assert not clears_value_floor(0.0, None) and clears_value_floor(0.01, None)
    assert not clears_value_floor(-3.0, 0.0)


# --- offer suitability -------------------------------------------------------------------------


def test_discounts_are_refused_to_discount_driven_returners_and_non_positive_net_value():
    ok, reason = offer_suitability("discount", purchases=4, net_value=30.0, discount_share=1.0, return_rate=0.75)
    assert not ok and reason == "no discount: buys 100% on discount and returns 75%"
    ok, reason = offer_suitability("discount", purchases=1, net_value=-20.0)
    assert not ok and reason == "no discount: net value after returns is negative"
    ok, reason = offer_suitability("discount", purchases=1, net_value=0.0)  # returned their only purchase
    assert not ok and reason == "no discount: net value after returns is nothing"
    assert offer_suitability("discount", purchases=3, net_value=120.0, discount_share=0.4, return_rate=0.1) == (
        True, "suitable")
    assert offer_suitability("discount") == (True, "suitable")  # never bought: nothing against them


def test_no_price_cut_for_who_sends_back_nearly_everything_on_discount_or_not():
    """The audit: 79.99 of 81.58 returned (full price), then "Belt at half price"."""
    for kind in ("discount", "bundle", "win_back"):
        ok, reason = offer_suitability(kind, purchases=2, net_value=1.59, return_rate=0.98, lapsing=True,
                                       offer_categories=["men/belts"], bought_categories=["men/belts"])
        assert not ok and reason.endswith("sends back 98% of what they buy")
    assert offer_suitability("discount", purchases=2, net_value=40.0, return_rate=0.5)[0]  # fashion try-ons
    assert offer_suitability("discount", purchases=1, net_value=2.0, return_rate=0.9)[0]  # one order: no habit yet
    assert offer_suitability("service", purchases=2, net_value=1.59, return_rate=0.98)[0]  # not a price cut


@pytest.mark.parametrize("kind", ["bundle", "win_back"])
def test_every_price_cut_is_a_red_carpet(kind):
    fits = {"lapsing": True, "offer_categories": ["men/belts"], "bought_categories": ["men/trousers"]}
    ok, reason = offer_suitability(kind, purchases=1, net_value=0.0, **fits)
    assert not ok and reason == f"no {kind.replace('_', '-')}: net value after returns is nothing"
    ok, reason = offer_suitability(kind, purchases=4, net_value=30.0, discount_share=1.0, return_rate=0.75, **fits)
    assert not ok and "on discount and returns 75%" in reason
    assert offer_suitability(kind, purchases=4, net_value=300.0, **fits) == (True, "suitable")


def test_win_back_only_for_the_lapsing_or_a_high_churn_score():
    loyal = {"purchases": 30, "net_value": 2000.0}
    assert offer_suitability("win_back", churn_score=0.01, **loyal) == (
        False, "no win-back: still buying to their rhythm (churn risk 1%)")
    assert offer_suitability("win_back", **loyal) == (False, "no win-back: still buying to their rhythm")
    assert offer_suitability("win_back", lapsing=True, **loyal) == (True, "suitable")
    assert offer_suitability("win_back", churn_score=DEFAULT.win_back_min_churn_score, **loyal)[0]
    assert not offer_suitability("win_back", churn_score=0.49, **loyal)[0]
    assert offer_suitability("win_back", lapsing=True, churn_score=0.9) == (
        False, "no win-back: they have not bought yet")
    assert not offer_suitability("win_back", churn_score=0.6, **loyal, t=Thresholds(win_back_min_churn_score=0.7))[0]


def test_no_win_back_for_one_who_just_bought_whatever_their_score():
    first_day = {"purchases": 1, "net_value": 90.0, "churn_score": 0.69}  # a prior's score: no silence yet
    assert offer_suitability("win_back", days_since_purchase=0.0, **first_day) == (
        False, "no win-back: they bought today")
    assert offer_suitability("win_back", days_since_purchase=1.5, **first_day)[1] == "no win-back: they bought yesterday"
    # Lapsing is silence against their own rhythm (a daily buyer silent for 3 days): no floor.
    assert offer_suitability("win_back", days_since_purchase=3.0, lapsing=True, **first_day)[0]
    assert offer_suitability("win_back", days_since_purchase=DEFAULT.win_back_min_silent_days, **first_day)[0]
    assert offer_suitability("win_back", days_since_purchase=3.0, **first_day,
                             t=Thresholds(win_back_min_silent_days=2.0))[0]


def test_bundles_go_with_the_basket_or_the_customers_line():
    men_belts = {"purchases": 3, "net_value": 150.0, "offer_categories": ["men/belts"]}
    assert offer_suitability("bundle", bought_categories=["men/trousers"], **men_belts) == (True, "suitable")
    assert offer_suitability("bundle", basket_categories=["men/trousers"], **men_belts)[0]
    ok, reason = offer_suitability("bundle", bought_categories=["kids/boys/trousers"], **men_belts)
    assert not ok and reason == "no bundle: men/belts does not go with their basket or what they buy"
    assert not offer_suitability("bundle", **men_belts)[0]  # nothing bought, empty basket: nothing it goes with
    assert not offer_suitability("bundle", offer_categories=[], basket_categories=["men/trousers"])[0]


def test_lines_come_from_the_taxonomys_depth_not_its_names():
    assert relates(["q9/x1"], ["q9/x2"]) and not relates(["q9/x1"], ["q8/x1"])
    assert relates(["a/b/c"], ["a/b/d"]) and not relates(["a/b/c"], ["a/e/c"])
    assert relates(["electronics"], ["electronics/phones"])


def test_services_are_for_what_the_customer_buys():
    tech = {"purchases": 2, "net_value": 500.0, "offer_categories": ["electronics"]}
    assert offer_suitability("service", bought_categories=["electronics/phones"], **tech)[0]
    assert offer_suitability("service", basket_categories=["electronics/phones"], purchases=0,
                             offer_categories=["electronics"])[0]
    ok, reason = offer_suitability("service", bought_categories=["men/trousers"], **tech)
    assert not ok and reason == "no service: they do not buy electronics"
    # trouser alterations are for trousers, not for a shirt of the same line
    assert not offer_suitability("service", bought_categories=["men/shirts"], purchases=1, net_value=40.0,
                                 offer_categories=["men/trousers"])[0]
    assert offer_suitability("service") == (True, "suitable")  # a service for anyone (delivery, a welcome)


def test_loyalty_points_have_no_rule_of_their_own():
    assert offer_suitability("loyalty_points", purchases=4, net_value=-5.0, discount_share=1.0,
                             return_rate=1.0) == (True, "suitable")


def test_suitability_follows_the_thresholds_and_rejects_unknown_kinds():
    strict = Thresholds(discount_min_net_value=50.0)
    ok, reason = offer_suitability("discount", purchases=2, net_value=40.0, t=strict)
    assert not ok and reason == "no discount: net value after returns is not above 50"
    with pytest.raises(ValueError, match="unknown offer kind 'gift'"):
        offer_suitability("gift")


def test_defaults_are_the_documented_settings():
    # docs/relevance.md quotes these; change both together.
    assert (DEFAULT.returner_rate, DEFAULT.returner_min_purchases, DEFAULT.discount_driven_share) == (0.35, 2, 0.5)
    assert (DEFAULT.lapsing_min_days, DEFAULT.lapsing_gaps, DEFAULT.lapsed_min_days, DEFAULT.lapsed_gaps) == (
        14.0, 2.5, 180.0, 3.0)
    assert (DEFAULT.new_customer_days, DEFAULT.new_customer_max_orders) == (30.0, 2)
    assert (DEFAULT.loyal_min_purchases, DEFAULT.loyal_min_tenure_days) == (6, 90.0)
    assert DEFAULT.win_back_min_churn_score == 0.5
    assert rules.DEFAULT is DEFAULT and DEFAULT == Thresholds()
