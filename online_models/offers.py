"""Next-best-offer: offers as data, hard gates, propensity, arbitration with exploration.

A decision follows the decision hubs' order:

    eligible offers → gates (eligibility, suitability, contact policy, timing)
      → propensity (per offer: a Bayesian linear model of the customer's features, see
        ``online_models.propensity``, over a Beta posterior per customer cell as its fallback;
        Thompson-sampled)
      → priority = propensity × context weight × value × lever
      → a small seeded control group gets a random eligible offer, flagged
      → the winner, the runner-ups, and the reasons in plain words.

Propensity is learnt from `recs.feedback`: every impression is a trial and an accept is
its success (a later accept turns its impression's provisional failure into a success),
so no timer is needed to close an ignored impression.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from river import proba

from online_models import propensity as feature_model
from online_models import rules
from online_models.customer import CustomerState
from online_models.events import DAY_MS, Product

KINDS = rules.OFFER_KINDS
TIMED_KINDS = frozenset({"discount", "bundle", "loyalty_points"})  # coupons that expire unused
MAX_OFFER_NUMBER = 1e9  # no value, cost, validity or lever of an offer is larger: 1e308 would overflow


class OfferError(ValueError):
    """A bad offer definition; the message names the offer and the field."""


@dataclass(frozen=True, slots=True)
class Eligibility:
    segments: tuple[str, ...] = ()  # customer cells (see `customer_cell`); empty: any
    tiers: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()  # category prefixes the customer must buy
    channels: tuple[str, ...] = ()
    stores: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Offer:
    offer_id: str
    name: str
    kind: str
    value: float  # expected margin impact if accepted
    cost: float = 0.0
    valid_days: float = 14.0
    max_per_customer: int = 1
    active: bool = True
    eligibility: Eligibility = Eligibility()
    bundle_skus: tuple[str, ...] = ()
    prior_propensity: float = 0.05
    prior_strength: float = 20.0  # how many impressions the prior is worth
    lever: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        e = self.eligibility
        return {
            "offer_id": self.offer_id, "name": self.name, "kind": self.kind, "value": self.value,
            "cost": self.cost, "valid_days": self.valid_days, "max_per_customer": self.max_per_customer,
            "active": self.active, "bundle_skus": list(self.bundle_skus),
            "eligibility": {"segments": list(e.segments), "tiers": list(e.tiers),
                            "categories": list(e.categories), "channels": list(e.channels),
                            "stores": list(e.stores)},
            "prior_propensity": self.prior_propensity, "prior_strength": self.prior_strength,
            "lever": self.lever,
        }


def offer_from_dict(obj: Any) -> Offer:
    if not isinstance(obj, dict):
        raise OfferError(f"an offer must be a JSON object; got {type(obj).__name__}")
    offer_id = obj.get("offer_id")
    if not isinstance(offer_id, str) or not offer_id:
        raise OfferError("offer without a valid 'offer_id'")
    where = f"offer {offer_id!r}"

    def number(name: str, default: float | None = None, low: float | None = None, high: float | None = None):
        value = obj.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OfferError(f"{where}: field '{name}' must be a number; got {value!r}")
        if not math.isfinite(value) or abs(value) > MAX_OFFER_NUMBER:
            raise OfferError(f"{where}: field '{name}' must be finite and within ± {MAX_OFFER_NUMBER:g}; "
                             f"got {value!r}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise OfferError(f"{where}: field '{name}' must be in [{low}, {high}]; got {value!r}")
        return float(value)

    kind = obj.get("kind")
    if kind not in KINDS:
        raise OfferError(f"{where}: field 'kind' must be one of {list(KINDS)}; got {kind!r}")
    eligibility = obj.get("eligibility") or {}
    if not isinstance(eligibility, dict):
        raise OfferError(f"{where}: field 'eligibility' must be an object")

    def names(name: str) -> tuple[str, ...]:
        value = eligibility.get(name) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise OfferError(f"{where}: field 'eligibility.{name}' must be a list of strings")
        return tuple(v.strip("/").lower() if name == "categories" else v for v in value)

    bundle = obj.get("bundle_skus") or []
    if not isinstance(bundle, list) or not all(isinstance(s, str) for s in bundle):
        raise OfferError(f"{where}: field 'bundle_skus' must be a list of SKUs")
    if kind == "bundle" and not bundle:
        raise OfferError(f"{where}: a bundle needs 'bundle_skus'")
    active = obj.get("active", True)
    if not isinstance(active, bool):
        raise OfferError(f"{where}: field 'active' must be true or false")
    return Offer(
        offer_id=offer_id,
        name=str(obj.get("name") or offer_id),
        kind=kind,
        value=number("value"),
        cost=number("cost", 0.0, low=0),
        valid_days=number("valid_days", 14.0, low=0.1),
        max_per_customer=int(number("max_per_customer", 1, low=1)),
        active=active,
        eligibility=Eligibility(*(names(n) for n in ("segments", "tiers", "categories", "channels", "stores"))),
        bundle_skus=tuple(bundle),
        prior_propensity=number("prior_propensity", 0.05, low=0.0001, high=0.9999),
        prior_strength=number("prior_strength", 20.0, low=0.1),
        lever=number("lever", 1.0, low=0),
    )


# --- customer view ------------------------------------------------------------------------


LINE_SHARE = 0.10  # a line (a category's parent) counts when it holds this share of the customer's interest
MAX_LINES = 3  # a cell names at most this many lines, the largest: cells stay few enough to learn in
BIG_SPENDER_GROSS = 800.0
INTEREST_FIT = 0.30  # share of interest in an offer's categories that makes it a good fit


def customer_cell(state: CustomerState | None, catalog: Mapping[str, Product], now_ms: int | None = None) -> str:
    """A behaviour cell for propensity: customers who answer offers alike.

    `new` (no purchase yet), `discount_returner` (`rules.is_discount_driven_returner`),
    else `<lines>|<behaviour>`: the lines shopped for (``_lines``: e.g. men, kids/boys,
    grocery) and how the customer
    buys — `deal` (`rules.is_deal_seeker`), `lapsing` (`rules.is_lapsing`: silent for much
    longer than their rhythm), `big` (a big spender) or `regular`.
    """
    if state is None or not state.orders:
        return "new"
    if rules.is_discount_driven_returner(state.discount_share, state.return_rate, state.orders):
        return "discount_returner"
    return f"{_lines(state.category_shares(catalog))}|{_behaviour(state, now_ms)}"


def _lines(shares: Mapping[str, float]) -> str:
    """The lines the customer shops: each category's parent (``kids/boys`` for
    ``kids/boys/trousers``; a one-level category is its own line), those holding at least
    ``LINE_SHARE`` of their interest, the largest ``MAX_LINES``; else their largest line.
    Read from the taxonomy's shape, never from its names."""
    lines: dict[str, float] = {}
    for category, share in shares.items():
        parts = category.split("/")
        line = "/".join(parts[:-1]) if len(parts) > 1 else parts[0]
        lines[line] = lines.get(line, 0.0) + share
    total = sum(lines.values())
    if not total:
        return "none"
    ranked = sorted(lines, key=lambda line: (-lines[line], line))
    kept = [line for line in ranked if lines[line] / total >= LINE_SHARE][:MAX_LINES] or ranked[:1]
    return "+".join(sorted(kept))


