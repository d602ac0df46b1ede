"""Rhythm, churn score, threshold time, due-time alerts for silent customers."""

import itertools
import math
import pickle
import random

import pytest

from online_models import churn
from online_models.churn import (
    BGNBDParams,
    ChurnModel,
    PopulationSample,
    _sigmoid,
)
from online_models.events import Event, Item
from tests.unit.helpers import Observed, day

PARAMS = BGNBDParams(r=0.25, alpha=4.8, a=0.75, b=2.2)
MODEL = ChurnModel(params=PARAMS)


def purchase(n, customer="c-1", value=40.0, channel="web", eid=None):
    return Event(eid or f"{customer}-p{n}", "purchase", day(n), channel, customer_id=customer,
                 items=(Item("SKU", 1, value),))


def rhythm_of(days, customer="c-1"):
    rhythm = Observed()
    for n in days:
        rhythm.observe(purchase(n, customer))
    return rhythm


# --------------------------------------------------------------------------- rhythm


def test_rhythm_merges_same_day_and_summarises_gaps():
    rhythm = rhythm_of([0, 0.1, 10, 30])
    assert rhythm.purchases == 3
    assert rhythm.first_purchase_ts == day(0) and rhythm.last_purchase_ts == day(30)
    assert rhythm.gap_n == 2
    assert rhythm.usual_gap_days() == pytest.approx(math.sqrt(10 * 20), rel=0.01)
    assert rhythm.gross == pytest.approx(160.0)
    assert rhythm.value_at(day(30)) < 160.0  # decayed
    assert churn.RhythmState.from_dict(rhythm.state.rhythm.to_dict()) == rhythm.state.rhythm
    assert pickle.loads(pickle.dumps(rhythm.view)) == rhythm.view


def test_rhythm_signals_returns_survey_carts_visits():
    rhythm = rhythm_of([0])
    for n in (1, 2):
        rhythm.observe(Event(f"r{n}", "return", day(n), "web", customer_id="c-1", items=(Item("SKU", 1, 10.0),)))
    assert rhythm.returns_streak == 2
    assert rhythm.value_log() is not None and rhythm.net_value() == pytest.approx(20.0)
    rhythm.observe(Event("s", "survey", day(3), "web", customer_id="c-1", score=3))
    assert rhythm.survey_score == 3
    rhythm.observe(Event("a1", "add_to_cart", day(4), "web", customer_id="c-1", items=(Item("X", 1, 5.0),)))
    assert rhythm.carts_abandoned_at(day(4.5)) == 0
    assert rhythm.carts_abandoned_at(day(5.5)) == 1  # a day passed, no purchase
    rhythm.observe(Event("a2", "add_to_cart", day(7), "web", customer_id="c-1", items=(Item("X", 1, 5.0),)))
    assert rhythm.carts_abandoned == 1
    assert rhythm.carts_abandoned_at(day(9)) == 2
    rhythm.observe(purchase(7.2))  # bought within the day: this cart is not abandoned; reset
    assert rhythm.carts_abandoned == 0 and rhythm.returns_streak == 0
    ratio_now = rhythm.visit_ratio(day(8))
    assert rhythm.visit_ratio(day(60)) < ratio_now  # the visit rate drops in silence


def test_reasons_in_plain_words():
    rhythm = rhythm_of([0, 20, 41])
    for n in (42, 43):
        rhythm.observe(Event(f"r{n}", "return", day(n), "web", customer_id="c-1", items=(Item("SKU", 1, 10.0),)))
    rhythm.observe(Event("s", "survey", day(44), "web", customer_id="c-1", score=3))
    # the usual gap is shrunk towards the population's (here 20 days too)
    model = ChurnModel(params=PARAMS, gap_prior_log_days=math.log(20.0))
    reasons = model.reasons(rhythm, day(41 + 63), limit=10)
    text = " | ".join(reasons)
    assert "last bought 63 days ago, 3.1 times their usual gap of 20 days" in text
    assert "sent back 2 orders since they last bought" in text
    assert "gave us 3 out of 10 in a survey" in text


