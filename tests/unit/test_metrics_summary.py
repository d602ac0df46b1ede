"""The dashboard's live panel reads the numbers the API's Prometheus /metrics shows (with no
services: Redis and the broker point at closed ports; the flow metrics hash is stood in for)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from omnirec.settings import Settings
from online_models import flow_metrics

KEYS = {"shop-key": ["recommend"], "till-key": ["recommend", "profile"], "desk-key": ["profile"]}
SHOP = {"Authorization": "Bearer shop-key"}
TILL = {"Authorization": "Bearer till-key"}
DESK = {"Authorization": "Bearer desk-key"}


def answers_by_status(text: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "omnirec_api_requests_total":
                counts[sample.labels["status"]] = counts.get(sample.labels["status"], 0.0) + sample.value
    return counts


def test_the_summary_reports_the_answer_counts_the_apis_metrics_show():
    settings = Settings(redis_url="redis://127.0.0.1:1/0", kafka_bootstrap="127.0.0.1:1", api_keys=KEYS,
                        rate_limit_per_s=0.001, rate_limit_burst=2)
    app = create_app(settings)
    flow_hash = {k.encode(): str(v).encode() for k, v in flow_metrics.fields(
        0, {'omnirec_flow_events_total{topic="web.events"}': 41, 'omnirec_flow_dead_letters_total{reason="bad_json"}': 2},
        1_795_601_700_000).items()}

    async def flow_metrics_read(alerts_since_ms: int):  # what Redis would hold
        return flow_hash, 0

    with TestClient(app, raise_server_exceptions=False) as api:
        app.state.store.flow_metrics = flow_metrics_read
        statuses = [api.get("/v1/catalog/search?q=belt", headers=SHOP).status_code for _ in range(3)]
        assert statuses[-1] == 429
        assert api.get("/v1/customers/c-1", headers=TILL).status_code == 503  # Redis is away
        assert api.get("/v1/customers/c-1").status_code == 401
        assert api.get("/no/such/path").status_code == 404
        text = api.get("/metrics").text
        summary = api.get("/v1/metrics/summary", headers=DESK)
    assert summary.status_code == 200, summary.text
    body = summary.json()
    by_status = answers_by_status(text)
    shed = next(s.value for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == "omnirec_api_shed_total")
    assert body["api"] == {
        "requests": sum(by_status.values()) + 1,  # and the /metrics request itself, counted once answered
        "client_errors": sum(v for k, v in by_status.items() if k.startswith("4")),
        "server_errors": sum(v for k, v in by_status.items() if k.startswith("5")),
        "rate_limited": by_status.get("429", 0), "unavailable": by_status.get("503", 0), "shed": shed}
    assert body["api"]["rate_limited"] == 1 and body["api"]["unavailable"] == 1 and body["api"]["client_errors"] == 3
    assert body["flow"] == {"events": 41, "dead_letters": 2, "step_errors": 0, "redis_retries": 0, "churn_alerts": 0,
                            "consumer_lag": 0, "processes": 1, "updated_ms": 1_795_601_700_000}
