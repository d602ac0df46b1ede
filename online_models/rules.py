"""The retail rules, written once: who is a discount-driven returner, who is lapsing, what a
customer's usual purchase gap is, what may be recommended again, how much value is worth an
alert or a red-carpet offer, and which kinds of offer suit a customer.

Every rule is a small pure function of plain numbers (no state objects), so that the offers,
the tiers and segments, churn, ranking and the profile all ask the same question the same
way, and an evaluator can call it on any data. Every threshold is a field of ``Thresholds``;
``DEFAULT`` holds the values in force. To change a rule's setting, change it there (or pass a
``Thresholds`` built from settings): no other module keeps a copy. ``docs/relevance.md``
states each rule in retail words with its setting and its test.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

OFFER_KINDS = ("discount", "bundle", "loyalty_points", "win_back", "service")
PRICE_CUTS = frozenset({"discount", "bundle", "win_back"})  # the red carpet: kinds that cut the price


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The settings of every rule in this module (the only place they are written)."""

    # Returns and discounts.
    returner_rate: float = 0.35  # returned share of the value bought that counts as "returns a lot"
    returner_min_purchases: int = 2  # ... over at least this many purchases
    price_cut_max_return_rate: float = 0.75  # sends back more than this share: no price cut, discount or not
    discount_driven_share: float = 0.5  # share bought below list price that is "mostly on discount"
    deal_discount_share: float = 0.35  # a deal seeker: this much on discount ...
    deal_return_rate: float = 0.25  # ... or returns this much (a weaker habit; learning cells only)
    discount_min_net_value: float = 0.0  # no price cut for a buyer whose net value is not above this
    # Purchase rhythm.
    gap_prior_weight: float = 2.0  # how many gaps the population's prior gap is worth
    rhythm_min_purchases: int = 3  # purchase days before a rhythm is trusted for timing offers
    default_gap_days: float = 14.0  # usual gap assumed when nothing is known
    # Lapsing (slipping away) and lapsed (gone).
    lapsing_min_days: float = 14.0
    lapsing_gaps: float = 2.5
    lapsed_min_days: float = 180.0
    lapsed_gaps: float = 3.0
    # New and loyal customers.
    new_customer_days: float = 30.0
    new_customer_max_orders: int = 2  # "new" also means few orders so far
    loyal_min_purchases: int = 6  # purchase days that make a regular
    loyal_min_tenure_days: float = 90.0  # ... over at least this long since the first purchase
    # Offer suitability by kind.
    # Churn risk as the sales assistant sees it (the profile's ``churn.risk``).
    churn_risk_high: float = 0.7
    churn_risk_medium: float = 0.4
    win_back_min_churn_score: float = 0.5  # a win-back needs lapsing, or a churn score at least this
    win_back_min_silent_days: float = 7.0  # and, unless lapsing, this many days of silence
    # Repeat purchase: below this share of its buyers buying it again, an item is a durable,
    # until the stream has counted its shoppers; then the bar is learned (``RepeatModel.bar``).
    min_repeat_share: float = 0.1
    # The till: a suggestion this many times dearer than the basket's dearest item (or than
    # what the customer usually pays per item, if more) is out of place.
    till_price_ratio: float = 3.0
    till_substitute_free_top: int = 3  # no substitute of a basket item among the first this many
    together_share: float = 0.1  # share of an item's baskets holding another: "bought together"
    # ... seen in more than one basket (1 of 1 is no evidence); counts decay, so two baskets a
    # month apart count about 1.9: the bar sits between one and two
    together_min_baskets: float = 1.5
    # "Not interested": a dismissed recommendation stays out this long; this many dismissed in
    # one category keep the category out too.
    not_interested_days: float = 30.0
    not_interested_category_items: int = 2
    # Value floor for churn alerts and red-carpet offers.
    value_floor_share_of_median: float = 0.5
    value_floor_min: float = 0.0
    value_floor_min_customers: int = 20  # sampled customers a population median needs (``churn.pooled_…``)