def test_reasons_read_as_sentences_on_edge_values():
    today = " | ".join(MODEL.reasons(rhythm_of([0, 2, 4, 6]), day(6)))
    assert "last bought today; they usually buy every 2 days" in today
    assert "0 days" not in today and "0.0×" not in today
    once = " | ".join(MODEL.reasons(rhythm_of([0]), day(1)))
    assert "one purchase so far, yesterday" in once and "1 days" not in once
    assert "one purchase so far, today" in MODEL.reasons(rhythm_of([0]), day(0.2))
    daily = MODEL.reasons(rhythm_of([0, 1, 2, 3]), day(3.5))
    assert "last bought today; they usually buy every day" in daily
    assert MODEL.reasons(Observed(), day(3)) == []  # no history: nothing to say
    for text in MODEL.reasons(rhythm_of([0, 10, 20]), day(400), limit=10):
        assert "×" not in text and ":" not in text  # no dashboard notation


def test_a_model_fitted_on_no_population_does_not_say_what_it_expects():
    """The audit: "they usually buy every day" beside "expected to buy about 27 times in the
    next 39 weeks", from the prior of a model no population had been fitted on."""
    from dataclasses import replace

    daily = rhythm_of(list(range(30)))
    unfitted = ChurnModel(params=PARAMS)
    assert not any(r.startswith("expected to buy") for r in unfitted.reasons(daily, day(31), limit=10))
    fitted = replace(unfitted, fitted_at=day(20))
    assert any(r.startswith("expected to buy") for r in fitted.reasons(daily, day(31), limit=10))


# --------------------------------------------------------------------------- score


def test_score_in_unit_interval_and_matches_its_terms():
    rhythm = rhythm_of([0, 12, 30])
    for now in (day(30), day(60), day(400)):
        score = MODEL.score(rhythm, now)
        assert 0.0 <= score <= 1.0
        terms = MODEL.terms(rhythm, now)
        w = MODEL.weights
        z = w.bias + sum(getattr(w, name) * value for name, value in terms.items())
        assert score == pytest.approx(_sigmoid(z), abs=1e-9)
    assert MODEL.score(Observed(), day(0)) is None


def test_score_rises_with_silence_and_falls_with_a_purchase():
    rhythm = rhythm_of([0, 14, 30, 45])
    rhythm.observe(Event("a", "add_to_cart", day(46), "web", customer_id="c-1", items=(Item("X", 1, 5.0),)))
    rhythm.observe(Event("v", "page_view", day(50), "web", customer_id="c-1"))
    scores = [MODEL.score(rhythm, day(50) + h * 6 * 3_600_000) for h in range(4 * 365)]
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(scores))
    assert scores[-1] > scores[0] + 0.3
    before = MODEL.score(rhythm, day(120))
    rhythm.observe(purchase(120))
    assert MODEL.score(rhythm, day(120)) < before - 0.1


def test_event_signals_raise_the_score():
    base = rhythm_of([0, 20, 40])
    worse = rhythm_of([0, 20, 40])
    for n in (41, 42):
        worse.observe(Event(f"r{n}", "return", day(n), "web", customer_id="c-1", items=(Item("SKU", 1, 10.0),)))
    worse.observe(Event("s", "survey", day(43), "web", customer_id="c-1", score=2))
    assert MODEL.score(worse, day(50)) > MODEL.score(base, day(50)) + 0.05


def test_threshold_time_is_where_the_score_crosses():
    rhythm = rhythm_of([0, 10, 25])
    due = MODEL.threshold_time(rhythm, 0.85)
    assert due is not None and due > day(25)
    assert MODEL.score(rhythm, due) >= 0.85
    assert MODEL.score(rhythm, due - churn.HOUR_MS) < 0.85
    assert MODEL.threshold_time(rhythm, 0.9999999) is None  # not within three years
    already = MODEL.threshold_time(rhythm, 0.01)
    assert already == rhythm.last_ts


# --------------------------------------------------------------------------- population


