"""The retention dashboard's live panel and Prometheus agree: after the real flow read N records,
some of them dead letters, `GET /v1/metrics/summary` reports what the flow's own /metrics says,
and the API's counts what the API's /metrics says."""

from __future__ import annotations

import urllib.request

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from omnirec.stack import free_port
from online_models import flow_metrics
from tests.seed import CATALOG, history

from .kafka_tools import produce, wait_for

TILL = {"Authorization": "Bearer till-key"}
BAD = [b"not json", b"{\"type\": \"teleport\", \"event_id\": \"x\"}", b"[1, 2]"]


@pytest.fixture
def api(settings):
    app = create_app(settings.model_copy(update={"api_keys": {"till-key": ["recommend", "profile"]}}))
    with TestClient(app) as client:
        yield client


def flow_page(port: int) -> dict[str, int]:
    """The flow's /metrics, summed per summary field, as a dashboard would compute it from Prometheus."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    totals = dict.fromkeys(flow_metrics.TOTALS, 0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for field, metric in flow_metrics.TOTALS.items():
                if sample.name == metric:
                    totals[field] += int(sample.value)
    return totals


def test_the_summary_reports_the_numbers_of_the_flows_and_the_apis_metrics(settings, run_flow, api):
    port = free_port()
    flow = run_flow(settings, flow_metrics_port=port)
    events = history(5)
    produce(settings, settings.topic_catalog, [(p["sku"].encode(), p) for p in CATALOG])
    produce(settings, settings.topic_store, [(e["customer_id"].encode(), e) for e in events])
    produce(settings, settings.topic_web, [(b"anon", bad) for bad in BAD])
    read = len(CATALOG) + len(events) + len(BAD)

    def agreed():
        assert flow.alive(), flow.log()[-3000:]
        try:
            page = flow_page(port)
        except OSError:  # the flow process has not started its metrics server yet
            return False
        shown = {k: v for k, v in api.get("/v1/metrics/summary", headers=TILL).json()["flow"].items()
                 if k in flow_metrics.TOTALS}
        return page["events"] == read and shown == page and shown

    shown = wait_for(agreed, 90, "the summary to show what the flow's /metrics shows")
    assert shown["events"] == read and shown["dead_letters"] == len(BAD)
    assert shown["step_errors"] == 0 and shown["redis_retries"] == 0 and shown["churn_alerts"] == 0

    # the sink's count over every execution (here one) is written once its batch reached Redis,
    # which may trail the source's counter
    summary = wait_for(lambda: (got := api.get("/v1/metrics/summary", headers=TILL).json())["flow_messages"] >= read
                       and got, 60, "the sink's message count to catch up")
    assert summary["flow"]["processes"] == 1 and summary["flow"]["updated_ms"] <= summary["now_ms"] + 5_000

    assert api.get("/v1/customers/c-1").status_code == 401
    text = api.get("/metrics").text
    by_status: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "omnirec_api_requests_total":
                by_status[sample.labels["status"]] = by_status.get(sample.labels["status"], 0) + sample.value
    counts = api.get("/v1/metrics/summary", headers=TILL).json()["api"]
    assert counts["requests"] == sum(by_status.values()) + 1  # + the /metrics request, counted once answered
    assert counts["client_errors"] == sum(v for k, v in by_status.items() if k.startswith("4")) >= 1
    assert counts["server_errors"] == sum(v for k, v in by_status.items() if k.startswith("5")) == 0
    assert counts["rate_limited"] == by_status.get("429", 0) and counts["unavailable"] == by_status.get("503", 0)