DEFAULT = Thresholds()


# --------------------------------------------------------------------------- returns and discounts


def returns_a_lot(return_rate: float, purchases: int, t: Thresholds = DEFAULT) -> bool:
    """A customer who sends back a large share of what they buy: at least
    ``returner_rate`` (35 %) of the value bought, over at least ``returner_min_purchases`` (2)
    purchases, so that one returned first order does not brand anyone.

    >>> returns_a_lot(0.4, 3), returns_a_lot(0.4, 1), returns_a_lot(0.2, 5)
    (True, False, False)
    """
    return purchases >= t.returner_min_purchases and return_rate >= t.returner_rate


def is_discount_driven_returner(discount_share: float, return_rate: float, purchases: int,
                                t: Thresholds = DEFAULT) -> bool:
    """The customer a retailer does not roll the red carpet out for: buys mostly on discount
    (at least ``discount_driven_share``, 50 %, of the value bought was below list price) *and*
    returns a lot (``returns_a_lot``: 35 % of the value over at least 2 purchases). Such a
    customer gets no discount offer, and learns offer propensity in a cell of their own.

    This is the one definition; it replaces the offer cell's 0.35 / 0.5, the discount gate's
    0.7 / 0.4 and the "returner" segment's 0.3 (which now uses ``returns_a_lot`` alone).

    >>> is_discount_driven_returner(0.8, 0.5, 4), is_discount_driven_returner(0.2, 0.5, 4)
    (True, False)
    """
    return discount_share >= t.discount_driven_share and returns_a_lot(return_rate, purchases, t)


def is_deal_seeker(discount_share: float, return_rate: float, t: Thresholds = DEFAULT) -> bool:
    """A weaker habit than the discount-driven returner: buys a fair share on discount
    (``deal_discount_share``, 35 %) *or* returns a fair share (``deal_return_rate``, 25 %).
    It only picks the cell an offer's propensity is learnt in (such customers answer offers
    alike); it gates nothing.

    >>> is_deal_seeker(0.4, 0.0), is_deal_seeker(0.0, 0.3), is_deal_seeker(0.1, 0.1)
    (True, True, False)
    """
    return discount_share >= t.deal_discount_share or return_rate >= t.deal_return_rate


# --------------------------------------------------------------------------- purchase rhythm


def usual_gap_days(gap_n: int, mean_log_gap: float, prior_log_days: float | None = None,
                   prior_weight: float = DEFAULT.gap_prior_weight) -> float | None:
    """The customer's usual number of days between purchases: the geometric mean of the gaps
    between their purchase days (``gap_n`` gaps whose log-days average ``mean_log_gap``).
    With the population's typical log gap as ``prior_log_days``, the mean is shrunk towards it
    as if the population had contributed ``prior_weight`` (2) gaps, so a customer with one or
    two purchases gets a sensible rhythm. ``None`` when there is no gap and no prior.

    >>> round(usual_gap_days(2, math.log(math.sqrt(10 * 20))), 6)
    14.142136
    >>> usual_gap_days(0, 0.0) is None
    True
    >>> round(usual_gap_days(0, 0.0, math.log(60.0)), 6)
    60.0
    """
    if prior_log_days is None:
        return math.exp(mean_log_gap) if gap_n > 0 else None
    mean = (gap_n * mean_log_gap + prior_weight * prior_log_days) / (gap_n + prior_weight)
    return math.exp(mean)


def has_rhythm(purchases: int, t: Thresholds = DEFAULT) -> bool:
    """Enough purchase days (``rhythm_min_purchases``, 3: two gaps) to time an offer's validity
    to the customer's next expected purchase.

    >>> has_rhythm(2), has_rhythm(3)
    (False, True)
    """
    return purchases >= t.rhythm_min_purchases


