"""Kafka (tansu) → bytewax flow → Redis → API, with the real broker and the real Redis."""

from __future__ import annotations

import orjson
import pytest
import redis
from fastapi.testclient import TestClient

from api.main import create_app
from online_models import keys
from tests.seed import CATALOG, history, purchase

from .kafka_tools import consume, produce, wait_for
from .state_dump import assert_same_state, recovery_progress, wait_until_settled

KEYS = {"till-key": ["recommend", "profile"], "shop-key": ["recommend"], "ops-key": ["admin"]}


def load(settings, events) -> None:
    produce(settings, settings.topic_catalog, [(p["sku"].encode(), p) for p in CATALOG])
    produce(settings, settings.topic_store, [(e["customer_id"].encode(), e) for e in events])


def profile(settings, customer_id):
    raw = redis.Redis.from_url(settings.redis_url).get(keys.KeyScheme(settings.key_prefix).customer(customer_id))
    return keys.decode_profile(raw) if raw else None


def wait_for_orders(settings, customer_id, orders, timeout=60.0):
    return wait_for(lambda: (p := profile(settings, customer_id)) is not None and p.orders >= orders and p,
                    timeout, f"{customer_id} to reach {orders} orders")


@pytest.fixture
def api(settings):
    app = create_app(settings.model_copy(update={"api_keys": KEYS, "api_catalog_refresh_s": 0.2}))
    with TestClient(app) as client:
        yield client


def test_produced_purchases_show_up_in_cross_sell_with_a_reason(settings, run_flow, api):
    flow = run_flow(settings)
    load(settings, history())
    wait_for_orders(settings, "c-19", 2)
    till = {"Authorization": "Bearer till-key"}
    def belt_first():
        # The API's copy of the catalog and of every item's basket count (what complement scores
        # divide by) refreshes every 0.2 s: the belt comes first once both hold the belt.
        # The profile below names categories through the same copy, so wait for the whole catalog.
        store = api.app.state.store
        if any(p["sku"] not in store.catalog for p in CATALOG) or "BL-1" not in store.basket_counts:
            return None
        items = api.post("/v1/cross-sell", json={"basket": ["TR-1"], "k": 3}, headers=till).json()["items"]
        return items if items and items[0]["sku"] == "BL-1" else None

    items = wait_for(belt_first, 20, "the belt to come first for trousers once the API's copy holds it")
    assert any(reason.startswith("bought with Slim trousers in") for reason in items[0]["reasons"])

    profile_json = api.get("/v1/customers/c-1", headers=till).json()
    assert profile_json["rfm"]["frequency"] == 2
    assert profile_json["top_categories"][0]["category"] == "grocery/coffee"

    # A new purchase changes the answer within seconds.
    produce(settings, settings.topic_store, [(b"c-1", purchase(2, "c-1", ["SK-1"]))])
    wait_for_orders(settings, "c-1", 3, timeout=20)
    assert api.get("/v1/customers/c-1", headers=till).json()["rfm"]["frequency"] == 3
    assert flow.alive(), flow.log()


def test_a_duplicate_event_is_counted_once(settings, run_flow):
    run_flow(settings)
    first = purchase(0, "c-dup", ["TR-1"])
    load(settings, [first, first, purchase(1, "c-dup", ["CF-1"]), first])
    state = wait_for_orders(settings, "c-dup", 2)
    assert state.orders == 2 and state.gross == 20.0


def test_bad_messages_are_dead_lettered_and_the_flow_keeps_going(settings, run_flow):
    flow = run_flow(settings)
    bad = [b"{not json", orjson.dumps({**purchase(0, "c-bad", ["TR-1"]), "type": "teleport"}),
           orjson.dumps(purchase(1, "c-bad", [])),
           orjson.dumps({**purchase(2, "c-bad", ["TR-1"]), "items": [{"sku": "TR-1", "qty": -2, "price": 1}]})]
    produce(settings, settings.topic_web, [(b"c-bad", value) for value in bad])
    load(settings, [purchase(3, "c-bad", ["TR-1"])])
    wait_for_orders(settings, "c-bad", 1)

    letters = consume(settings, settings.topic_deadletter, expected=len(bad))
    assert sorted(m.value() for m in letters) == sorted(bad)  # the original bytes, untouched
    reasons = {dict(m.headers())["reason"].decode() for m in letters}
    assert any("not valid JSON" in r for r in reasons)
    assert any("unknown event type 'teleport'" in r for r in reasons)
    assert any("'items' must be a non-empty list" in r for r in reasons)
    assert any("'items[0].qty' must be > 0; got -2" in r for r in reasons)
    headers = dict(letters[0].headers())
    assert headers["source_topic"].decode() == settings.topic_web and headers["source_offset"].isdigit()
    assert profile(settings, "c-bad").orders == 1 and flow.alive()


