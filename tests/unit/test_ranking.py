from online_models.customer import CustomerState
from online_models.decay import Decay
from online_models.events import Item, Product
from online_models.items import Neighbor, PopularityIndex
from online_models.ranking import Request, Rules, fallback_reason, recommend

from .helpers import CATALOG, day, event, purchase

DECAY = Decay(14)
POPULAR = PopularityIndex(
    global_top=["CF-1", "PH-1", "GD-1", "BL-1", "TR-2", "SK-1", "XX-1", "GS-1", "BS-1", "BT-1"],
    by_category={"men/trousers": ["TR-2", "TR-1"], "kids/boys/shirts": ["BS-1", "BS-2"], "kids/girls/dresses": ["GD-1"],
                 "kids/boys/trousers": ["BT-1"], "men/belts": ["XX-1", "BL-1"]},
    by_store={"s-7": ["SK-1", "CF-1"]},
)
TROUSER_NEIGHBORS = {"TR-1": [Neighbor("XX-1", 0.9, 0.5), Neighbor("BL-1", 0.8, 0.31),
                              Neighbor("SK-1", 0.5, 0.2), Neighbor("TR-2", 0.4, 0.1)]}
RULES = Rules(replenishable=("grocery",))


def customer(*events):
    state = CustomerState("c-1")
    for e in events:
        state.apply(e, DECAY)
    return state


def skus(suggestions):
    return [s.sku for s in suggestions]


def test_cross_sell_for_trousers_gives_the_belt_with_a_reason():
    out = recommend(None, Request("cart", ("TR-1",), k=3), TROUSER_NEIGHBORS, POPULAR, CATALOG, RULES)
    assert out[0].sku == "BL-1"
    assert "bought with Slim trousers in 31% of baskets" in out[0].reasons
    assert "XX-1" not in skus(out)  # out of stock, however strong the complement
    assert "TR-1" not in skus(out)  # already in the basket


def test_substitutes_rank_below_complements_at_the_till():
    out = recommend(None, Request("cart", ("TR-1",), k=5), TROUSER_NEIGHBORS, POPULAR, CATALOG, RULES)
    assert skus(out).index("SK-1") < skus(out).index("TR-2")


def test_a_substitute_never_reaches_the_top_3_even_as_the_strongest_complement():
    neighbors = {"TR-1": [Neighbor("TR-2", 0.95, 0.05), Neighbor("BL-1", 0.3, 0.2), Neighbor("SK-1", 0.2, 0.1),
                          Neighbor("SH-1", 0.1, 0.1)]}
    out = recommend(None, Request("cart", ("TR-1",), k=5), neighbors, POPULAR, CATALOG, RULES)
    assert "TR-2" not in skus(out)[:3]
    assert skus(out)[:3] == ["BL-1", "SK-1", "SH-1"]


def test_a_second_item_of_the_category_that_baskets_often_hold_with_it_is_no_substitute():
    # In 40% of TR-1's baskets TR-2 came along (a second colour, bought together): not a substitute.
    neighbors = {"TR-1": [Neighbor("TR-2", 0.95, 0.4), Neighbor("BL-1", 0.3, 0.2)]}
    out = recommend(None, Request("cart", ("TR-1",), k=5), neighbors, POPULAR, CATALOG, RULES)
    assert skus(out)[0] == "TR-2"


def test_a_boys_basket_gets_boys_complements_not_girls():
    neighbors = {"BT-1": [Neighbor("GS-1", 0.9, 0.5), Neighbor("BS-1", 0.4, 0.3)]}
    adult = customer(*[purchase(f"p{i}", skus=("TR-1",), ts=day(i)) for i in range(3)])  # buys men's
    for state in (None, adult):
        out = recommend(state, Request("cart", ("BT-1",), k=5), neighbors, POPULAR, CATALOG, RULES)
        assert "GS-1" not in skus(out) and "GD-1" not in skus(out)
        assert skus(out)[0] == "BS-1"


def test_at_the_till_what_goes_with_the_basket_ranks_before_affinity():
    # A phone buyer (strong electronics affinity) with a belt in the basket: the shirt bought
    # with belts comes before the phone case their history would bring.
    fan = customer(*[purchase(f"p{i}", skus=("PH-1",), ts=day(i), price=500.0) for i in range(4)])
    neighbors = {"BL-1": [Neighbor("SH-1", 0.05, 0.66)]}
    out = recommend(fan, Request("cart", ("BL-1",), k=5), neighbors, POPULAR, CATALOG, RULES)
    assert skus(out)[0] == "SH-1"
    assert "bought with Leather belt in 66% of baskets" in out[0].reasons


