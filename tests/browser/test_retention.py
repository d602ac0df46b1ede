"""The retention dashboard in a real browser: a lapsing customer's churn alert arrives live
over server-sent events (read with fetch and the API key header), with its value at risk,
reasons and win-back offer; filters and actions work; the live panel shows the flow's metrics."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from tests.integration.kafka_tools import produce, wait_for
from tests.seed import purchase

from .conftest import api_get, save_key, screenshot, seed

pytestmark = pytest.mark.browser
DAY = 86_400_000


def test_a_lapsing_customers_alert_appears_live_on_the_dashboard(settings, run_flow, serve_api, pages):
    # The seeding of tests/integration/test_pipeline.py's churn test: a weekly regular, 400 days
    # ago, and other customers; a much later purchase moves the stream's clock past their due time.
    start = int(time.time() * 1000) - 400 * DAY
    regular = [purchase(week, "c-loyal", ["CF-1"], ts=start + week * 7 * DAY) for week in range(8)]
    others = [purchase(0, f"c-{c}", ["TR-1"], ts=start + (c % 50) * DAY) for c in range(60)]
    later = purchase(0, "c-late", ["CF-1"], ts=start + 300 * DAY)
    replay = settings.model_copy(update={"churn_wall_clock": False, "churn_shards": 2})
    run_flow(replay)
    seed(replay, sorted(regular + others, key=lambda e: e["ts"]))
    base_url = serve_api(replay)
    wait_for(lambda: _orders(base_url, "c-loyal") >= 8, 60, "c-loyal's 8 orders")

    pages.base_url = base_url
    page = pages.open("/app/retention", width=1280, height=860)
    expect(page.get_by_role("heading", name="Retention")).to_be_visible()
    save_key(page)
    expect(page.locator("#connection")).to_have_text("live", timeout=10_000)
    expect(page.locator("#alerts .alert-card[data-customer='c-loyal']")).to_have_count(0)

    produce(settings, settings.topic_store, [(b"c-late", later)])  # the stream moves on
    card = page.locator("#alerts .alert-card[data-customer='c-loyal']")
    expect(card).to_be_visible(timeout=60_000)
    expect(card).to_contain_text("Value at risk")
    expect(card.locator(".reasons li").first).not_to_be_empty()
    expect(card.locator(".suggested")).to_contain_text("Win-back offer:")
    expect(card.locator(".store-chip")).to_have_text("store s-1", timeout=10_000)  # from the profile

    # The live panel: the flow's message rate and today's alerts.
    expect(page.locator("#alerts-today")).to_have_text(re.compile(r"^[1-9][0-9]*$"), timeout=10_000)
    expect(page.locator("#rate")).not_to_have_text("—", timeout=10_000)

    # Filters: by tier, and by store (the customer's last store).
    tier = card.get_attribute("data-tier")
    other = next(t for t in ("platinum", "gold", "standard") if t != tier)
    page.get_by_label("Value tier").select_option(other)
    expect(card).to_be_hidden()
    page.get_by_label("Value tier").select_option(tier)
    expect(card).to_be_visible()
    page.get_by_label("Store").select_option("s-1")
    expect(card).to_be_visible()
    page.get_by_label("Value tier").select_option("")
    screenshot(page, "retention", full_page=False)

    # Actions: contacted is remembered on this device; hidden with "hide handled".
    card.get_by_role("button", name="Contacted").click()
    expect(card.locator(".handled-state")).to_have_text("Marked as contacted")
    page.get_by_label("Hide contacted and dismissed").check()
    expect(card).to_be_hidden()
    page.reload()
    expect(page.locator("#alerts .alert-card[data-customer='c-loyal']")).to_have_attribute(
        "data-handled", "contacted", timeout=15_000)  # replayed from the stream, state kept


def _orders(base_url: str, customer_id: str) -> int:
    import urllib.error

    try:
        return api_get(base_url, f"/v1/customers/{customer_id}")["rfm"]["frequency"]
    except urllib.error.HTTPError:
        return 0
