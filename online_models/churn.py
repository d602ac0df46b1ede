"""Churn on event time: a customer's purchase rhythm, a churn score, and alerts for silent customers.

Three pieces, all pure (stdlib only) and driven by event time (``now_ms`` is always passed in):

``Rhythm``
    A small per-customer summary, updated by ``observe(event)``: purchase days (same-day
    purchases merged), first / last purchase, inter-purchase gaps (Welford in log-days), net
    value (forward-decayed, after returns), a streak of returns, the last survey score, cart
    abandonment since the last purchase, and visit days decayed at two half-lives (a drop in
    the short one against the long one is a drop in visit rate). It is meant to be embedded in
    ``CustomerState`` (call ``observe`` after de-duplication), with ``to_dict``/``from_dict``.

``ChurnModel``
    ``score(rhythm, now_ms)`` in [0, 1]: a logistic combination of
    (a) BG/NBD expected purchases in the next ``horizon_weeks`` (P(alive) × posterior mean
        purchase rate × horizon) with *population* parameters fitted by maximum likelihood
        (Nelder–Mead on the published BG/NBD likelihood, Fader, Hardie & Lee 2005) on a
        bottom-k hash sample of the shard's customers, refreshed on event time (``refit``);
    (b) the time since the last purchase relative to the customer's own usual gap (shrunk to
        the population's gap for customers with few purchases), frequency, and order value
        relative to the population's;
    (c) event signals: returns in a row, a low survey score, abandoned carts, a visit-rate drop.
    Every term is non-decreasing while the customer is silent, so the score is too, and
    ``threshold_time`` (the event time at which the score crosses a threshold if nothing
    happens) is found by bisection. ``reasons`` puts the terms into plain words.

``DueIndex`` / ``ChurnShard``
    A lapsing customer sends no events, so the alert cannot be computed on an event. Each
    customer's threshold time is put in a due-time index (a heap with lazy deletion) held by
    the customer's *shard* (``tiers.shard_of``), with the rhythm as of that moment (it cannot
    change in silence). When the shard's event-time clock (the flow's watermark, or any later
    event routed to the shard) passes a due time, the alert fires with the due time as its
    event time — so a replay at full speed fires exactly the alerts of a paced one. One alert
    per lapse episode (an episode is identified by the last purchase time): a new purchase
    re-arms; other events just move the due time.
"""

from __future__ import annotations

import copy
import hashlib
import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from online_models import decay, tiers
from online_models.events import Event

DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
HOUR_MS = 3_600_000

VALUE_HALF_LIFE_DAYS = 365.0
VISIT_HALF_LIVES_DAYS = (14.0, 90.0)
ABANDON_AFTER_MS = DAY_MS  # an add-to-cart not followed by a purchase within a day is abandoned
VISIT_TYPES = frozenset({"page_view", "product_view", "search", "add_to_cart", "remove_from_cart",
                         "purchase", "return", "store_visit"})
WEB_CHANNELS = frozenset({"web", "app"})

_VALUE_DECAY = decay.Decay(VALUE_HALF_LIFE_DAYS)
_VISIT_SHORT = decay.Decay(VISIT_HALF_LIVES_DAYS[0])
_VISIT_LONG = decay.Decay(VISIT_HALF_LIVES_DAYS[1])


# --------------------------------------------------------------------------- rhythm