def _behaviour(state: CustomerState, now_ms: int | None) -> str:
    if rules.is_deal_seeker(state.discount_share, state.return_rate):
        return "deal"
    now = now_ms if now_ms is not None else state.last_ts
    if (state.last_purchase_ts is not None and now is not None
            and rules.is_lapsing((now - state.last_purchase_ts) / DAY_MS, usual_gap(state),
                                 state.rhythm.purchases)):
        return "lapsing"
    return "big" if state.gross >= BIG_SPENDER_GROSS else "regular"


def offer_cell(cell: str, offer: Offer, state: CustomerState | None, catalog: Mapping[str, Product]) -> str:
    """The cell an offer learns in: the customer's cell, refined by how much of their
    interest lies in the offer's categories (a kids' discount lands differently with a
    parent who mostly buys for kids than with one who buys for them now and then)."""
    if not offer.eligibility.categories or state is None:
        return cell
    shares = state.category_shares(catalog)
    fit = sum(share for category, share in shares.items()
              if rules.under_any(category, tuple(offer.eligibility.categories)))
    return f"{cell}|{'fit' if fit >= INTEREST_FIT else 'some'}"


def _in_segments(cell: str, segments: tuple[str, ...]) -> bool:
    """An eligibility segment names a whole cell or one of its parts (a line or a behaviour)."""
    parts = set(cell.replace("+", "|").split("|")) | {cell}
    return any(segment in parts for segment in segments)


