"""Churn on event time: a customer's purchase rhythm, a churn score, and alerts for silent customers.

Three pieces, all pure (stdlib only) and driven by event time (``now_ms`` is always passed in):

``RhythmState`` / ``Rhythm``
    ``RhythmState`` lives inside ``CustomerState`` and holds only what the state does not
    already: purchase days (same-day purchases merged), inter-purchase gaps (Welford in
    log-days), value forward-decayed after returns, a streak of returns, the last survey score,
    cart abandonment since the last purchase, and visit days decayed at two half-lives (a drop
    in the short one against the long one is a drop in visit rate). ``Rhythm`` is the frozen
    view the model reads, built from both (``CustomerState.rhythm_view()``).

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

``PopulationShard``
    Bounded population statistics per shard (sketches for tiers and RFM, a bottom-k sample
    for the BG/NBD fit, the fitted model). On each change of a customer's rhythm it computes
    the time their score will cross the threshold if they stay silent, and the alert that
    would then be raised: the timer itself rides in keyed state of its own (see
    ``online_models.timers``), so no key holds a whole population.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from online_models import decay, rules, tiers
from online_models.clock import DAY_MS, HOUR_MS, WEEK_MS
from online_models.events import Event
from online_models.pickling import pickled_by_fields

VALUE_HALF_LIFE_DAYS = 365.0
VISIT_HALF_LIVES_DAYS = (14.0, 90.0)
ABANDON_AFTER_MS = DAY_MS  # an add-to-cart not followed by a purchase within a day is abandoned
VISIT_TYPES = frozenset({"page_view", "product_view", "search", "add_to_cart", "remove_from_cart",
                         "purchase", "return", "store_visit"})
WEB_CHANNELS = frozenset({"web", "app"})
# What moves a customer's churn timer enough to tell their shard at once; visits and carts
# are folded into the rhythm and travel with the next of these.
CHURN_SIGNAL_TYPES = frozenset({"purchase", "return", "survey", "store_visit"})

_VALUE_DECAY = decay.Decay(VALUE_HALF_LIFE_DAYS)
_VISIT_SHORT = decay.Decay(VISIT_HALF_LIVES_DAYS[0])
_VISIT_LONG = decay.Decay(VISIT_HALF_LIVES_DAYS[1])


# --------------------------------------------------------------------------- rhythm


RECENT_PURCHASE_DAYS = 16  # the purchase rhythm (gaps) is read from the last this many purchase days
RECENT_RETURNS = 3  # returns in a row count up to 3
RECENT_CART_ADDS = 8
DAY_WINDOW = 730  # days kept day by day; older ones are only counted


def _insert_recent(days: list[int], value: int, keep: int) -> bool:
    """Add ``value`` to a sorted list of the ``keep`` largest distinct values; True if it is new.

    The result depends only on the set of values seen, not on their order (a value older
    than a full window is taken as already seen): events of one customer arrive from several
    topics, in an order that depends on how they were read."""
    if value in days or (len(days) >= keep and value < days[0]):
        return False
    bisect.insort(days, value)
    if len(days) > keep:
        del days[0]
    return True


@dataclass(slots=True)
class DayWindow:
    """The distinct days something happened on: the last ``DAY_WINDOW`` days as a bit mask
    ending at the newest day, earlier ones as a count. Adding days commutes (a day older than
    the window is counted as a new one whenever it arrives), so the count does not depend on
    the order in which a customer's topics were read."""

    newest: int | None = None
    mask: int = 0  # bit i: the day newest − i
    older: int = 0

    def add(self, day: int) -> bool:
        if self.newest is None:
            self.newest, self.mask = day, 1
            return True
        if day > self.newest:
            shift = day - self.newest
            dropped = self.mask >> max(0, DAY_WINDOW - shift)
            self.older += dropped.bit_count()
            self.mask = ((self.mask << shift) | 1) & ((1 << DAY_WINDOW) - 1)
            self.newest = day
            return True
        age = self.newest - day
        if age >= DAY_WINDOW:
            self.older += 1
            return True
        if self.mask >> age & 1:
            return False
        self.mask |= 1 << age
        return True

    @property
    def count(self) -> int:
        return self.mask.bit_count() + self.older

    def recent(self, n: int) -> list[int]:
        """The ``n`` most recent days, oldest first."""
        out, mask, age = [], self.mask, 0
        while mask and len(out) < n:
            if mask & 1:
                out.append(self.newest - age)
            mask >>= 1
            age += 1
        return out[::-1]

    def merge(self, other: DayWindow) -> None:
        for day in other.recent(DAY_WINDOW):
            self.add(day)
        self.older += other.older

    def copy(self) -> DayWindow:
        return DayWindow(self.newest, self.mask, self.older)

    def to_dict(self) -> dict[str, Any]:
        return {"newest": self.newest, "mask": format(self.mask, "x"), "older": self.older}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> DayWindow:
        if not data:
            return cls()
        return cls(data.get("newest"), int(data.get("mask") or "0", 16), int(data.get("older") or 0))


_WINDOWS = ("purchase_days", "visit_days", "web_days", "store_days")


def log_gap_stats(days: Sequence[int]) -> tuple[int, float, float]:
    """(n, mean, M2) of log(gap in days) between consecutive sorted days (Welford)."""
    n, mean, m2 = 0, 0.0, 0.0
    for before, after in itertools.pairwise(days):
        gap = math.log(after - before)
        n += 1
        delta = gap - mean
        mean += delta / n
        m2 += delta * (gap - mean)
    return n, mean, m2


