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


# --- poison: values that once crashed steps (issue 13); each must be a rejection with a reason


@pytest.mark.parametrize("raw, reason", [
    (envelope(ts=1.5e15), "field 'ts' is out of range: 1.5e+15 epoch ms is not within the years 1 to 9999"),
    (envelope(ts=1_500_000_000_000_000), "is not within the years 1 to 9999"),
    (envelope(ts="²"), "field 'ts' is not ISO-8601; got '²'"),
    (envelope(ts="٣٣٣٣٣٣٣٣٣٣٣٣٣"), "field 'ts' is not ISO-8601"),
    (envelope(ts="99999999999999999999999"),
     "field 'ts' is out of range: '99999999999999999999999' epoch ms is not within the years 1 to 9999"),
    (envelope(ts="9" * 5000), "field 'ts' is out of range"),
    (envelope(ts=-1e18), "is not within the years 1 to 9999"),
    (envelope(ts="9999-12-31T23:59:59+00:00"), "is after 2100-01-01; microseconds sent as ms?"),
    (envelope(ts="0001-01-01T00:00:00+14:00"), "is not within the years 1 to 9999"),
    (envelope(ts=4_200_000_000_000), "is after 2100-01-01"),
    (b'{"event_id": "e1", "type": "purchase", "channel": "store", "customer_id": "c", '
     b'"ts": 99999999999999999999999, "items": [{"sku": "A"}]}', "is not within the years 1 to 9999"),
    (envelope(items=[{"sku": "A", "qty": 1e308, "price": 49.9}]), "field 'items[0].qty' must be <= 10000; got 1e+308"),
    (envelope(items=[{"sku": "A", "qty": 2, "price": 1e308}]), "field 'items[0].price' must be <= 1e+06; got 1e+308"),
    (envelope(items=[{"sku": "A", "qty": 1, "price": 5, "list_price": 1e300}]), "'items[0].list_price' must be <= 1e+06"),
    (envelope(type="return", items=[{"sku": "A", "qty": 1e308, "price": 1}]), "'items[0].qty' must be <= 10000"),
    (envelope(type="survey", items=..., score=1e308), "survey needs field 'score' between 0 and 10"),
    (b'{"event_id": "e1", "type": "purchase", "ts": 1e400}', "not valid JSON"),
    (b'{"event_id": "e1", "type": "purchase", "ts": NaN}', "not valid JSON"),
])
def test_poison_values_are_rejected_with_a_reason(raw, reason):
    result = parse_event(raw, now_ms=TS_MS)
    assert isinstance(result, Rejected), result
    assert reason in result.reason


def test_two_huge_purchases_cannot_make_gross_infinite():
    from online_models.engine import Engine, Runner
    from online_models.messages import DeadLetter, Raw

    outputs = []
    runner = Runner(Engine(), on_output=outputs.append)
    for n in range(2):
        runner.feed(Raw("store.events", 0, n, b"c-42", envelope(event_id=f"e{n}", items=[
            {"sku": "A", "qty": 1e308, "price": 1.0}]), TS_MS))
    runner.feed(Raw("store.events", 0, 2, b"c-42", envelope(event_id="e2"), TS_MS))
    letters = [o for o in outputs if isinstance(o, DeadLetter)]
    assert [letter.raw.offset for letter in letters] == [0, 1]
    assert all("must be <= 10000" in letter.reason for letter in letters)
    assert runner.state("customers", "c-42").gross == 49.9  # the good event after them still counts


def test_limits_come_from_settings():
    from omnirec.settings import Settings

    limits = Settings(max_item_qty=5, max_item_price=100, latest_event_date="2030-01-01").engine().limits
    assert isinstance(parse_event(envelope(items=[{"sku": "A", "qty": 5, "price": 100}]), limits=limits), Event)
    assert "must be <= 5" in parse_event(envelope(items=[{"sku": "A", "qty": 6, "price": 1}]), limits=limits).reason
    assert "must be <= 100" in parse_event(envelope(items=[{"sku": "A", "price": 101}]), limits=limits).reason
    assert "after 2030-01-01" in parse_event(envelope(ts="2031-01-01T00:00:00Z"), limits=limits).reason


def test_products_and_feedback_are_bounded_too():
    from online_models.events import parse_feedback

    product = {"sku": "A", "category": "men/belts", "price": 1e308}
    assert "field 'price' must be <= 1e+06" in parse_product(orjson.dumps(product)).reason
    assert "field 'margin' must be >= -1e+06" in parse_product(orjson.dumps({**product, "price": 1,
                                                                            "margin": -1e300})).reason
    click = {"event_id": "f1", "type": "click", "ts": TS_MS, "customer_id": "c", "sku": "A",
             "features": [1e308, -1e308, 0.5]}
    assert parse_feedback(orjson.dumps(click)).features == (10.0, -10.0, 0.5)  # learning.FEATURE_BOUND
    assert "is not within the years" in parse_feedback(orjson.dumps({**click, "ts": 9e18})).reason


def test_offer_numbers_are_finite_and_bounded():
    from online_models.engine import parse_offer

    offer = {"offer_id": "o1", "kind": "discount", "value": 1e308}
    assert "field 'value' must be finite and within" in parse_offer(orjson.dumps(offer)).reason
    assert not isinstance(parse_offer(orjson.dumps({**offer, "value": 5})), Rejected)


def test_a_copied_stream_clock_keeps_its_samples():
    import copy

    from online_models.clock import ClockSettings, StreamClock

    clock = StreamClock()
    clock.progress("web.events/0", TS_MS, wall_ms=1_000)
    clock.current(ClockSettings(settle_ms=5_000))
    assert copy.deepcopy(clock) == clock and copy.deepcopy(clock).history == [[1_000, TS_MS]]