@dataclass(slots=True)
class Rhythm:
    """Per-customer purchase rhythm and churn signals. Feed it de-duplicated events in order."""

    purchases: int = 0  # purchase days
    first_purchase_ts: int | None = None
    last_purchase_ts: int | None = None
    gap_n: int = 0  # Welford over log(gap in days) between purchase days
    gap_mean: float = 0.0
    gap_m2: float = 0.0
    gross: float = 0.0
    returned: float = 0.0
    gross_lw: float | None = None  # forward-decayed log of gross spend (VALUE_HALF_LIFE_DAYS)
    returned_lw: float | None = None
    returns: int = 0
    returns_streak: int = 0  # returns since the last purchase
    survey_score: float | None = None
    survey_ts: int | None = None
    cart_open_ts: int | None = None  # first add-to-cart not yet followed by a purchase
    carts_abandoned: int = 0  # since the last purchase
    visit_days: int = 0
    last_visit_day: int | None = None
    visits_short_lw: float | None = None
    visits_long_lw: float | None = None
    web_purchases: int = 0
    store_purchases: int = 0
    web_days: int = 0  # days with web / app activity
    last_web_day: int | None = None
    store_visit_days: int = 0
    last_store_day: int | None = None
    last_ts: int | None = None

    # --- updates ------------------------------------------------------------------------

    def observe(self, event: Event) -> bool:
        """Fold one event in; returns True when the purchase rhythm changed (a new episode)."""
        ts = event.ts_ms
        self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        day = ts // DAY_MS
        if event.type in VISIT_TYPES:
            self._visit(day, event.channel)
        kind = event.type
        if kind == "purchase":
            return self._purchase(event, day)
        if kind == "return":
            value = sum(item.value for item in event.items)
            self.returns += 1
            self.returns_streak += 1
            if value > 0:
                self.returned += value
                self.returned_lw = decay.log_add(self.returned_lw, _VALUE_DECAY.log_weight(value, ts))
        elif kind == "add_to_cart":
            if self.cart_open_ts is not None and ts - self.cart_open_ts > ABANDON_AFTER_MS:
                self.carts_abandoned += 1
                self.cart_open_ts = ts
            elif self.cart_open_ts is None:
                self.cart_open_ts = ts
        elif kind == "survey" and event.score is not None and (
                self.survey_ts is None or ts >= self.survey_ts):
            self.survey_score = float(event.score)
            self.survey_ts = ts
        return False

    def _purchase(self, event: Event, day: int) -> bool:
        ts = event.ts_ms
        value = sum(item.value for item in event.items)
        if value > 0:
            self.gross += value
            self.gross_lw = decay.log_add(self.gross_lw, _VALUE_DECAY.log_weight(value, ts))
        if event.channel in WEB_CHANNELS:
            self.web_purchases += 1
        else:
            self.store_purchases += 1
        if self.cart_open_ts is not None:
            if ts - self.cart_open_ts > ABANDON_AFTER_MS:
                self.carts_abandoned += 1
            self.cart_open_ts = None
        self.returns_streak = 0
        last = self.last_purchase_ts
        if last is not None and day == last // DAY_MS:
            return False  # same day: one purchase occasion
        if last is None or ts > last:
            if last is not None:
                gap = math.log(max(ts - last, DAY_MS) / DAY_MS)
                self.gap_n += 1
                delta = gap - self.gap_mean
                self.gap_mean += delta / self.gap_n
                self.gap_m2 += delta * (gap - self.gap_mean)
            self.last_purchase_ts = ts
        if self.first_purchase_ts is None or ts < self.first_purchase_ts:
            self.first_purchase_ts = ts
        self.purchases += 1
        self.carts_abandoned = 0
        return True

    def _visit(self, day: int, channel: str) -> None:
        if self.last_visit_day is None or day > self.last_visit_day:
            self.visit_days += 1
            self.last_visit_day = day
            ts = day * DAY_MS
            self.visits_short_lw = decay.log_add(self.visits_short_lw, _VISIT_SHORT.log_weight(1.0, ts))
            self.visits_long_lw = decay.log_add(self.visits_long_lw, _VISIT_LONG.log_weight(1.0, ts))
        if channel in WEB_CHANNELS:
            if self.last_web_day is None or day > self.last_web_day:
                self.web_days += 1
                self.last_web_day = day
        elif self.last_store_day is None or day > self.last_store_day:
            self.store_visit_days += 1
            self.last_store_day = day

    # --- derived figures ----------------------------------------------------------------

    @property
    def repeat(self) -> int:
        """BG/NBD's x: repeat purchase occasions."""
        return max(0, self.purchases - 1)

    def value_log(self) -> float | None:
        """Forward-decayed log of net value (``None`` when nothing, or returns ≥ purchases)."""
        if self.gross_lw is None:
            return None
        if self.returned_lw is None:
            return self.gross_lw
        if self.returned_lw >= self.gross_lw:
            return None
        return self.gross_lw + math.log1p(-math.exp(self.returned_lw - self.gross_lw))

    def value_at(self, now_ms: int) -> float:
        """Decayed net value in money at ``now_ms``."""
        return tiers.value_at(self.value_log(), _VALUE_DECAY.rate_per_ms, now_ms)

    def net_value(self) -> float:
        return self.gross - self.returned

    def return_rate(self) -> float:
        return self.returned / self.gross if self.gross > 0 else 0.0

    def avg_order_value(self) -> float:
        return max(0.0, self.net_value()) / self.purchases if self.purchases else 0.0

    def gap_sd(self) -> float | None:
        return math.sqrt(self.gap_m2 / (self.gap_n - 1)) if self.gap_n > 1 else None

    def usual_gap_days(self, prior_log_days: float | None = None, prior_weight: float = 2.0) -> float | None:
        """Typical gap in days (geometric mean), shrunk towards the population's when given."""
        if prior_log_days is None:
            return math.exp(self.gap_mean) if self.gap_n else None
        mean = (self.gap_n * self.gap_mean + prior_weight * prior_log_days) / (self.gap_n + prior_weight)
        return math.exp(mean)

    def carts_abandoned_at(self, now_ms: int) -> int:
        open_abandoned = self.cart_open_ts is not None and now_ms - self.cart_open_ts > ABANDON_AFTER_MS
        return self.carts_abandoned + (1 if open_abandoned else 0)

    def visit_ratio(self, now_ms: int) -> float | None:
        """Recent visit rate over the long-run rate (≈ 1 steady, → 0 in silence)."""
        if self.visits_short_lw is None or self.visits_long_lw is None:
            return None
        short = _VISIT_SHORT.value_at(self.visits_short_lw, now_ms) * _VISIT_SHORT.rate_per_ms
        long = _VISIT_LONG.value_at(self.visits_long_lw, now_ms) * _VISIT_LONG.rate_per_ms
        return short / long if long > 0 else None

    def copy(self) -> Rhythm:
        return replace(self)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rhythm:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# --------------------------------------------------------------------------- BG/NBD


