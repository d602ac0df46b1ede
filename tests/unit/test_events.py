import orjson
import pytest

from online_models.events import DAY_MS, Event, ParseLimits, Rejected, parse_event, parse_product

TS = "2026-11-25T10:15:00Z"
TS_MS = 1_795_601_700_000


def envelope(**overrides):
    base = {"event_id": "e1", "type": "purchase", "ts": TS, "channel": "store", "customer_id": "c-42",
            "store_id": "s-7", "order_id": "o-9", "items": [{"sku": "TR-001", "qty": 1, "price": 49.9}]}
    base.update(overrides)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


def test_purchase_parses_with_iso_time():
    event = parse_event(envelope())
    assert isinstance(event, Event)
    assert event.ts_ms == TS_MS and event.items[0].sku == "TR-001" and event.items[0].value == 49.9


def test_epoch_millis_gives_the_same_time():
    assert parse_event(envelope(ts=TS_MS)).ts_ms == TS_MS


@pytest.mark.parametrize("raw, reason", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "envelope must be a JSON object; got list"),
    (envelope(type="teleport"), "unknown event type 'teleport'"),
    (envelope(event_id=...), "missing field 'event_id'"),
    (envelope(event_id=7.5), "field 'event_id' must be a non-empty string; got 7.5"),
    (envelope(ts=...), "missing field 'ts'"),
    (envelope(ts="yesterday"), "field 'ts' is not ISO-8601; got 'yesterday'"),
    (envelope(ts="2026-11-25T10:15:00"), "needs a time zone"),
    (envelope(ts=1_700_000_000), "before 2000-01-01; epoch seconds sent as ms?"),
    (envelope(channel="fax"), "field 'channel' must be one of"),
    (envelope(items=[]), "field 'items' must be a non-empty list"),
    (envelope(items=[{"sku": "A", "qty": -2, "price": 1}]), "field 'items[0].qty' must be > 0; got -2"),
    (envelope(items=[{"sku": "A", "qty": 0, "price": 1}]), "field 'items[0].qty' must be > 0; got 0"),
    (envelope(items=[{"sku": "A", "qty": 1, "price": -5}]), "field 'items[0].price' must be >= 0; got -5"),
    (envelope(items=[{"sku": "A", "qty": "two"}]), "field 'items[0].qty' must be a number; got 'two'"),
    (envelope(items=[{"qty": 1}]), "missing field 'items[0].sku'"),
    (envelope(customer_id=None), "event needs one of 'customer_id', 'anonymous_id' or 'loyalty_id'"),
    (envelope(type="identify", items=..., anonymous_id=None), "identify needs 'customer_id' and"),
    (envelope(type="product_view", items=...), "product_view needs field 'sku'"),
    (envelope(type="survey", items=..., score=11), "survey needs field 'score' between 0 and 10"),
    (None, "empty message"),
])
def test_every_rejection_says_why(raw, reason):
    result = parse_event(raw)
    assert isinstance(result, Rejected)
    assert reason in result.reason


def test_oversized_message_is_rejected_with_its_size():
    result = parse_event(envelope(), limits=ParseLimits(max_bytes=50))
    assert isinstance(result, Rejected) and "exceeds the limit of 50" in result.reason


def test_timestamps_far_from_the_stream_are_rejected():
    ahead = parse_event(envelope(ts=TS_MS + 3 * DAY_MS), stream_ts_ms=TS_MS, now_ms=TS_MS)
    behind = parse_event(envelope(ts=TS_MS - 60 * DAY_MS), stream_ts_ms=TS_MS)
    assert isinstance(ahead, Rejected) and "72.0 h ahead of the clock" in ahead.reason
    assert isinstance(behind, Rejected) and "60.0 days behind the stream" in behind.reason
    assert isinstance(parse_event(envelope(ts=TS_MS - DAY_MS), stream_ts_ms=TS_MS), Event)
    # a quiet partition's next event is not "from the future": only the wall clock says so
    assert isinstance(parse_event(envelope(ts=TS_MS + 3 * DAY_MS), stream_ts_ms=TS_MS), Event)