def simulate_bgnbd(params, n, weeks, rng):
    """Customers from the BG/NBD story: (customer, [purchase days])."""
    out = []
    for i in range(n):
        lam = rng.gammavariate(params.r, 1 / params.alpha)  # per week
        p = rng.betavariate(params.a, params.b)
        start = rng.uniform(0, 12)
        t, days = start, [start]
        while True:
            t += rng.expovariate(lam) if lam > 0 else math.inf
            if t > weeks:
                break
            days.append(t)
            if rng.random() < p:
                break
        out.append((f"c-{i}", [d * 7 for d in days]))
    return out


def test_population_parameters_are_estimated_from_the_stream():
    rng = random.Random(7)
    truth = BGNBDParams(r=0.5, alpha=6.0, a=0.8, b=2.5)
    sample = PopulationSample(size=4000)
    for cid, days in simulate_bgnbd(truth, 4000, 52, rng):
        rhythm = Observed()
        for k, d in enumerate(days):
            rhythm.observe(purchase(d, cid, eid=f"{cid}-{k}"))
        sample.update(cid, rhythm.view)
    model = ChurnModel().refit(sample, day(52 * 7), max_iter=1500)
    fitted = model.params
    assert fitted.r == pytest.approx(truth.r, rel=0.2)
    assert fitted.alpha == pytest.approx(truth.alpha, rel=0.25)
    assert fitted.a / (fitted.a + fitted.b) == pytest.approx(truth.a / (truth.a + truth.b), rel=0.25)
    assert model.fitted_on == 4000


def test_bottom_k_sample_is_order_free_and_mergeable():
    rhythms = {f"c-{i}": rhythm_of([i % 7, 10 + i % 5], f"c-{i}") for i in range(300)}
    one = PopulationSample(size=50)
    for cid, r in rhythms.items():
        one.update(cid, r.view)
    parts = [PopulationSample(size=50) for _ in range(3)]
    for i, (cid, r) in enumerate(reversed(list(rhythms.items()))):
        parts[i % 3].update(cid, r.view)
    merged = PopulationSample(size=50)
    for part in parts:
        merged.merge(part)
    assert set(merged.rows) == set(one.rows) and len(one.rows) == 50


def test_day_windows_count_the_same_days_in_any_order():
    import random as random_module

    # (a day repeated after it has left the window would count twice: days repeat only within it)
    days = [100, 101, 350, 900, 901, 901, 1500, 99, 1500, 60]
    windows = []
    for seed in range(20):
        order = days[:]
        random_module.Random(seed).shuffle(order)
        window = churn.DayWindow()
        for n in order:
            window.add(n)
        windows.append(window)
    assert {(w.count, w.newest, w.mask, w.older) for w in windows} == {(windows[0].count, 1500, windows[0].mask,
                                                                      windows[0].older)}
    assert windows[0].count == len(set(days))
    assert windows[0].recent(3) == [900, 901, 1500]
    merged = churn.DayWindow()
    merged.add(5)
    merged.merge(windows[0])
    assert merged.count == len(set(days)) + 1


# --------------------------------------------------------------------------- learned weights


def rhythmic_population(n, weeks, rng):
    """Customers with their own rhythm (every 5–60 days) who each stop for good at a random
    time: silence long against one's own rhythm, not against the population's, means gone."""
    out = []
    for i in range(n):
        gap = rng.choice([5, 10, 20, 40, 60])
        start = rng.randrange(0, 60)
        stop = rng.randrange(start + 1, weeks * 7 + 200)
        days, d = [], start
        while d < min(stop, weeks * 7):
            days.append(d)
            d += max(1, int(rng.gauss(gap, gap / 5)))
        out.append((f"c-{i}", days))
    return out


def _sample_of(population, size=4000, until_day=None):
    sample = PopulationSample(size=size)
    for cid, days in population:
        rhythm = Observed()
        for k, d in enumerate(d for d in days if until_day is None or d < until_day):
            rhythm.observe(purchase(d, cid, eid=f"{cid}-{k}"))
        sample.update(cid, rhythm.view)
    return sample