def test_at_the_till_a_token_pair_is_no_evidence_for_affinity_to_ride_on():
    # The phone fan's case was in 2% of the belt's baskets: the shirt in 66% still comes first.
    fan = customer(*[purchase(f"p{i}", skus=("PH-1",), ts=day(i), price=500.0) for i in range(4)])
    neighbors = {"BL-1": [Neighbor("SH-1", 0.05, 0.66), Neighbor("PC-1", 0.9, 0.02)]}
    out = recommend(fan, Request("cart", ("BL-1",), k=5), neighbors, POPULAR, CATALOG, RULES)
    assert skus(out)[0] == "SH-1" and "PC-1" in skus(out)
    case = next(s for s in out if s.sku == "PC-1")
    assert "bought with Leather belt in 2% of baskets" in case.reasons  # the pair is still said


def test_a_complement_far_dearer_than_the_basket_is_demoted_unless_the_customer_buys_dear():
    neighbors = {"SK-1": [Neighbor("PH-1", 0.9, 0.5), Neighbor("BL-1", 0.4, 0.3)]}
    out = recommend(None, Request("cart", ("SK-1",), k=5), neighbors, POPULAR, CATALOG, RULES)
    assert skus(out).index("BL-1") < skus(out).index("PH-1")  # a 500 phone for 8 socks
    # demoted to the last tier, however strong its evidence
    assert next(s for s in out if s.sku == "PH-1").tier == 2 and next(s for s in out if s.sku == "BL-1").tier == 0
    big_spender = customer(*[purchase(f"p{i}", skus=("TR-2",), ts=day(i), price=400.0) for i in range(3)])
    out = recommend(big_spender, Request("cart", ("SK-1",), k=5), neighbors, POPULAR, CATALOG, RULES)
    assert skus(out)[0] == "PH-1"


def test_just_bought_durables_are_excluded_but_replenishables_come_back():
    state = customer(purchase("p1", skus=("BL-1", "CF-1"), ts=day(0)))
    out = recommend(state, Request("cart", ("TR-1",), k=10), TROUSER_NEIGHBORS, POPULAR, CATALOG, RULES)
    assert "BL-1" not in skus(out)
    home = recommend(state, Request("home", k=10), {}, POPULAR, CATALOG, RULES)
    coffee = next(s for s in home if s.sku == "CF-1")
    assert "you bought this before" in coffee.reasons  # once: not yet "regularly"
    regular = customer(*[purchase(f"p{i}", skus=("CF-1",), ts=day(7 * i)) for i in range(3)])
    coffee = next(s for s in recommend(regular, Request("home", k=10, now_ms=day(21)), {}, POPULAR, CATALOG, RULES)
                  if s.sku == "CF-1")
    assert {"you buy this regularly", "you usually buy this about now"} <= set(coffee.reasons)


def test_boys_buyer_gets_boys_items_not_girls():
    state = customer(*[purchase(f"p{i}", skus=("BS-1", "BT-1"), ts=day(i)) for i in range(3)])
    out = recommend(state, Request("home", k=10), {}, POPULAR, CATALOG, RULES)
    assert "GD-1" not in skus(out) and "GS-1" not in skus(out)
    assert any("you often shop for Boys/" in r for s in out for r in s.reasons)
    # A customer with no kids' history still sees the popular girls' dress.
    assert "GD-1" in skus(recommend(customer(purchase("p", skus=("TR-1",))), Request("home", k=10),
                                    {}, POPULAR, CATALOG, RULES))


def test_unknown_customer_gets_popular_items_in_their_store():
    out = recommend(None, Request("home", store_id="s-7", k=3), {}, POPULAR, CATALOG, RULES)
    assert out[0].sku == "SK-1" and "popular in store s-7" in out[0].reasons
    assert len(out) == 3


def test_unknown_everything_still_answers():
    assert recommend(None, Request("product", ("NOPE",), k=5), {}, PopularityIndex(), CATALOG, RULES) == []
    out = recommend(None, Request("product", ("NOPE",), k=5), {}, POPULAR, CATALOG, RULES)
    assert len(out) == 5 and all(s.reasons for s in out)


