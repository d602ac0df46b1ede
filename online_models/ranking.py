"""Recommendations: candidates → scores → business rules → top-k, each with its reasons.

Pure: the caller (API, evaluation harness) fetches the customer state, the neighbour
lists of the items it reads (`lists_to_read`) and the popularity index, then calls `recommend`.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from online_models import nextbasket
from online_models import rules as retail_rules
from online_models.customer import CustomerState
from online_models.events import Product
from online_models.items import Neighbor, PopularityIndex
from online_models.learning import RankerWeights
from online_models.repeats import PRIOR_BUYERS, RepeatModel, RepeatView, days_since, own_cycle_days

CONTEXTS = ("home", "product", "cart")
HOME_RECENT_VIEWS = 3
HOME_RECENT_BUYS = 5
PERSONAL_CANDIDATES = 30
BASKET_LINES_READ = 3  # at the till, the popular lists of the basket's most represented lines
SUBSTITUTE_PENALTY = 0.3
PRICE_PENALTY = 0.3  # a suggestion far dearer than the basket (rules.far_above_basket)
BASKET_LINE_WEIGHT = 0.7  # at the till, the basket's share of the line evidence (the rest: history)
THIN_BASKETS = 10.0  # a basket item held by fewer baskets borrows its category's evidence (``_score_stand_ins``)
STAND_INS = 3  # ... from this many of the category's most popular items
STAND_IN_WEIGHT = 0.5  # ... each complement worth this share of a pair of its own
RANKER_PRIOR_EVENTS = 500  # feedback events after which learnt and hand-set scores weigh the same


@dataclass(frozen=True, slots=True)
class Weights:
    """How much each signal counts in the blend. The defaults in use (``FITTED``, one set per
    context) are not set by hand: they are what ``omnirec fit-weights`` chose on validation splits
    in event time of the demo stream, Ta-Feng and a stream without repeat purchases at once: home
    lists for the home page, baskets with one item hidden for the till and product pages
    (docs/weights.md gives the procedure and its output). The class defaults are the start the
    first fits ran from.

    - ``complement``: bought with an anchor (the basket, the product in view; on the home page
      the latest views and buys);
    - ``buy_again``: the customer's own frequency of a bought item (GP-TopFreq's personal half);
    - ``due``: the same, times the learned chance they rebuy it and how due it is by its cycle
      (``nextbasket.timing``). ``buy_again / (buy_again + due)`` is the share of a bought item's
      score that holds whatever the habit and the timing say (the former BUY_AGAIN_FLOOR);
    - ``recency``: the personal next-basket vector (``nextbasket``: decayed per basket);
    - ``neighbours``: bought with the customer's items by others (the explore pool's evidence).
    """

    complement: float = 1.0
    category: float = 0.2
    brand: float = 0.1
    buy_again: float = 0.84
    due: float = 0.18
    recency: float = 0.0
    neighbours: float = 0.5
    popularity: float = 0.15


# What ``omnirec fit-weights --context home`` chose (docs/weights.md, 2026-12-03)
HOME_WEIGHTS = Weights(complement=0.0, category=0.051, brand=1.344, buy_again=1.008, due=0.2142, recency=0.25,
                       neighbours=0.5, popularity=0.15)
# The till and product pages, where an item is in view (``--context cart``, the same day)
TILL_WEIGHTS = Weights(complement=0.42, category=0.1062, brand=0.2, buy_again=3.36, due=0.36, recency=1.0,
                       neighbours=0.0, popularity=0.15)
FITTED = {"home": HOME_WEIGHTS, "product": TILL_WEIGHTS, "cart": TILL_WEIGHTS}


NO_REPEATS = RepeatModel()


@dataclass(frozen=True, slots=True)
class Rules:
    replenishable: tuple[str, ...] = ()  # explicit override (OMNIREC_REPLENISHABLE_CATEGORIES)
    # A customer whose interest under a parent line (kids/…) is ≥ this share in one child
    # line (kids/boys) does not get items of the sibling lines (kids/girls).
    line_dominance: float = 0.9
    min_line_interest: float = 0.1

    def may_recommend_again(self, product: Product, habit: RepeatView, own_orders: int = 0,
                            bar: float | None = None) -> bool:
        """Bought items that may come back, and need not count as substitutes in a basket
        (`rules.may_recommend_again`: the learned habit against the learned ``bar``, the
        customer's own orders, the overrides)."""
        return retail_rules.may_recommend_again(
            product.category, repeat_share=habit.share, own_orders=own_orders,
            flagged_replenishable=product.attributes.get("replenishable") is True,
            replenishable_categories=self.replenishable, bar=bar)


@dataclass(frozen=True, slots=True)
class Request:
    context: str = "home"
    skus: tuple[str, ...] = ()  # the product page's sku, or the basket
    channel: str | None = None
    store_id: str | None = None
    k: int = 10
    now_ms: int | None = None  # when the answer is for (default: the customer's last event)
    exclude: tuple[str, ...] = ()  # SKUs or categories (a category covers everything under it) to leave out


@dataclass(slots=True)
class Suggestion:
    sku: str
    score: float
    reasons: list[str]
    name: str = ""
    category: str = ""
    price: float = 0.0
    features: dict[str, float] = field(default_factory=dict)  # what the learnt ranker saw
    tier: int = 0  # at the till: 0 goes with the basket, 1 its line, 2 the rest (``_Till.place``)
    multiplier: float = 1.0  # at the till: the substitute and price penalties the blend was multiplied by


class _Candidate:
    """A suggestion being scored: its score parts and the reason of each (a plain class with
    slots: one is made per candidate of every request, so its constructor is kept cheap)."""

    __slots__ = ("sku", "parts", "reasons", "together")

    def __init__(self, sku: str) -> None:
        self.sku = sku
        self.parts: dict[str, float] = {}
        self.reasons: dict[str, tuple[float, str | tuple]] = {}
        self.together = 0.0  # the largest share of an anchor's baskets that also held this item

    def add(self, part: str, value: float, reason: str | tuple | None = None) -> None:
        if value > self.parts.get(part, 0.0):
            self.parts[part] = value
            if reason:
                self.reasons[part] = (value, reason)


def anchors(state: CustomerState | None, request: Request) -> dict[str, float]:
    """The items whose complements to consider, with how much each one counts."""
    chosen = {sku: 1.0 for sku in request.skus}
    if request.context != "home" or state is None:
        return chosen
    for age, sku in enumerate(reversed(state.recent_views[-HOME_RECENT_VIEWS:])):
        chosen.setdefault(sku, 0.5 * 0.7**age)
    recent_buys = sorted(state.bought, key=lambda sku: state.bought[sku][1], reverse=True)
    for age, sku in enumerate(recent_buys[:HOME_RECENT_BUYS]):
        chosen.setdefault(sku, 0.8 * 0.7**age)
    for sku in nextbasket.sources(state.basket_vector):  # read for the neighbour evidence only
        chosen.setdefault(sku, 0.0)
    return chosen


def lists_to_read(state: CustomerState | None, request: Request, weights: Weights | None = None,
                  every_signal: bool = False) -> list[str]:
    """The items whose co-purchase lists ``recommend`` reads for this request (with the same
    ``weights`` and ``every_signal``): the anchors when complements count, the customer's
    heaviest items when the neighbour evidence does. A signal the blend gives no weight reads
    none (the home page's fitted blend: the neighbour evidence's sources only)."""
    complements, neighbour_evidence = _signals_computed(request, weights, every_signal)
    wanted = dict.fromkeys(request.skus)
    if complements:
        wanted.update(anchors(state, request))
    if state is not None and neighbour_evidence:
        wanted.update(dict.fromkeys(nextbasket.sources(state.basket_vector)))
    return list(wanted)


def _blend(request: Request, weights: Weights | None) -> Weights:
    return weights or FITTED.get(request.context, TILL_WEIGHTS)


def _signals_computed(request: Request, weights: Weights | None, every_signal: bool) -> tuple[bool, bool]:
    """Whether the complements and the neighbour evidence are computed for this request: not when
    the blend gives them no weight (they would only add candidates that the other signals score;
    the home page's fitted blend gives complements none, the till's none to the neighbour
    evidence), unless ``every_signal``. ``recommend`` and ``lists_to_read`` both ask here."""
    weight_of = _weight_table(_blend(request, weights))
    return (every_signal or weight_of["complement"] > 0, every_signal or weight_of["neighbours"] > 0)


def recommend(
    state: CustomerState | None,
    request: Request,
    neighbors: Mapping[str, list[Neighbor]],
    popularity: PopularityIndex,
    catalog: Mapping[str, Product],
    rules: Rules = Rules(),
    weights: Weights | None = None,
    ranker: RankerWeights | None = None,
    repeats: RepeatModel = NO_REPEATS,
    every_signal: bool = False,
) -> list[Suggestion]:
    """Top-k suggestions. With a trained `ranker`, the score moves from the hand-set blend
    (normalised) towards the learnt P(click), the more so the more feedback it has seen.
    ``weights``: one blend for every context; by default the context's fitted one (``FITTED``).
    ``repeats``: the learned repeat-purchase habits (what may come back after a purchase).
    ``every_signal``: compute the signals the blend gives no weight too, so that their parts are
    in the features (``omnirec fit-weights`` must see a part to try weighting it)."""
    shares, brand_shares = state.interest_shares(catalog) if state is not None else ({}, {})
    candidates: dict[str, _Candidate] = {}
    weight_of = _weight_table(_blend(request, weights))
    # a signal the blend gives no weight is skipped: home 0.73 → 0.61 ms of CPU (bench.decision)
    complements, neighbour_evidence = _signals_computed(request, weights, every_signal)
    if complements:
        _score_complements(anchors(state, request), neighbors, catalog, candidates)
        _score_stand_ins(request, neighbors, catalog, popularity, candidates)
    now_ms = request.now_ms if request.now_ms is not None else (state.last_ts if state else None) or 0
    if state is not None:
        _score_personal(state, shares, brand_shares, popularity, catalog, rules, repeats, candidates,
                        request.context, now_ms)
        if neighbour_evidence:
            _score_neighbours(state, neighbors, candidates, request.context)
    till = _Till.of(request, state, catalog, shares, neighbors) if request.context == "cart" else None
    _score_popularity(request, popularity, catalog, candidates, till.lines if till else ())

    excluded, excluded_categories = _excluded(state, request, catalog, now_ms)
    line_shares = till.line_shares if till else shares
    kept: list[tuple] = []  # (0, -score, sku, candidate, product): tuples, not objects, for most never shown
    outside_line: dict[str, bool] = {}  # per category, for this customer (at the till: this basket)
    bought = state.bought if state is not None else {}
    catalog_get, bought_get = catalog.get, bought.get
    for cand in candidates.values():  # the hot loop of every request: lookups kept local
        sku = cand.sku
        product = catalog_get(sku)
        if product is None or not product.in_stock or sku in excluded:
            continue
        category = product.category
        if excluded_categories and retail_rules.under_any(category, excluded_categories):
            continue
        record = bought_get(sku)
        if record is not None and not rules.may_recommend_again(product, repeats.view(sku, category), int(record[0]),
                                                               repeats.bar):
            continue  # a bought item that does not come back
        outside = outside_line.get(category)
        if outside is None:
            outside = outside_line[category] = _outside_customer_line(category, line_shares, rules)
        if outside:
            continue
        score = 0
        for part, value in cand.parts.items():  # the same order of additions as sum(): the same floats
            score += weight_of[part] * value
        kept.append((0, -score, sku, cand, product))
    # Only the k shown are dressed with names, reasons and features: most candidates never are.
    # Best first: tier, then score, ties by SKU (unique, so what follows it is never compared;
    # tuples compare in C, a key function would be called per candidate and per selection).
    learnt = ranker is not None and ranker.trained_on and kept
    if till is None and not learnt:
        top = [_Scored(-neg, cand, product) for _, neg, _, cand, product in heapq.nsmallest(request.k, kept)]
    else:  # every candidate is placed (the till's tiers) or re-scored (the learnt ranker)
        scored = [_Scored(-neg, cand, product) for _, neg, _, cand, product in kept]
        if till is not None:
            for entry in scored:
                till.place(entry)
        if learnt:
            _blend_learnt(scored, ranker, state)
        ranked = [(s.tier, -s.score, s.candidate.sku, s) for s in scored]
        if till is None:
            top = [entry for *_, entry in heapq.nsmallest(request.k, ranked)]
        else:  # the first places are filled from the whole list, substitutes kept out of them
            top = till.keep_substitutes_out_of_the_top(ranked, request.k)
    return [_finish(s, state, lead_with_evidence=till is not None) for s in top]


def _excluded(state: CustomerState | None, request: Request, catalog: Mapping[str, Product],
              now_ms: int) -> tuple[set[str], tuple[str, ...]]:
    """SKUs and categories to leave out: the basket or product in view, what the customer's open
    cart already holds (in every context: the home page does not sell what is in the cart), what
    the request excludes, and what the customer said they are not interested in
    (``rules.not_interested``)."""
    skus = set(request.skus) | set(request.exclude)
    if state is not None and state.cart:
        skus |= state.basket.keys()
    categories = set(request.exclude)  # an entry may name a SKU or a category: both are tried
    if state is not None and state.not_interested:
        category_of = {sku: catalog[sku].category for sku in state.not_interested if sku in catalog}
        dismissed, dismissed_categories = retail_rules.not_interested(state.not_interested, category_of, now_ms)
        skus |= dismissed
        categories |= dismissed_categories
    return skus, tuple(sorted(categories))


PERSONAL_PARTS = ("complement", "category", "brand", "buy_again", "due", "recency", "neighbours")


def fallback_reason(state: CustomerState | None, request: Request, suggestions: list[Suggestion]) -> str | None:
    """Why the answer is a fallback (popular items only), in words; None when it is not.

    >>> fallback_reason(None, Request(store_id="s-5"), [Suggestion("A", 1.0, ["popular in store s-5"])])
    'popular in store s-5: we do not know this shopper yet'
    >>> fallback_reason(None, Request("cart", ("NEW-1",)), [Suggestion("A", 1.0, ["popular right now"])])
    'popular right now: nothing has been bought with this basket yet'
    """
    if any(part in s.features for s in suggestions for part in PERSONAL_PARTS):
        return None
    if not suggestions:
        if request.exclude:
            return "nothing to suggest: the exclusions leave out every candidate"
        return "nothing to suggest: no candidate in stock passes the rules yet (the basket's line, what was just bought)"
    source = suggestions[0].reasons[0] if suggestions[0].reasons else "popular right now"
    if request.exclude:
        why = "the exclusions leave only popular items"
    elif request.skus and request.context in ("cart", "product"):
        # complements would have come first: nothing was bought with these items yet (new, or
        # not in the catalog), whoever the shopper is
        why = f"nothing has been bought with {'this basket' if request.context == 'cart' else 'this product'} yet"
    elif state is None:
        why = "we do not know this shopper yet"
    elif state.orders == 0 and len(state.views) < HOME_RECENT_VIEWS:
        why = "we know little about this shopper yet"
    else:
        why = "nothing in their history or basket points elsewhere yet"
    return f"{source}: {why}"


@dataclass(slots=True)
class _Till:
    """What the till knows about the basket: its categories (a second item of one is a
    substitute), its dearest item, and its line (a boys' basket gets boys' complements).

    At the till, evidence of going with the basket ranks first: a suggestion bought with a
    basket item (in at least ``together_share`` of its baskets) comes before one that only the
    customer's affinities, popularity or a token pair bring."""

    price_ceiling: float  # dearer than this is far above the basket (``rules.price_ceiling``)
    line_shares: dict[str, float]
    categories: frozenset[str]  # the basket's (a second item of one is a substitute)
    # the basket's lines (``rules.line_of``), where the taxonomy has them: most represented first
    lines: tuple[str, ...] = ()
    # basket categories whose items' baskets often hold another item of the same category
    multi_categories: frozenset[str] = frozenset()
    # (a basket category, a sku) → the largest share of that category's basket items' baskets that
    # also held the sku (pairs seen in ``rules.enough_baskets``): read once, not per candidate
    together: dict[tuple[str, str], float] = field(default_factory=dict)

    @classmethod
    def of(cls, request: Request, state: CustomerState | None, catalog: Mapping[str, Product],
           shares: Mapping[str, float], neighbors: Mapping[str, list[Neighbor]] | None = None) -> _Till:
        basket = [catalog[sku] for sku in request.skus if sku in catalog]
        line: dict[str, float] = {}
        for product in basket:  # the basket speaks for the line; the customer's history after it
            line[product.category] = line.get(product.category, 0.0) + BASKET_LINE_WEIGHT / len(basket)
        for category, share in shares.items():
            line[category] = line.get(category, 0.0) + (1 - BASKET_LINE_WEIGHT if basket else 1.0) * share
        usual = state.gross / state.units if state is not None and state.units > 0 else None
        ceiling = retail_rules.price_ceiling(max((p.price for p in basket), default=0.0), usual)
        neighbors = neighbors or {}
        return cls(ceiling, line, frozenset(p.category for p in basket), _lines_by_count(basket),
                   _held_in_numbers(basket, catalog, neighbors),
                   _together_with(basket, neighbors))

    def place(self, entry: _Scored) -> None:
        product = entry.product
        if product.category in self.categories and self.is_substitute(product):
            entry.substitute = True
            entry.score *= SUBSTITUTE_PENALTY
            entry.multiplier *= SUBSTITUTE_PENALTY
        far_above = product.price > self.price_ceiling  # ``rules.far_above_basket``
        if far_above:
            entry.score *= PRICE_PENALTY
            entry.multiplier *= PRICE_PENALTY
        # Tiers: 0 what goes with the basket, 1 the rest of the basket's line, 2 everything else.
        # Evidence is a real share of the basket item's baskets (``rules.bought_together``): a
        # pair seen in 2 % of them is no reason for affinity to ride in ahead of a 12 % one. Past
        # the evidence, the basket's line comes before the customer's other interests (a boys'
        # basket is filled with boys' items, then headphones). A complement far dearer than the
        # basket goes last, whatever its evidence: a phone case's basket does not lead with a
        # smartphone at 37× its price.
        if far_above:
            entry.tier = 2
        elif retail_rules.bought_together(entry.candidate.together):
            entry.tier = 0
        else:
            entry.tier = 1 if self.lines and retail_rules.under_any(product.category, self.lines) else 2

    def is_substitute(self, product: Product) -> bool:
        """A second item of a basket item's category is a substitute (a second pair of trousers,
        another phone case), unless the stream says otherwise: baskets hold it together with
        that basket item often (``rules.bought_together``: a yoghurt of another flavour; that a
        phone's baskets hold the folio case says nothing of a second case beside the clear one,
        which the audit saw lead a phone-and-case basket), or the basket item's baskets often
        hold another item of its category (``multi_categories``: noodles come in threes). That an
        item is rebought later (coffee) says nothing of a second one in the same basket, and no
        longer exempts it (the demo audit: coffee first for a coffee basket)."""
        category = product.category
        if category not in self.categories or category in self.multi_categories:
            return False
        return not retail_rules.bought_together(self.together.get((category, product.sku), 0.0))

    @staticmethod
    def keep_substitutes_out_of_the_top(ranked: list[tuple], k: int) -> list[_Scored]:
        """The first ``k`` of ``ranked`` ((tier, -score, sku, entry): best first) with no
        substitute among the first ``till_substitute_free_top`` (3): those places go to the best
        non-substitutes, however far down; the rest follow in rank order. A shorter list only when fewer than
        three candidates in all are not substitutes (the demo audit saw empty and one-item lists
        when only the first ``k`` were searched). Partial selections, not a sort of every
        candidate: the rest can only come from the first ``k`` + 3 of them."""
        free = min(retail_rules.DEFAULT.till_substitute_free_top, k)
        best = [entry for *_, entry in heapq.nsmallest(k + free, ranked)]
        head = [entry for entry in best if not entry.substitute][:free]
        if len(head) < free:  # the best non-substitutes lie further down: search them all
            head = [entry for *_, entry in heapq.nsmallest(free, [r for r in ranked if not r[3].substitute])]
            if len(head) < free:
                return head
        chosen = {id(s) for s in head}
        return (head + [entry for entry in best if id(entry) not in chosen])[:k]


class _Scored:
    __slots__ = ("score", "candidate", "product", "features", "tier", "substitute", "multiplier")

    def __init__(self, score: float, candidate: _Candidate, product: Product) -> None:
        self.score = score
        self.candidate = candidate
        self.product = product
        self.features: dict[str, float] | None = None
        self.tier = 0  # at the till: 0 goes with the basket, 1 its line, 2 the rest
        self.substitute = False
        self.multiplier = 1.0

    def features_for(self, state: CustomerState | None) -> dict[str, float]:
        if self.features is None:
            self.features = _features(self.candidate, self.product, state)
        return self.features


def _together_with(basket: list[Product], neighbors: Mapping[str, list[Neighbor]]) -> dict[tuple[str, str], float]:
    together: dict[tuple[str, str], float] = {}
    for product in basket:
        for n in neighbors.get(product.sku, ()):
            key = (product.category, n.sku)
            if retail_rules.enough_baskets(n.together_baskets) and n.confidence > together.get(key, 0.0):
                together[key] = n.confidence
    return together


def _thin_pair_in_words(anchor_name: str, baskets: float) -> str:
    n = max(1, round(baskets))
    return f"bought with {anchor_name} in {'1 basket' if n == 1 else f'{n} baskets'} so far"


# A reason is a string, or (a function, its arguments), put in words only if it is shown: most
# candidates' reasons never are.
_PAIR_IN_WORDS = "bought with {} in {:.0%} of baskets".format
_STAND_IN_IN_WORDS = "bought with other {} in {:.0%} of their baskets".format
_LIKE_IN_WORDS = "you like {}".format
_NEIGHBOURS_REASON = "bought by customers who buy what you buy"


def _shop_for_in_words(category: str) -> str:
    return f"you often shop for {pretty(category)}"  # "shop", not "buy": views count as well


def _held_in_numbers(basket: list[Product], catalog: Mapping[str, Product],
                     neighbors: Mapping[str, list[Neighbor]]) -> frozenset[str]:
    """The basket items' categories whose other items their baskets hold often: the shares of a
    basket item's baskets holding each same-category partner (its co-purchase list), summed,
    reach ``rules.bought_together`` (10 %). Learned per item from the stream, no name read."""
    found = set()
    for product in basket:
        mates = sum(n.confidence for n in neighbors.get(product.sku, ())
                    if retail_rules.enough_baskets(n.together_baskets)
                    and (other := catalog.get(n.sku)) is not None and other.category == product.category)
        if retail_rules.bought_together(mates):
            found.add(product.category)
    return frozenset(found)


def _candidate(candidates: dict[str, _Candidate], sku: str) -> _Candidate:
    found = candidates.get(sku)
    if found is None:
        found = candidates[sku] = _Candidate(sku)
    return found


@lru_cache(maxsize=64)
def _weight_table(weights: Weights) -> dict[str, float]:
    """Each part's weight by name (a dict lookup per candidate part, not a getattr)."""
    return {part: getattr(weights, part) for part in Weights.__dataclass_fields__}


def _score_complements(anchor_weights, neighbors, catalog, candidates) -> None:
    """Items bought with the anchors. A pair seen in too few baskets (``rules.enough_baskets``)
    scores (its score is already shrunk for thin evidence) but is no evidence of going with the
    basket, and its reason says how few baskets, not "100% of baskets"."""
    min_baskets = retail_rules.DEFAULT.together_min_baskets
    found = candidates.get
    for anchor, weight in anchor_weights.items():
        if weight <= 0:  # a neighbour-evidence source, not an anchor (``anchors``)
            continue
        anchor_product = catalog.get(anchor)
        anchor_name = anchor_product.name if anchor_product else anchor
        for neighbor in neighbors.get(anchor, ()):  # _Candidate.add inlined: the most frequent call
            candidate = found(neighbor.sku)
            if candidate is None:  # ``_candidate`` inlined too
                candidate = candidates[neighbor.sku] = _Candidate(neighbor.sku)
            value = weight * neighbor.score
            enough = neighbor.together_baskets >= min_baskets  # ``rules.enough_baskets``, inlined
            if value > candidate.parts.get("complement", 0.0):
                candidate.parts["complement"] = value
                candidate.reasons["complement"] = (value, (  # put in words if shown
                    (_PAIR_IN_WORDS, anchor_name, neighbor.confidence) if enough
                    else (_thin_pair_in_words, anchor_name, neighbor.together_baskets)))
            if enough and neighbor.confidence > candidate.together:
                candidate.together = neighbor.confidence


def stand_ins(request: Request, neighbors: Mapping[str, list[Neighbor]], catalog: Mapping[str, Product],
              popularity: PopularityIndex) -> dict[str, str]:
    """At the till and on product pages, for each basket item that few baskets have held yet (a
    new or rarely sold item: under ``THIN_BASKETS``, read from its own list in ``neighbors``),
    the ``STAND_INS`` most popular items of its category, whose baskets speak for it: stand-in →
    the basket item. Callers read the stand-ins' lists too (``_score_stand_ins`` scores them)."""
    if request.context not in ("cart", "product"):
        return {}
    found: dict[str, str] = {}
    for sku in request.skus:
        product = catalog.get(sku)
        if product is None or _well_known(neighbors.get(sku, ())):
            continue
        for other in [o for o in popularity.by_category.get(product.category, ()) if o != sku][:STAND_INS]:
            found.setdefault(other, sku)
    return found


def _score_stand_ins(request, neighbors, catalog, popularity, candidates) -> None:
    """What goes with a thinly known basket item (``stand_ins``): what the baskets of its
    category's most popular items held, as complements worth ``STAND_IN_WEIGHT`` of its own.
    The category is the retailer's own, read from the catalogue, never a name: the demo's black
    cargo trousers, in a few baskets so far, get the belt that the other trousers' baskets hold.
    It is not evidence of going with this basket (no tier 0 at the till): counted as such, it
    took places from the item's own thin pairs (Ta-Feng 4k slice cross-sell 0.1183 → 0.1095;
    as a complement score only, 0.1186)."""
    basket = set(request.skus)
    for other, sku in stand_ins(request, neighbors, catalog, popularity).items():
        kind = pretty(catalog[sku].category)
        for neighbor in neighbors.get(other, ()):
            if neighbor.sku in basket or not retail_rules.enough_baskets(neighbor.together_baskets):
                continue
            candidate = _candidate(candidates, neighbor.sku)
            value = STAND_IN_WEIGHT * neighbor.score
            if value > candidate.parts.get("complement", 0.0):
                candidate.parts["complement"] = value
                candidate.reasons["complement"] = (value, (_STAND_IN_IN_WORDS,
                                                           kind, neighbor.confidence))


def _well_known(own: Sequence[Neighbor]) -> bool:
    """Whether at least ``THIN_BASKETS`` baskets (decayed) held an item, read from its co-purchase
    list: any partner's together-count over its share of the item's baskets says how many did
    (the first partner usually tells; the list need not be read to its end)."""
    return any(n.together_baskets / n.confidence >= THIN_BASKETS for n in own if n.confidence > 0)


def _score_personal(state, shares, brand_shares, popularity, catalog, rules, repeats, candidates,
                    context: str, now_ms: int) -> None:
    for category, share in sorted(shares.items(), key=lambda kv: -kv[1])[:3]:
        for sku in popularity.by_category.get(category, ())[:PERSONAL_CANDIDATES]:
            if sku not in candidates:
                candidates[sku] = _Candidate(sku)
    top_count = max((record[0] for record in state.bought.values()), default=0.0)
    vector = nextbasket.personal(state.basket_vector)
    scale = 1.0 if context == "home" else 0.3
    for sku, record in state.bought.items():
        product = catalog.get(sku)
        if product is None:
            continue
        habit = repeats.view(sku, product.category)
        orders = int(record[0])
        if not rules.may_recommend_again(product, habit, orders, repeats.bar):
            continue
        # On the home page anything bought before outranks what is merely popular; with a
        # basket or product in view, complements of it come first. The customer's own
        # frequency (GP-TopFreq), the item's learned habit and its timing (``due``) and the
        # basket-decayed vector (``recency``) are separate parts: the fitted weights blend them.
        frequency = 0.5 + 0.5 * orders / top_count if context == "home" else 0.3 * orders / top_count
        # Allowed back, so at least as likely as the rule's bar (an override knows no habit).
        habit = RepeatView(max(habit.share, retail_rules.repeat_bar(repeats.bar)), habit.cycle_days, habit.buyers)
        candidate = _candidate(candidates, sku)
        own_cycle = own_cycle_days(record)
        regular = own_cycle is not None and own_cycle >= 1.0  # bought on different days, not one spree
        candidate.add("buy_again", frequency, "you buy this regularly" if regular else "you bought this before")
        candidate.add("due", frequency * due_now(habit, record, now_ms),
                      "you usually buy this about now" if regular else "shoppers usually buy this again about now")
        candidate.add("recency", scale * vector.get(sku, 0.0), "you bought this recently")
    # Category and brand are set here only, once per candidate: no max to keep (``_Candidate.add``).
    catalog_get, shares_get, brand_get = catalog.get, shares.get, brand_shares.get
    for cand in candidates.values():
        product = catalog_get(cand.sku)
        if product is None:
            continue
        share = shares_get(product.category, 0.0)
        if share >= 0.05:
            cand.parts["category"] = share
            cand.reasons["category"] = (share, (_shop_for_in_words, product.category))  # put in words if shown
        brand_share = brand_get(product.brand, 0.0)
        if brand_share >= 0.1:
            cand.parts["brand"] = brand_share
            cand.reasons["brand"] = (brand_share, (_LIKE_IN_WORDS, product.brand))


def _score_neighbours(state: CustomerState, neighbors, candidates, context: str) -> None:
    """The explore pool: items bought with the customer's heaviest items (``nextbasket``)."""
    sources = nextbasket.personal(state.basket_vector, nextbasket.NEIGHBOUR_SOURCES)
    scale = 1.0 if context == "home" else 0.3
    found = candidates.get
    for sku, value in nextbasket.neighbour_evidence(sources, neighbors).items():
        value *= scale
        if value > 0.0:  # the only part set here, once per item (``_Candidate.add`` inlined)
            candidate = found(sku)
            if candidate is None:  # ``_candidate`` inlined: a hundred items per request and more
                candidate = candidates[sku] = _Candidate(sku)
            candidate.parts["neighbours"] = value
            candidate.reasons["neighbours"] = (value, _NEIGHBOURS_REASON)


def due_now(habit: RepeatView, record, now_ms: int) -> float:
    """How likely a bought item is wanted again now, in (0, 1]: the chance this customer
    rebuys it (their own repeat orders, shrunk towards the item's learned share), times how due it
    is (TAIW: the days since they last bought it against their cycle for it, their own gaps shrunk
    towards the item's usual one; ``nextbasket.timing``).

    >>> weekly = RepeatView(share=0.6, cycle_days=7.0, buyers=50)
    >>> from online_models.clock import DAY_MS
    >>> round(due_now(weekly, [4, 0, -21 * DAY_MS], 7 * DAY_MS), 3)  # due today
    0.75
    >>> round(due_now(weekly, [4, 0, -21 * DAY_MS], 1 * DAY_MS), 3)  # bought yesterday
    0.287
    """
    repeats = max(0, int(record[0]) - 1)
    chance = (repeats + PRIOR_BUYERS * habit.share) / (repeats + PRIOR_BUYERS)
    cycle = _blended_cycle(own_cycle_days(record), repeats, habit.cycle_days)
    return chance * nextbasket.timing(days_since(record, now_ms), cycle)


def _blended_cycle(own: float | None, own_gaps: int, usual: float | None) -> float | None:
    if own is None:
        return usual
    if usual is None:
        return own
    return math.expm1((own_gaps * math.log1p(own) + PRIOR_BUYERS * math.log1p(usual)) / (own_gaps + PRIOR_BUYERS))


def _lines_by_count(basket: Sequence[Product]) -> tuple[str, ...]:
    """The basket's lines (``rules.line_of``), where the taxonomy has them: the one with most items
    first, ties by name."""
    counts: dict[str, int] = {}
    for product in basket:
        if "/" in product.category:
            line = retail_rules.line_of(product.category)
            counts[line] = counts.get(line, 0) + 1
    return tuple(sorted(counts, key=lambda name: (-counts[name], name)))


def _score_popularity(request, popularity, catalog, candidates, basket_lines: Sequence[str] = ()) -> None:
    """Popular items as candidates; the closer the list to the context, the more it counts.
    ``basket_lines``: at the till, the basket's lines, most represented first."""
    lists: list[tuple[list[str], float, str]] = []
    if request.store_id and request.store_id in popularity.by_store:
        lists.append((popularity.by_store[request.store_id], 1.0, f"popular in store {request.store_id}"))
    for sku in request.skus[:1] if request.context == "product" else ():
        product = catalog.get(sku)
        if product is not None:
            lists.append((popularity.by_category.get(product.category, []), 0.8,
                          f"popular in {pretty(product.category)}"))
    # at the till, the basket's main lines fill the list after the evidence (only the main ones:
    # a 100-item basket must not read a hundred lists)
    for line in basket_lines[:BASKET_LINES_READ]:
        lists.append((popularity.by_category.get(line, []), 0.8, f"popular in {pretty(line)}"))
    lists.append((popularity.global_top, 0.6, "popular right now"))
    found = candidates.get
    for ranked, weight, reason in lists:
        for rank, sku in enumerate(ranked[:PERSONAL_CANDIDATES]):
            candidate = found(sku)
            if candidate is None:  # ``_candidate`` inlined
                candidate = candidates[sku] = _Candidate(sku)
            candidate.add("popularity", weight / (1.0 + rank / 10), reason)


def _outside_customer_line(category: str, shares: Mapping[str, float], rules: Rules) -> bool:
    """True for kids/girls/… when the customer's kids interest is all in kids/boys/…

    Only lines (inner nodes below a top level) count: men/belts is never excluded for a
    men/trousers buyer, because belts are a leaf, not a line.
    """
    parts = category.split("/")
    for depth in range(1, len(parts) - 1):
        parent, line = "/".join(parts[:depth]), "/".join(parts[: depth + 1])
        under_parent = {c: s for c, s in shares.items() if _under(c, parent)}
        parent_share = sum(under_parent.values())
        if parent_share < rules.min_line_interest:
            continue
        line_share = sum(s for c, s in under_parent.items() if _under(c, line))
        if line_share / parent_share > 1 - rules.line_dominance:
            continue
        siblings: dict[str, float] = {}
        for c, s in under_parent.items():
            child = "/".join(c.split("/")[: depth + 1])
            siblings[child] = siblings.get(child, 0.0) + s
        if max(siblings.values()) / parent_share >= rules.line_dominance:
            return True
    return False


SEARCH_BRAND_WEIGHT = 0.25  # a brand they like counts a quarter of one level of their line


def search_affinity(category: str, brand: str, shares: Mapping[str, float],
                    brand_shares: Mapping[str, float]) -> float:
    """How much a search match is this customer's: their share of interest under each level of
    the match's category path (the top level, the line, the category itself: a men's buyer's
    interest lies under "men" whatever trousers they bought), plus a little for its brand.

    >>> shares = {"men/shirts": 0.75, "men/trousers": 0.25}
    >>> search_affinity("men/trousers", "", shares, {}), search_affinity("kids/boys/trousers", "", shares, {})
    (1.25, 0.0)
    """
    parts = category.split("/")
    line = sum(share for depth in range(1, len(parts) + 1)
               for c, share in shares.items() if _under(c, "/".join(parts[:depth])))
    return line + SEARCH_BRAND_WEIGHT * brand_shares.get(brand, 0.0)


def search_order(matches: list[Product], state: CustomerState | None,
                 catalog: Mapping[str, Product]) -> list[Product]:
    """Catalog search matches in the order a till should offer them: in stock first, then the
    customer's affinity for each (``search_affinity``: their line, category and brand, learnt
    from what they bought and viewed), then by name. Without a customer: stock, then name.

    >>> shop = {p.sku: p for p in [Product("BT", "Cargo trousers", "kids/boys/trousers"),
    ...         Product("MT", "Linen trousers", "men/trousers"), Product("MS", "Oxford shirt", "men/shirts")]}
    >>> [p.sku for p in search_order([shop["BT"], shop["MT"]], None, shop)]
    ['BT', 'MT']
    >>> buys_men = CustomerState("c-1", sku_interest={"MS": 0.0})
    >>> [p.sku for p in search_order([shop["BT"], shop["MT"]], buys_men, shop)]
    ['MT', 'BT']
    """
    shares, brands = state.interest_shares(catalog) if state is not None else ({}, {})
    return sorted(matches, key=lambda p: (not p.in_stock, -search_affinity(p.category, p.brand, shares, brands),
                                          p.name, p.sku))


def _features(cand: _Candidate, product: Product, state: CustomerState | None) -> dict[str, float]:
    return {**cand.parts, "price": math.log1p(product.price) / 10, "margin": _margin_share(product),
            "viewed": 1.0 if state is not None and product.sku in state.views else 0.0}  # every view kept


def _finish(scored: _Scored, state: CustomerState | None, lead_with_evidence: bool = False) -> Suggestion:
    """The suggestion as shown. Its reasons go strongest first; at the till, one that goes with
    the basket (tier 0) leads with that evidence, the reason it ranks where it does."""
    product, cand = scored.product, scored.candidate
    ranked = sorted(cand.reasons.values(), key=lambda vr: -vr[0])
    if lead_with_evidence and scored.tier == 0 and "complement" in cand.reasons:
        evidence = cand.reasons["complement"]
        ranked = [evidence, *(vr for vr in ranked if vr is not evidence)]
    reasons = [text if isinstance(text, str) else text[0](*text[1:]) for _, text in ranked]
    return Suggestion(
        sku=product.sku, score=round(scored.score, 6), reasons=reasons, name=product.name,
        category=product.category, price=product.price, features=scored.features_for(state),
        tier=scored.tier, multiplier=scored.multiplier,
    )


def _blend_learnt(scored: list[_Scored], ranker: RankerWeights, state: CustomerState | None) -> None:
    trust = ranker.trained_on / (ranker.trained_on + RANKER_PRIOR_EVENTS)
    top = max(s.score for s in scored) or 1.0
    for s in scored:
        s.score = (1 - trust) * s.score / top + trust * ranker.predict(s.features_for(state))


def _margin_share(product: Product) -> float:
    """Catalogs send margin as a share of price or as money; the ranker wants a share."""
    if product.margin <= 1.0:
        return max(0.0, product.margin)
    return min(1.0, product.margin / product.price) if product.price > 0 else 0.0


def _under(category: str, prefix: str) -> bool:
    return category == prefix or category.startswith(prefix + "/")


@lru_cache(maxsize=65_536)
def pretty(category: str) -> str:
    """'kids/boys/shirts' → 'Boys/Shirts' (the last two levels read best in a sentence)."""
    return retail_rules.category_in_words(category, 2)
