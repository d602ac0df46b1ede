"""The HTTP edge against abuse, with no services: Redis and the broker point at closed ports, so
whatever a test expects must be answered before the API would touch them (or be a 503)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from omnirec.settings import Settings

KEYS = {"shop-key": ["recommend"], "till-key": ["recommend", "profile"], "ops-key": ["admin"]}
SHOP = {"Authorization": "Bearer shop-key", "Content-Type": "application/json"}
TILL = {"Authorization": "Bearer till-key", "Content-Type": "application/json"}


def offline(**overrides) -> Settings:
    return Settings(redis_url="redis://127.0.0.1:1/0", kafka_bootstrap="127.0.0.1:1", api_keys=KEYS,
                    **overrides)


@pytest.fixture(scope="module")
def api():
    with TestClient(create_app(offline()), raise_server_exceptions=False) as client:
        yield client


def assert_error(response, status: int) -> dict:
    """Every error has the documented body: a string `detail`, and for 422 the `errors` list."""
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    if status == 422:
        assert body["errors"] and all(set(e) == {"loc", "msg", "type"} for e in body["errors"])
    return body


@pytest.mark.parametrize("k", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e30", "9e18", "2.5"])
def test_non_finite_or_absurd_numbers_in_a_body_are_422_naming_the_field(api, k):
    response = api.post("/v1/cross-sell", content=f'{{"basket": ["TR-1"], "k": {k}}}', headers=SHOP)
    assert assert_error(response, 422)["errors"][0]["loc"] == ["body", "k"]


@pytest.mark.parametrize("ts", ["NaN", "Infinity", "1e30", "9e18", "-1", "1e400"])
def test_absurd_feedback_times_are_422(api, ts):
    body = f'{{"decision_id": "d1.x", "event": "click", "ts": {ts}}}'
    response = api.post("/v1/feedback", content=body, headers=SHOP)
    assert assert_error(response, 422)["errors"][0]["loc"] == ["body", "ts"]


@pytest.mark.parametrize("query", ["k=NaN", "k=inf", "k=1e400", "k=99999999999999999999999", "k=0"])
def test_bad_numbers_in_a_query_are_422(api, query):
    response = api.get(f"/v1/recommendations?{query}", headers=SHOP)
    assert assert_error(response, 422)["errors"][0]["loc"] == ["query", "k"]


@pytest.mark.parametrize("since", ["1-2-3", "99999999999999999999999-0", "²", "1e400", "NaN"])
def test_a_bad_since_on_alerts_is_422_not_a_redis_error(api, since):
    detail = assert_error(api.get("/v1/alerts/churn", params={"since": since}, headers=TILL), 422)["detail"]
    assert "since" in detail and since not in detail  # the value sent is never echoed


@pytest.mark.parametrize("resume", ["99999999999999999999-0", "1796298654757-18446744073709551616", "1-2-3", "x",
                                    "18446744073709551615-18446744073709551615"])
def test_a_bad_last_event_id_on_the_alert_stream_is_422_before_the_stream_starts(api, resume):
    response = api.get("/v1/alerts/churn/stream", params={"max_events": 1}, headers={**TILL, "Last-Event-ID": resume})
    assert "last-event-id" in assert_error(response, 422)["detail"]


def test_unknown_routes_and_missing_keys_answer_the_same_error_body(api):
    assert assert_error(api.get("/v1/nothing-here"), 404)["detail"] == "Not Found"
    assert "Missing API key" in assert_error(api.get("/v1/recommendations"), 401)["detail"]
    assert "profile" in assert_error(api.get("/v1/customers/c-1", headers=SHOP), 403)["detail"]


def test_the_openapi_document_lists_each_routes_responses_with_one_error_schema(api):
    doc = api.get("/openapi.json").json()
    error_ref = "#/components/schemas/ErrorBody"
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            codes = set(operation["responses"])
            if path in ("/healthz", "/readyz"):
                continue
            assert {"401", "403", "413", "422", "429"} <= codes, (method, path, codes)
            for code in codes - {"200", "202"}:
                schema = operation["responses"][code]["content"]["application/json"]["schema"]
                assert schema == {"$ref": error_ref}, (method, path, code, schema)
    for path, method, model in [("/v1/recommendations", "get", "Recommendations"),
                                ("/v1/cross-sell", "post", "Recommendations"),
                                ("/v1/customers/{customer_id}", "get", "Profile"),
                                ("/v1/customers/{customer_id}/next-best-offer", "get", "NextBestOffer"),
                                ("/v1/feedback", "post", "FeedbackAccepted"),
                                ("/v1/alerts/churn", "get", "ChurnAlerts")]:
        ok = doc["paths"][path][method]["responses"]["202" if method == "post" and path == "/v1/feedback" else "200"]
        assert ok["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{model}"}
    assert "400" in doc["paths"]["/v1/feedback"]["post"]["responses"]
    assert "404" in doc["paths"]["/v1/customers/{customer_id}"]["get"]["responses"]


def test_a_body_over_the_limit_is_413_by_its_length_before_it_is_read():
    with TestClient(create_app(offline(max_request_bytes=1000)), raise_server_exceptions=False) as small:
        big = '{"basket": ["TR-1"], "customer_id": "' + "x" * 2000 + '"}'
        assert "limit is 1000 bytes" in assert_error(small.post("/v1/cross-sell", content=big, headers=SHOP),
                                                     413)["detail"]
        fits = small.post("/v1/cross-sell", content='{"basket": ["TR-1"], "k": 0}', headers=SHOP)
        assert fits.status_code == 422  # under the limit: read and validated as usual


def test_a_chunked_body_is_cut_off_at_the_limit_while_it_streams():
    def chunks():  # no Content-Length: the client sends it chunked
        for _ in range(100):
            yield b'{"basket": ["' + b"x" * 500 + b'"], '

    with TestClient(create_app(offline(max_request_bytes=2000)), raise_server_exceptions=False) as small:
        response = small.post("/v1/feedback", content=chunks(), headers=SHOP)
        assert "content-length" not in response.request.headers
        assert_error(response, 413)
        after = small.post("/v1/feedback", json={"event": "click"}, headers=SHOP)  # the next one is served
        assert after.status_code == 422


def test_each_api_key_has_its_own_rate_limit_answered_429_with_retry_after():
    # one token per 1000 s: the test cannot race the refill, however slow the machine
    limited = offline(rate_limit_per_s=0.001, rate_limit_burst=3)
    with TestClient(create_app(limited), raise_server_exceptions=False) as api:
        served = [api.get("/v1/catalog/search?q=belt", headers=SHOP).status_code for _ in range(3)]
        assert served == [200, 200, 200]
        refused = api.get("/v1/catalog/search?q=belt", headers=SHOP)
        assert "Rate limit" in assert_error(refused, 429)["detail"]
        assert 900 <= int(refused.headers["Retry-After"]) <= 1000
        assert api.get("/v1/catalog/search?q=belt", headers=TILL).status_code == 200  # another key: its own bucket
        assert api.get("/v1/catalog/search?q=belt", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_token_buckets_refill_at_the_rate_up_to_the_burst():
    from api.ratelimit import TokenBuckets, retry_after

    now = [0.0]
    buckets = TokenBuckets(rate_per_s=2.0, burst=2, clock=lambda: now[0])
    assert [buckets.take("k") for _ in range(3)] == [0.0, 0.0, 0.5]
    now[0] += 0.5  # one token back
    assert buckets.take("k") == 0.0 and buckets.take("k") == 0.5
    now[0] += 100  # never more than the burst
    assert [buckets.take("k") for _ in range(3)] == [0.0, 0.0, 0.5]
    assert retry_after(0.5) == "1" and retry_after(2.1) == "3"
    assert TokenBuckets(rate_per_s=0, burst=1).take("k") == 0.0  # 0: no limit


class RecordingProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    async def send(self, key: str, value: bytes) -> None:
        import orjson

        self.sent.append((key, orjson.loads(value)))

    def close(self) -> None:
        pass


@pytest.fixture
def feedback_api():
    """The API with its feedback producer replaced by one that records what it would produce."""
    app = create_app(offline())
    with TestClient(app, raise_server_exceptions=False) as client:
        real, app.state.feedback = app.state.feedback, RecordingProducer()
        real.close()
        yield client, app


def test_forged_or_altered_ids_are_400_and_never_reach_the_flow(feedback_api):
    import base64

    import orjson

    from online_models.refs import DecisionRef, RecommendationRef, SigningKeys, encode_ref

    api, app = feedback_api
    genuine = encode_ref(DecisionRef("c-1", "winback-15", "lapsed", "web", False, 1_795_601_700_000, 7),
                         app.state.signing)
    tag, kid, body, mac = genuine.split(".")
    fields = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    fields[0] = "c-2"  # somebody else's offer
    other = base64.urlsafe_b64encode(orjson.dumps(fields)).rstrip(b"=").decode()
    made_up = encode_ref(RecommendationRef("c-1", "cart", None, 1_795_601_700_000, 1, "BL-1", (1e308,) * 8),
                         SigningKeys.of({kid: "a secret I made up myself"}))
    for field, forged in [("decision_id", f"{tag}.{kid}.{other}.{mac}"), ("recommendation_id", made_up),
                          ("decision_id", f"d1.{body}"), ("decision_id", "d1.garbage")]:
        response = api.post("/v1/feedback", json={field: forged, "event": "dismiss"}, headers=SHOP)
        assert_error(response, 400)
    assert app.state.feedback.sent == []

    accepted = api.post("/v1/feedback", json={"decision_id": genuine, "event": "dismiss"}, headers=SHOP)
    assert accepted.status_code == 202 and accepted.json()["accepted"] is True
    [(key, envelope)] = app.state.feedback.sent
    assert key == "c-1" and envelope["offer_id"] == "winback-15" and envelope["type"] == "dismiss"


def test_metrics_count_answers_by_route_template_and_status_with_latency_histograms():
    limited = offline(rate_limit_per_s=0.001, rate_limit_burst=1, max_request_bytes=100)
    with TestClient(create_app(limited), raise_server_exceptions=False) as api:
        api.get("/v1/catalog/search?q=belt", headers=SHOP)  # 200
        api.get("/v1/catalog/search?q=belt", headers=SHOP)  # 429: one request per 1000 s
        api.get("/v1/customers/c-123", headers=TILL)  # 503: Redis is away
        api.get("/v1/customers/c-456", headers={"Authorization": "Bearer ops-key"})  # (each key: one request)
        api.post("/v1/cross-sell", content="x" * 200, headers=TILL)  # 413 before routing
        api.get("/no/such/path")
        text = api.get("/metrics").text

    def count(route: str, status: int, method: str = "GET") -> float:
        line = f'omnirec_api_requests_total{{method="{method}",route="{route}",status="{status}"}} '
        found = [ln for ln in text.splitlines() if ln.startswith(line)]
        return float(found[0].split()[-1]) if found else 0.0

    assert count("/v1/catalog/search", 200) == 1 and count("/v1/catalog/search", 429) == 1
    assert count("/v1/customers/{customer_id}", 503) == 2  # the template, not the ids
    assert count("/v1/cross-sell", 413, "POST") == 1
    assert count("unmatched", 404) == 1
    assert 'omnirec_api_request_duration_seconds_bucket{le="0.005",method="GET",route="/v1/catalog/search"}' in text
    assert "c-123" not in text


def test_next_best_offer_hides_profile_facts_from_a_key_without_the_profile_scope():
    from online_models.customer import CustomerState
    from online_models.decay import Decay
    from online_models.offers import offer_from_dict
    from online_models.profile import Population

    from .helpers import CATALOG, day, purchase

    state = CustomerState("c-1")
    for i in range(3):
        state.apply(purchase(f"p{i}", skus=("TR-1", "BL-1"), ts=day(i * 40)), Decay(14))

    class OneCustomer:  # stands in for the Redis reader
        catalog, offer_stats, population = CATALOG, {}, Population()
        offers = {o.offer_id: o for o in (
            offer_from_dict({"offer_id": "care", "kind": "service", "value": 10.0}),
            offer_from_dict({"offer_id": "kids-10", "kind": "discount", "value": 5.0,
                             "eligibility": {"categories": ["kids"]}}))}

        async def fetch(self, customer_id, alias_id, skus):
            return (state if customer_id == "c-1" else None), {}

    app = create_app(offline(nbo_control_share=0.0))
    with TestClient(app, raise_server_exceptions=False) as api:
        app.state.store = OneCustomer()
        shop = api.get("/v1/customers/c-1/next-best-offer?channel=web", headers=SHOP).json()
        till = api.get("/v1/customers/c-1/next-best-offer?channel=web", headers=TILL).json()
    assert shop["offer"]["offer_id"] == till["offer"]["offer_id"] == "care"
    assert till["cell"] and till["not_eligible"]["kids-10"] == "eligibility: customer never buys kids"
    assert shop["cell"] is None and shop["not_eligible"] == {"kids-10": "not for this customer"}
    assert not any(till["cell"].split("|")[0] in reason for reason in shop["reasons"])


@pytest.mark.parametrize("path", ["/v1/alerts/churn", "/v1/alerts/churn/stream"])
def test_an_unknown_tier_on_alerts_is_422_naming_the_tiers(api, path):
    detail = assert_error(api.get(path, params={"tier": "platnum", "max_events": 1}, headers=TILL), 422)["detail"]
    assert "tier" in detail and "platinum" in detail and "platnum" not in detail
