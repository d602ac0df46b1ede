"""Offer propensity that sees the customer: a Bayesian linear model per offer, Thompson-sampled.

Each offer learns P(accept | x), where x describes the customer and the moment (``FEATURES``:
how much of their interest lies in what the offer is about, what they hold in the basket, how
often and how much they buy, how much on discount, how much they return, how long since their
last purchase against their own rhythm, the channel, churn score and value tier, and which
lines of the catalogue they shop, hashed into a few buckets so that no category name is
written down). The model is linear Thompson sampling (Agrawal & Goyal, "Thompson Sampling for
Contextual Bandits with Linear Payoffs", ICML 2013): with the ridge prior

    w ~ N(m0, v² Λ⁻¹),   Λ = prior_strength × I,   m0 = (prior_propensity, 0, …, 0)

and impressions (x, y ∈ {0, 1}), the posterior is N(μ, v² A⁻¹) with A = Λ + Σ x xᵀ and
μ = A⁻¹ (Λ m0 + Σ y x). Before any evidence it predicts the offer's prior propensity, the prior
worth ``prior_strength`` impressions along every feature, like the Beta prior it extends (a
weaker one, LinTS's Λ = I, makes the first draws swing by ± 0.5 over 30 features); its spread shrinks as
1 / evidence along every direction the customers seen so far span, so exploration fades where
the model knows and stays where it does not.

Why linear and not logistic: the state is two sums, Σ x xᵀ and Σ y x, and sums do not care in
which order feedback from several partitions arrives (DESIGN: same input, same bytes), whereas
an online logistic fit depends on that order. Features are clamped to ± ``FEATURE_BOUND`` and
quantised to multiples of 1/64, so every product and sum is exact in binary floating point: the
sums (and so the stored bytes and every posterior derived from them) are identical whatever the
order. An impression adds x xᵀ and a later accept adds x (its impression's provisional failure
becomes a success), so no timer needs to close an ignored impression. The state has a fixed
size per offer (d(d+1)/2 + d numbers), whatever the number of customers.
"""

from __future__ import annotations

import hashlib
import math
import operator
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from online_models import rules, tiers
from online_models.clock import DAY_MS
from online_models.customer import CustomerState
from online_models.events import Product

FEATURE_SCHEMA = 1  # bump when FEATURES change: a stored model of another schema is dropped, not misread
LINE_BUCKETS = 8  # the lines a customer shops (a category's parent), hashed twice into this many shares each
LINE_HASHES = 2  # two probes: two lines that share one bucket are still told apart by the other
FEATURES = (
    "bias", "fit", "basket_fit", "new", "orders", "spend", "discount_share", "return_rate",
    "since_gap", "lapsing", "store", "app", "churn", "tier",
    *(f"line_{h}_{i}" for h in range(LINE_HASHES) for i in range(LINE_BUCKETS)),
)
DIMENSION = len(FEATURES)
FEATURE_BOUND = 4.0  # every feature is a share, an indicator or a scaled log: this leaves room
QUANTUM = 64  # features are multiples of 1/64: sums of their products are exact (order-free)
ORDERS_SCALE = math.log1p(100)  # 100 orders → 1
SPEND_SCALE = math.log1p(10_000)  # 10,000 of net value → 1
SINCE_GAP_CAP = 4.0  # days since the last purchase, in usual gaps, counted up to this many
P_FLOOR, P_CEILING = 0.001, 0.999
NOISE_FLOOR = 0.01  # the smallest variance of an accept the model assumes (p(1-p) at p ≈ 0.01)


def quantise(value: float) -> float:
    """Clamped to ± FEATURE_BOUND and rounded to a multiple of 1/QUANTUM (NaN counts as 0).

    >>> quantise(0.3), quantise(1e308), quantise(float("nan"))
    (0.296875, 4.0, 0.0)
    """
    value = float(value)
    if value != value:
        return 0.0
    value = max(-FEATURE_BOUND, min(FEATURE_BOUND, value))
    return round(value * QUANTUM) / QUANTUM


def line_buckets(category: str) -> tuple[int, ...]:
    """The feature slots of the line a category belongs to (its parent: 'kids/boys' for
    'kids/boys/trousers', 'grocery' for 'grocery/coffee'): one bucket per hash, stable, no names listed."""
    line = category.rpartition("/")[0] or category
    digest = hashlib.blake2s(line.encode(), digest_size=LINE_HASHES).digest()
    return tuple(h * LINE_BUCKETS + digest[h] % LINE_BUCKETS for h in range(LINE_HASHES))