def _holdout_auc(model, population, now_day, horizon_days, rng_days):
    from omnirec.evaluate_churn import auc

    scores, labels = [], []
    for cid, days in population:
        seen = [d for d in days if d < now_day]
        if not seen:
            continue
        r = Observed()
        for k, d in enumerate(seen):
            r.observe(purchase(d, cid, eid=f"{cid}-{k}"))
        scores.append(model.score(r.view, day(now_day)))
        labels.append(0 if any(now_day <= d < now_day + horizon_days for d in days) else 1)
    return auc(scores, labels)


def test_churn_weights_are_learned_from_the_streams_own_later_purchases():
    rng = random.Random(3)
    population = rhythmic_population(1500, 53, rng)
    sample = _sample_of(population, until_day=40 * 7)
    now = day(40 * 7)
    model = ChurnModel(horizon_weeks=13).refit(sample, now, max_iter=300)
    default = ChurnModel(params=model.params, gap_prior_log_days=model.gap_prior_log_days, horizon_weeks=13)
    assert model.weights != default.weights
    for name in churn.GROWS_IN_SILENCE:  # the score still only rises in silence
        assert getattr(model.weights, name) >= 0
    # judged on what happens next (not seen by the fit): better than the starting weights
    learned = _holdout_auc(model, population, 40 * 7, 91, rng)
    start = _holdout_auc(default, population, 40 * 7, 91, rng)
    assert learned > start and learned > 0.8
    assert ChurnModel.from_dict(model.to_dict()).weights == model.weights


def test_learned_weights_depend_on_the_sample_alone():
    rng = random.Random(5)
    population = rhythmic_population(400, 30, rng)
    forward, backward = _sample_of(population), _sample_of(list(reversed(population)))
    now = day(30 * 7)
    a, b = ChurnModel().refit(forward, now), ChurnModel().refit(backward, now)
    assert a.weights == b.weights
    earlier = ChurnModel(weights=churn.ChurnWeights(bias=3.0, silence=1.0))
    assert earlier.refit(forward, now).weights == a.weights  # not path-dependent


def test_too_short_a_history_keeps_the_weights():
    population = [(f"c-{i}", [i % 10, 12 + i % 5]) for i in range(200)]
    model = ChurnModel().refit(_sample_of(population), day(20))
    assert model.weights == churn.ChurnWeights()


def test_a_timer_does_not_depend_on_whether_the_refit_tick_came_first():
    """Partitions run ahead of each other in a replay: a customer's update whose event came
    before a refit boundary may reach the shard after the shard's tick for that boundary. It
    is scored with the model in force at its event time either way."""
    import copy

    from online_models.churn import PopulationShard

    shard = PopulationShard(min_fit_customers=5)
    shard.tick(day(0))
    boundary = shard.next_refit
    start = (boundary - day(0)) / 86_400_000
    for i in range(40):  # a population that has bought before the boundary
        buyer = rhythm_of([start - 60 + (i % 9), start - 40 + (i % 5), start - 20 + (i % 3)], f"p-{i}")
        shard.update(f"p-{i}", buyer.view, None, buyer.state.sketch_keys(buyer.view), buyer.view.last_ts)
    late = rhythm_of([start - 50, start - 30, start - 1], "c-late")  # bought the day before the boundary
    keys_ = late.state.sketch_keys(late.view)
    before = copy.deepcopy(shard)  # the update arrives before the tick ...
    timer_first = before.update("c-late", late.view, None, keys_, late.view.last_ts)
    assert shard.tick(boundary + 3_600_000)  # ... or the refit tick comes first
    assert shard.model.fitted_at == boundary and shard.model != before.model
    assert shard.model_at(late.view.last_ts) is shard.previous
    assert shard.update("c-late", late.view, None, keys_, late.view.last_ts) == timer_first
    # an update of an event after the boundary is scored with the new model
    assert shard.model_at(boundary + 1) is shard.model