@dataclass(frozen=True, slots=True)
class BGNBDParams:
    """BG/NBD population parameters; time in weeks (as published)."""

    r: float
    alpha: float
    a: float
    b: float

    def to_dict(self) -> dict[str, float]:
        return {"r": self.r, "alpha": self.alpha, "a": self.a, "b": self.b}


# A neutral starting point before the first fit (replaced by the stream's own fit).
PRIOR_PARAMS = BGNBDParams(r=0.5, alpha=5.0, a=1.0, b=3.0)


def p_alive(p: BGNBDParams, x: int, t_x: float, T: float) -> float:
    """P(still active | x repeat purchases, last at t_x, observed for T), times in weeks."""
    if x <= 0:
        return 1.0
    log_odds = (math.log(p.a) - math.log(p.b + x - 1)
                + (p.r + x) * (math.log(p.alpha + T) - math.log(p.alpha + t_x)))
    return 1.0 / (1.0 + math.exp(min(700.0, log_odds)))


def expected_purchases(p: BGNBDParams, x: int, t_x: float, T: float, horizon: float) -> float:
    """Expected purchases in the next ``horizon`` weeks: P(alive) × posterior mean rate × horizon.

    The posterior mean rate of an active customer is (r + x) / (α + T); evaluating it at the
    middle of the horizon (α + T + horizon/2) accounts for the rate's further decline. It
    ranks customers as the exact conditional expectation does (same AUC on CDNOW) and is
    cheap enough for bisection.
    """
    return p_alive(p, x, t_x, T) * (p.r + x) / (p.alpha + T + horizon / 2.0) * horizon


def bgnbd_loglik(p: BGNBDParams, data: Iterable[tuple[int, float, float, float]]) -> float:
    """Log-likelihood of (x, t_x, T, weight) rows (Fader, Hardie & Lee 2005, eq. 6)."""
    r, al, a, b = p.r, p.alpha, p.a, p.b
    if min(r, al, a, b) <= 0:
        return -math.inf
    lg = math.lgamma
    base = -lg(r) + r * math.log(al) + lg(a + b) - lg(b)
    total = 0.0
    for x, t_x, T, w in data:
        ll = base + lg(r + x) + lg(b + x) - lg(a + b + x)
        a3 = -(r + x) * math.log(al + T)
        if x > 0:
            a4 = math.log(a) - math.log(b + x - 1) - (r + x) * math.log(al + t_x)
            hi, lo = (a3, a4) if a3 > a4 else (a4, a3)
            ll += hi + math.log1p(math.exp(lo - hi))
        else:
            ll += a3
        total += w * ll
    return total


def fit_bgnbd(data: Sequence[tuple[int, float, float, float]], start: BGNBDParams = PRIOR_PARAMS,
              max_iter: int = 400, tol: float = 1e-7, step: float = 0.5,
              prior_sd: float | None = 3.0) -> BGNBDParams:
    """Maximum likelihood (MAP with a weak prior; ``prior_sd=None`` for plain ML) by
    Nelder–Mead on log-parameters (pure Python), warm-started from ``start``."""
    rows = list(data)

    def f(v: Sequence[float]) -> float:
        if max(v) > 8 or min(v) < -8:
            return math.inf
        # A weak normal prior on the log-parameters (sd ``prior_sd``) keeps a small or early
        # sample off the flat ridge where a and b grow together; negligible with real data.
        penalty = sum(u * u for u in v) / (2 * prior_sd * prior_sd) if prior_sd else 0.0
        return penalty - bgnbd_loglik(BGNBDParams(*(math.exp(u) for u in v)), rows)

    x0 = [math.log(start.r), math.log(start.alpha), math.log(start.a), math.log(start.b)]
    best = nelder_mead(f, x0, step=step, max_iter=max_iter, tol=tol)
    return BGNBDParams(*(math.exp(u) for u in best))