def test_every_event_type_parses():
    extra = {
        "page_view": {"items": ...}, "product_view": {"items": ..., "sku": "A"}, "search": {"items": ..., "query": "belt"},
        "add_to_cart": {}, "remove_from_cart": {}, "purchase": {}, "return": {},
        "store_visit": {"items": ...}, "identify": {"items": ..., "anonymous_id": "a-1"},
        "survey": {"items": ..., "score": 9},
    }
    for kind, fields in extra.items():
        assert isinstance(parse_event(envelope(type=kind, **fields)), Event), kind


def test_product_parses_and_rejects_a_negative_price():
    good = parse_product(b'{"sku":"BL-1","name":"Belt","category":"Men/Belts/","price":20,"in_stock":false}')
    assert good.category == "men/belts" and good.in_stock is False
    bad = parse_product(b'{"sku":"BL-1","category":"men/belts","price":-1}')
    assert isinstance(bad, Rejected) and "'price' must be >= 0" in bad.reason


def test_the_future_is_judged_by_the_clock_and_lateness_by_the_partition():
    now = TS_MS + 3 * DAY_MS
    # A replay of history is not "from the future" even far ahead of a slow partition.
    assert isinstance(parse_event(envelope(ts=TS_MS + 2 * DAY_MS), stream_ts_ms=TS_MS, now_ms=now), Event)
    future = parse_event(envelope(ts=now + 2 * DAY_MS), stream_ts_ms=TS_MS, now_ms=now)
    assert isinstance(future, Rejected) and "48.0 h ahead of the clock" in future.reason


def test_a_sparse_partition_running_ahead_does_not_make_others_late():
    from online_models.clock import ClockSettings, StreamClock
    from online_models.engine import Engine
    from online_models.messages import Raw

    engine = Engine()
    web, _ = engine.parse(None, Raw("web.events", 3, 9, None, envelope(ts=TS_MS)))
    store, _ = engine.parse(None, Raw("store.events", 0, 1, None, envelope(ts=TS_MS + 60 * DAY_MS)))
    assert web.newest_ts == TS_MS  # each partition has its own watermark (recovered keyed state)
    _, out = engine.parse(web, Raw("web.events", 3, 10, None, envelope(ts=TS_MS + 1000)))
    assert isinstance(out[0], Event)

    clock, settings = StreamClock(), ClockSettings(use_wall_clock=False, idle_ms=5_000, settle_ms=0)
    clock.progress("web.events/3", TS_MS, wall_ms=1_000)
    clock.progress("store.events/0", TS_MS + 60 * DAY_MS, wall_ms=2_000)
    clock.heartbeat(3_000)
    assert clock.current(settings) == TS_MS  # the slowest active one
    clock.heartbeat(6_500)
    assert clock.current(settings) == TS_MS + 60 * DAY_MS  # a silent partition stops holding it back


def test_the_churn_clock_lags_the_parsed_events_by_the_settle_time():
    from online_models.clock import ClockSettings, StreamClock

    clock, settings = StreamClock(), ClockSettings(use_wall_clock=False, settle_ms=5_000)

    def tell(wall, source=None, ts=None):  # what the clock step does with each message
        if source is None:
            clock.heartbeat(wall)
        else:
            clock.progress(source, ts, wall)
        now = clock.current(settings)
        clock.now_ms = now if now is not None else clock.now_ms
        return now

    assert tell(1_000, "web.events/0", TS_MS) is None  # nothing has settled yet
    tell(3_000, "web.events/0", TS_MS + DAY_MS)
    assert tell(6_000) == TS_MS  # as it was 5 s of wall time ago
    tell(6_500, "store.events/1", TS_MS - DAY_MS)  # a partition seen late
    assert tell(9_000) == TS_MS  # never back; nothing settles past the late partition
    tell(9_500, "store.events/1", TS_MS + 2 * DAY_MS)
    tell(9_600, "web.events/0", TS_MS + 2 * DAY_MS)
    assert tell(15_000) == TS_MS + 2 * DAY_MS
