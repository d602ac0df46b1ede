"""Browser tests: real chromium (Debian's, driven by Playwright) against the API served by
uvicorn on loopback, with the real broker, the real Redis and the real flow.

They fail, never skip, when chromium or playwright is missing: CI must run them.
Screenshots go to tests/browser/artifacts/ (git-ignored)."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from omnirec.settings import Settings
from tests.integration.kafka_tools import produce, wait_for
from tests.seed import CATALOG

CHROMIUM = os.environ.get("OMNIREC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).parent / "artifacts"
TILL_KEY = "till-key"  # recommend + profile: the apps never need admin
KEYS = {TILL_KEY: ["recommend", "profile"]}

OFFERS = [
    {"offer_id": "belt-bundle", "name": "Belt bundle", "kind": "bundle", "value": 12.0, "bundle_skus": ["BL-1"],
     "eligibility": {"categories": ["men"]}, "prior_propensity": 0.3},
    {"offer_id": "coffee-points", "name": "Coffee points", "kind": "loyalty_points", "value": 4.0,
     "eligibility": {"categories": ["grocery"]}, "prior_propensity": 0.3},
]


def seed(settings: Settings, events: list[dict]) -> None:
    """Catalog, offers and purchases onto the broker."""
    produce(settings, settings.topic_catalog, [(p["sku"].encode(), p) for p in CATALOG])
    produce(settings, settings.topic_offers, [(o["offer_id"].encode(), o) for o in OFFERS])
    produce(settings, settings.topic_store, [(e["customer_id"].encode(), e) for e in events])


def _require_browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need the 'playwright' Python package: pip install -e '.[test]' "
                    "(never 'playwright install': they drive Debian's chromium)", pytrace=False)
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"the browser tests need chromium at {CHROMIUM}: apt-get install -y chromium "
                    "(or set OMNIREC_CHROMIUM)", pytrace=False)
    return sync_playwright


@pytest.fixture
def browser():
    """A headless chromium per test (the sync API's loop must not outlive the test)."""
    sync_playwright = _require_browser()
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Page:
    """Opens pages and records JavaScript errors, which fail the test at teardown."""

    def __init__(self, browser, base_url: str):
        self.browser, self.base_url, self.errors = browser, base_url, []
        self.contexts = []

    def open(self, path: str, width: int = 1024, height: int = 768):
        context = self.browser.new_context(viewport={"width": width, "height": height}, base_url=self.base_url)
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", lambda msg: msg.type == "error" and "Failed to load resource" not in msg.text
                and self.errors.append(msg.text))
        page.goto(path)
        return page

    def close(self):
        for context in self.contexts:
            context.close()


@pytest.fixture
def serve_api(tmp_path) -> Callable[[Settings], str]:
    """``serve_api(settings) -> base_url``: uvicorn in a subprocess on a free loopback port with
    OMNIREC_* from ``settings`` (plus the till key); stopped at teardown."""
    from omnirec.stack import free_port, settings_env, stop_pid

    procs = []

    def start(settings: Settings) -> str:
        settings = settings.model_copy(update={"api_keys": KEYS, "api_catalog_refresh_s": 0.2})
        port = free_port()
        with open(tmp_path / f"api-{port}.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port),
                 "--log-level", "warning"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**settings_env(settings), "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        procs.append(proc)
        base_url = f"http://127.0.0.1:{port}"

        def ready():
            assert proc.poll() is None, (tmp_path / f"api-{port}.log").read_text()
            try:
                with urllib.request.urlopen(base_url + "/readyz", timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for(ready, 30, "the API to be ready")
        return base_url

    yield start
    for proc in procs:
        stop_pid(proc.pid, timeout=5)


@pytest.fixture
def pages(browser):
    """``pages.open(path)`` after ``pages.base_url = ...``; no JavaScript errors allowed."""
    holder = Page(browser, "")
    yield holder
    holder.close()
    assert not holder.errors, f"JavaScript errors in the page: {holder.errors}"


def save_key(page, key: str = TILL_KEY) -> None:
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Save key").click()
    page.locator("#key-state").get_by_text("Key saved on this device").wait_for(timeout=10_000)


def screenshot(page, name: str, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page, animations="disabled")
    return path


def api_get(base_url: str, path: str):
    import orjson

    request = urllib.request.Request(base_url + path, headers={"Authorization": f"Bearer {TILL_KEY}"})
    with urllib.request.urlopen(request, timeout=5) as r:
        return orjson.loads(r.read())