def nelder_mead(f, x0: Sequence[float], step: float = 0.5, max_iter: int = 400,
                tol: float = 1e-7) -> list[float]:
    n = len(x0)
    simplex = [list(x0)] + [[x0[j] + (step if j == i else 0.0) for j in range(n)] for i in range(n)]
    values = [f(p) for p in simplex]
    for _ in range(max_iter):
        order = sorted(range(n + 1), key=values.__getitem__)
        simplex = [simplex[i] for i in order]
        values = [values[i] for i in order]
        if abs(values[-1] - values[0]) <= tol * (abs(values[0]) + 1e-12):
            break
        centroid = [sum(p[j] for p in simplex[:-1]) / n for j in range(n)]
        worst = simplex[-1]

        def toward(coef: float, centroid=centroid, worst=worst) -> list[float]:
            return [c + coef * (w - c) for c, w in zip(centroid, worst)]

        reflected = toward(-1.0)
        fr = f(reflected)
        if fr < values[0]:
            expanded = toward(-2.0)
            fe = f(expanded)
            simplex[-1], values[-1] = (expanded, fe) if fe < fr else (reflected, fr)
        elif fr < values[-2]:
            simplex[-1], values[-1] = reflected, fr
        else:
            contracted = toward(0.5) if fr >= values[-1] else toward(-0.5)
            fc = f(contracted)
            if fc < min(fr, values[-1]):
                simplex[-1], values[-1] = contracted, fc
            else:  # shrink towards the best
                best = simplex[0]
                simplex = [best] + [[b + 0.5 * (v - b) for b, v in zip(best, p)] for p in simplex[1:]]
                values = [values[0]] + [f(p) for p in simplex[1:]]
    return simplex[min(range(n + 1), key=values.__getitem__)]


# --------------------------------------------------------------------------- population sample

SAMPLE_SIZE = 2048


def sample_hash(customer_id: str) -> int:
    """A hash independent of ``tiers.shard_of`` (so a shard's sample is uniform within it)."""
    return int.from_bytes(hashlib.blake2b(customer_id.encode(), digest_size=8).digest(), "big")


@dataclass(slots=True)
class PopulationSample:
    """Bottom-k sample by hash of customers' purchase summaries: small, mergeable, deterministic.

    A customer is in the sample iff its hash is among the ``size`` smallest seen, whatever the
    order of updates; merging shards' samples and keeping the ``size`` smallest gives the sample
    of the union. Rows: customer → [hash, purchases, first_ts, last_ts, gap_n, gap_mean, aov].
    """

    size: int = SAMPLE_SIZE
    rows: dict[str, list[float]] = field(default_factory=dict)
    cutoff: int | None = None  # the largest hash kept, once full

    def update(self, customer_id: str, rhythm: Rhythm) -> None:
        if rhythm.purchases == 0 or rhythm.first_purchase_ts is None:
            return
        row = self.rows.get(customer_id)
        h = row[0] if row is not None else sample_hash(customer_id)
        if row is None and self.cutoff is not None and len(self.rows) >= self.size and h >= self.cutoff:
            return
        self.rows[customer_id] = [h, rhythm.purchases, rhythm.first_purchase_ts, rhythm.last_purchase_ts,
                                  rhythm.gap_n, rhythm.gap_mean, rhythm.avg_order_value()]
        if row is None:
            self._trim()

    def _trim(self) -> None:
        while len(self.rows) > self.size:
            worst = max(self.rows, key=lambda c: self.rows[c][0])
            del self.rows[worst]
        if len(self.rows) >= self.size:
            self.cutoff = max(row[0] for row in self.rows.values())

    def merge(self, other: PopulationSample) -> PopulationSample:
        for cid, row in other.rows.items():
            mine = self.rows.get(cid)
            if mine is None or row[3] >= mine[3]:
                self.rows[cid] = list(row)
        self._trim()
        return self

    def bgnbd_data(self, now_ms: int) -> list[tuple[int, float, float, float]]:
        """(x, t_x, T, count) rows in weeks as of ``now_ms``, identical rows grouped."""
        grouped: dict[tuple[int, float, float], int] = {}
        for _, purchases, first, last, *_ in self.rows.values():
            if first > now_ms:
                continue
            key = (int(purchases) - 1, round((last - first) / WEEK_MS, 4), round((now_ms - first) / WEEK_MS, 4))
            grouped[key] = grouped.get(key, 0) + 1
        return [(x, t_x, T, float(w)) for (x, t_x, T), w in grouped.items()]

    def gap_prior(self) -> float | None:
        """Population mean of customers' mean log gap (days), over customers with a gap."""
        values = [row[5] for row in self.rows.values() if row[4] > 0]
        return sum(values) / len(values) if values else None

    def log_order_value(self) -> float | None:
        values = [math.log1p(row[6]) for row in self.rows.values() if row[6] > 0]
        return sum(values) / len(values) if values else None


# --------------------------------------------------------------------------- the score


@dataclass(frozen=True, slots=True)
class ChurnWeights:
    """Logit weights of the churn score. Defaults were set on CDNOW weeks 1–20 → 21–39
    (inside the calibration period; never on the holdout), and by judgement for the signals
    CDNOW does not have (returns, survey, carts, web visits)."""

    bias: float = 0.5
    expected: float = 0.6  # × −log(expected purchases in the horizon + 0.05)
    frequency: float = 0.7  # × −log1p(repeat purchases)
    order_value: float = 0.22  # × −(log1p(avg order value) − population mean)
    overdue: float = 0.2  # × max(0, log(days since last purchase / usual gap))
    visit_drop: float = 0.3  # × (1 − recent/long-run visit rate), customers with ≥ 3 visit days
    returns: float = 0.5  # × min(returns in a row, 3)
    survey: float = 1.5  # × max(0, 7 − score) / 7
    carts: float = 0.3  # × min(abandoned carts since the last purchase, 3)


