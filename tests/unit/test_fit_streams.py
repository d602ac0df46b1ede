"""The weight-fitting procedure's inputs and its home-list weight (docs/weights.md)."""

from omnirec.fit_streams import first_purchases_only
from omnirec.fit_weights import FEATURE_OF, PARTS
from online_models.customer import CustomerState
from online_models.decay import Decay
from online_models.items import Neighbor, PopularityIndex
from online_models.ranking import Request, Weights, recommend

from .helpers import CATALOG, day, purchase


def test_the_stream_without_repeats_keeps_each_customers_first_purchase_of_each_item_only():
    stream = [{"type": "product", "sku": "A"},
              {"type": "purchase", "customer_id": "c", "items": [{"sku": "A"}, {"sku": "B"}]},
              {"type": "purchase", "customer_id": "d", "items": [{"sku": "A"}]},
              {"type": "purchase", "customer_id": "c", "items": [{"sku": "A"}]},
              {"type": "purchase", "customer_id": "c", "items": [{"sku": "B"}, {"sku": "C"}]}]
    kept = [(e.get("customer_id"), [i["sku"] for i in e.get("items", ())]) for e in first_purchases_only(stream)]
    assert kept == [(None, []), ("c", ["A", "B"]), ("d", ["A"]), ("c", ["C"])]


def test_the_fit_weighs_the_home_lists_complements_and_leaves_the_tills_alone():
    assert "home_complement" in PARTS and "complement" not in PARTS
    assert FEATURE_OF["home_complement"] == "complement"


def test_home_complement_weighs_complements_on_the_home_list_only():
    state = CustomerState("c-1")
    state.apply(purchase("p1", skus=("TR-1",), ts=day(0)), Decay(14))
    neighbours = {"TR-1": [Neighbor("BL-1", 0.9, 0.5)]}
    popular = PopularityIndex(global_top=["PH-1"])
    no_home = Weights(home_complement=0.0)

    def score(context, weights):
        request = Request(context, skus=("TR-1",) if context != "home" else (), k=10, now_ms=day(1))
        found = {s.sku: s for s in recommend(state, request, neighbours, popular, CATALOG, weights=weights)}
        return found["BL-1"].score

    assert score("home", no_home) < score("home", Weights(home_complement=1.0))
    assert score("product", no_home) == score("product", Weights(home_complement=1.0))