@dataclass(slots=True)
class RhythmState:
    """What churn needs of a customer beyond what ``CustomerState`` already holds (purchase
    times, gross, returned, channel orders live there): the days they bought and visited on
    (the rhythm is the gaps between purchase days), value forward-decayed after returns,
    recent returns and cart adds, survey.

    Every update commutes: the state depends on the set of events, not the order in which
    topics delivered them. ``observe`` is called by ``CustomerState.apply`` after de-duplication."""

    purchase_days: DayWindow = field(default_factory=DayWindow)
    gross_lw: float | None = None  # forward-decayed log of gross spend (VALUE_HALF_LIFE_DAYS)
    returned_lw: float | None = None
    returns: int = 0
    recent_returns: list[int] = field(default_factory=list)  # timestamps, sorted
    survey_score: float | None = None
    survey_ts: int | None = None
    cart_adds: list[int] = field(default_factory=list)  # recent add-to-cart timestamps, sorted
    visit_days: DayWindow = field(default_factory=DayWindow)
    web_days: DayWindow = field(default_factory=DayWindow)  # days with web / app activity
    store_days: DayWindow = field(default_factory=DayWindow)

    @property
    def purchases(self) -> int:
        """Purchase days (same-day purchases are one occasion)."""
        return self.purchase_days.count

    def observe(self, event: Event) -> None:
        """Fold one (de-duplicated) event in."""
        ts = event.ts_ms
        day = ts // DAY_MS
        if event.type in VISIT_TYPES:
            self.visit_days.add(day)
            (self.web_days if event.channel in WEB_CHANNELS else self.store_days).add(day)
        kind = event.type
        if kind == "purchase":
            value = sum(item.value for item in event.items)
            if value > 0:
                self.gross_lw = decay.log_add(self.gross_lw, _VALUE_DECAY.log_weight(value, ts))
            self.purchase_days.add(day)
        elif kind == "return":
            value = sum(item.value for item in event.items)
            self.returns += 1
            _insert_recent(self.recent_returns, ts, RECENT_RETURNS)
            if value > 0:
                self.returned_lw = decay.log_add(self.returned_lw, _VALUE_DECAY.log_weight(value, ts))
        elif kind == "add_to_cart":
            _insert_recent(self.cart_adds, ts, RECENT_CART_ADDS)
        elif kind == "survey" and event.score is not None and (
                self.survey_ts is None or (ts, event.score) > (self.survey_ts, self.survey_score)):
            self.survey_score = float(event.score)
            self.survey_ts = ts

    def merge(self, other: RhythmState) -> None:
        """Fold a stitched alias's rhythm in: the same result as if one state had seen both
        histories (day sets are unions, decayed sums add)."""
        for name in _WINDOWS:
            getattr(self, name).merge(getattr(other, name))
        for name in ("gross_lw", "returned_lw"):
            theirs = getattr(other, name)
            if theirs is not None:
                setattr(self, name, decay.log_add(getattr(self, name), theirs))
        self.returns += other.returns
        for ts in other.recent_returns:
            _insert_recent(self.recent_returns, ts, RECENT_RETURNS)
        for ts in other.cart_adds:
            _insert_recent(self.cart_adds, ts, RECENT_CART_ADDS)
        if other.survey_ts is not None and (self.survey_ts is None or (other.survey_ts, other.survey_score)
                                            > (self.survey_ts, self.survey_score)):
            self.survey_score, self.survey_ts = other.survey_score, other.survey_ts

    def visit_weights(self) -> tuple[float | None, float | None]:
        """Visit days, forward-decayed at the short and the long half-life (log space)."""
        short = long = None
        for day in self.visit_days.recent(DAY_WINDOW):
            ts = day * DAY_MS
            short = decay.log_add(short, _VISIT_SHORT.log_weight(1.0, ts))
            long = decay.log_add(long, _VISIT_LONG.log_weight(1.0, ts))
        return short, long

    def gap_stats(self) -> tuple[int, float, float]:
        """(n, mean, M2) of log(gap in days) between the recent purchase days."""
        return log_gap_stats(self.purchase_days.recent(RECENT_PURCHASE_DAYS))

    def carts(self, last_purchase_ts: int | None) -> tuple[int | None, int]:
        """(start of the open cart, carts abandoned before it), since the last purchase: adds
        more than ``ABANDON_AFTER_MS`` apart are separate carts."""
        adds = [ts for ts in self.cart_adds if last_purchase_ts is None or ts > last_purchase_ts]
        if not adds:
            return None, 0
        starts = [adds[0]] + [after for before, after in zip(adds, adds[1:]) if after - before > ABANDON_AFTER_MS]
        return starts[-1], len(starts) - 1

    def copy(self) -> RhythmState:
        return RhythmState(
            self.purchase_days.copy(), self.gross_lw, self.returned_lw, self.returns, list(self.recent_returns),
            self.survey_score, self.survey_ts, list(self.cart_adds), self.visit_days.copy(), self.web_days.copy(),
            self.store_days.copy(),
        )

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in _WINDOWS:
            data[name] = data[name].to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RhythmState:
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in data.items() if k in names}
        for name in _WINDOWS:
            value = known.get(name)
            known[name] = DayWindow.from_dict(value if isinstance(value, Mapping) else None)
        return cls(**known)


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Rhythm:
    """A customer's purchase rhythm and churn signals as of their last event: the read-only
    view the churn model, segments and tiers take (``CustomerState.rhythm_view()`` builds it
    from the state; nothing is stored twice)."""

    purchases: int = 0  # purchase days
    first_purchase_ts: int | None = None
    last_purchase_ts: int | None = None
    gap_n: int = 0
    gap_mean: float = 0.0
    gap_m2: float = 0.0
    gross: float = 0.0
    returned: float = 0.0
    gross_lw: float | None = None
    returned_lw: float | None = None
    returns: int = 0
    returns_streak: int = 0
    survey_score: float | None = None
    cart_open_ts: int | None = None
    carts_abandoned: int = 0
    visit_days: int = 0
    visits_short_lw: float | None = None
    visits_long_lw: float | None = None
    web_purchases: int = 0
    store_purchases: int = 0
    web_days: int = 0
    store_visit_days: int = 0
    last_ts: int | None = None
    purchase_days: tuple[int, ...] = ()  # the recent ones, sorted (what a population sample truncates)

    @classmethod
    def of(cls, state: RhythmState, *, first_purchase_ts: int | None, last_purchase_ts: int | None,
           gross: float, returned: float, web_purchases: int, store_purchases: int,
           last_ts: int | None) -> Rhythm:
        gap_n, gap_mean, gap_m2 = state.gap_stats()
        cart_open_ts, carts_abandoned = state.carts(last_purchase_ts)
        streak = sum(1 for ts in state.recent_returns if last_purchase_ts is None or ts > last_purchase_ts)
        visits_short_lw, visits_long_lw = state.visit_weights()
        return cls(
            purchases=state.purchases, first_purchase_ts=first_purchase_ts, last_purchase_ts=last_purchase_ts,
            gap_n=gap_n, gap_mean=gap_mean, gap_m2=gap_m2, gross=gross, returned=returned,
            gross_lw=state.gross_lw, returned_lw=state.returned_lw, returns=state.returns,
            returns_streak=streak, survey_score=state.survey_score,
            cart_open_ts=cart_open_ts, carts_abandoned=carts_abandoned,
            visit_days=state.visit_days.count, visits_short_lw=visits_short_lw,
            visits_long_lw=visits_long_lw, web_purchases=web_purchases,
            store_purchases=store_purchases, web_days=state.web_days.count,
            store_visit_days=state.store_days.count, last_ts=last_ts,
            purchase_days=tuple(state.purchase_days.recent(RECENT_PURCHASE_DAYS)),
        )

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
        return rules.usual_gap_days(self.gap_n, self.gap_mean, prior_log_days, prior_weight)

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