@dataclass(frozen=True, slots=True)
class ChurnModel:
    """A churn score from a ``Rhythm`` and population parameters (``refit`` from a sample)."""

    params: BGNBDParams = PRIOR_PARAMS
    gap_prior_log_days: float = math.log(60.0)
    mean_log_order_value: float = math.log1p(50.0)
    weights: ChurnWeights = ChurnWeights()
    horizon_weeks: float = 39.0
    fitted_at: int | None = None
    fitted_on: int = 0

    # --- population refresh -----------------------------------------------------------

    def refit(self, sample: PopulationSample, now_ms: int, max_iter: int = 80) -> ChurnModel:
        """A model with parameters re-fitted on ``sample`` as of ``now_ms`` (warm start)."""
        data = sample.bgnbd_data(now_ms)
        if not data:
            return self
        start = self.params if self.fitted_at is not None else PRIOR_PARAMS
        params = fit_bgnbd(data, start=start, max_iter=max_iter,
                           step=0.5 if self.fitted_at is None else 0.15)
        gap = sample.gap_prior()
        aov = sample.log_order_value()
        return replace(
            self, params=params,
            gap_prior_log_days=self.gap_prior_log_days if gap is None else gap,
            mean_log_order_value=self.mean_log_order_value if aov is None else aov,
            fitted_at=now_ms, fitted_on=int(sum(row[3] for row in data)),
        )

    # --- scoring ----------------------------------------------------------------------

    def terms(self, rhythm: Rhythm, now_ms: int) -> dict[str, float]:
        """The raw (unweighted) terms; each is non-decreasing while the customer is silent."""
        if rhythm.purchases == 0 or rhythm.first_purchase_ts is None:
            return {}
        now_ms = max(now_ms, rhythm.last_purchase_ts)
        x = rhythm.repeat
        T = (now_ms - rhythm.first_purchase_ts) / WEEK_MS
        t_x = (rhythm.last_purchase_ts - rhythm.first_purchase_ts) / WEEK_MS
        expected = expected_purchases(self.params, x, t_x, T, self.horizon_weeks)
        days_since = max(0.0, (now_ms - rhythm.last_purchase_ts) / DAY_MS)
        usual = rhythm.usual_gap_days(self.gap_prior_log_days)
        ratio = rhythm.visit_ratio(now_ms)
        return {
            "expected": -math.log(expected + 0.05),
            "frequency": -math.log1p(x),
            "order_value": -(math.log1p(rhythm.avg_order_value()) - self.mean_log_order_value),
            "overdue": max(0.0, math.log(max(days_since, 1e-9) / usual)) if days_since > 0 else 0.0,
            "visit_drop": (1.0 - min(1.0, ratio)) if ratio is not None and rhythm.visit_days >= 3 else 0.0,
            "returns": float(min(rhythm.returns_streak, 3)),
            "survey": max(0.0, 7.0 - rhythm.survey_score) / 7.0 if rhythm.survey_score is not None else 0.0,
            "carts": float(min(rhythm.carts_abandoned_at(now_ms), 3)),
        }

    def score(self, rhythm: Rhythm, now_ms: int) -> float | None:
        """P-like churn score in [0, 1]; ``None`` for a customer with no purchase."""
        if rhythm.purchases == 0 or rhythm.first_purchase_ts is None:
            return None
        return _sigmoid(self._logit(self._prepare(rhythm), rhythm, now_ms))

    def expected(self, rhythm: Rhythm, now_ms: int) -> float:
        """Expected purchases in the horizon (the population-model term alone)."""
        if rhythm.purchases == 0:
            return 0.0
        T = (max(now_ms, rhythm.last_purchase_ts) - rhythm.first_purchase_ts) / WEEK_MS
        t_x = (rhythm.last_purchase_ts - rhythm.first_purchase_ts) / WEEK_MS
        return expected_purchases(self.params, rhythm.repeat, t_x, T, self.horizon_weeks)

    def _prepare(self, rhythm: Rhythm) -> tuple[float, ...]:
        """The parts of the logit that do not move with time (the fast path of ``score``)."""
        w, p = self.weights, self.params
        x = rhythm.repeat
        first, last = rhythm.first_purchase_ts, rhythm.last_purchase_ts
        const = (w.bias - w.frequency * math.log1p(x)
                 - w.order_value * (math.log1p(rhythm.avg_order_value()) - self.mean_log_order_value)
                 + w.returns * min(rhythm.returns_streak, 3))
        if rhythm.survey_score is not None:
            const += w.survey * max(0.0, 7.0 - rhythm.survey_score) / 7.0
        t_x = (last - first) / WEEK_MS
        log_odds0 = math.log(p.a) - math.log(p.b + x - 1) if x > 0 else None
        usual = rhythm.usual_gap_days(self.gap_prior_log_days)
        return (const, x, t_x, log_odds0, math.log(usual))

    def _logit(self, prep: tuple[float, ...], rhythm: Rhythm, now_ms: int) -> float:
        const, x, t_x, log_odds0, log_usual = prep
        w, p, horizon = self.weights, self.params, self.horizon_weeks
        last = rhythm.last_purchase_ts
        now_ms = max(now_ms, last)
        T = (now_ms - rhythm.first_purchase_ts) / WEEK_MS
        if log_odds0 is None:
            alive = 1.0
        else:
            lo = log_odds0 + (p.r + x) * (math.log(p.alpha + T) - math.log(p.alpha + t_x))
            alive = 1.0 / (1.0 + math.exp(min(700.0, lo)))
        expected = alive * (p.r + x) / (p.alpha + T + horizon / 2.0) * horizon
        z = const - w.expected * math.log(expected + 0.05)
        days_since = (now_ms - last) / DAY_MS
        if days_since > 0:
            overdue = math.log(days_since) - log_usual
            if overdue > 0:
                z += w.overdue * overdue
        if rhythm.visit_days >= 3 and rhythm.visits_short_lw is not None:
            ratio = rhythm.visit_ratio(now_ms)
            if ratio is not None and ratio < 1.0:
                z += w.visit_drop * (1.0 - ratio)
        if rhythm.cart_open_ts is not None or rhythm.carts_abandoned:
            z += w.carts * min(rhythm.carts_abandoned_at(now_ms), 3)
        return z

    def threshold_time(self, rhythm: Rhythm, threshold: float, from_ms: int | None = None,
                       max_days: float = 3 * 365, resolution_ms: int = HOUR_MS) -> int | None:
        """First event time ≥ ``from_ms`` (default: the last event) at which the score reaches
        ``threshold`` if the customer stays silent; ``None`` if not within ``max_days``.
        Bisection: the score is non-decreasing in silence."""
        if rhythm.purchases == 0 or rhythm.first_purchase_ts is None:
            return None
        target = math.log(threshold / (1.0 - threshold)) if 0 < threshold < 1 else (
            -math.inf if threshold <= 0 else math.inf)
        prep = self._prepare(rhythm)
        lo = from_ms if from_ms is not None else (rhythm.last_ts or rhythm.last_purchase_ts)
        if self._logit(prep, rhythm, lo) >= target:
            return lo
        hi = lo + int(max_days * DAY_MS)
        if self._logit(prep, rhythm, hi) < target:
            return None
        while hi - lo > resolution_ms:
            mid = (lo + hi) // 2
            if self._logit(prep, rhythm, mid) >= target:
                hi = mid
            else:
                lo = mid
        return hi

    def value_at_risk(self, rhythm: Rhythm, now_ms: int) -> float:
        """Net value the customer would bring over the horizon at their own pace if retained:
        average net order value × posterior purchase rate while active ((r+x)/(α+t_x)) × horizon."""
        if rhythm.purchases == 0:
            return 0.0
        t_x = (rhythm.last_purchase_ts - rhythm.first_purchase_ts) / WEEK_MS
        rate = (self.params.r + rhythm.repeat) / (self.params.alpha + t_x)
        return round(rhythm.avg_order_value() * max(1.0, rate * self.horizon_weeks), 2)

    def reasons(self, rhythm: Rhythm, now_ms: int, limit: int = 4) -> list[str]:
        """The score's main terms in plain words, strongest first."""
        terms = self.terms(rhythm, now_ms)
        if not terms:
            return []
        w = self.weights
        days = int((now_ms - rhythm.last_purchase_ts) // DAY_MS)
        said: list[tuple[float, str]] = []
        usual = rhythm.usual_gap_days(self.gap_prior_log_days)  # shrunk, as in the score
        if rhythm.gap_n and usual:
            times = days / usual
            said.append((w.overdue * terms["overdue"] + w.expected * terms["expected"] * 0.5,
                         f"no purchase for {days} days, {times:.1f}× their usual gap of {usual:.0f} days"))
        else:
            said.append((w.expected * terms["expected"] * 0.5,
                         f"no purchase for {days} days since their only purchase"))
        expected = self.expected(rhythm, now_ms)
        said.append((w.expected * terms["expected"] * 0.5,
                     f"expected purchases in the next {self.horizon_weeks:g} weeks: {expected:.2f}"))
        if rhythm.returns_streak >= 2:
            said.append((w.returns * terms["returns"], f"{rhythm.returns_streak} returns in a row"))
        elif rhythm.returns_streak == 1:
            said.append((w.returns, "returned their last purchase"))
        if rhythm.survey_score is not None and rhythm.survey_score < 7:
            said.append((w.survey * terms["survey"], f"survey score {rhythm.survey_score:g}"))
        carts = rhythm.carts_abandoned_at(now_ms)
        if carts:
            said.append((w.carts * terms["carts"],
                         f"{carts} abandoned cart{'s' if carts > 1 else ''} since the last purchase"))
        if terms["visit_drop"] >= 0.5:
            said.append((w.visit_drop * terms["visit_drop"],
                         f"visits down {terms['visit_drop']:.0%} against their usual rate"))
        said.sort(key=lambda item: -item[0])
        return [text for _, text in said[:limit]]

    def to_dict(self) -> dict[str, Any]:
        return {"params": self.params.to_dict(), "gap_prior_log_days": self.gap_prior_log_days,
                "mean_log_order_value": self.mean_log_order_value, "horizon_weeks": self.horizon_weeks,
                "fitted_at": self.fitted_at, "fitted_on": self.fitted_on}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChurnModel:
        return cls(params=BGNBDParams(**data["params"]), gap_prior_log_days=data["gap_prior_log_days"],
                   mean_log_order_value=data["mean_log_order_value"], horizon_weeks=data["horizon_weeks"],
                   fitted_at=data["fitted_at"], fitted_on=data["fitted_on"])


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-700.0, min(700.0, z))))