def usual_gap(state: CustomerState) -> float | None:
    """The customer's usual days between purchases (`rules.usual_gap_days`), from their rhythm."""
    n, mean_log_gap, _ = state.rhythm.gap_stats()
    return rules.usual_gap_days(n, mean_log_gap)


# --- gates --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContactPolicy:
    max_per_day: int = 2
    max_per_week: int = 5
    dismiss_cooldown_days: float = 14.0


@dataclass(frozen=True, slots=True)
class Situation:
    """Everything about the request that gates and weights depend on."""

    now_ms: int
    channel: str | None = None
    store_id: str | None = None
    context: str = "default"  # e.g. default | checkout | cancellation_intent | churn_alert
    tier: str | None = None
    churn_score: float | None = None  # the customer's churn score now (the caller's population model)
    basket: tuple[str, ...] = ()  # SKUs in the basket at hand (the till's), besides the profile's cart


@dataclass(frozen=True, slots=True)
class GateResult:
    passed: bool
    gate: str
    reason: str
    personal: bool = True  # the reason reveals something about the customer (shown with the profile scope only)


def check_gates(
    offer: Offer, state: CustomerState | None, cell: str, situation: Situation,
    catalog: Mapping[str, Product], policy: ContactPolicy,
) -> GateResult:
    """The first gate the offer fails, or a pass; every result says why in plain words."""
    for gate in (_eligibility, _suitability, _contact_policy, _timing):
        result = gate(offer, state, cell, situation, catalog, policy)
        if not result.passed:
            return result
    return GateResult(True, "all", "eligible, suitable, within contact limits and in time")


def _eligibility(offer, state, cell, situation, catalog, policy) -> GateResult:
    e = offer.eligibility
    if not offer.active:
        return GateResult(False, "eligibility", "offer is not active", personal=False)
    if e.channels and situation.channel not in e.channels:
        where = f"on the {situation.channel} channel" if situation.channel else "when the request names no channel"
        return GateResult(False, "eligibility", f"not offered {where}", personal=False)
    if e.stores and situation.store_id not in e.stores:
        return GateResult(False, "eligibility", f"not offered in store {situation.store_id!r}", personal=False)
    if e.segments and not _in_segments(cell, e.segments):
        return GateResult(False, "eligibility", f"for {', '.join(e.segments)} customers, not {cell}")
    if e.tiers and situation.tier not in e.tiers:
        return GateResult(False, "eligibility", f"for tiers {', '.join(e.tiers)}, not {situation.tier}")
    if e.categories:
        shares = state.category_shares(catalog) if state is not None else {}
        if not any(rules.under_any(c, tuple(e.categories)) for c in shares):
            return GateResult(False, "eligibility", f"customer never buys {', '.join(e.categories)}")
    return GateResult(True, "eligibility", "eligible")


