"""The retention dashboard's live panel shows the flow's and the API's Prometheus numbers: after
the flow read a few records, two of them dead letters, the panel says 2 dead letters, no step
errors, and the same as the flow's /metrics."""

from __future__ import annotations

import re
import urllib.request

import pytest
from playwright.sync_api import expect
from prometheus_client.parser import text_string_to_metric_families

from omnirec.stack import free_port
from tests.integration.kafka_tools import produce, wait_for
from tests.seed import purchase

from .conftest import api_get, save_key, screenshot, seed

pytestmark = pytest.mark.browser


def dead_letters_on_page(port: int) -> int:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return int(sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == "omnirec_flow_dead_letters_total"))


def test_the_live_panel_shows_the_numbers_of_the_prometheus_metrics(settings, run_flow, serve_api, pages):
    port = free_port()
    run_flow(settings, flow_metrics_port=port)
    seed(settings, [purchase(0, "c-1", ["TR-1"]), purchase(1, "c-1", ["BL-1"])])
    produce(settings, settings.topic_web, [(b"anon", b"not json"), (b"anon", b"[1]")])
    base_url = serve_api(settings)
    wait_for(lambda: api_get(base_url, "/v1/metrics/summary")["flow"]["dead_letters"] == 2, 60, "two dead letters")
    assert dead_letters_on_page(port) == 2  # what Prometheus scrapes from the flow

    pages.base_url = base_url
    page = pages.open("/app/retention", width=1280, height=860)
    save_key(page)
    expect(page.locator("#dead-letters")).to_have_text("2", timeout=10_000)
    expect(page.locator("#step-errors")).to_have_text("0")
    expect(page.locator("#redis-retries")).to_have_text("0")
    expect(page.locator("#alerts-raised")).to_have_text("0")
    expect(page.locator("#consumer-lag")).to_have_text(re.compile(r"^[0-9]+$"))
    expect(page.locator("#api-5xx")).to_have_text("0")
    expect(page.locator("#api-429")).to_have_text("0")
    expect(page.locator("#rate")).to_have_text(re.compile(r"^[0-9.]+$"), timeout=10_000)  # two reports apart
    screenshot(page, "retention-live-panel", full_page=False)
