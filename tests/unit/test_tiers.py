"""Value tiers from a streaming sketch, RFM cells, behaviour segments."""

import math
import pickle

import pytest

from online_models import tiers
from online_models.events import Event, Item
from tests.unit.helpers import Observed, day

PARETO_ALPHA = 1.5
X_M = 10.0
N = 20_000


def pareto_values(n=N, alpha=PARETO_ALPHA, x_m=X_M):
    # deterministic quantile grid of a Pareto(α, x_m) revenue distribution
    return [x_m * (1 - (i + 0.5) / n) ** (-1 / alpha) for i in range(n)]


def pareto_sketch(values):
    sketch = tiers.Sketch()
    for v in values:
        sketch.add(math.log(v))
    return sketch


def test_tier_boundaries_on_pareto_revenue():
    values = pareto_values()
    result = tiers.ValueTiers.from_sketch(pareto_sketch(values))
    platinum, gold, rest = result.tiers
    assert [t.name for t in result.tiers] == ["platinum", "gold", "standard"]
    # boundaries at the 95th and 80th percentiles: x_m (1 − q)^(−1/α), within one 2 % bucket
    assert math.exp(platinum.min_log_value) == pytest.approx(X_M * 0.05 ** (-1 / PARETO_ALPHA), rel=0.025)
    assert math.exp(gold.min_log_value) == pytest.approx(X_M * 0.20 ** (-1 / PARETO_ALPHA), rel=0.025)
    assert platinum.customer_share == pytest.approx(0.05, abs=0.003)
    assert gold.customer_share == pytest.approx(0.15, abs=0.003)
    # the top 5 % of a Pareto(1.5) population make 0.05^(1 − 1/α) ≈ 36.8 % of revenue
    exact_top = sum(sorted(values)[-N // 20:]) / sum(values)
    assert platinum.revenue_share == pytest.approx(exact_top, abs=0.01)
    assert platinum.revenue_share + gold.revenue_share + rest.revenue_share == pytest.approx(1.0)


def test_tier_of_uses_the_boundaries():
    result = tiers.ValueTiers.from_sketch(pareto_sketch(pareto_values()))
    top = X_M * 0.05 ** (-1 / PARETO_ALPHA)
    mid = X_M * 0.20 ** (-1 / PARETO_ALPHA)
    assert result.tier_of(top * 1.1) == "platinum"
    assert result.tier_of(top * 0.9) == "gold"
    assert result.tier_of(mid * 1.05) == "gold"
    assert result.tier_of(mid * 0.9) == "standard"
    assert result.tier_of(0.0) == "standard"
    assert result.tier_of(-5.0) == "standard"


def test_configurable_tiers_by_revenue_share():
    values = pareto_values()
    result = tiers.ValueTiers.from_sketch(pareto_sketch(values), shares=(("vip", 0.5),),
                                          rest="others", basis="revenue")
    vip, others = result.tiers
    assert (vip.name, others.name) == ("vip", "others")
    assert vip.revenue_share == pytest.approx(0.5, abs=0.01)
    # half the revenue of a Pareto(1.5) comes from the top 0.5^(1/(1 − 1/α)) = 12.5 % of customers
    assert vip.customer_share == pytest.approx(0.125, abs=0.01)


def test_sketch_is_small_mergeable_picklable_and_quantiles_hold():
    values = pareto_values()
    whole = pareto_sketch(values)
    shards = [tiers.Sketch() for _ in range(8)]
    for i, v in enumerate(values):
        shards[i % 8].add(math.log(v))
    merged = tiers.Sketch.merged(shards)
    assert merged.counts == whole.counts and merged.total == N
    assert len(whole.counts) < 600  # buckets, not values
    median = math.exp(whole.quantile(0.5))
    assert median == pytest.approx(X_M * 0.5 ** (-1 / PARETO_ALPHA), rel=0.02)
    again = pickle.loads(pickle.dumps(whole))
    assert again == whole
    assert tiers.Sketch.from_dict(whole.to_dict()) == whole


def test_population_sketch_moves_a_customer_without_remembering_them():
    pop = tiers.PopulationSketch()
    first = tiers.sketch_keys(math.log(100.0), day(0), 1)
    pop.move(None, first)
    pop.move(first, first)  # nothing changed: nothing moves
    assert pop.value.total == 1
    pop.move(first, tiers.sketch_keys(math.log(300.0), day(10), 2))
    assert pop.value.total == pop.recency.total == pop.frequency.total == 1
    assert pop.value.quantile(0.5) == pytest.approx(math.log(300.0), abs=tiers.VALUE_WIDTH)
    # moves commute: another customer's move out may arrive before a move in
    x, y = tiers.PopulationSketch(), tiers.PopulationSketch()
    k1, k2 = tiers.sketch_keys(1.0, day(1), 1), tiers.sketch_keys(2.0, day(2), 3)
    for sketch, moves in ((x, [(None, k1), (k1, k2), (None, k1)]), (y, [(None, k1), (None, k1), (k1, k2)])):
        for old, new in moves:
            sketch.move(old, new)
    assert x.to_dict() == y.to_dict()
    a, b = tiers.PopulationSketch(), tiers.PopulationSketch()
    a.move(None, tiers.sketch_keys(1.0, day(1), 1))
    b.move(None, tiers.sketch_keys(2.0, day(2), 3))
    merged = tiers.PopulationSketch.merged([a, b])
    assert merged.value.total == 2
    assert tiers.PopulationSketch.from_dict(merged.to_dict()).value == merged.value


def test_rfm_quintiles():
    pop = tiers.PopulationSketch()
    for i in range(100):
        pop.move(None, tiers.sketch_keys(math.log(10.0 + i * 10), day(i), 1 + i // 10))
    best = pop.rfm(math.log(1000.0), day(99), 10)
    worst = pop.rfm(math.log(10.0), day(0), 1)
    assert best == "555"
    assert worst == "111"
    assert pop.rfm(math.log(505.0), day(50), 6)[0] == "3"


def test_shard_of_is_stable_and_spread():
    assert tiers.shard_of("c-42", 16) == tiers.shard_of("c-42", 16)
    counts = [0] * 8
    for i in range(8000):
        counts[tiers.shard_of(f"c-{i}", 8)] += 1
    assert min(counts) > 800


# --------------------------------------------------------------------------- segments


def buy(rhythm, n, channel="web", value=50.0, store="s-1"):
    rhythm.observe(Event(f"p{n}", "purchase", day(n), channel, customer_id="c",
                         store_id=store if channel == "store" else None,
                         items=(Item("SKU", 1, value),)))


def look(rhythm, n, kind="page_view", channel="web"):
    rhythm.observe(Event(f"v{n}{kind}", kind, day(n), channel, customer_id="c"))


def test_segments_on_crafted_histories():
    store_only = Observed()
    for n in (0, 30, 60):
        buy(store_only, n, "store")
    assert tiers.segment(store_only, day(70)) == "store_only"

    browses_web_buys_store = Observed()
    for n in (1, 5, 9, 20):
        look(browses_web_buys_store, n)
    for n in (2, 21, 40):
        buy(browses_web_buys_store, n, "store")
    assert tiers.segment(browses_web_buys_store, day(45)) == "web_browses_store_buys"

    web_only = Observed()
    for n in (0, 20, 40):
        buy(web_only, n, "web")
    assert tiers.segment(web_only, day(50)) == "web_only"

    omni = Observed()
    buy(omni, 0, "web")
    buy(omni, 15, "store")
    buy(omni, 40, "app")
    assert tiers.segment(omni, day(50)) == "omnichannel"

    returner = Observed()
    for n in (0, 10, 20):
        buy(returner, n, "web", value=100.0)
        returner.observe(Event(f"r{n}", "return", day(n + 3), "web", customer_id="c",
                               items=(Item("SKU", 1, 100.0),)))
    assert tiers.segment(returner, day(30)) == "returner"
    assert "web_only" in tiers.segments(returner, day(30))

    new = Observed()
    buy(new, 0, "web")
    assert tiers.segment(new, day(10)) == "new"
    assert tiers.segment(new, day(60)) == "web_only"

    regular = Observed()  # 53 purchase days within four weeks (a replayed history): not "new"
    for n in range(53):
        buy(regular, n * 0.5, "web")
    assert "new" not in tiers.segments(regular, day(27))
    busy_first_day = Observed()  # 7 orders on their first day: a regular already, not "new"
    for n in range(7):
        buy(busy_first_day, n * 0.01, "web")
    assert "new" not in tiers.segments(busy_first_day, day(1))
    second = Observed()  # two orders the same day are still new
    buy(second, 0, "web")
    buy(second, 0.01, "store")
    assert tiers.segment(second, day(1)) == "new"

    loyal = Observed()
    for n in range(0, 120, 14):
        buy(loyal, n, "store")
    buy(loyal, 115, "web")
    assert tiers.segment(loyal, day(120)) == "loyal"
    assert "omnichannel" in tiers.segments(loyal, day(120))
    assert "loyal" not in tiers.segments(loyal, day(112 + 60))  # silent for 4 gaps: lapsing, no longer loyal

    lapsed = Observed()
    for n in (0, 10, 20, 30):
        buy(lapsed, n, "store")
    assert tiers.segment(lapsed, day(100)) == "store_only"  # 70 days: not yet lapsed ...
    assert "lapsing" in tiers.segments(lapsed, day(100))  # ... but slipping away (7 gaps of 10 days)
    assert "lapsing" not in tiers.segments(lapsed, day(40))  # 10 days: their rhythm
    assert tiers.segment(lapsed, day(30 + 181)) == "lapsed"
    assert "lapsing" not in tiers.segments(lapsed, day(30 + 181))  # one stage at a time

    assert tiers.segment(Observed(), day(0)) == "prospect"
    assert set(tiers.SEGMENT_ORDER) == set(tiers.SEGMENT_RULES)  # every segment has its rule written


def test_returner_segment_uses_the_one_returns_a_lot_rule():
    # A third of the value returned: a returner at the old 0.3, not at rules' 0.35.
    third = Observed()
    for n in (0, 10, 20):
        buy(third, n, "web", value=100.0)
    third.observe(Event("r0", "return", day(21), "web", customer_id="c", items=(Item("SKU", 1, 100.0),)))
    assert "returner" not in tiers.segments(third, day(25))
    third.observe(Event("r1", "return", day(22), "web", customer_id="c", items=(Item("SKU", 1, 20.0),)))
    assert "returner" in tiers.segments(third, day(25))  # 120 / 300 = 40 %