@dataclass(frozen=True, slots=True)
class SampledThen:
    """A sampled customer's row cut back to an earlier time: the purchases they had made by then
    and the purchase days of the row's recent window that fall before it.

    ``exact`` is False when every kept day is later (a customer with more purchase days since
    than a row keeps): the count is right, the last purchase day is unknown and taken as the
    first."""

    purchases: int
    first_ts: int
    first_day: int
    last_day: int
    days: tuple[int, ...]
    exact: bool

    @classmethod
    def of(cls, row: Sequence[Any], at_ms: int) -> SampledThen | None:
        """``None`` when the customer had not bought yet at ``at_ms``."""
        purchases, first, days = int(row[1]), int(row[2]), row[8]
        if first > at_ms:
            return None
        day = at_ms // DAY_MS
        kept = tuple(d for d in days if d <= day)
        then = purchases - (len(days) - len(kept))
        first_day = first // DAY_MS
        return cls(then, first, first_day, kept[-1] if kept else first_day, kept, bool(kept) or then <= 1)

    @property
    def gaps(self) -> tuple[int, float, float]:
        return log_gap_stats(self.days)


@dataclass(slots=True)
class PopulationSample:
    """Bottom-k sample by hash of customers' purchase summaries: small, mergeable, deterministic.

    A customer is in the sample iff its hash is among the ``size`` smallest seen, whatever the
    order of updates; merging shards' samples and keeping the ``size`` smallest gives the sample
    of the union. Rows: customer → [hash, purchases, first_ts, last_purchase_ts, gap_n, gap_mean, aov,
    last_event_ts, recent purchase days] (published for readers with the last purchase in place
    of the last event, ``PopulationShard.small_sample_rows``).
    """

    size: int = SAMPLE_SIZE
    rows: dict[str, list[float]] = field(default_factory=dict)
    cutoff: int | None = None  # the largest hash kept, once full

    def update(self, customer_id: str, rhythm: Rhythm) -> None:
        """Keep the customer's newest summary (by their last event time), whatever the order
        in which updates of different customers arrive."""
        if rhythm.purchases == 0 or rhythm.first_purchase_ts is None:
            return
        row = self.rows.get(customer_id)
        if row is not None and (rhythm.last_ts or 0) < row[7]:
            return
        h = row[0] if row is not None else sample_hash(customer_id)
        if row is None and self.cutoff is not None and len(self.rows) >= self.size and h >= self.cutoff:
            return
        self.rows[customer_id] = [h, rhythm.purchases, rhythm.first_purchase_ts, rhythm.last_purchase_ts,
                                  rhythm.gap_n, rhythm.gap_mean, rhythm.avg_order_value(), rhythm.last_ts or 0,
                                  rhythm.purchase_days]
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
            if mine is None or row[7] >= mine[7]:
                self.rows[cid] = list(row)
        self._trim()
        return self

    def as_of(self, now_ms: int) -> list[tuple[int, int, int, float | None, float]]:
        """Each sampled customer as they were at ``now_ms``: (repeat purchases, first and last
        purchase day, mean log gap or None, average order value), in hash order.

        A row holds the customer's newest summary, which may already include purchases after
        ``now_ms`` (updates keep arriving while the clock passes a refit boundary, in an order
        that depends on how topics were read): those days are cut off again (``SampledThen``),
        so a refit sees the same data however the updates were interleaved."""
        out = []
        for row in sorted(self.rows.values()):
            then = SampledThen.of(row, now_ms)
            if then is not None:
                gaps, mean_gap, _ = then.gaps
                out.append((max(0, then.purchases - 1), then.first_day, then.last_day,
                            mean_gap if gaps else None, row[6]))
        return out

    def bgnbd_data(self, now_ms: int) -> list[tuple[int, float, float, float]]:
        """(x, t_x, T, count) rows in weeks as of ``now_ms``, identical rows grouped."""
        grouped: dict[tuple[int, float, float], int] = {}
        day_now = now_ms / DAY_MS
        for x, first_day, last_day, _, _ in self.as_of(now_ms):
            key = (x, round((last_day - first_day) / 7, 4), round((day_now - first_day) / 7, 4))
            grouped[key] = grouped.get(key, 0) + 1
        return [(x, t_x, T, float(w)) for (x, t_x, T), w in sorted(grouped.items())]

    def gap_prior(self, now_ms: int) -> float | None:
        """Population mean of customers' mean log gap (days), over customers with a gap."""
        values = [gap for _, _, _, gap, _ in self.as_of(now_ms) if gap is not None]
        return sum(values) / len(values) if values else None

    def log_order_value(self, now_ms: int) -> float | None:
        # Order values as of the newest summary (not cut off): rounded, so that a few rows'
        # newer purchases do not move the population mean's stored bytes.
        values = [math.log1p(aov) for _, _, _, _, aov in self.as_of(now_ms) if aov > 0]
        return round(sum(values) / len(values), 3) if values else None