def test_a_trained_ranker_reorders_by_what_shoppers_click():
    from online_models.learning import RecRanker

    # On a product page (at the till, evidence of going with the basket ranks first whatever
    # the ranker learnt: it orders within that rule).
    untrained = recommend(None, Request("product", ("TR-1",), k=20), TROUSER_NEIGHBORS, POPULAR, CATALOG, RULES)
    ranker = RecRanker()
    for _ in range(400):  # shoppers click popular items and ignore complements
        ranker.learn({"popularity": 1.0}, "click")
        ranker.learn({"complement": 1.0}, "impression")
    trained = recommend(None, Request("product", ("TR-1",), k=20), TROUSER_NEIGHBORS, POPULAR, CATALOG, RULES,
                        ranker=ranker.weights())
    assert untrained[0].sku == "BL-1"
    assert skus(trained)[0] != "BL-1" and trained[0].features["popularity"] > 0
    assert set(skus(trained)) == set(skus(untrained))  # the same candidates and rules, another order


# --- per-request control ---------------------------------------------------------------------


def test_exclude_leaves_out_skus_and_whole_categories():
    out = recommend(None, Request("cart", ("TR-1",), k=10, exclude=("BL-1", "men/socks")), TROUSER_NEIGHBORS,
                    POPULAR, CATALOG, RULES)
    assert "BL-1" not in skus(out) and "SK-1" not in skus(out)
    out = recommend(None, Request("home", k=20, exclude=("kids",)), {}, POPULAR, CATALOG, RULES)
    assert out and not any(s.category.startswith("kids/") for s in out)


def test_not_interested_keeps_an_item_out_for_a_while_and_two_of_a_category_keep_it_out():
    state = customer(purchase("p1", skus=("TR-1",), ts=day(0)))
    state.record_feedback("dismiss", None, day(1), "web", sku="BS-1")
    request = Request("home", k=20, now_ms=day(2))
    shown = skus(recommend(state, request, {}, POPULAR, CATALOG, RULES))
    assert "BS-1" not in shown and "BT-1" in shown  # one dismissal: the item only
    state.record_feedback("dismiss", None, day(1), "web", sku="BS-2")
    state.record_feedback("dismiss", None, day(1), "web", sku="GD-1")
    shown = skus(recommend(state, Request("home", k=20, now_ms=day(2)), {}, POPULAR, CATALOG, RULES))
    assert not {"BS-1", "BS-2"} & set(shown)  # two boys' shirts: the category is out
    later = skus(recommend(state, Request("home", k=20, now_ms=day(40)), {}, POPULAR, CATALOG, RULES))
    assert "BS-1" in later  # 30 days on, it may come back


def test_a_fallback_says_why():
    out = recommend(None, Request("home", k=3, store_id="s-7"), {}, POPULAR, CATALOG, RULES)
    assert fallback_reason(None, Request(store_id="s-7"), out) == "popular in store s-7: we do not know this shopper yet"
    known = customer(purchase("p1", skus=("TR-1",), ts=day(0)))
    out = recommend(known, Request("cart", ("TR-1",), k=3), TROUSER_NEIGHBORS, POPULAR, CATALOG, RULES)
    assert fallback_reason(known, Request("cart", ("TR-1",)), out) is None  # complements: no fallback


def test_catalog_search_puts_the_customers_own_line_first():
    from online_models.ranking import search_order

    trousers = [CATALOG[s] for s in ("BT-1", "TR-1", "TR-2")]  # "Boys trousers" first by name
    assert skus(search_order(trousers, None, CATALOG)) == ["BT-1", "TR-2", "TR-1"]
    buys_men = customer(purchase("p1", skus=("SH-1", "BL-1")))  # shirts and belts, never trousers
    assert skus(search_order(trousers, buys_men, CATALOG))[0] in {"TR-1", "TR-2"}
    assert skus(search_order(trousers, buys_men, CATALOG))[-1] == "BT-1"
    # within the line, the brand they buy first; out of stock last whatever the affinity
    likes_northway = customer(purchase("p1", skus=("BL-1",)))  # a Northway belt: men's, neither socks nor trousers
    men = [CATALOG[s] for s in ("SK-1", "TR-1", "XX-1")]
    assert skus(search_order(men, likes_northway, CATALOG)) == ["TR-1", "SK-1", "XX-1"]
    buys_boys = customer(purchase("p1", skus=("BS-1",)))
    assert skus(search_order(trousers, buys_boys, CATALOG))[0] == "BT-1"