def test_a_restarted_flow_resumes_without_double_counting(settings, run_flow, redis_url):
    events = history(30)
    first_half, second_half = events[:30], events[30:]
    produced = len(CATALOG) + len(events)
    flow = run_flow(settings)
    load(settings, first_half)
    wait_for_orders(settings, first_half[-1]["customer_id"], 1)
    seen = (recovery_progress(settings.recovery_dir) or (0, 0, -1))[2]
    wait_for(lambda: (recovery_progress(settings.recovery_dir) or (0, 0, -1))[2] > seen, 30,
             "a snapshot that covers the first half")
    flow.kill()  # a crash, not a clean stop: replay since the last snapshot must not double count
    produce(settings, settings.topic_store, [(e["customer_id"].encode(), e) for e in second_half])
    flow = run_flow(settings)
    wait_for(lambda: all((p := profile(settings, f"c-{c}")) and p.orders == 2 for c in range(30)), 60,
             "all customers to have 2 orders after the restart")
    resumed = wait_until_settled(redis_url, settings.key_prefix, produced, alive=flow.alive, describe=flow.log)

    clean = settings.model_copy(update={"key_prefix": settings.key_prefix + "-clean",
                                        "recovery_dir": settings.recovery_dir + "-clean"})
    try:
        fresh_flow = run_flow(clean)
        fresh = wait_until_settled(redis_url, clean.key_prefix, produced, alive=fresh_flow.alive,
                                   describe=fresh_flow.log)
        assert sum(":{c:" in k for k in fresh) == 30
        assert_same_state(fresh, resumed, "a clean run", "a run killed and resumed")  # every key
    finally:
        _delete_prefix(redis_url, clean.key_prefix)


def test_two_processes_write_the_same_state_as_one_worker(settings, run_flow, redis_url):
    from omnirec.stack import free_port

    load(settings, history(24))
    produced = len(CATALOG) + 48
    one = run_flow(settings)
    one_state = wait_until_settled(redis_url, settings.key_prefix, produced, alive=one.alive, describe=one.log)

    two = settings.model_copy(update={"key_prefix": settings.key_prefix + "-2p",
                                      "recovery_dir": settings.recovery_dir + "-2p"})
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    try:
        flows = [run_flow(two, workers=None, process_id=process_id, addresses=addresses) for process_id in (0, 1)]
        two_state = wait_until_settled(redis_url, two.key_prefix, produced,
                                       alive=lambda: all(f.alive() for f in flows),
                                       describe=lambda: "\n".join(f.log() for f in flows))
        assert sum(":{c:" in k for k in one_state) == 24
        assert_same_state(one_state, two_state, "1 worker", "2 processes")  # every key, the same bytes
    finally:
        _delete_prefix(redis_url, two.key_prefix)


