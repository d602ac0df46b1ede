"""The weight-fitting procedure's inputs and its home-list weight (docs/weights.md)."""

from dataclasses import replace

import numpy as np
import pytest

from omnirec.fit_streams import first_purchases_only
from omnirec.fit_weights import PARTS, Collected, Point, objective, recall
from online_models import ranking
from online_models.customer import CustomerState
from online_models.decay import Decay
from online_models.items import Neighbor, PopularityIndex
from online_models.ranking import Request, recommend

from .helpers import CATALOG, day, purchase


def test_the_stream_without_repeats_keeps_each_customers_first_purchase_of_each_item_only():
    stream = [{"type": "product", "sku": "A"},
              {"type": "purchase", "customer_id": "c", "items": [{"sku": "A"}, {"sku": "B"}]},
              {"type": "purchase", "customer_id": "d", "items": [{"sku": "A"}]},
              {"type": "purchase", "customer_id": "c", "items": [{"sku": "A"}]},
              {"type": "purchase", "customer_id": "c", "items": [{"sku": "B"}, {"sku": "C"}]}]
    kept = [(e.get("customer_id"), [i["sku"] for i in e.get("items", ())]) for e in first_purchases_only(stream)]
    assert kept == [(None, []), ("c", ["A", "B"]), ("d", ["A"]), ("c", ["C"])]


def test_each_context_ranks_with_its_own_fitted_blend_unless_one_is_given():
    state = CustomerState("c-1")
    state.apply(purchase("p1", skus=("TR-1",), ts=day(0)), Decay(14))
    neighbours = {"TR-1": [Neighbor("BL-1", 0.9, 0.5)]}
    popular = PopularityIndex(global_top=["PH-1"])

    def belt(context, weights=None):
        request = Request(context, skus=("TR-1",) if context != "home" else (), k=10, now_ms=day(1))
        found = {s.sku: s for s in recommend(state, request, neighbours, popular, CATALOG, weights=weights,
                                             every_signal=True)}
        return found["BL-1"]

    for context in ("home", "cart"):
        fitted = ranking.FITTED[context]
        assert belt(context).score == belt(context, fitted).score
        assert belt(context, replace(fitted, complement=fitted.complement + 1)).score > belt(context).score
    assert belt("home").features["complement"] > 0  # the fit sees the part, whatever its weight


def test_the_fit_ranks_a_till_point_as_the_till_does_tiers_first_then_penalised_scores():
    parts = np.zeros((3, len(PARTS)))
    parts[:, PARTS.index("complement")] = [1.0, 0.5, 0.4]
    point = Point(parts, np.arange(3), np.array([True, False, False]), 1,
                  tier=np.array([1, 0, 0]), multiplier=np.array([1.0, 1.0, 0.3]))
    weights = np.array([getattr(ranking.Weights(), p) for p in PARTS])
    assert recall([point], weights, 1) == 0.0  # the best blend is tier 1: after every tier 0
    assert recall([point], weights, 2) == 0.0
    assert recall([point], weights, 3) == 1.0
    point.tier = np.zeros(3, dtype=int)
    assert recall([point], weights, 1) == 1.0


def test_the_objective_divides_by_the_strongest_simple_baseline_and_no_stream_steers_it():
    def stream(name, recalled, gp, popular):
        parts = np.zeros((2, len(PARTS)))
        parts[:, PARTS.index("popularity")] = [1.0, 0.5]
        hit = np.array([recalled, not recalled])
        return Collected(name, [Point(parts, np.arange(2), hit, 1, np.zeros(2, dtype=int), np.ones(2))], gp, popular)

    weights = np.array([getattr(ranking.Weights(), p) for p in PARTS])
    grocery = stream("grocery", True, gp=0.5, popular=0.25)  # Recall@1 1.0: twice GP-TopFreq
    no_repeats = stream("movies", True, gp=0.01, popular=0.25)  # GP-TopFreq useless: popularity is the bar
    assert no_repeats.baseline_recall == 0.25
    assert objective([grocery, no_repeats], weights, 1) == pytest.approx((2.0 * 4.0) ** 0.5)
    # A stream the blend misses entirely pulls the geometric mean to nearly nothing: no stream is given up.
    assert objective([grocery, stream("missed", False, 0.5, 0.25)], weights, 1) < 1e-3