def _suitability(offer, state, cell, situation, catalog, policy) -> GateResult:
    """``rules.offer_suitability``, fed with what the customer bought and holds, whether they
    are lapsing, and their churn score: built in for every offer, whatever its data says."""
    targets = _offer_categories(offer, catalog)
    if state is None:
        ok, reason = rules.offer_suitability(offer.kind, offer_categories=targets,
                                             basket_categories=_categories(situation.basket, catalog))
        return GateResult(ok, "suitability", reason)
    silent_days = (None if state.last_purchase_ts is None
                   else max(0.0, situation.now_ms - state.last_purchase_ts) / DAY_MS)
    lapsing = silent_days is not None and rules.is_lapsing(silent_days, usual_gap(state), state.rhythm.purchases)
    ok, reason = rules.offer_suitability(
        offer.kind, purchases=state.orders, net_value=state.net_value, discount_share=state.discount_share,
        return_rate=state.return_rate, lapsing=lapsing, churn_score=situation.churn_score,
        days_since_purchase=silent_days, offer_categories=targets, basket_categories=_categories((*state.basket, *situation.basket), catalog),
        bought_categories=_categories(state.bought, catalog))
    return GateResult(ok, "suitability", reason)


def _offer_categories(offer: Offer, catalog: Mapping[str, Product]) -> tuple[str, ...]:
    """What an offer is about: its bundle's items' categories, else its eligibility's categories."""
    own = _categories(offer.bundle_skus, catalog)
    return own or offer.eligibility.categories


def _about(offer: Offer, catalog: Mapping[str, Product]) -> tuple[str, ...]:
    """The categories whose share of a customer's interest says how well an offer fits them:
    those it is for (eligibility) and those of its bundle's items."""
    return tuple(dict.fromkeys((*offer.eligibility.categories, *_categories(offer.bundle_skus, catalog))))


def _categories(skus: Iterable[str], catalog: Mapping[str, Product]) -> tuple[str, ...]:
    found = (catalog[sku].category for sku in skus if sku in catalog)
    return tuple(sorted(set(found)))


def _contact_policy(offer, state, cell, situation, catalog, policy) -> GateResult:
    if state is None:
        return GateResult(True, "contact", "no contact history")
    contacts = state.contacts
    now = situation.now_ms
    if contacts.accepted.get(offer.offer_id, 0) >= offer.max_per_customer:
        return GateResult(False, "contact", f"already accepted {offer.max_per_customer}× (the maximum)")
    dismissed = contacts.dismissed.get(offer.offer_id)
    if dismissed is not None and now - dismissed < policy.dismiss_cooldown_days * DAY_MS:
        return GateResult(False, "contact", f"dismissed {rules.days_ago((now - dismissed) / DAY_MS)}")
    if contacts.shown_since(now - DAY_MS) >= policy.max_per_day:
        return GateResult(False, "contact", f"already shown {policy.max_per_day} offers today")
    if contacts.shown_since(now - 7 * DAY_MS) >= policy.max_per_week:
        return GateResult(False, "contact", f"already shown {policy.max_per_week} offers this week")
    return GateResult(True, "contact", "within contact limits")


def _timing(offer, state, cell, situation, catalog, policy) -> GateResult:
    """The offer must still be valid when the customer is expected to buy next."""
    if state is None or offer.kind not in TIMED_KINDS:
        return GateResult(True, "timing", "no timing constraint")
    gap = usual_gap(state) if rules.has_rhythm(state.rhythm.purchases) else None
    if gap is None or state.last_purchase_ts is None:
        return GateResult(True, "timing", "no purchase rhythm yet")
    since = (situation.now_ms - state.last_purchase_ts) / DAY_MS
    next_in = gap - since
    if next_in > offer.valid_days:
        return GateResult(False, "timing",
                          f"next purchase expected in {next_in:.0f} days; the offer lasts {offer.valid_days:g}")
    return GateResult(True, "timing", "valid until the expected next purchase")


# --- propensity ---------------------------------------------------------------------------


MAX_GATE_NAMES = 8  # gates counted per offer (there are four; feedback cannot add more)