# --------------------------------------------------------------------------- the score


@dataclass(frozen=True, slots=True)
class ChurnWeights:
    """Logit weights of the churn score.

    The defaults are a starting point only: once a shard has seen enough of the stream,
    ``learn_weights`` re-fits ``LEARNED`` from the stream's own later purchases (see there).
    The other weights stay as set here, by judgement, for signals a population sample cannot
    replay (returns, survey, carts, web visits; order value, whose sampled figure is newer than
    the snapshot it would describe)."""

    bias: float = 0.5
    expected: float = 0.6  # × −log(expected purchases in the horizon + 0.05)
    frequency: float = 0.7  # × −log1p(repeat purchases)
    order_value: float = 0.22  # × −(log1p(avg order value) − population mean)
    overdue: float = 0.2  # × max(0, log(days since last purchase / usual gap))
    visit_drop: float = 0.3  # × (1 − recent/long-run visit rate), customers with ≥ 3 visit days
    returns: float = 0.5  # × min(returns in a row, 3)
    survey: float = 1.5  # × max(0, 7 − score) / 7
    carts: float = 0.3  # × min(abandoned carts since the last purchase, 3)
    silence: float = 0.0  # × log1p(weeks since the last purchase)

    def to_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ChurnWeights:
        known = set(cls.__slots__)
        return cls(**{k: float(v) for k, v in (data or {}).items() if k in known})