@dataclass(frozen=True, slots=True)
class CustomerView:
    """What every offer's features share for one customer at one moment (computed once per decision)."""

    shares: Mapping[str, float]
    basket: tuple[str, ...]  # categories of the basket at hand and of the open cart
    base: tuple[float, ...]  # the offer-independent features after "basket_fit", quantised


def customer_view(state: CustomerState | None, catalog: Mapping[str, Product], now_ms: int,
                  channel: str | None, tier: str | None, churn_score: float | None,
                  basket: Iterable[str] = ()) -> CustomerView:
    shares = state.category_shares(catalog) if state is not None else {}
    skus = (*(state.basket if state is not None else ()), *basket)
    basket_categories = tuple(catalog[sku].category for sku in skus if sku in catalog)
    lines = [0.0] * (LINE_BUCKETS * LINE_HASHES)
    for category, share in shares.items():
        for slot in line_buckets(category):
            lines[slot] += share
    orders = state.orders if state is not None else 0
    since_gap = lapsing = 0.0
    if state is not None and state.last_purchase_ts is not None:
        days = max(0.0, (now_ms - state.last_purchase_ts) / DAY_MS)
        n, mean_log_gap, _ = state.rhythm.gap_stats()
        gap = rules.usual_gap_days(n, mean_log_gap)
        since_gap = min(SINCE_GAP_CAP, days / gap) / SINCE_GAP_CAP if gap else 0.0
        lapsing = float(rules.is_lapsing(days, gap, state.rhythm.purchases))
    net = max(0.0, state.net_value) if state is not None else 0.0
    top_tiers = [name for name, _ in tiers.DEFAULT_TIERS]
    tier_rank = 1.0 - top_tiers.index(tier) / len(top_tiers) if tier in top_tiers else 0.0
    churn = churn_score if churn_score is not None and math.isfinite(churn_score) else 0.0
    base = (
        float(orders == 0), math.log1p(orders) / ORDERS_SCALE, math.log1p(net) / SPEND_SCALE,
        state.discount_share if state is not None else 0.0, state.return_rate if state is not None else 0.0,
        since_gap, lapsing, float(channel == "store"), float(channel == "app"), churn, tier_rank, *lines,
    )
    return CustomerView(shares, basket_categories, tuple(quantise(v) for v in base))


def offer_features(view: CustomerView, categories: Sequence[str]) -> tuple[float, ...]:
    """x for one offer: the customer's view plus how well the offer's ``categories`` fit them."""
    prefixes = tuple(categories)
    fit = sum(share for category, share in view.shares.items() if rules.under_any(category, prefixes)) \
        if prefixes else 0.0
    in_basket = sum(rules.under_any(c, prefixes) for c in view.basket) / len(view.basket) \
        if prefixes and view.basket else 0.0
    return (1.0, quantise(fit), quantise(in_basket), *view.base)


def checked(features: Sequence[float]) -> tuple[float, ...] | None:
    """Features fit to learn from: DIMENSION finite numbers, clamped and quantised; else None
    (the update is rejected, never learnt)."""
    if len(features) != DIMENSION:
        return None
    try:
        values = [float(v) for v in features]
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in values):
        return None
    return tuple(quantise(v) for v in values)


def _packed(i: int, j: int) -> int:
    """Index of (i, j), i <= j, in the packed upper triangle of a DIMENSION × DIMENSION matrix."""
    return i * DIMENSION - i * (i - 1) // 2 + (j - i)


