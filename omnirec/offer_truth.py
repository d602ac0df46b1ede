"""The planted truth about offers: how likely each simulated customer is to accept each offer.

The simulator's latent `Customer` (household, segment, category weights, lapse) decides
what it does with an offer it is shown; the recommender never sees these latent fields,
only the events they cause. Measuring how close the learnt next-best-offer policy gets to
an oracle that knows this table is what `bench/nbo.py` does.

    P(accept) = min(CAP, base[kind] × affinity × segment[segment][kind] × lapse[kind] × taste)

**base[kind]** — the acceptance of an average customer:

    discount 0.10 · bundle 0.08 · loyalty_points 0.12 · win_back 0.05 · service 0.08

**affinity** — how much of the customer's latent category weight falls under the offer's
eligibility categories (prefix match), `share` ∈ [0, 1]:
`affinity = 0.25 + 1.5 × share` (0.25 when none of it does, 1.75 when all of it does);
an offer without categories (e.g. win-back) has affinity 1.

**segment[segment][kind]** — the latent segment's attitude to the kind of offer:

    segment    discount  bundle  loyalty_points  win_back  service
    regular      1.0      1.0        1.0           1.0       1.0
    vip          0.3      0.8        2.0           0.5       2.5
    discount     2.5      2.0        0.7           1.0       0.2

**lapse[kind]** — a lapsing customer answers a win-back offer ×4 and every other offer
×0.6. Lapsing means: past (or within `LAPSE_LEAD_DAYS` = 7 days of) the day the customer
stops buying (`lapse_after_days`), when the caller says which day of the simulation it
is (`days`); without `days`, any customer who will lapse.

**taste** — a stable factor per (household, offer) from a seeded hash, log-uniform in
[0.5, 2]: single men and fathers of girls may simply like one offer more than the others.

**CAP** = 0.8. A customer shown an offer accepts it with P(accept), else dismisses it with
probability `DISMISS_SHARE` (0.35) of the rest, else ignores it (see `react`).

Everything here is pure and deterministic: the same customer and offer always give the
same probability, and `react` draws only from the `random.Random` it is given.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping
from typing import Literal

from omnirec.shoppers import Customer
from online_models.offers import Offer

TRUTH_SEED = "omnirec-offer-truth:1"
CAP = 0.8
DISMISS_SHARE = 0.35
BASE = {"discount": 0.10, "bundle": 0.08, "loyalty_points": 0.12, "win_back": 0.05, "service": 0.08}
SEGMENT = {
    "regular": {},
    "vip": {"discount": 0.3, "bundle": 0.8, "loyalty_points": 2.0, "win_back": 0.5, "service": 2.5},
    "discount": {"discount": 2.5, "bundle": 2.0, "loyalty_points": 0.7, "win_back": 1.0, "service": 0.2},
}
LAPSING = {"win_back": 4.0}
LAPSING_OTHER = 0.6
TASTE_RANGE = (0.5, 2.0)
LAPSE_LEAD_DAYS = 7.0

Reaction = Literal["accept", "dismiss", "ignore"]


def category_share(weights: Mapping[str, float], prefixes: tuple[str, ...]) -> float:
    """The share of `weights` under any of the category `prefixes` ('men' covers 'men/belts')."""
    total = sum(weights.values())
    if total <= 0:
        return 0.0
    under = sum(w for category, w in weights.items()
                if any(category == p or category.startswith(p + "/") for p in prefixes))
    return under / total


def affinity(customer: Customer, offer: Offer) -> float:
    categories = offer.eligibility.categories
    if not categories:
        return 1.0
    return 0.25 + 1.5 * category_share(customer.category_weights, categories)


def taste(household: str, offer_id: str) -> float:
    """A stable factor in [0.5, 2], log-uniform, from a seeded hash of (household, offer)."""
    digest = hashlib.sha256(f"{TRUTH_SEED}|{household}|{offer_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    low, high = TASTE_RANGE
    return math.exp(math.log(low) + u * (math.log(high) - math.log(low)))


def is_lapsing(customer: Customer, days: float | None = None) -> bool:
    """Lapsing on simulation day `days` (days since the population's start), or ever (None)."""
    lapse = customer.lapse_after_days
    if lapse is None:
        return False
    return days is None or days >= lapse - LAPSE_LEAD_DAYS


def acceptance_probability(customer: Customer, offer: Offer, days: float | None = None) -> float:
    """P(the customer accepts the offer when shown it on simulation day `days`): the planted
    truth (see the module doc)."""
    kind = offer.kind
    p = BASE.get(kind, 0.05) * affinity(customer, offer)
    p *= SEGMENT.get(customer.segment, {}).get(kind, 1.0)
    if is_lapsing(customer, days):
        p *= LAPSING.get(kind, LAPSING_OTHER)
    p *= taste(customer.household, offer.offer_id)
    return min(CAP, p)


def react(customer: Customer, offer: Offer, rng: random.Random, days: float | None = None) -> Reaction:
    """What the customer does with a shown offer: accept with the planted probability, else
    dismiss (DISMISS_SHARE of the rest), else ignore it. One draw from `rng`."""
    p = acceptance_probability(customer, offer, days)
    u = rng.random()
    if u < p:
        return "accept"
    if u < p + DISMISS_SHARE * (1 - p):
        return "dismiss"
    return "ignore"