def lapse_stage(days_since_purchase: float, usual_gap: float | None, purchase_days: int,
                t: Thresholds = DEFAULT) -> str | None:
    """How far a buyer has slipped, against their own rhythm (``usual_gap``; when unknown,
    ``default_gap_days``, 14):

    - ``"lapsing"``: a buyer with a rhythm (``has_rhythm``: 3 purchase days) silent for longer
      than max(``lapsing_min_days`` 14, ``lapsing_gaps`` 2.5 × their usual gap): slipping away,
      time for a win-back and a churn alert (``churn.lapse_time``, the same moment). One or two
      purchases are no habit to slip from: the profile called such a buyer lapsing while no
      alert could follow;
    - ``"lapsed"``: any buyer silent for longer than max(``lapsed_min_days`` 180, ``lapsed_gaps``
      3 × their usual gap): gone (the CRM segment);
    - ``None``: still within their rhythm, or too new to have one.

    A lapsed customer counts as lapsing as well (``is_lapsing``).

    >>> lapse_stage(10, 7.0, 6), lapse_stage(30, 7.0, 6), lapse_stage(200, 7.0, 6), lapse_stage(200, 70.0, 6)
    (None, 'lapsing', 'lapsed', 'lapsing')
    >>> lapse_stage(60, None, 2), lapse_stage(200, None, 1)
    (None, 'lapsed')
    """
    gap = usual_gap if usual_gap is not None else t.default_gap_days
    if days_since_purchase > max(t.lapsed_min_days, t.lapsed_gaps * gap):
        return "lapsed"
    if has_rhythm(purchase_days, t) and days_since_purchase > lapsing_after_days(usual_gap, t):
        return "lapsing"
    return None


def lapsing_after_days(usual_gap: float | None, t: Thresholds = DEFAULT) -> float:
    """Days of silence after which a buyer is lapsing: max(``lapsing_min_days`` 14,
    ``lapsing_gaps`` 2.5 × their usual gap, or ``default_gap_days`` when unknown). Churn alerts
    fall due then too (``churn.lapse_time``).

    >>> lapsing_after_days(7.0), lapsing_after_days(2.0), lapsing_after_days(None)
    (17.5, 14.0, 35.0)
    """
    gap = usual_gap if usual_gap is not None else t.default_gap_days
    return max(t.lapsing_min_days, t.lapsing_gaps * gap)


def is_lapsing(days_since_purchase: float, usual_gap: float | None, purchase_days: int,
               t: Thresholds = DEFAULT) -> bool:
    """Slipping away or already gone (``lapse_stage`` is not ``None``)."""
    return lapse_stage(days_since_purchase, usual_gap, purchase_days, t) is not None


def churn_risk(score: float | None, lapse: str | None, t: Thresholds = DEFAULT) -> str:
    """The churn risk a sales assistant is told: "high" from a score of ``churn_risk_high`` (0.7)
    or whenever the customer is lapsing (their own rhythm says so, whatever a population model
    that has not seen enough customers yet scores: the demo's card said "Low" for a customer on
    the retention list), "medium" from ``churn_risk_medium`` (0.4), else "low"; "unknown"
    without a score (no purchase yet).

    >>> churn_risk(0.8, None), churn_risk(0.17, "lapsing"), churn_risk(0.5, None), churn_risk(0.1, None)
    ('high', 'high', 'medium', 'low')
    >>> churn_risk(None, None)
    'unknown'
    """
    if score is None:
        return "unknown"
    if lapse is not None or score >= t.churn_risk_high:
        return "high"
    return "medium" if score >= t.churn_risk_medium else "low"


def is_lapsed(days_since_purchase: float, usual_gap: float | None, purchase_days: int,
              t: Thresholds = DEFAULT) -> bool:
    """Gone: silent for longer than max(180 days, 3 × their usual gap)."""
    return lapse_stage(days_since_purchase, usual_gap, purchase_days, t) == "lapsed"