# --------------------------------------------------------------------------- alerts


@dataclass(frozen=True, slots=True)
class Alert:
    customer_id: str
    ts_ms: int  # event time at which the score crossed the threshold
    score: float
    value_at_risk: float
    tier: str
    reasons: tuple[str, ...]
    episode: int | None = None  # the last purchase time this lapse follows
    segment: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"customer_id": self.customer_id, "ts_ms": self.ts_ms, "score": round(self.score, 4),
                "value_at_risk": self.value_at_risk, "tier": self.tier, "reasons": list(self.reasons),
                "episode": self.episode, "segment": self.segment}


@dataclass(slots=True)
class DueIndex:
    """Timers on event time: (due_ts, customer_id) in a heap, latest registration wins.

    ``arm`` registers or moves a customer's due time (the old heap entry goes stale and is
    skipped when popped); ``pop_due(watermark)`` returns, in (due_ts, customer_id) order, the
    customers whose due time is ≤ the watermark. A customer popped for an episode is not armed
    again for the same episode; a new episode (``episode`` differs) re-arms.
    """

    heap: list[tuple[int, str, int]] = field(default_factory=list)
    armed: dict[str, list[Any]] = field(default_factory=dict)  # cid → [due_ts, seq, episode, payload]
    fired: dict[str, Any] = field(default_factory=dict)  # cid → episode already alerted
    seq: int = 0

    def arm(self, customer_id: str, due_ts: int, episode: Any = None, payload: Any = None) -> bool:
        if customer_id in self.fired:
            if self.fired[customer_id] == episode:
                return False
            del self.fired[customer_id]
        current = self.armed.get(customer_id)
        if current is not None and current[0] == due_ts:
            current[2], current[3] = episode, payload
            return True
        self.seq += 1
        self.armed[customer_id] = [due_ts, self.seq, episode, payload]
        heapq.heappush(self.heap, (due_ts, customer_id, self.seq))
        if len(self.heap) > 2 * len(self.armed) + 64:
            self._rebuild()
        return True

    def disarm(self, customer_id: str) -> None:
        self.armed.pop(customer_id, None)

    def due_of(self, customer_id: str) -> int | None:
        entry = self.armed.get(customer_id)
        return entry[0] if entry else None

    def next_due(self) -> int | None:
        while self.heap:
            due, cid, seq = self.heap[0]
            entry = self.armed.get(cid)
            if entry is not None and entry[1] == seq:
                return due
            heapq.heappop(self.heap)
        return None

    def pop_due(self, watermark: int) -> list[tuple[int, str, Any, Any]]:
        out = []
        while self.heap and self.heap[0][0] <= watermark:
            due, cid, seq = heapq.heappop(self.heap)
            entry = self.armed.get(cid)
            if entry is None or entry[1] != seq:
                continue  # stale: moved or disarmed
            del self.armed[cid]
            self.fired[cid] = entry[2]
            out.append((due, cid, entry[2], entry[3]))
        return out

    def pop_customer(self, customer_id: str) -> tuple[int, str, Any, Any] | None:
        entry = self.armed.pop(customer_id, None)
        if entry is None:
            return None
        self.fired[customer_id] = entry[2]
        return entry[0], customer_id, entry[2], entry[3]

    def _rebuild(self) -> None:
        self.heap = [(e[0], cid, e[1]) for cid, e in self.armed.items()]
        heapq.heapify(self.heap)

    def __len__(self) -> int:
        return len(self.armed)