@dataclass(slots=True)
class OfferStats:
    """Impressions and accepts of one offer, per customer cell, for the decisions the policy made
    (``cells``: what propensity learns from) and for the control group's random ones
    (``control``: kept apart, it only measures uplift), and how many other offers each gate removed
    in the decisions this offer won and was shown in (``removed``), and the contextual model learnt
    from the same feedback (``model``: what the decisions' features say, see ``propensity``).
    The flow keys it by offer; its size is bounded by the number of cells (the model's is fixed)."""

    offer_id: str
    cells: dict[str, list[float]] = field(default_factory=dict)  # cell → [impressions, accepts]
    control: dict[str, list[float]] = field(default_factory=dict)  # cell → [impressions, accepts]
    removed: dict[str, float] = field(default_factory=dict)  # gate → offers it removed
    model: feature_model.ContextModel = field(default_factory=feature_model.ContextModel)

    def record(self, kind: str, cell: str, control: bool = False,
               removed: Iterable[tuple[str, int]] = (), features: tuple[float, ...] = ()) -> None:
        """One feedback. Its ``features`` (the decision's, from its id) teach the contextual model
        too, unless the decision was a control one; features that are not finite, or of another
        length (an id issued before the model), teach it nothing."""
        if features and not control:
            self.model.learn(kind, features)
        counts = (self.control if control else self.cells).setdefault(cell, [0.0, 0.0])
        if kind == "impression":
            counts[0] += 1
            for gate, n in removed:
                if gate in self.removed or len(self.removed) < MAX_GATE_NAMES:
                    self.removed[gate] = self.removed.get(gate, 0.0) + n
        elif kind == "accept":
            counts[1] += 1
            counts[0] = max(counts[0], counts[1])  # an accept without its impression still is one trial

    def totals(self) -> tuple[float, float]:
        return (sum(c[0] for c in self.cells.values()), sum(c[1] for c in self.cells.values()))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"offer_id": self.offer_id, "cells": self.cells}
        if self.control:
            data["control"] = self.control
        if self.removed:
            data["removed"] = self.removed
        if self.model.shown or self.model.accepted:
            data["model"] = self.model.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OfferStats:
        """Stored stats; those stored before the contextual model (or with a model of another
        feature schema) load with an empty model, and decide by their cells until it learns."""
        return cls(data["offer_id"], {k: list(v) for k, v in data.get("cells", {}).items()},
                   {k: list(v) for k, v in data.get("control", {}).items()},
                   {k: float(v) for k, v in data.get("removed", {}).items()},
                   feature_model.ContextModel.from_dict(data.get("model")) or feature_model.ContextModel())


def posterior(offer: Offer, stats: OfferStats | None, cell: str) -> tuple[float, float]:
    """Beta(α, β) of P(accept) for this cell, borrowing strength down a ladder: the offer's
    prior, then its results over every cell, then over cells of the same behaviour (the cell
    without its lines), each worth at most `prior_strength` trials, then the cell's own results.
    A new cell thus starts from what similar customers did, not from the prior alone."""
    alpha = offer.prior_propensity * offer.prior_strength
    beta = (1 - offer.prior_propensity) * offer.prior_strength
    if stats is None:
        return alpha, beta
    similar = _behaviour_key(cell)
    for matches in (lambda other: True, lambda other: _behaviour_key(other) == similar):
        shown = accepted = 0.0
        for other, (n, k) in stats.cells.items():
            if other != cell and matches(other):
                shown, accepted = shown + n, accepted + k
        if shown:
            weight = min(1.0, offer.prior_strength / shown)
            alpha, beta = alpha + weight * accepted, beta + weight * (shown - accepted)
            scale = offer.prior_strength / (alpha + beta)
            alpha, beta = alpha * scale, beta * scale
    cell_shown, cell_accepted = stats.cells.get(cell, (0.0, 0.0))
    return alpha + cell_accepted, beta + max(0.0, cell_shown - cell_accepted)


def _behaviour_key(cell: str) -> str:
    """'kids/boys+women|deal|fit' → 'deal|fit': the cell without the lines it shops for."""
    head, _, rest = cell.partition("|")
    return rest if rest and head not in ("new", "discount_returner") else cell


def _contextual(offer: Offer, stats: OfferStats | None,
                features: tuple[float, ...] | None) -> feature_model.Posterior | None:
    """The offer's contextual posterior when it has learnt from features and the decision has
    them; None: the cell's Beta decides (a new offer, state from before the model)."""
    if not features or stats is None or not stats.model.shown:
        return None
    return stats.model.posterior(offer.prior_propensity, offer.prior_strength)