def is_new_customer(days_since_first_purchase: float, orders: int, t: Thresholds = DEFAULT) -> bool:
    """New to the shop: first purchase less than ``new_customer_days`` (30) days ago *and* at
    most ``new_customer_max_orders`` (2) orders so far. Someone with 53 orders is a regular,
    however recently their history starts (a stitched loyalty card, a replay), and so is one who
    placed 7 orders in their first days: orders count, not the days they fell on.

    >>> is_new_customer(10, 1), is_new_customer(30, 1), is_new_customer(10, 53)
    (True, False, False)
    """
    return days_since_first_purchase < t.new_customer_days and 0 < orders <= t.new_customer_max_orders


def is_loyal(purchases: int, days_since_first_purchase: float, days_since_purchase: float,
             usual_gap: float | None, t: Thresholds = DEFAULT) -> bool:
    """A loyal regular: at least ``loyal_min_purchases`` (6) purchase days over at least
    ``loyal_min_tenure_days`` (90) days, and still buying to their rhythm (not lapsing).

    >>> is_loyal(8, 200, 5, 20.0), is_loyal(8, 40, 5, 5.0), is_loyal(3, 200, 5, 60.0), is_loyal(8, 200, 90, 20.0)
    (True, False, False, False)
    """
    return (purchases >= t.loyal_min_purchases and days_since_first_purchase >= t.loyal_min_tenure_days
            and not is_lapsing(days_since_purchase, usual_gap, purchases, t))


# --------------------------------------------------------------------------- repeat purchase


def repeat_bar(bar: float | None, t: Thresholds = DEFAULT) -> float:
    """The rebuy share a bought item must reach to come back: the learned ``bar``
    (``RepeatModel.bar``), or ``min_repeat_share`` before the stream has counted its shoppers.

    >>> repeat_bar(None), repeat_bar(0.04)
    (0.1, 0.04)
    """
    return t.min_repeat_share if bar is None else bar


def may_recommend_again(category: str, *, repeat_share: float = 0.0, own_orders: int = 0,
                        flagged_replenishable: bool = False, replenishable_categories: tuple[str, ...] = (),
                        bar: float | None = None, t: Thresholds = DEFAULT) -> bool:
    """May an item the customer already bought be suggested again (and a second one of its
    category sit in the same basket without counting as a substitute)?

    Learned from the stream: yes when the share of the item's buyers who bought it in two or
    more orders (``repeat_share``, from ``online_models.repeats``: the item's own buyers, shrunk
    towards its category's when they are few) reaches ``bar``, the share of shoppers who buy a
    popular item (``RepeatModel.bar``: the 10th most bought item's; before shoppers are counted,
    ``min_repeat_share``, 10 %); or when this customer has already bought it in two or more
    orders (``own_orders``). Buying a belt makes few buy it again, fewer than buy a popular
    item: it stays out; coffee comes back; so does a grocery item one buyer in twenty rebuys
    when only one shopper in twenty buys even the popular ones. Explicit overrides, never
    needed: the catalog flags the item ``replenishable``, or its category lies under
    ``replenishable_categories`` (``OMNIREC_REPLENISHABLE_CATEGORIES``, empty by default). No
    category name is read.

    >>> may_recommend_again("x17", repeat_share=0.4), may_recommend_again("x17", repeat_share=0.02)
    (True, False)
    >>> may_recommend_again("x17", repeat_share=0.05, bar=0.04), may_recommend_again("x17", repeat_share=0.05, bar=0.2)
    (True, False)
    >>> may_recommend_again("x17", repeat_share=0.02, own_orders=2)
    True
    >>> may_recommend_again("men/trousers", replenishable_categories=("men",))
    True
    """
    return (repeat_share >= repeat_bar(bar, t) or own_orders >= 2 or flagged_replenishable
            or under_any(category, replenishable_categories))