# The weights ``learn_weights`` fits; the terms that grow while a customer stays silent are kept
# ≥ 0, so the score never falls in silence (``threshold_time`` bisects on that).
LEARNED = ("bias", "expected", "frequency", "overdue", "silence")
GROWS_IN_SILENCE = frozenset({"expected", "overdue", "silence"})
LABEL_MIN_WEEKS = 4.0  # shorter label windows say little about churn: keep the weights
LEARN_PRIOR_PRECISION = 2.0  # a Gaussian prior on the weights, centred on the defaults
LEARN_MIN_EACH = 20  # customers needed on each side (bought / did not) to learn
LEARN_ROUND = 0.01  # learned weights are rounded: the stored bytes never depend on float noise


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
    median_value_at_risk: float | None = None  # over the sample at the last refit: the alerts' value floor

    # --- population refresh -----------------------------------------------------------

    def refit(self, sample: PopulationSample, now_ms: int, max_iter: int = 80) -> ChurnModel:
        """A model with parameters re-fitted on ``sample`` as of ``now_ms`` (warm start)."""
        data = sample.bgnbd_data(now_ms)
        if not data:
            return self
        start = self.params if self.fitted_at is not None else PRIOR_PARAMS
        params = fit_bgnbd(data, start=start, max_iter=max_iter,
                           step=0.5 if self.fitted_at is None else 0.15)
        gap = sample.gap_prior(now_ms)
        aov = sample.log_order_value(now_ms)
        fitted = replace(self, params=params, gap_prior_log_days=self.gap_prior_log_days if gap is None else gap)
        weights = learn_weights(fitted, sample, now_ms) or self.weights
        return replace(
            self, params=params, weights=weights,
            gap_prior_log_days=self.gap_prior_log_days if gap is None else gap,
            mean_log_order_value=self.mean_log_order_value if aov is None else aov,
            fitted_at=now_ms, fitted_on=int(sum(row[3] for row in data)),
            median_value_at_risk=_median_value_at_risk(sample, now_ms, params, self.horizon_weeks),
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
            "silence": math.log1p(days_since / 7.0),
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
            z += w.silence * math.log1p(days_since / 7.0)
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
        # their own rhythm once they have one (what a sales assistant knows of them, and the
        # profile's usual gap); before that no usual gap is said: the score's, shrunk to the
        # population's, would contradict the profile's own (47 days said, 28 shown)
        usual = rhythm.usual_gap_days() if rules.has_rhythm(rhythm.purchases) else None
        said.append((w.overdue * terms["overdue"] + w.expected * terms["expected"] * 0.5,
                     silence_text(days, usual, rhythm.purchases, rhythm.web_purchases + rhythm.store_purchases)))
        if self.fitted_at is not None:  # a model fitted on no population says what its prior says:
            # "they usually buy every day" beside "expected to buy about 27 times in 39 weeks" (the audit)
            expected = self.expected(rhythm, now_ms)
            said.append((w.expected * terms["expected"] * 0.5,
                         f"expected to buy {_times(expected)} in the next {self.horizon_weeks:g} weeks"))
        if rhythm.returns_streak >= 2:
            said.append((w.returns * terms["returns"],
                         f"sent back {rhythm.returns_streak} orders since they last bought"))
        elif rhythm.returns_streak == 1:
            said.append((w.returns, "sent back their last purchase"))
        if rhythm.survey_score is not None and rhythm.survey_score < 7:
            said.append((w.survey * terms["survey"], f"gave us {rhythm.survey_score:g} out of 10 in a survey"))
        carts = rhythm.carts_abandoned_at(now_ms)
        if carts:
            said.append((w.carts * terms["carts"],
                         f"left {_count(carts, 'cart')} without buying since their last purchase"))
        if terms["visit_drop"] >= 0.5:
            said.append((w.visit_drop * terms["visit_drop"],
                         f"visiting {terms['visit_drop']:.0%} less often than they used to"))
        said.sort(key=lambda item: -item[0])
        return [text for _, text in said[:limit]]

    def to_dict(self) -> dict[str, Any]:
        return {"params": self.params.to_dict(), "gap_prior_log_days": self.gap_prior_log_days,
                "mean_log_order_value": self.mean_log_order_value, "horizon_weeks": self.horizon_weeks,
                "fitted_at": self.fitted_at, "fitted_on": self.fitted_on,
                "median_value_at_risk": self.median_value_at_risk, "weights": self.weights.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChurnModel:
        return cls(params=BGNBDParams(**data["params"]), gap_prior_log_days=data["gap_prior_log_days"],
                   mean_log_order_value=data["mean_log_order_value"], horizon_weeks=data["horizon_weeks"],
                   fitted_at=data["fitted_at"], fitted_on=data["fitted_on"],
                   median_value_at_risk=data.get("median_value_at_risk"),
                   weights=ChurnWeights.from_dict(data.get("weights")))


# --------------------------------------------------------------------------- learned weights


def label_weeks(sample: PopulationSample, now_ms: int, horizon_weeks: float) -> float:
    """How far ahead the stream can already tell who came back: the score's horizon, or half
    of the history the sample covers when that is shorter (a snapshot needs a past as long as
    the window that labels it)."""
    firsts = [row[2] for row in sample.rows.values() if row[2] <= now_ms]
    if not firsts:
        return 0.0
    return min(horizon_weeks, (now_ms - min(firsts)) / WEEK_MS / 2.0)


def training_rows(model: ChurnModel, sample: PopulationSample, now_ms: int,
                  weeks: float) -> list[tuple[dict[str, float], int]]:
    """The sample replayed to a snapshot ``weeks`` before ``now_ms``: each customer who had
    bought by then, their terms as of the snapshot, and 1 if they did not buy again up to
    ``now_ms`` (churned, as far as the window can tell) else 0.

    Rows keep each customer's recent purchase days, so the snapshot is exact unless all the
    kept days are after it (a customer with more purchase days since than a row keeps): those
    certainly bought again but their state at the snapshot is unknown, and they are left out."""
    snapshot = now_ms - int(weeks * WEEK_MS)
    day_snapshot, day_now = snapshot // DAY_MS, now_ms // DAY_MS
    out = []
    for row in sorted(sample.rows.values()):
        then = SampledThen.of(row, snapshot)
        if then is None or not then.exact:
            continue
        gap_n, gap_mean, gap_m2 = then.gaps
        rhythm = Rhythm(purchases=then.purchases, first_purchase_ts=then.first_ts,
                        last_purchase_ts=max(then.first_ts, then.last_day * DAY_MS), gap_n=gap_n,
                        gap_mean=gap_mean, gap_m2=gap_m2)
        came_back = any(day_snapshot < d <= day_now for d in row[8])
        out.append((model.terms(rhythm, snapshot), 0 if came_back else 1))
    return out


def learn_weights(model: ChurnModel, sample: PopulationSample, now_ms: int,
                  iterations: int = 6) -> ChurnWeights | None:
    """The ``LEARNED`` weights fitted on the stream's own later purchases: a logistic
    regression of "did not buy again within the label window" (``label_weeks``) on the score's
    terms as of the window's start (``training_rows``), by Newton's method from the defaults,
    with a Gaussian prior centred on them. ``None`` (keep the weights) when the window is
    shorter than ``LABEL_MIN_WEEKS`` or either outcome has fewer than ``LEARN_MIN_EACH``
    customers. The result depends on the sample and ``now_ms`` alone, never on earlier fits."""
    weeks = label_weeks(sample, now_ms, model.horizon_weeks)
    if weeks < LABEL_MIN_WEEKS:
        return None
    rows = training_rows(model, sample, now_ms, weeks)
    churned = sum(y for _, y in rows)
    if min(churned, len(rows) - churned) < LEARN_MIN_EACH:
        return None
    prior = ChurnWeights()
    start = [getattr(prior, name) for name in LEARNED]
    data = [([1.0] + [terms[name] for name in LEARNED[1:]], y) for terms, y in rows]
    w = list(start)
    k = len(w)
    for _ in range(iterations):
        grad = [LEARN_PRIOR_PRECISION * (wi - si) for wi, si in zip(w, start)]
        hess = [[LEARN_PRIOR_PRECISION if i == j else 0.0 for j in range(k)] for i in range(k)]
        for x, y in data:
            p = _sigmoid(sum(wi * xi for wi, xi in zip(w, x)))
            g, h = p - y, p * (1.0 - p)
            for i in range(k):
                grad[i] += g * x[i]
                hx = h * x[i]
                row = hess[i]
                for j in range(i, k):
                    row[j] += hx * x[j]
        for i in range(k):
            for j in range(i):
                hess[i][j] = hess[j][i]
        w = [wi - di for wi, di in zip(w, _solve(hess, grad))]
        w = [max(0.0, wi) if name in GROWS_IN_SILENCE else wi for name, wi in zip(LEARNED, w)]
    learned = {name: round(wi / LEARN_ROUND) * LEARN_ROUND for name, wi in zip(LEARNED, w)}
    return replace(model.weights, **{name: round(v, 4) for name, v in learned.items()})


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """x with a·x = b (Gaussian elimination with partial pivoting; a is small and positive
    definite here, the prior keeps it so)."""
    n = len(b)
    m = [list(row) + [bi] for row, bi in zip(a, b)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(col + 1, n):
            factor = m[r][col] / m[col][col]
            for c in range(col, n + 1):
                m[r][c] -= factor * m[col][c]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (m[r][n] - sum(m[r][c] * x[c] for c in range(r + 1, n))) / m[r][r]
    return x


def _median_value_at_risk(sample: PopulationSample, now_ms: int, params: BGNBDParams,
                          horizon_weeks: float) -> float | None:
    """The median of the sampled customers' value at risk (``ChurnModel.value_at_risk``'s formula),
    on a 2 % grid, so that a few rows' newer purchases do not move the stored bytes."""
    values = []
    for x, first_day, last_day, _, aov in sample.as_of(now_ms):
        rate = (params.r + x) / (params.alpha + (last_day - first_day) / 7.0)
        values.append(max(0.0, aov) * max(1.0, rate * horizon_weeks))
    if not values:
        return None
    values.sort()
    median = values[len(values) // 2]
    return round(math.exp(round(math.log(median) / 0.02) * 0.02), 2) if median > 0 else 0.0


def pooled_median_value_at_risk(rows: Sequence[Sequence[Any]], model: ChurnModel,
                                t: rules.Thresholds = rules.DEFAULT) -> float | None:
    """The population's median value at risk where its shards are too small to fit a model each
    (fewer than ``min_fit_customers`` sampled: a shop of a few hundred customers split 8 ways):
    their sample rows pooled (shards hold disjoint customers), valued with the model they score
    with (``model``), as of the newest purchase among them, so that the figure depends on the
    rows alone, never on when it was computed. Without it such a population had no value floor (the
    demo's alerts went to customers worth 28–66). ``None`` under ``value_floor_min_customers``
    rows: the median of a handful is no floor."""
    if len(rows) < t.value_floor_min_customers:
        return None
    pooled = PopulationSample(len(rows), {str(i): [*row[:6], math.expm1(row[6]), *row[7:]]  # log1p published
                                          for i, row in enumerate(rows)})
    newest = max(int(row[3]) for row in rows)
    return _median_value_at_risk(pooled, newest, model.params, model.horizon_weeks)


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-700.0, min(700.0, z))))


# --------------------------------------------------------------------------- wording


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _times(expected: float) -> str:
    """Expected purchases as a person says them: "less than once", "about once", "about 3 times"."""
    if expected < 0.05:
        return "hardly at all"
    if expected < 0.75:
        return "less than once"
    if expected < 1.5:
        return "about once"
    return f"about {round(expected)} times"


def silence_text(days: int, usual_gap: float | None, purchases: int, orders: int | None = None) -> str:
    """How long a customer has been silent, against their rhythm, as a sales assistant would
    say it (whole days; "today", "yesterday"; their usual gap only when they have one).
    ``purchases`` counts purchase days, ``orders`` the orders (several may fall on one day).

    >>> silence_text(0, 2.0, 5), silence_text(1, None, 1)
    ('last bought today; they usually buy every 2 days', 'one purchase so far, yesterday')
    >>> silence_text(0, None, 1, orders=4)
    '4 purchases so far, all today'
    >>> silence_text(30, 7.2, 6), silence_text(20, 1.3, 9)
    ('last bought 30 days ago, 4.2 times their usual gap of 7.2 days', 'last bought 20 days ago, 15 times their usual gap of 1.3 days')
    >>> silence_text(10, 7.0, 3)
    'last bought 10 days ago; they usually buy every 7 days'
    """
    if purchases <= 1 or usual_gap is None:
        if purchases <= 1:
            if orders is not None and orders > 1:
                return f"{orders} purchases so far, all {rules.days_ago(days)}"
            return f"one purchase so far, {rules.days_ago(days)}"
        return f"last bought {rules.days_ago(days)}"
    # a short gap to a tenth of a day: "15 times their usual gap of 1 day" for 20 days of silence
    # read as a miscount (the gap was 1.3 days)
    gap = f"{max(1.0, usual_gap):.1f}".removesuffix(".0") if usual_gap < 9.95 else f"{usual_gap:.0f}"
    every = "every day" if gap == "1" else f"every {gap} days"
    times = days / usual_gap
    if times >= 2:
        shown = f"{times:.1f}".removesuffix(".0") if times < 10 else f"{times:.0f}"
        return f"last bought {rules.days_ago(days)}, {shown} times their usual gap of {gap} day{'' if gap == '1' else 's'}"
    return f"last bought {rules.days_ago(days)}; they usually buy {every}"


# --------------------------------------------------------------------------- alerts


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Alert:
    customer_id: str
    ts_ms: int  # event time at which the score crossed the threshold
    score: float
    value_at_risk: float
    tier: str | None  # None as raised: readers attach it from the population they hold
    reasons: tuple[str, ...]
    episode: int | None = None  # the last purchase time this lapse follows
    segment: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"customer_id": self.customer_id, "ts_ms": self.ts_ms, "score": round(self.score, 4),
                "value_at_risk": self.value_at_risk, "tier": self.tier, "reasons": list(self.reasons),
                "episode": self.episode, "segment": self.segment}