@dataclass(slots=True)
class ContextModel:
    """One offer's evidence: impressions and accepts learnt, Σ x xᵀ (packed upper triangle) and Σ y x.

    >>> model = ContextModel()
    >>> x = (1.0, 0.5) + (0.0,) * (DIMENSION - 2)
    >>> model.learn("impression", x), model.learn("accept", x), model.learn("accept", (float("nan"),) * DIMENSION)
    (True, True, False)
    >>> model.shown, model.accepted
    (1.0, 1.0)
    """

    shown: float = 0.0
    accepted: float = 0.0
    gram: list[float] = field(default_factory=lambda: [0.0] * (DIMENSION * (DIMENSION + 1) // 2))
    target: list[float] = field(default_factory=lambda: [0.0] * DIMENSION)
    _fitted: dict[tuple[float, float], Posterior] = field(default_factory=dict, repr=False, compare=False)

    def learn(self, kind: str, features: Sequence[float]) -> bool:
        """An impression (a trial) or an accept (its success); False, nothing learnt, for other
        kinds and for features that are not DIMENSION finite numbers."""
        x = checked(features)
        if x is None or kind not in ("impression", "accept"):
            return False
        if kind == "impression":
            self.shown += 1
            nonzero = [(i, v) for i, v in enumerate(x) if v]
            for a, (i, xi) in enumerate(nonzero):
                for j, xj in nonzero[a:]:
                    self.gram[_packed(i, j)] += xi * xj
        else:
            self.accepted += 1
            for i, v in enumerate(x):
                self.target[i] += v
        self._fitted.clear()
        return True

    def posterior(self, prior_propensity: float, prior_strength: float) -> Posterior:
        """The posterior under the offer's prior (cached until the next update)."""
        key = (prior_propensity, prior_strength)
        fitted = self._fitted.get(key)
        if fitted is None:
            fitted = self._fitted[key] = _fit(self, prior_propensity, prior_strength)
        return fitted

    def to_dict(self) -> dict[str, Any]:
        return {"schema": FEATURE_SCHEMA, "shown": self.shown, "accepted": self.accepted,
                "gram": self.gram, "target": self.target}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ContextModel | None:
        """A stored model; None for one of another feature schema (its numbers mean other things)."""
        if not data or data.get("schema") != FEATURE_SCHEMA:
            return None
        gram, target = [float(v) for v in data["gram"]], [float(v) for v in data["target"]]
        if len(gram) != DIMENSION * (DIMENSION + 1) // 2 or len(target) != DIMENSION:
            return None
        return cls(float(data["shown"]), float(data["accepted"]), gram, target)

    def __deepcopy__(self, memo: dict) -> ContextModel:
        return ContextModel(self.shown, self.accepted, list(self.gram), list(self.target))


@dataclass(frozen=True, slots=True)
class Posterior:
    """N(mean, noise × covariance) over the weights; what a decision reads."""

    mean: tuple[float, ...]
    covariance: tuple[tuple[float, ...], ...]
    noise: float  # v²: the variance of one accept around its propensity

    def propensity(self, features: Sequence[float]) -> float:
        return _clamp(sum(map(operator.mul, self.mean, features)))

    def spread(self, features: Sequence[float]) -> float:
        """The posterior standard deviation of the propensity at ``features``."""
        quad = sum(x * sum(map(operator.mul, row, features)) for row, x in zip(self.covariance, features) if x)
        return math.sqrt(max(0.0, self.noise * quad))

    def sample(self, features: Sequence[float], seed: int, temperature: float = 1.0) -> float:
        """A Thompson draw of the propensity at ``features`` (seeded). Only the draw's projection
        on x matters to one decision, so one Gaussian number does instead of a whole weight vector.
        ``temperature`` > 1 narrows it as if the model had seen that many times the evidence."""
        mean = sum(map(operator.mul, self.mean, features))
        return _clamp(mean + self.spread(features) / math.sqrt(temperature) * random.Random(seed).gauss(0.0, 1.0))


def _clamp(p: float) -> float:
    return min(P_CEILING, max(P_FLOOR, p))


def _fit(model: ContextModel, prior_propensity: float, prior_strength: float) -> Posterior:
    d = DIMENSION
    precision = [[0.0] * d for _ in range(d)]
    for i in range(d):
        for j in range(i, d):
            precision[i][j] = precision[j][i] = model.gram[_packed(i, j)]
        precision[i][i] += prior_strength
    rhs = list(model.target)
    rhs[0] += prior_strength * prior_propensity
    covariance = _inverse_spd(precision)
    mean = tuple(sum(c * r for c, r in zip(row, rhs)) for row in covariance)
    rate = (prior_propensity * prior_strength + model.accepted) / (prior_strength + model.shown)
    return Posterior(mean, tuple(tuple(row) for row in covariance), max(NOISE_FLOOR, rate * (1 - rate)))


def _inverse_spd(matrix: list[list[float]]) -> list[list[float]]:
    """The inverse of a symmetric positive definite matrix, through its Cholesky factor L (A = L Lᵀ,
    A⁻¹ = L⁻ᵀ L⁻¹). The prior's diagonal keeps A positive definite."""
    d = len(matrix)
    mul = operator.mul
    low = [[0.0] * d for _ in range(d)]
    for i in range(d):
        row = low[i]
        for j in range(i + 1):
            s = matrix[i][j] - sum(map(mul, row[:j], low[j][:j]))
            row[j] = math.sqrt(max(s, 1e-12)) if i == j else s / low[j][j]
    inv_t = [[0.0] * d for _ in range(d)]  # (L⁻¹)ᵀ, column j of L⁻¹ as row j, upper triangular
    for j in range(d):
        col = inv_t[j]
        col[j] = 1.0 / low[j][j]
        for i in range(j + 1, d):
            col[i] = -sum(map(mul, low[i][j:i], col[j:i])) / low[i][i]
    return [[sum(map(mul, inv_t[i][max(i, j):], inv_t[j][max(i, j):])) for j in range(d)] for i in range(d)]