def not_interested(dismissed: Mapping[str, int], category_of: Mapping[str, str], now_ms: int,
                   t: Thresholds = DEFAULT) -> tuple[set[str], set[str]]:
    """What a customer said they are not interested in, as (SKUs, categories) to keep out now:
    every recommendation they dismissed in the last ``not_interested_days`` (30), and the
    category of ``not_interested_category_items`` (2) or more of them.

    >>> day = 86_400_000
    >>> skus, cats = not_interested({"a": 0, "b": 5 * day, "c": 6 * day}, {"a": "x", "b": "y", "c": "y"}, 31 * day)
    >>> sorted(skus), sorted(cats)
    (['b', 'c'], ['y'])
    """
    since = now_ms - t.not_interested_days * 86_400_000
    skus = {sku for sku, ts in dismissed.items() if ts >= since}
    per_category: dict[str, int] = {}
    for sku in skus:
        category = category_of.get(sku)
        if category:
            per_category[category] = per_category.get(category, 0) + 1
    return skus, {c for c, n in per_category.items() if n >= t.not_interested_category_items}


def enough_baskets(baskets_together: float, t: Thresholds = DEFAULT) -> bool:
    """Have enough baskets held two items together for their share to count as evidence? More
    than one (``together_min_baskets``, 1.5 decayed baskets): the audit saw a flannel shirt lead
    a phone basket, "bought with Clear case in 100% of baskets", on one basket.

    >>> enough_baskets(1.0), enough_baskets(1.9)
    (False, True)
    """
    return baskets_together >= t.together_min_baskets


def bought_together(share_of_baskets: float, t: Thresholds = DEFAULT) -> bool:
    """Do baskets hold two items together often enough that one is no substitute for the other?
    At least ``together_share`` (10 %) of the basket item's baskets also held the candidate
    (shares count only from pairs seen in ``enough_baskets``).

    >>> bought_together(0.25), bought_together(0.03)
    (True, False)
    """
    return share_of_baskets >= t.together_share


def far_above_basket(price: float, basket_max_price: float, usual_item_price: float | None = None,
                     t: Thresholds = DEFAULT) -> bool:
    """At the till, is a suggestion priced far above what is being bought? More than
    ``till_price_ratio`` (3×) the basket's dearest item, unless the customer's own history
    (``usual_item_price``: what they pay per item on average) says they buy at that level.

    >>> far_above_basket(346.99, 29.0), far_above_basket(60.0, 29.0)
    (True, False)
    >>> far_above_basket(346.99, 29.0, usual_item_price=150.0)  # they buy dear things
    False
    """
    return price > price_ceiling(basket_max_price, usual_item_price, t)


def price_ceiling(basket_max_price: float, usual_item_price: float | None = None, t: Thresholds = DEFAULT) -> float:
    """The price above which a suggestion is far above the basket (``far_above_basket``):
    ``till_price_ratio`` × the dearer of the basket's dearest item and what the customer usually
    pays per item; no ceiling when neither is known.

    >>> price_ceiling(29.0), price_ceiling(0.0)
    (87.0, inf)
    """
    reference = max(basket_max_price, usual_item_price or 0.0)
    return t.till_price_ratio * reference if reference > 0 else math.inf


@lru_cache(maxsize=65_536)
def under_any(category: str, prefixes: tuple[str, ...]) -> bool:
    """Is ``category`` one of ``prefixes`` or below one of them (a prefix is a whole level)?"""
    return any(category == p or category.startswith(p + "/") for p in prefixes)


# --------------------------------------------------------------------------- value floor


def value_floor(population_median: float | None, t: Thresholds = DEFAULT) -> float:
    """The least value (value at risk for a churn alert, net value for a red-carpet offer)
    worth acting on: ``value_floor_share_of_median`` (half) of the population's median, and
    never below ``value_floor_min`` (0). Without a population yet, just ``value_floor_min``.

    >>> value_floor(120.0), value_floor(None), value_floor(-5.0)
    (60.0, 0.0, 0.0)
    """
    if population_median is None or population_median <= 0:
        return t.value_floor_min
    return max(t.value_floor_min, t.value_floor_share_of_median * population_median)