@dataclass(slots=True)
class ChurnShard:
    """Everything the flow keeps per churn shard key (``tiers.shard_of(customer_id, N)``).

    - ``update(customer_id, rhythm, ts_ms)`` after each event of a customer of this shard
      (with the customer's rhythm after ``observe``): moves the customer in the value / RFM
      sketches and the BG/NBD sample, and (re)arms its due time; returns alerts due by ``ts_ms``.
    - ``advance(watermark_ms)`` on each watermark tick: returns the alerts whose due time has
      passed. Every ``refit_every_days`` of event time (epoch-aligned) the population model is
      re-fitted on the shard's sample and every armed due time recomputed, after the alerts due
      by then have fired with the old model — so where the ticks fall does not change anything.

    State size: the sketches (a few hundred buckets), the sample (``sample_size`` rows) and,
    per armed customer, one heap entry and a ``Rhythm``; pick the number of shards so that a
    shard holds a few thousand customers.
    """

    threshold: float = 0.85
    sample_size: int = SAMPLE_SIZE
    refit_every_days: float = 7.0
    min_fit_customers: int = 50
    lateness_ms: int = 0
    tier_shares: tuple[tuple[str, float], ...] = tiers.DEFAULT_TIERS
    model: ChurnModel = field(default_factory=ChurnModel)
    sketch: tiers.PopulationSketch = field(default_factory=tiers.PopulationSketch)
    sample: PopulationSample | None = None
    due: DueIndex = field(default_factory=DueIndex)
    clock: int | None = None
    next_refit: int | None = None
    _tiers: tiers.ValueTiers | None = None

    def __post_init__(self) -> None:
        if self.sample is None:
            self.sample = PopulationSample(self.sample_size)

    def __deepcopy__(self, memo: dict) -> ChurnShard:
        """bytewax copies each touched shard at every epoch: copy the containers, share what is
        never mutated in place (the model, sample rows, the rhythms parked in the due index)."""
        clone = copy.copy(self)
        clone.sketch = self.sketch.copy()
        clone.sample = PopulationSample(self.sample.size, dict(self.sample.rows), self.sample.cutoff)
        clone.due = DueIndex(list(self.due.heap), {cid: list(e) for cid, e in self.due.armed.items()},
                             dict(self.due.fired), self.due.seq)
        return clone

    # --- inputs -------------------------------------------------------------------------

    def update(self, customer_id: str, rhythm: Rhythm, ts_ms: int) -> list[Alert]:
        alerts = self.advance(ts_ms - self.lateness_ms)
        if self.lateness_ms:
            due = self.due.due_of(customer_id)
            if due is not None and due <= ts_ms:  # it lapsed before this (late-ish) event
                alerts.append(self._alert(*self.due.pop_customer(customer_id)))
        self.sketch.update(customer_id, rhythm.value_log(), rhythm.last_purchase_ts, rhythm.purchases)
        self._tiers = None
        self.sample.update(customer_id, rhythm)
        self._arm(customer_id, rhythm.copy(), ts_ms)
        return alerts

    def advance(self, watermark_ms: int) -> list[Alert]:
        if self.clock is not None and watermark_ms <= self.clock:
            return []
        every = int(self.refit_every_days * DAY_MS)
        if self.next_refit is None:
            self.next_refit = (watermark_ms // every + 1) * every
        alerts: list[Alert] = []
        while self.next_refit <= watermark_ms:
            boundary = self.next_refit
            alerts += [self._alert(*hit) for hit in self.due.pop_due(boundary)]
            self.refit(boundary)
            self.next_refit = boundary + every
        alerts += [self._alert(*hit) for hit in self.due.pop_due(watermark_ms)]
        self.clock = watermark_ms
        return alerts

    # --- population -----------------------------------------------------------------------

    def refit(self, now_ms: int) -> None:
        if len(self.sample.rows) < self.min_fit_customers:
            return
        self.model = self.model.refit(self.sample, now_ms)
        for cid, (due, _, episode, rhythm) in list(self.due.armed.items()):
            self._arm(cid, rhythm, now_ms)

    def tiers(self) -> tiers.ValueTiers:
        if self._tiers is None:
            self._tiers = tiers.ValueTiers.from_sketch(self.sketch.value, self.tier_shares)
        return self._tiers

    # --- internals --------------------------------------------------------------------------

    def _arm(self, customer_id: str, rhythm: Rhythm, now_ms: int) -> None:
        if rhythm.purchases == 0:
            self.due.disarm(customer_id)
            return
        episode = rhythm.last_purchase_ts
        if self.due.fired.get(customer_id) == episode:
            return
        due = self.model.threshold_time(rhythm, self.threshold, from_ms=max(now_ms, rhythm.last_ts or now_ms))
        if due is None:
            self.due.disarm(customer_id)
        else:
            self.due.arm(customer_id, due, episode, rhythm)

    def _alert(self, due_ts: int, customer_id: str, episode: Any, rhythm: Rhythm) -> Alert:
        return Alert(
            customer_id=customer_id, ts_ms=due_ts,
            score=self.model.score(rhythm, due_ts),
            value_at_risk=self.model.value_at_risk(rhythm, due_ts),
            tier=self.tiers().tier_of_log(rhythm.value_log()),
            reasons=tuple(self.model.reasons(rhythm, due_ts)),
            episode=episode, segment=tiers.segment(rhythm, due_ts),
        )