def test_what_the_open_cart_holds_is_never_recommended_in_any_context():
    state = customer(purchase("p1", skus=("TR-1",), ts=day(0)),
                     event("a1", "add_to_cart", ts=day(1), items=(Item("SK-1", 1, 8.0),)))
    assert state.basket == {"SK-1": 1}
    for context, in_view in (("home", ()), ("product", ("TR-1",)), ("cart", ("TR-1",))):
        out = recommend(state, Request(context, in_view, k=10, now_ms=day(2)), TROUSER_NEIGHBORS, POPULAR, CATALOG,
                        RULES)
        assert "SK-1" not in skus(out), context
        assert out  # the rest still comes
    emptied = customer(purchase("p1", skus=("TR-1",), ts=day(0)),
                       event("a1", "add_to_cart", ts=day(1), items=(Item("SK-1", 1, 8.0),)),
                       event("r1", "remove_from_cart", ts=day(1.5), items=(Item("SK-1", 1, 8.0),)))
    assert "SK-1" in skus(recommend(emptied, Request("home", k=10, now_ms=day(2)), TROUSER_NEIGHBORS, POPULAR, CATALOG,
                                    RULES))


def test_at_the_till_the_baskets_line_fills_the_list_before_other_interests():
    # A parent who mostly buys electronics, at the till with boys' trousers: after what goes with
    # them (the shirt, in 30 % of their baskets), the boys' line, then their own electronics.
    gadget_fan = customer(*[purchase(f"p{i}", skus=("PC-1",), ts=day(i), price=20.0) for i in range(4)])
    neighbors = {"BT-1": [Neighbor("BS-1", 0.4, 0.3)]}
    popular = PopularityIndex.build([("PC-1", 9.0), ("BS-2", 3.0), ("GS-1", 2.0), ("BS-1", 1.0)], {}, CATALOG)
    assert popular.by_category["kids/boys"] == ["BS-2", "BS-1"]  # lines are listed beside leaves
    out = recommend(gadget_fan, Request("cart", ("BT-1",), k=5, now_ms=day(5)), neighbors, popular, CATALOG, RULES)
    assert skus(out)[:2] == ["BS-1", "BS-2"]
    assert [s.tier for s in out[:2]] == [0, 1] and "popular in Kids/Boys" in out[1].reasons
    assert "GS-1" not in skus(out)  # another line of kids: the basket speaks for boys
    # a flat taxonomy (codes with no parent) has no lines: the rest keeps one tier, as before
    flat = {"A1": Product("A1", "a", "110411", "", 5), "B1": Product("B1", "b", "110412", "", 5),
            "C1": Product("C1", "c", "120101", "", 5)}
    out = recommend(None, Request("cart", ("A1",), k=5), {}, PopularityIndex.build([("B1", 2), ("C1", 1)], {}, flat),
                    flat, RULES)
    assert {s.tier for s in out} == {2}


def test_the_till_fills_its_list_from_further_down_rather_than_put_substitutes_on_top():
    # Every complement of the phone case is another phone case: the first three places go to
    # the best non-substitutes however far down they rank, and the list is still k long.
    neighbors = {"PC-1": [Neighbor("PH-1", 0.2, 0.02)]}
    cases = {f"PC-{i}": Product(f"PC-{i}", f"Case {i}", "electronics/phone-cases", "Fone", 20) for i in range(2, 9)}
    catalog = {**CATALOG, **cases}
    popular = PopularityIndex.build([*((sku, 100.0 - i) for i, sku in enumerate(cases)), ("SK-1", 5.0),
                                     ("BL-1", 4.0), ("CF-1", 3.0)], {}, catalog)
    out = recommend(None, Request("cart", ("PC-1",), k=5), neighbors, popular, catalog, RULES)
    assert len(out) == 5
    assert not any(s.sku.startswith("PC-") for s in out[:3])


def test_a_second_item_of_a_category_is_a_substitute_unless_its_baskets_hold_several():
    # Coffee is rebought, but a coffee basket's baskets hold no second coffee: another coffee
    # at the till is a substitute. Noodles come in threes: another noodle is not.
    coffees = {"CF-2": Product("CF-2", "Coffee 2", "grocery/coffee", "Bean Co", 9)}
    noodles = {f"ND-{i}": Product(f"ND-{i}", f"Noodle {i}", "grocery/noodles", "Oodle", 1) for i in range(1, 4)}
    catalog = {**CATALOG, **coffees, **noodles}
    neighbors = {"CF-1": [Neighbor("CF-2", 0.5, 0.05), Neighbor("SK-1", 0.4, 0.3)],
                 "ND-1": [Neighbor("ND-2", 0.5, 0.08), Neighbor("ND-3", 0.4, 0.07), Neighbor("SK-1", 0.3, 0.3)]}
    coffee = recommend(None, Request("cart", ("CF-1",), k=5), neighbors, POPULAR, catalog, RULES)
    assert "CF-2" not in skus(coffee)[:3]
    noodle = recommend(None, Request("cart", ("ND-1",), k=5), neighbors, POPULAR, catalog, RULES)
    assert {"ND-2", "ND-3"} <= set(skus(noodle)[:3])  # 8 % and 7 %: together 15 % of its baskets


