"""Churn alerts through the engine: timers in buckets of event time, one alert per lapse,
the same alerts whatever order the bucket firings and newer timers arrive in."""

import itertools
from dataclasses import replace

import orjson

from online_models.churn import Alert
from online_models.clock import DAY_MS
from online_models.engine import Engine, EngineSettings, Runner
from online_models.events import format_ts
from online_models.messages import Fired, Raw, Timer
from online_models.timers import AlertGate, TimerBucket

from .helpers import T0

ENGINE = EngineSettings(churn_shards=2, churn_threshold=0.85)


def purchase(customer, day, value=40.0, n=0):
    return {"event_id": f"{customer}-{day}-{n}", "type": "purchase", "ts": format_ts(T0 + int(day * DAY_MS)),
            "channel": "store", "customer_id": customer, "store_id": "s-1",
            "items": [{"sku": "A", "qty": 1, "price": value}]}


def raws(envelopes, topic="store.events", partition=0):
    return [Raw(topic, partition, i, e["customer_id"].encode(), orjson.dumps(e)) for i, e in enumerate(envelopes)]


def run(records, until_day):
    alerts = []
    runner = Runner(Engine(ENGINE), on_output=lambda m: alerts.append(m) if isinstance(m, Alert) else None)
    runner.feed_all(records)
    runner.advance_clock(T0 + int(until_day * DAY_MS))
    return alerts, runner


def regular(customer, days=(0, 7, 14, 21, 28), value=40.0):
    return [purchase(customer, d, value) for d in days]


def test_a_silent_customer_gets_exactly_one_alert_once_the_clock_passes():
    alerts, runner = run(raws(regular("c-1")), until_day=28)
    assert alerts == []  # they just bought
    alerts, runner = run(raws(regular("c-1")), until_day=400)
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.customer_id == "c-1" and alert.episode == T0 + 28 * DAY_MS
    # due as soon as they lapse (2.5 × their weekly gap), not when the population model gives up on them
    assert alert.ts_ms == T0 + 28 * DAY_MS + int(17.5 * DAY_MS) + 1
    assert alert.reasons[0] == "last bought 17 days ago, 2.4 times their usual gap of 7 days"
    assert alert.value_at_risk > 0
    runner.advance_clock(T0 + 800 * DAY_MS)
    assert len(alerts) == 1  # once per lapse episode


def test_a_purchase_before_the_due_time_cancels_the_alert_and_one_after_raises_it():
    _, runner = run(raws(regular("c-1")), until_day=28)
    due = runner.states["alert_gate"]["c-1"].pending.due_ts
    due_day = (due - T0) / DAY_MS
    early, _ = run(raws(regular("c-1") + [purchase("c-1", due_day - 1)]), until_day=due_day + 1)
    assert early == []  # they came back in time
    late, _ = run(raws(regular("c-1") + [purchase("c-1", due_day + 3)]), until_day=due_day + 4)
    assert [a.ts_ms for a in late] == [due]  # they lapsed, then came back: the lapse is still raised


def test_interleavings_of_partitions_raise_the_same_alerts():
    customers = [f"c-{i}" for i in range(12)]
    a = raws([e for c in customers[:6] for e in regular(c, value=20 + len(c))], "store.events", 0)
    b = raws([e for c in customers[6:] for e in regular(c, days=(1, 5, 12))], "web.events", 1)
    by_time = sorted(a + b, key=lambda r: orjson.loads(r.value)["ts"])
    first, _ = run(a + b, until_day=500)
    second, _ = run(by_time, until_day=500)
    assert len(first) == 12
    assert sorted(first, key=lambda x: x.customer_id) == sorted(second, key=lambda x: x.customer_id)


def test_the_gate_raises_the_same_whatever_arrives_first():
    alert = Alert("c-1", 100, 0.9, 10.0, "gold", ("silent",), episode=1)
    older = Timer("c-1", 1, 10, 100, alert)
    came_back = Timer("c-1", 2, 150, 400, Alert("c-1", 400, 0.9, 10.0, "gold", (), episode=2))
    back_in_time = Timer("c-1", 2, 90, 400, Alert("c-1", 400, 0.9, 10.0, "gold", (), episode=2))
    for newer, raised in ((came_back, [alert]), (back_in_time, [])):
        for order in itertools.permutations([older, Fired(older), newer]):
            if order.index(older) > order.index(newer):
                continue  # one customer's timers come from one shard key, in order
            if newer is back_in_time and order.index(Fired(older)) < order.index(newer):
                continue  # the clock passed the due time before the earlier event was read: a race
            gate, out = AlertGate(), []
            for message in order:
                out += gate.on_fired(message) if isinstance(message, Fired) else gate.on_timer(message)
            assert out == raised, order