def test_api_keys_and_scopes(api, settings):
    assert api.get("/healthz").status_code == 200
    missing = api.get("/v1/customers/c-1")
    assert missing.status_code == 401 and "Missing API key" in missing.json()["detail"]
    wrong = api.get("/v1/customers/c-1", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["detail"] == "Unknown API key"
    scope = api.get("/v1/customers/c-1", headers={"Authorization": "Bearer shop-key"})
    assert scope.status_code == 403 and scope.json()["detail"] == "API key lacks the 'profile' scope"
    unknown = api.get("/v1/customers/nobody", headers={"Authorization": "Bearer till-key"})
    assert unknown.status_code == 404 and unknown.json()["detail"] == "Customer not found"


def test_bad_requests_get_4xx_with_a_message(api):
    shop = {"Authorization": "Bearer shop-key"}
    assert api.get("/v1/recommendations?context=cart", headers=shop).status_code == 422
    assert api.get("/v1/recommendations?context=nope", headers=shop).status_code == 422
    assert api.get("/v1/recommendations?k=0", headers=shop).status_code == 422
    assert api.post("/v1/cross-sell", json={"basket": []}, headers=shop).status_code == 422
    assert api.post("/v1/cross-sell", content=b"{oops", headers=shop).status_code == 422
    cold = api.get("/v1/recommendations?anonymous_id=never-seen&k=3", headers=shop)
    assert cold.status_code == 200 and cold.json()["known_customer"] is False


def test_redis_down_gives_503_with_a_message(settings):
    from omnirec.stack import free_port

    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0", "api_keys": KEYS})
    with TestClient(create_app(down)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "Redis" in ready.json()["detail"]
        recs = client.get("/v1/recommendations?customer_id=c-1", headers={"Authorization": "Bearer till-key"})
        assert recs.status_code == 503 and "Redis unavailable" in recs.json()["detail"]


def _delete_prefix(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    keys_found = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys_found:
        client.delete(*keys_found)


OFFERS = [
    {"offer_id": "belt-bundle", "name": "Belt bundle", "kind": "bundle", "value": 12.0, "bundle_skus": ["BL-1"],
     "eligibility": {"categories": ["men"]}, "prior_propensity": 0.3},
    {"offer_id": "coffee-points", "name": "Coffee points", "kind": "loyalty_points", "value": 4.0,
     "eligibility": {"categories": ["grocery"]}, "prior_propensity": 0.3},
    {"offer_id": "kids-10", "name": "Kids 10%", "kind": "discount", "value": 8.0,
     "eligibility": {"categories": ["kids"]}},
]


def test_feedback_round_trips_through_the_broker_and_changes_the_next_decision(settings, run_flow):
    run_flow(settings)
    load(settings, history(3))
    produce(settings, settings.topic_offers, [(o["offer_id"].encode(), o) for o in OFFERS])
    produce(settings, settings.topic_offers, [(b"broken", b'{"offer_id": "broken", "kind": "gift"}')])
    wait_for_orders(settings, "c-1", 2)
    quiet = settings.model_copy(update={"api_keys": KEYS, "api_catalog_refresh_s": 0.2, "nbo_control_share": 0.0,
                                        "nbo_max_offers_per_day": 1})
    with TestClient(create_app(quiet)) as api:
        till = {"Authorization": "Bearer till-key"}
        def nbo():
            return api.get("/v1/customers/c-1/next-best-offer?channel=store", headers=till).json()
        first = wait_for(lambda: (d := nbo())["offer"] and d, 20, "offers to reach the API")
        assert first["offer"]["offer_id"] in {"belt-bundle", "coffee-points"}
        assert first["not_eligible"]["kids-10"] == "eligibility: customer never buys kids"
        assert first["decision_id"].startswith("d1.") and first["control"] is False
        assert any("it passed every check" in r for r in first["reasons"])

        shown = api.post("/v1/feedback", json={"decision_id": first["decision_id"], "event": "impression"}, headers=till)
        assert shown.status_code == 202 and shown.json()["accepted"] is True
        # One offer a day: after the impression reaches the flow, nothing else is eligible today.
        capped = wait_for(lambda: (d := nbo())["offer"] is None and d, 20, "the contact cap to apply")
        assert all(r == "contact: already shown 1 offers today" for r in capped["not_eligible"].values()
                   if r.startswith("contact"))
        # The uplift report counts the impression as treated and the gate that removed kids-10.
        ops = {"Authorization": "Bearer ops-key"}
        assert api.get("/v1/offers/report", headers=till).status_code == 403
        report = wait_for(lambda: (r := api.get("/v1/offers/report", headers=ops).json())["treated"]["impressions"]
                          and r, 20, "the impression to reach the report")
        row = next(r for r in report["offers"] if r["offer_id"] == first["offer"]["offer_id"])
        assert row["treated"]["impressions"] == 1 and row["control"]["impressions"] == 0
        assert row["uplift"]["acceptance"] is None  # no control decision yet: no uplift claimed
        assert report["gates"]["eligibility"] >= 1
        bad = api.post("/v1/feedback", json={"decision_id": "d1.garbage", "event": "accept"}, headers=till)
        assert bad.status_code == 400 and "malformed" in bad.json()["detail"]
        neither = api.post("/v1/feedback", json={"event": "accept"}, headers=till)
        assert neither.status_code == 422

    letters = consume(settings, settings.topic_deadletter, expected=1)
    assert "field 'kind' must be one of" in dict(letters[0].headers())["reason"].decode()
    stats = redis.Redis.from_url(settings.redis_url).get(keys.KeyScheme(settings.key_prefix).offer_stats(
        first["offer"]["offer_id"]))
    assert keys.decode_offer_stats(stats).totals() == (1.0, 0.0)


WIN_BACK = {"offer_id": "winback-15", "name": "We miss you: 15% off your next order", "kind": "win_back",
            "value": 10.0, "cost": 6.0, "valid_days": 30, "prior_propensity": 0.05}


def test_next_best_offer_for_an_unknown_customer_is_safe(api):
    answer = api.get("/v1/customers/nobody/next-best-offer", headers={"Authorization": "Bearer till-key"})
    assert answer.status_code == 200
    assert answer.json()["offer"] is None and answer.json()["reasons"] == ["no eligible offer"]
    wrong = api.get("/v1/customers/nobody/next-best-offer?context=panic", headers={"Authorization": "Bearer till-key"})
    assert wrong.status_code == 422


def test_clicks_on_recommendations_train_the_ranker(settings, run_flow, api):
    run_flow(settings)
    load(settings, history(6))
    wait_for_orders(settings, "c-5", 2)
    shop = {"Authorization": "Bearer shop-key"}
    served = wait_for(lambda: (r := api.get("/v1/recommendations?customer_id=c-1&context=product&sku=TR-1&k=3",
                                            headers=shop).json())["items"] and r, 20, "recommendations")
    first = served["items"][0]
    assert all(item["recommendation_id"].startswith("r1.") for item in served["items"])
    for item in served["items"]:
        assert api.post("/v1/feedback", json={"recommendation_id": item["recommendation_id"], "event": "impression"},
                        headers=shop).status_code == 202
    assert api.post("/v1/feedback", json={"recommendation_id": first["recommendation_id"], "event": "click"},
                    headers=shop).status_code == 202
    scheme = keys.KeyScheme(settings.key_prefix)
    trained = wait_for(lambda: (raw := redis.Redis.from_url(settings.redis_url).get(scheme.ranker()))
                       and keys.decode_ranker(raw).trained_on == len(served["items"]) + 1 and keys.decode_ranker(raw),
                       20, "the ranker to learn from the feedback")
    assert trained.weights  # one weight per feature, learnt by river in the flow


def test_a_silent_customer_raises_one_churn_alert_on_kafka_redis_and_sse(settings, run_flow):
    import time as clock

    day = 86_400_000
    start = int(clock.time() * 1000) - 400 * day  # history, in the past
    regular = [purchase(week, "c-loyal", ["CF-1"], ts=start + week * 7 * day) for week in range(8)]
    others = [purchase(0, f"c-{c}", ["TR-1"], ts=start + (c % 50) * day) for c in range(60)]
    later = purchase(0, "c-late", ["CF-1"], ts=start + 300 * day)  # the stream moves on; c-loyal is silent
    replay_settings = settings.model_copy(update={"churn_wall_clock": False, "churn_shards": 2})
    flow = run_flow(replay_settings)
    # A win-back offer for lapsing customers, and one c-loyal (coffee only) is not eligible for.
    offers = [WIN_BACK, OFFERS[2]]
    produce(settings, settings.topic_offers, [(o["offer_id"].encode(), o) for o in offers])
    load(replay_settings, sorted(regular + others, key=lambda e: e["ts"]))
    wait_for_orders(settings, "c-loyal", 8)
    produce(settings, settings.topic_store, [(b"c-late", later)])
    produced = len(offers) + len(CATALOG) + len(regular) + len(others) + 1

    stream = keys.KeyScheme(settings.key_prefix).churn_alerts()
    client = redis.Redis.from_url(settings.redis_url)
    entries = wait_for(lambda: [e for e in client.xrange(stream) if b'"c-loyal"' in e[1][b"alert"]], 60,
                       "c-loyal's alert once the stream's clock passes their due time")
    alert = orjson.loads(entries[0][1][b"alert"])
    assert alert["customer_id"] == "c-loyal" and alert["reasons"] and alert["value_at_risk"] > 0
    # fired in event time as soon as they lapsed: 2.5 × their weekly gap after the last purchase
    assert start + 49 * day + 17 * day < alert["ts_ms"] < start + 49 * day + 18 * day

    on_kafka = consume(settings, settings.topic_churn_alerts, expected=len(client.xrange(stream)))
    assert any(m.key() == b"c-loyal" for m in on_kafka)
    # Once the flow has read everything and stopped writing (its churn clock included), still one per lapse.
    wait_until_settled(settings.redis_url, settings.key_prefix, produced, alive=flow.alive, describe=flow.log)
    assert len([e for e in client.xrange(stream) if b'"c-loyal"' in e[1][b"alert"]]) == 1

    app = create_app(replay_settings.model_copy(update={"api_keys": KEYS, "api_catalog_refresh_s": 0.2,
                                                        "nbo_control_share": 0.0}))
    with TestClient(app) as api:
        till = {"Authorization": "Bearer till-key"}
        wait_for(lambda: "winback-15" in api.app.state.store.offers, 20, "the offers to reach the API")
        listed = api.get("/v1/alerts/churn?limit=1000", headers=till).json()["alerts"]
        mine = [a for a in listed if a["customer_id"] == "c-loyal"]
        assert len(mine) == 1
        # Polling as raised moves past every alert read, those below the floor included.
        timed = api.get("/v1/alerts/churn?order=time&limit=1000", headers=till).json()
        assert timed["next"] == client.xrange(stream)[-1][0].decode()
        # The retention desk sees what to offer: the win-back offer, not the kids' discount.
        suggested = mine[0]["suggested_offer"]
        assert suggested is not None and suggested["offer_id"] == "winback-15" and suggested["kind"] == "win_back"
        # The dashboard counts the alerts raised today (stream ids are the wall-clock time of the XADD).
        summary = api.get("/v1/metrics/summary", headers=till).json()
        midnight = summary["now_ms"] - summary["now_ms"] % 86_400_000
        raised_today = [e for e in client.xrange(stream) if int(e[0].split(b"-")[0]) >= midnight]
        assert summary["alerts_today"] == len(raised_today) >= 1
        with api.stream("GET", "/v1/alerts/churn/stream?max_events=1", headers={**till, "Last-Event-ID": "0-0"}) as sse:
            lines = [line for line in sse.iter_lines() if line.startswith("data: ")]
        assert orjson.loads(lines[0][6:])["alert_id"]
        profile_json = api.get("/v1/customers/c-loyal", headers=till).json()
        assert profile_json["value"]["segment"] and profile_json["value"]["churn"]["score"] is not None


def test_catalog_search_and_the_dashboard_summary(settings, run_flow, api):
    run_flow(settings)
    load(settings, history(4))
    wait_for_orders(settings, "c-3", 2)
    till = {"Authorization": "Bearer till-key"}
    found = wait_for(lambda: api.get("/v1/catalog/search?q=slim", headers=till).json()["items"], 20, "the catalog")
    assert [p["sku"] for p in found] == ["TR-1"]
    assert api.get("/v1/catalog/search?q=", headers=till).status_code == 422
    # The flow publishes its count every second: wait for one taken after it read everything
    # (a CI run read a count of 6 taken mid-way).
    produced = len(CATALOG) + 8
    summary = wait_for(lambda: (s := api.get("/v1/metrics/summary", headers=till).json())["flow_messages"] >= produced
                       and s, 20, f"the flow's message count to reach {produced}")
    assert summary["alerts_today"] == 0  # four customers who bought twice this hour: nobody has lapsed