def propensity(offer: Offer, stats: OfferStats | None, cell: str,
               features: tuple[float, ...] | None = None) -> float:
    """P(accept): the contextual model's at ``features`` when it has evidence, else the cell's mean."""
    fitted = _contextual(offer, stats, features)
    if fitted is not None:
        return fitted.propensity(features)
    alpha, beta = posterior(offer, stats, cell)
    return alpha / (alpha + beta)


def sample_propensity(offer: Offer, stats: OfferStats | None, cell: str, seed: int,
                      temperature: float = 1.0, features: tuple[float, ...] | None = None) -> float:
    """A Thompson draw (seeded) from the contextual posterior at ``features``, or from the cell's
    Beta (river's). `temperature` > 1 narrows the draw around the same mean (the posterior as if
    it had seen that many times the data)."""
    fitted = _contextual(offer, stats, features)
    if fitted is not None:
        return fitted.sample(features, seed, temperature)
    alpha, beta = posterior(offer, stats, cell)
    return proba.Beta(alpha * temperature, beta * temperature, seed=seed).sample()


# --- arbitration --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArbitrationSettings:
    control_share: float = 0.02
    explore: bool = True
    explore_temperature: float = 1.0
    contextual: bool = True  # False: propensity per customer cell only (the Beta, as before the model)
    context_weights: Mapping[str, Mapping[str, float]] = field(default_factory=lambda: {
        "churn_alert": {"win_back": 2.0, "loyalty_points": 1.3, "discount": 1.0},
        "cancellation_intent": {"win_back": 2.5, "service": 1.5},
        "checkout": {"bundle": 1.5, "discount": 0.8},
    })
    kind_levers: Mapping[str, float] = field(default_factory=dict)
    policy: ContactPolicy = ContactPolicy()
    runner_ups: int = 3

    def for_suggestions(self) -> ArbitrationSettings:
        """For an offer shown to staff as a suggestion (a churn alert's win-back): the best one by
        its mean. Nothing is logged or learned from a suggestion, so neither a Thompson draw nor
        the control group's random offer has anything to measure there."""
        return replace(self, explore=False, control_share=0.0)


@dataclass(slots=True)
class Candidate:
    offer: Offer
    propensity: float  # posterior mean
    sampled: float  # what arbitration used (a Thompson draw when exploring)
    context_weight: float
    lever: float
    cell: str = "new"  # the cell this offer learns in for this customer (goes into the decision id)
    features: tuple[float, ...] = ()  # what the contextual model saw (goes into the decision id)
    shown: float = 0.0  # impressions of this offer counted in this customer's cell (how much its rate is measured)

    @property
    def expected_value(self) -> float:
        return self.propensity * self.offer.value

    @property
    def priority(self) -> float:
        return self.sampled * self.context_weight * self.offer.value * self.lever

    def summary(self) -> dict[str, Any]:
        return {"offer_id": self.offer.offer_id, "name": self.offer.name, "kind": self.offer.kind,
                "propensity": round(self.propensity, 4), "expected_value": round(self.expected_value, 4),
                "priority": round(self.priority, 4)}


@dataclass(slots=True)
class Decision:
    chosen: Candidate | None
    runner_ups: list[Candidate]
    cell: str
    control: bool
    explored: bool
    reasons: list[str]
    rejected: dict[str, str]  # offer_id → the gate that stopped it, in words
    # the same without facts about the customer (cell, history, value): for callers without the profile scope
    public_reasons: list[str] = field(default_factory=list)
    public_rejected: dict[str, str] = field(default_factory=dict)

    def removed_by_gate(self) -> tuple[tuple[str, int], ...]:
        """How many offers each gate removed from this decision, e.g. (("suitability", 2),)."""
        counts: dict[str, int] = {}
        for why in self.rejected.values():
            gate = why.partition(":")[0]
            counts[gate] = counts.get(gate, 0) + 1
        return tuple(sorted(counts.items()))