def test_a_finished_bucket_fires_late_timers_at_once_and_holds_nothing():
    bucket = TimerBucket()
    timer = Timer("c-1", 1, 10, 100, None)
    assert bucket.arm(timer) == []
    assert bucket.finish() == [Fired(timer)] and bucket.timers == {}
    assert bucket.arm(Timer("c-2", 1, 10, 101, None)) == [Fired(Timer("c-2", 1, 10, 101, None))]


def ret(customer, day, value=40.0):
    return {**purchase(customer, day, value), "event_id": f"r-{customer}-{day}", "type": "return"}


def test_a_valuable_regular_is_alerted_when_they_lapse_and_a_worthless_one_never():
    # A replay of history: a weekly spender stops after six weeks; another returned their only
    # purchase. The stream moves on (others keep buying) and ends; nothing runs on wall time.
    others = [purchase(f"o-{c}", d) for c in range(5) for d in range(0, 200, 10)]
    history = sorted(regular("weekly", days=tuple(range(100, 142, 7)), value=60.0)
                     + [purchase("zero", 120, 30.0), ret("zero", 125, 30.0)] + others, key=lambda e: e["ts"])
    alerts, _ = run(raws(history), until_day=200)
    weekly = [a for a in alerts if a.customer_id == "weekly"]
    assert len(weekly) == 1 and weekly[0].ts_ms < T0 + (135 + 18) * DAY_MS  # within 18 days of silence
    assert weekly[0].value_at_risk > 0
    assert [a for a in alerts if a.customer_id == "zero"] == []  # value at risk 0.00: no alert


def test_the_value_floor_is_relative_to_the_population():

    from online_models.churn import PopulationShard
    from tests.unit.helpers import Observed
    from tests.unit.helpers import purchase as bought

    buyer = Observed("c-1")
    for n in range(6):
        buyer.observe(bought(f"p{n}", customer="c-1", ts=T0 + n * 7 * DAY_MS, price=10.0))
    shard = PopulationShard()
    due, alert = shard.update("c-1", buyer.view, None, buyer.state.sketch_keys(buyer.view), T0 + 35 * DAY_MS)
    assert due is not None and alert.value_at_risk > 0  # no population yet: any value above 0 counts
    rich = replace(shard.model, median_value_at_risk=alert.value_at_risk * 3)
    shard.model = rich  # in a population whose median customer has three times their value at risk
    assert shard.update("c-1", buyer.view, None, buyer.state.sketch_keys(buyer.view), T0 + 35 * DAY_MS) == (None, None)




def test_a_population_too_small_to_fit_a_model_still_has_a_value_floor():
    """Forty customers over two churn shards: neither fits a model (fewer than 50 sampled
    each), so the readers' floor comes from the two shards' samples pooled. A lapsing customer
    who spent little is left out; one who spent a lot is listed."""
    from online_models import answers, keys
    from online_models.profile import Population

    records = [p for i in range(40) for p in regular(f"c-{i:02d}", value=40.0)]
    records += regular("c-small", value=2.0) + regular("c-big", value=400.0)
    alerts, runner = run(raws(records), until_day=400)
    shards = runner.states["population"]
    assert all(state.model.median_value_at_risk is None for state in shards.values())  # no fit: no floor in the flow
    published = {int(key.split(":")[1]): keys.decode_churn_shard(keys.encode_churn_shard(state))
                 for key, state in shards.items()}
    population = Population.merge(ENGINE.churn_shards, published)
    median = population.median_value_at_risk()
    assert median is not None
    listed = answers.alerts_by_value([{**a.to_dict(), "id": f"{n}-0"} for n, a in enumerate(alerts)], median)
    names = {a["customer_id"] for a in listed}
    assert "c-big" in names and "c-small" not in names



def test_a_shard_past_fifty_customers_publishes_its_sample_until_its_first_refit():
    """Between growing past the 50 customers a fit needs and its first refit (a week of event
    time), a shard has no median of its own: it keeps publishing 50 rows of its sample, so the
    readers' value floor does not vanish meanwhile; once fitted, it publishes none."""
    from online_models.churn import PopulationShard
    from tests.unit.helpers import Observed
    from tests.unit.helpers import purchase as bought

    shard = PopulationShard()
    for n in range(60):
        buyer = Observed(f"c-{n}")
        for d in range(3):
            buyer.observe(bought(f"p{n}-{d}", customer=f"c-{n}", ts=T0 + d * 7 * DAY_MS, price=10.0 + n))
        shard.update(f"c-{n}", buyer.view, None, buyer.state.sketch_keys(buyer.view), T0 + 14 * DAY_MS)
    rows = shard.small_sample_rows()
    assert rows is not None and len(rows) == shard.min_fit_customers
    shard.refit(T0 + 20 * DAY_MS)
    assert shard.model.median_value_at_risk is not None and shard.small_sample_rows() is None
