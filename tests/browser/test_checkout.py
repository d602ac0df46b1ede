"""The checkout assistant in a real browser: identify a customer, add trousers, see the belt
suggestion with its reason, accept the next best offer and find the feedback on the broker."""

from __future__ import annotations

import orjson
import pytest
from playwright.sync_api import expect

from tests.integration.kafka_tools import consume, wait_for
from tests.seed import history

from .conftest import api_get, save_key, screenshot, seed

pytestmark = pytest.mark.browser


def test_a_sales_assistant_serves_a_customer_at_checkout(settings, run_flow, serve_api, pages):
    settings = settings.model_copy(update={"nbo_control_share": 0.0})
    flow = run_flow(settings)
    seed(settings, history())
    base_url = serve_api(settings)
    wait_for(lambda: (p := api_get(base_url, "/v1/customers/c-19"))["rfm"]["frequency"] == 2 and p
             if _exists(base_url, "c-19") else None, 60, "the flow to build c-19's profile")
    wait_for(lambda: api_get(base_url, "/v1/customers/c-3/next-best-offer?channel=store")["offer"], 20,
             "the offers to reach the API")

    pages.base_url = base_url
    page = pages.open("/app")
    expect(page.get_by_role("heading", name="Checkout assistant")).to_be_visible()
    save_key(page)

    # Identify the customer: their card shows tier, segment, channel, categories and churn risk.
    page.get_by_label("Loyalty card or customer id").fill("c-3")
    page.get_by_label("Loyalty card or customer id").press("Enter")
    card = page.locator("#customer-card")
    expect(card.get_by_role("heading", name="c-3")).to_be_visible(timeout=10_000)
    expect(card).to_contain_text("Preferred channel")
    expect(card).to_contain_text("Store")
    expect(card).to_contain_text("Coffee")
    expect(page.locator("#churn-risk")).to_contain_text("Churn risk")

    # The basket: search, add; the belt is suggested with its reason within moments.
    page.get_by_label("Find a product by name or SKU").fill("trousers")
    add = page.get_by_role("button", name="Add Slim trousers to the basket")
    add.click()
    expect(page.locator("#basket")).to_contain_text("Slim trousers")
    belt = page.locator("#cross-sell .suggestion[data-sku='BL-1']")
    expect(belt).to_be_visible(timeout=5_000)
    expect(belt).to_contain_text("Leather belt")
    expect(belt.locator(".reasons")).to_contain_text("bought with Slim trousers in")
    expect(belt.locator(".reasons")).to_contain_text("of baskets")

    # The next best offer is shown (an impression is sent) with its reasons.
    offer = page.locator("#offer .offer-card")
    expect(offer).to_be_visible(timeout=10_000)
    expect(offer.locator(".reasons")).not_to_be_empty()
    screenshot(page, "checkout-tablet")

    # Accept it: a confirmation, and the feedback reaches the broker.
    offer.get_by_role("button", name="Accept").click()
    expect(page.locator("#offer-confirmation")).to_contain_text("Accepted", timeout=10_000)
    expect(offer.get_by_role("button", name="Accept")).to_be_disabled()
    screenshot(page, "checkout-accepted")

    messages = consume(settings, settings.topic_feedback, expected=2, timeout=20)
    feedback = [orjson.loads(m.value()) for m in messages]
    events = {f["type"] for f in feedback if f["customer_id"] == "c-3" and f["decision_id"]}
    assert {"impression", "accept"} <= events, feedback
    accepted = next(f for f in feedback if f["type"] == "accept")
    assert accepted["offer_id"] in {"belt-bundle", "coffee-points"} and accepted["channel"] == "store"

    # Adding the suggestion with a tap moves it into the basket; removing empties it again.
    belt.get_by_role("button", name="Add Leather belt to the basket").click()
    expect(page.locator("#basket")).to_contain_text("Leather belt")
    expect(page.locator("#basket-count")).to_have_text("2")
    for name in ("Leather belt", "Slim trousers"):
        page.get_by_role("button", name=f"Remove {name} from the basket").click()
    expect(page.locator("#cross-sell")).to_contain_text("Add something to the basket")

    # A phone: one column, nothing wider than the screen.
    phone = pages.open("/app", width=390, height=844)  # a new device: the key is typed once more
    save_key(phone)
    phone.get_by_label("Loyalty card or customer id").fill("c-3")
    phone.get_by_role("button", name="Identify").click()
    expect(phone.locator("#customer-card").get_by_role("heading", name="c-3")).to_be_visible(timeout=10_000)
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(phone, "checkout-phone")
    assert flow.alive(), flow.log()


def test_an_anonymous_shopper_gets_basket_suggestions_by_keyboard(settings, run_flow, serve_api, pages):
    run_flow(settings)
    seed(settings, history(9))
    base_url = serve_api(settings)
    wait_for(lambda: _exists(base_url, "c-8"), 60, "the flow to build the profiles")
    wait_for(lambda: api_get(base_url, "/v1/catalog/search?q=trousers")["items"], 20, "the catalog")

    pages.base_url = base_url
    page = pages.open("/app")
    save_key(page)
    page.get_by_role("button", name="Anonymous").click()
    expect(page.locator("#customer-card")).to_contain_text("Anonymous shopper")
    search = page.get_by_label("Find a product by name or SKU")
    search.fill("slim")
    expect(page.locator("#search-results")).to_contain_text("Slim trousers")
    search.press("Enter")  # the first match goes into the basket
    expect(page.locator("#basket")).to_contain_text("Slim trousers")
    expect(page.locator("#cross-sell .suggestion[data-sku='BL-1']")).to_be_visible(timeout=5_000)
    expect(page.locator("#offer")).to_contain_text("Identify the customer")


def _exists(base_url: str, customer_id: str) -> bool:
    import urllib.error

    try:
        api_get(base_url, f"/v1/customers/{customer_id}")
        return True
    except urllib.error.HTTPError:
        return False