def decide(
    offers: Iterable[Offer], stats: Mapping[str, OfferStats], state: CustomerState | None,
    situation: Situation, catalog: Mapping[str, Product], settings: ArbitrationSettings, seed: int,
) -> Decision:
    """Gates → propensity → priority → control group / Thompson exploration → the winner."""
    rng = random.Random(seed)
    cell = customer_cell(state, catalog, situation.now_ms)
    weights = settings.context_weights.get(situation.context, {})
    view = feature_model.customer_view(state, catalog, situation.now_ms, situation.channel, situation.tier,
                                 situation.churn_score, situation.basket)
    candidates, rejected, public_rejected = [], {}, {}
    for offer in sorted(offers, key=lambda o: o.offer_id):
        gate = check_gates(offer, state, cell, situation, catalog, settings.policy)
        if not gate.passed:
            rejected[offer.offer_id] = f"{gate.gate}: {gate.reason}"
            public_rejected[offer.offer_id] = rejected[offer.offer_id] if not gate.personal else "not for this customer"
            continue
        learning_cell = offer_cell(cell, offer, state, catalog)
        features = feature_model.offer_features(view, _about(offer, catalog))
        used = features if settings.contextual else None
        offer_stats = stats.get(offer.offer_id)
        mean = propensity(offer, offer_stats, learning_cell, used)
        sampled = (sample_propensity(offer, offer_stats, learning_cell, rng.getrandbits(32),
                                     settings.explore_temperature, used) if settings.explore else mean)
        lever = offer.lever * settings.kind_levers.get(offer.kind, 1.0)
        candidates.append(Candidate(offer, mean, sampled, weights.get(offer.kind, 1.0), lever, learning_cell,
                                    features, offer_stats.cells.get(learning_cell, (0.0, 0.0))[0] if offer_stats else 0.0))
    if not candidates:
        return Decision(None, [], cell, False, False, ["no eligible offer"], rejected, ["no eligible offer"],
                        public_rejected)
    control = rng.random() < settings.control_share
    if control:
        chosen = rng.choice(candidates)
        others = sorted((c for c in candidates if c is not chosen), key=lambda c: -c.priority)
        reasons = ["control group: a random eligible offer, to measure uplift"]
        return Decision(chosen, others[: settings.runner_ups], cell, True, False, reasons, rejected, reasons,
                        public_rejected)
    ranked = sorted(candidates, key=lambda c: (-c.priority, c.offer.offer_id))
    chosen, others = ranked[0], ranked[1:]
    best_by_mean = max(candidates, key=lambda c: (c.propensity * c.context_weight * c.offer.value * c.lever,
                                                  c.offer.offer_id))
    explored = settings.explore and best_by_mean is not chosen
    return Decision(chosen, others[: settings.runner_ups], cell, False, explored,
                    _reasons(chosen, others, cell, situation, explored), rejected,
                    _reasons(chosen, others, None, situation, explored), public_rejected)


def _reasons(chosen: Candidate, others: list[Candidate], cell: str | None, situation: Situation,
             explored: bool) -> list[str]:
    """Why the chosen offer won, in sentences a sales assistant can say aloud (the figures stay:
    the CRM team reads them); with ``cell`` None, in words that reveal nothing about the customer.

    >>> cell_in_words("electronics+men|big"), cell_in_words("kids/boys|deal|fit"), cell_in_words("new")
    ('big spenders on Electronics and Men', 'deal seekers in Kids/Boys', 'new customers')
    >>> cell_in_words("men|regular"), cell_in_words("none|regular"), cell_in_words("none|lapsing")
    ('customers who shop for Men', 'customers like them', 'lapsing customers')
    """
    o = chosen.offer
    who = cell_in_words(cell) if cell is not None else "similar customers"
    reasons = [
        "it suits this customer: it passed every check (eligibility, suitability, contact limits, timing)",
        f"{_propensity_in_words(chosen, who)}, and it earns {o.value:g} in margin: "
        f"worth {chosen.expected_value:.2f} each time it is shown",
    ]
    if chosen.context_weight != 1.0:
        reasons.append(f"{_context_words(situation.context)}, {o.kind.replace('_', '-')} offers count "
                       f"{chosen.context_weight:g} times as much")
    if chosen.lever != 1.0:
        reasons.append(f"the business counts {o.kind.replace('_', '-')} offers {chosen.lever:g} times as much")
    if explored:  # its priority is a draw, not its worth: comparing it with the runner-up would mislead
        reasons.append("it is being tried out, to learn how well it works: another offer looks better so far")
    elif others:
        runner = others[0]
        # what arbitration compares is not the worth said above: it also counts the context and
        # the levers (the audit read "worth 0.96", then "worth more than … (1.981 against 0.785)")
        reasons.append(f"it comes before {runner.offer.name}: {chosen.priority:.3f} against {runner.priority:.3f} "
                       "once the context and the business's weights are counted")
    return reasons