def clears_value_floor(value: float, population_median: float | None, t: Thresholds = DEFAULT) -> bool:
    """Strictly above the value floor: a customer worth nothing (value 0.00) never clears it.

    >>> clears_value_floor(61.0, 120.0), clears_value_floor(59.0, 120.0), clears_value_floor(0.0, None)
    (True, False, False)
    """
    return value > value_floor(population_median, t)


# --------------------------------------------------------------------------- offer suitability


def line_of(category: str) -> str:
    """The line a category belongs to: its parent in the retailer's own taxonomy ("men/belts" →
    "men", "kids/boys/trousers" → "kids/boys"; a top-level category is its own line). No name
    is read: the depth of the path decides.

    >>> line_of("kids/boys/trousers"), line_of("men/belts"), line_of("grocery")
    ('kids/boys', 'men', 'grocery')
    """
    head, sep, _ = category.rpartition("/")
    return head if sep else category


def same_line(a: str, b: str) -> bool:
    """Two categories of one line: one lies under the other's line ("men/belts" and
    "men/trousers"; "electronics" and "electronics/phones"), not "kids/boys/…" and "men/…".

    >>> same_line("men/belts", "men/trousers"), same_line("kids/boys/trousers", "men/belts")
    (True, False)
    >>> same_line("kids/boys/trousers", "kids/girls/dresses")
    False
    """
    la, lb = line_of(a), line_of(b)
    return under_any(a, (lb,)) or under_any(b, (la,))


def relates(targets: Iterable[str], owned: Iterable[str]) -> bool:
    """Whether any target category (an offer's) is in the line of any category the customer
    has (bought, or holds in the basket). An offer's category prefix ("men") relates to
    everything under it.

    >>> relates(["men/belts"], ["men/trousers"]), relates(["men/belts"], ["kids/boys/trousers"])
    (True, False)
    >>> relates(["electronics"], ["electronics/phones"]), relates([], ["men/trousers"])
    (True, False)
    """
    owned = tuple(owned)
    return any(under_any(o, (target,)) or same_line(target, o) for target in targets for o in owned)