@dataclass(slots=True)
class PopulationShard:
    """Bounded population statistics of one churn shard (``tiers.shard_of``): value / RFM
    sketches (counts per bucket, moved by each customer's old and new buckets, so nobody is
    remembered), a bottom-k sample for the BG/NBD fit, and the fitted model.

    - ``update(customer_id, rhythm, old_keys, new_keys, event_ts)`` after a customer's rhythm
      changed: returns the event time at which their score will cross the threshold if they
      stay silent, and the alert that would then be raised (both ``None`` if never).
    - ``tick(now_ms)`` with the stream's clock: every ``refit_every_days`` of event time
      (epoch-aligned) the model is re-fitted on the sample. The model it replaces is kept
      beside it (``previous``): an update is scored with the model in force at its event time
      (``model_at``), so a customer's timer does not depend on whether their update reached
      the shard before or after the refit tick (partitions run ahead of each other in a replay).

    Its size does not grow with the number of customers: the sketches have a few hundred
    buckets, the sample ``sample_size`` rows.
    """

    threshold: float = 0.85
    sample_size: int = SAMPLE_SIZE
    refit_every_days: float = 7.0
    min_fit_customers: int = 50
    model: ChurnModel = field(default_factory=ChurnModel)
    sketch: tiers.PopulationSketch = field(default_factory=tiers.PopulationSketch)
    sample: PopulationSample | None = None
    clock: int | None = None
    next_refit: int | None = None
    previous: ChurnModel | None = None  # the model ``model`` replaced (one refit back)

    def __post_init__(self) -> None:
        if self.sample is None:
            self.sample = PopulationSample(self.sample_size)

    def __deepcopy__(self, memo: dict) -> PopulationShard:
        """bytewax copies each touched shard at every epoch: copy the containers, share what is
        never mutated in place (the model, the sample's rows)."""
        clone = object.__new__(PopulationShard)  # copy.copy goes through __reduce_ex__: much slower
        for name in _SHARD_FIELDS:
            object.__setattr__(clone, name, getattr(self, name))
        clone.sketch = self.sketch.copy()
        clone.sample = PopulationSample(self.sample.size, dict(self.sample.rows), self.sample.cutoff)
        return clone

    def update(self, customer_id: str, rhythm: Rhythm, old_keys, new_keys,
               event_ts: int) -> tuple[int | None, Alert | None]:
        # What may fail (the model's arithmetic) runs before anything changes, so a failure leaves
        # the shard as it was and the engine's guard need not copy the shard first (``Step.atomic``).
        due, alert = self._due(customer_id, rhythm, event_ts)
        if old_keys != new_keys:
            self.sketch.move(old_keys, new_keys)
        self.sample.update(customer_id, rhythm)
        return due, alert

    def _due(self, customer_id: str, rhythm: Rhythm, event_ts: int) -> tuple[int | None, Alert | None]:
        """When the customer's silence will call for an alert, and the alert; reads the model only."""
        if rhythm.purchases == 0:
            return None, None
        start = max(event_ts, rhythm.last_ts or event_ts)
        model = self.model_at(start)
        due = _earliest(model.threshold_time(rhythm, self.threshold, from_ms=start), lapse_time(rhythm, start))
        if due is None:
            return None, None
        alert = self.alert(customer_id, rhythm, due, model)
        if not rules.clears_value_floor(alert.value_at_risk, model.median_value_at_risk):
            return None, None  # not worth a retention call: no alert (and none pending)
        return due, alert

    def model_at(self, ts_ms: int) -> ChurnModel:
        """The model in force at event time ``ts_ms``: the newest one fitted at or before it. An
        update whose event came before the last refit (its partition was behind the others) is
        scored as it would have been had it arrived before the refit tick. One refit back is
        kept; an event older than that gets the oldest model kept."""
        model = self.model
        if model.fitted_at is None or model.fitted_at <= ts_ms:
            return model
        previous = getattr(self, "previous", None)  # absent in a shard recovered from before it was kept
        return previous if previous is not None else model

    def forget(self, customer_id: str, sketch_keys) -> None:
        """An erased customer: out of the sketches (from the buckets they were last counted in)
        and out of the sample. The fitted model keeps no id and stays until its next refit."""
        if sketch_keys is not None:
            self.sketch.remove(sketch_keys)
        self.sample.rows.pop(customer_id, None)

    def tick(self, now_ms: int) -> bool:
        """Advance the shard's clock; True when the model was re-fitted. The refits run on locals,
        assigned at the end: a failing fit leaves the shard as it was (``Step.atomic``)."""
        if self.clock is not None and now_ms <= self.clock:
            return False
        every = int(self.refit_every_days * DAY_MS)
        if self.next_refit is None:
            self.clock, self.next_refit = now_ms, (now_ms // every + 1) * every
            return False
        model, previous, next_refit, refitted = self.model, getattr(self, "previous", None), self.next_refit, False
        while next_refit <= now_ms:
            if len(self.sample.rows) >= self.min_fit_customers:
                previous, model, refitted = model, model.refit(self.sample, next_refit), True
            next_refit += every
        self.clock, self.next_refit, self.model, self.previous = now_ms, next_refit, model, previous
        return refitted

    def small_sample_rows(self) -> list[list] | None:
        """While the shard has no median of its own (too small to fit a model, or not refitted
        yet since it grew past ``min_fit_customers``), the first ``min_fit_customers`` rows of
        its sample in hash order (a uniform subsample, bottom-k by hash): readers value them
        with the other such shards' (``pooled_median_value_at_risk``). None once it has one."""
        if self.model.median_value_at_risk is not None:
            return None
        # What a reader's median needs, in bytes that do not depend on the order topics are read:
        # the mean gap and the order value rounded (sums in another order differ in their last
        # bits), the order value as log1p on a 1e-5 grid (it is cents over whole orders: on a
        # decimal grid 86.79 / 2 sits exactly on a rounding tie, and two workers gave 43.4 and
        # 43.39), and the last purchase in place of the last event (which of a customer's views
        # had arrived when their last update did depends on that order).
        return [[*row[:5], round(row[5], 6), round(math.log1p(max(0.0, row[6])), 5), row[3], row[8]]
                for row in sorted(self.sample.rows.values())[:self.min_fit_customers]]

    def refit(self, now_ms: int) -> bool:
        if len(self.sample.rows) < self.min_fit_customers:
            return False
        self.previous, self.model = self.model, self.model.refit(self.sample, now_ms)
        return True

    def alert(self, customer_id: str, rhythm: Rhythm, due_ts: int, model: ChurnModel | None = None) -> Alert:
        """The alert due at ``due_ts``, scored with ``model`` (default: the one in force then)."""
        model = model or self.model_at(due_ts)
        return Alert(
            customer_id=customer_id, ts_ms=due_ts,
            score=model.score(rhythm, due_ts),
            value_at_risk=model.value_at_risk(rhythm, due_ts),
            # The tier is the customer's rank in the population, which is still moving when the
            # timer is set (in an order that depends on how topics are read): readers attach
            # it when alerts are read, from the population as it is then.
            tier=None,
            reasons=tuple(model.reasons(rhythm, due_ts)),
            episode=rhythm.last_purchase_ts, segment=tiers.segment(rhythm, due_ts),
        )


_SHARD_FIELDS = tuple(PopulationShard.__dataclass_fields__)


def lapse_time(rhythm: Rhythm, from_ms: int) -> int | None:
    """When a customer with an established rhythm (``rules.has_rhythm``) starts lapsing
    (``rules.lapsing_after_days`` past their last purchase, against their own usual gap), not
    before ``from_ms``. An alert is due then even if the score is still below its threshold: a
    weekly buyer silent for three weeks is slipping away, though a model of the whole
    population may need months of silence to call them gone. ``None`` without a rhythm.

    >>> from online_models.clock import DAY_MS
    >>> weekly = Rhythm(purchases=6, first_purchase_ts=0, last_purchase_ts=35 * DAY_MS, gap_n=5,
    ...                 gap_mean=math.log(7.0))
    >>> round((lapse_time(weekly, 35 * DAY_MS) - 35 * DAY_MS) / DAY_MS, 3)
    17.5
    """
    if not rules.has_rhythm(rhythm.purchases) or rhythm.last_purchase_ts is None:
        return None
    after = rules.lapsing_after_days(rules.usual_gap_days(rhythm.gap_n, rhythm.gap_mean))
    return max(from_ms, rhythm.last_purchase_ts + math.ceil(after * DAY_MS) + 1)


def _earliest(*times: int | None) -> int | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None
