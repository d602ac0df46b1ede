"""The profile shows what the retail rules say, from the same facts the offers read."""

from online_models.customer import CustomerState
from online_models.decay import Decay
from online_models.events import Event, Item
from online_models.offers import customer_cell
from online_models.profile import profile_view, rule_verdicts

from .helpers import CATALOG, day, purchase


def state_of(*events):
    state = CustomerState("c-1")
    for e in events:
        state.apply(e, Decay(14))
    return state


def test_profile_rule_verdicts_match_the_offer_cell():
    weekly = state_of(*[purchase(f"p{i}", ts=day(7 * i)) for i in range(3)])
    assert rule_verdicts(weekly, day(15)) == {"usual_gap_days": 7.0, "lapse": None, "discount_driven_returner": False}
    assert rule_verdicts(weekly, day(40))["lapse"] == "lapsing"
    assert customer_cell(weekly, CATALOG, day(40)).endswith("|lapsing")
    assert rule_verdicts(weekly, day(200))["lapse"] == "lapsed"
    assert profile_view(weekly, day(200), CATALOG)["value"]["segment"] == "lapsed"

    returner = state_of(*[Event(f"p{i}", "purchase", day(i), "web", customer_id="c-1", order_id=f"o{i}",
                                items=(Item("TR-1", 1, 30.0, list_price=60.0),)) for i in range(4)],
                        *[Event(f"r{i}", "return", day(i + 1), "web", customer_id="c-1", order_id=f"o{i}",
                                items=(Item("TR-1", 1, 30.0),)) for i in range(3)])
    verdicts = profile_view(returner, day(5), CATALOG)["value"]["rules"]
    assert verdicts["discount_driven_returner"] and customer_cell(returner, CATALOG) == "discount_returner"


def test_no_history_gives_no_verdicts():
    assert rule_verdicts(CustomerState("c-9"), day(0)) == {
        "usual_gap_days": None, "lapse": None, "discount_driven_returner": False}


def test_a_lapsing_customer_is_at_high_churn_risk_whatever_the_population_model_scores():
    """The demo's checkout card said "Churn risk: Low (17%)" for a customer on the retention
    list: a model fitted on no population scores them low, but their own rhythm says they are
    slipping away."""
    weekly = state_of(*[purchase(f"p{i}", ts=day(7 * i)) for i in range(3)])
    churn = profile_view(weekly, day(40), CATALOG)["value"]["churn"]
    assert churn["score"] < 0.7 and churn["risk"] == "high"
    assert profile_view(weekly, day(15), CATALOG)["value"]["churn"]["risk"] in ("low", "medium")