def _propensity_in_words(chosen: Candidate, who: str) -> str:
    """The acceptance rate as what it is: a measured share once the offer has been shown in the
    customer's cell often enough to outweigh its starting estimate (``prior_strength``
    impressions), an expectation before. The audit read "8% of big spenders accept it" of an
    offer no one had yet been shown.

    >>> offer = Offer("o", "O", "discount", 10.0, prior_strength=20.0)
    >>> _propensity_in_words(Candidate(offer, 0.08, 0.08, 1.0, 1.0), "new customers")
    'we expect about 8% of new customers to accept it (a starting estimate: not shown to them yet)'
    >>> _propensity_in_words(Candidate(offer, 0.1, 0.1, 1.0, 1.0, shown=1), "new customers")
    'we expect about 10% of new customers to accept it (shown to them once so far)'
    >>> _propensity_in_words(Candidate(offer, 0.12, 0.12, 1.0, 1.0, shown=400), "new customers")
    '12% of new customers accept it'
    >>> _propensity_in_words(Candidate(offer, 0.004, 0.004, 1.0, 1.0, shown=400), "new customers")
    'under 1% of new customers accept it'
    """
    rate = f"{chosen.propensity:.0%}" if chosen.propensity >= 0.01 else "under 1%"
    if chosen.shown >= chosen.offer.prior_strength:
        return f"{rate} of {who} accept it"
    expect = f"we expect {'about ' if chosen.propensity >= 0.01 else ''}{rate} of {who} to accept it"
    if chosen.shown < 1:
        return f"{expect} (a starting estimate: not shown to them yet)"
    n = round(chosen.shown)
    return f"{expect} (shown to them {'once' if n == 1 else f'{n} times'} so far)"


_BEHAVIOUR_WORDS = {"deal": "deal seekers in", "lapsing": "lapsing customers of", "big": "big spenders on",
                    "regular": "customers who shop for"}
_BEHAVIOUR_ALONE = {"deal": "deal seekers", "lapsing": "lapsing customers", "big": "big spenders"}
_CONTEXT_WORDS = {"churn_alert": "for a customer slipping away", "checkout": "at the checkout",
                  "home": "on the home page", "product": "on a product page", "cart": "at the till"}


def cell_in_words(cell: str) -> str:
    """A propensity cell (``customer_cell``, ``offer_cell``) as people say it."""
    if cell in ("new", "discount_returner"):
        return "new customers" if cell == "new" else "customers who buy on discount and return a lot"
    lines, _, rest = cell.partition("|")
    behaviour = rest.split("|")[0] if rest else "regular"
    shown = [rules.category_in_words(line) for line in lines.split("+") if line and line != "none"]
    if not shown:  # no line: not "customers who shop for the shop"
        return _BEHAVIOUR_ALONE.get(behaviour, "customers like them")
    return f"{_BEHAVIOUR_WORDS.get(behaviour, 'customers who shop for')} {' and '.join(shown)}"


def _context_words(context: str | None) -> str:
    return _CONTEXT_WORDS.get(context or "", f"in the {context} context")