def offer_suitability(kind: str, *, purchases: int = 0, net_value: float = 0.0,
                      discount_share: float = 0.0, return_rate: float = 0.0,
                      lapsing: bool = False, churn_score: float | None = None,
                      offer_categories: Iterable[str] = (), basket_categories: Iterable[str] = (),
                      bought_categories: Iterable[str] = (), days_since_purchase: float | None = None,
                      t: Thresholds = DEFAULT) -> tuple[bool, str]:
    """Whether an offer of this ``kind`` suits the customer, and why, in plain words. Built in:
    an offer's data (eligibility) can narrow it further but not switch it off.

    - price cuts (``discount``, ``bundle``, ``win_back``) are a red carpet: never for a buyer
      whose net value after returns is not above ``discount_min_net_value`` (0: who returned
      everything they bought gets none), nor for a discount-driven returner
      (``is_discount_driven_returner``), nor for one who sends back more than
      ``price_cut_max_return_rate`` (75 %) of what they buy over ``returner_min_purchases`` (2)
      purchases, on discount or not (the audit: 79.99 of 81.58 returned, then a half-price belt);
    - ``win_back``: only for a buyer who is lapsing (``lapse_stage``) or whose churn score is at
      least ``win_back_min_churn_score`` (0.5) and who has been silent ``win_back_min_silent_days``
      (7) or more (a first-day buyer's score comes from the population's prior, not from any
      silence of theirs: a score alone never wins back one who just bought); never for someone
      who never bought (there is nothing to win back);
    - ``bundle``: only when its items' categories (``offer_categories``) are in the line of the
      basket (``basket_categories``) or of what the customer bought (``bought_categories``,
      ``relates``): a men's belt bundle goes with men's trousers, not with a boys' basket;
    - ``service``: for what the customer buys: they bought, or hold in the basket, something
      under one of its categories (phone set-up for a phone buyer, trouser alterations for
      trousers); a service without categories (delivery, a welcome) serves anyone;
    - ``loyalty_points``: no rule of its own (its eligibility names what it rewards).

    A customer who never bought passes the red-carpet rule: there is nothing to hold against them.

    >>> offer_suitability("discount", purchases=4, net_value=30.0, discount_share=1.0, return_rate=0.75)
    (False, 'no discount: buys 100% on discount and returns 75%')
    >>> offer_suitability("bundle", purchases=2, net_value=1.59, return_rate=0.98)
    (False, 'no bundle: sends back 98% of what they buy')
    >>> offer_suitability("win_back", purchases=9, net_value=900.0, churn_score=0.01)
    (False, 'no win-back: still buying to their rhythm (churn risk 1%)')
    >>> offer_suitability("win_back", purchases=1, net_value=90.0, churn_score=0.6, days_since_purchase=0.2)
    (False, 'no win-back: they bought today')
    >>> offer_suitability("bundle", purchases=2, net_value=80.0, offer_categories=["men/belts"],
    ...                   bought_categories=["kids/boys/trousers"])
    (False, 'no bundle: men/belts does not go with their basket or what they buy')
    """
    if kind not in OFFER_KINDS:
        raise ValueError(f"unknown offer kind {kind!r}; expected one of {list(OFFER_KINDS)}")
    word = kind.replace("_", "-")
    if kind in PRICE_CUTS and purchases > 0:
        if net_value <= t.discount_min_net_value:
            below = "nothing" if t.discount_min_net_value == 0 else f"not above {t.discount_min_net_value:g}"
            if net_value < 0 and t.discount_min_net_value == 0:
                below = "negative"
            return False, f"no {word}: net value after returns is {below}"
        if is_discount_driven_returner(discount_share, return_rate, purchases, t):
            return False, f"no {word}: buys {discount_share:.0%} on discount and returns {return_rate:.0%}"
        if purchases >= t.returner_min_purchases and return_rate > t.price_cut_max_return_rate:
            return False, f"no {word}: sends back {return_rate:.0%} of what they buy"
    if kind == "win_back":
        if purchases <= 0:
            return False, "no win-back: they have not bought yet"
        # Lapsing is silence measured against their own rhythm; a score alone needs silence too.
        if not lapsing and days_since_purchase is not None and days_since_purchase < t.win_back_min_silent_days:
            return False, f"no win-back: they bought {days_ago(days_since_purchase)}"
        score_ok = churn_score is not None and churn_score >= t.win_back_min_churn_score
        if not (lapsing or score_ok):
            risk = "" if churn_score is None else f" (churn risk {churn_score:.0%})"
            return False, f"no win-back: still buying to their rhythm{risk}"
    targets = tuple(offer_categories)
    owned = (*basket_categories, *bought_categories)
    if kind == "bundle" and not relates(targets, owned):
        shown = ", ".join(targets) or "its items"
        return False, f"no bundle: {shown} does not go with their basket or what they buy"
    if kind == "service":
        if targets and not any(under_any(o, (target,)) for target in targets for o in owned):
            return False, f"no service: they do not buy {', '.join(targets)}"
    return True, "suitable"


def category_in_words(category: str, last_levels: int | None = None) -> str:
    """A category path of the retailer's own taxonomy as it reads in a sentence, capitalised,
    optionally its last levels only.

    >>> category_in_words("kids/boys"), category_in_words("kids/boys/cargo-trousers", 2)
    ('Kids/Boys', 'Boys/Cargo trousers')
    """
    parts = category.split("/")
    return "/".join(part.replace("-", " ").capitalize() for part in parts[-last_levels if last_levels else 0:])


def days_ago(days: float) -> str:
    """A past day in words (whole days): "today", "yesterday", "3 days ago".

    >>> days_ago(0.4), days_ago(1.2), days_ago(3.7)
    ('today', 'yesterday', '3 days ago')
    """
    whole = int(days)
    return "today" if whole <= 0 else "yesterday" if whole == 1 else f"{whole} days ago"