def test_at_the_till_a_suggestion_that_goes_with_the_basket_leads_with_that_reason():
    # The customer's own regular buy, bought with the basket item in 30 % of its baskets: the
    # assistant says first why it goes with the basket, then that the customer buys it.
    regular = customer(*[purchase(f"p{i}", skus=("SK-1",), ts=day(7 * i), price=8.0) for i in range(4)])
    neighbors = {"TR-1": [Neighbor("SK-1", 0.05, 0.3)]}
    out = recommend(regular, Request("cart", ("TR-1",), k=3, now_ms=day(30)), neighbors, POPULAR, CATALOG, RULES)
    socks = next(s for s in out if s.sku == "SK-1")
    assert socks.tier == 0 and socks.reasons[0] == "bought with Slim trousers in 30% of baskets"
    assert "you buy this regularly" in socks.reasons[1:]


def test_a_pair_seen_in_one_basket_is_no_evidence_of_going_with_the_basket():
    """The audit: a flannel shirt led a phone basket, "bought with Clear case in 100% of
    baskets", on a single basket."""
    neighbors = {"SK-1": [Neighbor("CF-1", 0.3, 1.0, together_baskets=1.0),
                          Neighbor("BL-1", 0.2, 0.3, together_baskets=40.0)]}
    out = recommend(None, Request("cart", ("SK-1",), k=5), neighbors, POPULAR, CATALOG, RULES)
    coffee, belt = (next(s for s in out if s.sku == sku) for sku in ("CF-1", "BL-1"))
    assert belt.tier == 0 and coffee.tier > 0 and skus(out)[0] == "BL-1"
    assert "bought with Wool socks in 1 basket so far" in coffee.reasons
    assert not any("100%" in r for r in coffee.reasons)


def test_a_second_phone_case_is_a_substitute_whatever_the_phone_says():
    """The audit: with a phone and a clear case in the basket, a folio case came first, on the
    share of the phone's baskets that held it. Beside the case it would duplicate, it is a
    substitute: no evidence says baskets hold two cases."""
    catalog = {**CATALOG, "PC-2": Product("PC-2", "Folio case", "electronics/phone-cases", "Fone", 25)}
    neighbors = {"PH-1": [Neighbor("PC-2", 0.9, 0.33, together_baskets=30.0), Neighbor("BL-1", 0.2, 0.12)],
                 "PC-1": [Neighbor("BL-1", 0.3, 0.2)]}
    out = recommend(None, Request("cart", ("PH-1", "PC-1"), k=5), neighbors, POPULAR, catalog, RULES)
    assert "PC-2" in skus(out) and "PC-2" not in skus(out)[:3]
    without_the_case = recommend(None, Request("cart", ("PH-1",), k=5), neighbors, POPULAR, catalog, RULES)
    assert skus(without_the_case)[0] == "PC-2"  # beside the phone alone it is the complement


def test_a_basket_item_few_baskets_have_held_borrows_what_its_category_goes_with():
    """The demo's black cargo trousers had been in one basket: nothing was evidence for them,
    and shoes the customer likes filled the till. The baskets of the category's most popular
    trousers hold the belt: it comes first, saying so (as a complement's score: it is no
    evidence of going with this very basket, so it does not lead the reasons)."""
    thin = {"TR-1": [Neighbor("SH-1", 0.3, 1.0, together_baskets=1.0)]}  # one basket so far
    popular_trousers = {"TR-2": [Neighbor("BL-1", 0.6, 0.4, together_baskets=30.0),
                                 Neighbor("SK-1", 0.4, 0.2, together_baskets=15.0)]}
    out = recommend(None, Request("cart", ("TR-1",), k=5), {**thin, **popular_trousers}, POPULAR, CATALOG, RULES)
    assert skus(out)[:2] == ["BL-1", "SK-1"]
    assert "bought with other Men/Trousers in 40% of their baskets" in out[0].reasons
    known = {"TR-1": [Neighbor("SK-1", 0.3, 0.3, together_baskets=40.0)], **popular_trousers}
    assert skus(recommend(None, Request("cart", ("TR-1",), k=5), known, POPULAR, CATALOG, RULES))[0] == "SK-1"
