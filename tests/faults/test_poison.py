"""Poison messages against the real flow, broker (tansu) and Redis (issue 13, "Nothing crashes
the flow"): the six kinds that once crashed the flow in a loop, and a fuzz of >= 20,000 random
bad messages. Every one must come out on the dead-letter topic with a reason (none lost, none
extra), and the flow must stay up and go on applying good events produced after them.

Loopback only, bounded: one flow, one topic set, about 20k small messages and one of 1 MiB."""

from __future__ import annotations

import random
import time
from collections import Counter

import orjson
import pytest
import redis
from confluent_kafka import Producer

from online_models import keys
from online_models.events import Rejected, parse_event
from tests.integration.kafka_tools import consume, wait_for
from tests.seed import purchase

FUZZ = 20_000
SEED = 1313


def bad_values(rng: random.Random, n: int) -> list[bytes]:
    """``n`` distinct messages, each bad in one random way (many shapes: bytes, JSON, fields)."""
    huge = [1e15, 1.5e15, 9e18, 1e23, 1e300, 1.7976931348623157e308, -1e18, -1.0]
    ts_bad = [*huge, "²", "٣٣٣٣", "99999999999999999999999", "9" * 400, "", "yesterday", True, [], {},
              "2026-13-40T00:00:00Z", "2026-11-25T10:15:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59Z"]
    num_bad = [*huge, 0, -2, 1e5, 10_001, "two", None, True, [1], {"x": 1}, float(2 ** 63), 1e308 / 3]
    out: set[bytes] = set()
    while len(out) < n:
        i = len(out)
        good = purchase(0, f"c-fz-{i}", ["TR-1"], ts=1_790_000_000_000 + i)
        good["event_id"] = f"fz-{i}-{rng.getrandbits(32):x}"
        kind = rng.randrange(10)
        if kind == 0:
            value = rng.randbytes(rng.randrange(1, 120))
        elif kind == 1:
            text = orjson.dumps(good)
            value = text[: rng.randrange(1, len(text) - 1)]
        elif kind == 2:
            value = orjson.dumps({**good, "ts": rng.choice(ts_bad)})
        elif kind == 3:
            item = ({"sku": "TR-1", "qty": rng.choice([q for q in num_bad if q is not None]), "price": 10.0}
                    if rng.random() < 0.6 else
                    {"sku": "TR-1", "qty": 1, "price": rng.choice([1e7, 1e308, -5, "free", 1e300, [], True])})
            value = orjson.dumps({**good, "items": [item]})
        elif kind == 4:
            value = orjson.dumps({**good, "type": rng.choice(["teleport", "", "PURCHASE", 7, None])})
        elif kind == 5:
            field = rng.choice(["event_id", "ts", "channel", "type"])
            value = orjson.dumps({k: v for k, v in good.items() if k != field})
        elif kind == 6:
            value = orjson.dumps({**good, "items": rng.choice([[], None, "TR-1", [1, 2], [{"qty": 1}]])})
        elif kind == 7:
            value = orjson.dumps({**good, "type": "survey", "score": rng.choice([11, -1, 1e308, "ten", None])})
        elif kind == 8:
            value = orjson.dumps(rng.choice([[good], "purchase", 42, None, [1, 2, 3]])) + b" " * rng.randrange(4)
            value += f"  {i}".encode()  # trailing junk: never valid JSON, always distinct
        else:
            number = rng.choice([b"1e400", b"NaN", b"Infinity", b"-1e999", b"1e99999"])  # not JSON numbers
            value = orjson.dumps({**good, "ts": 0}).replace(b'"ts":0', b'"ts":' + number)
        out.add(value)
    return sorted(out, key=lambda v: rng.random())


def poison(customer: str) -> dict[str, bytes]:
    """The six kinds of issue 13 (the fifth is two messages), by name."""
    base = purchase(0, customer, ["TR-1"])
    huge_qty = {"sku": "TR-1", "qty": 1e308, "price": 10.0}
    return {
        "ts 1.5e15 ms": orjson.dumps({**base, "event_id": "pz-1", "ts": 1.5e15}),
        "ts ²": orjson.dumps({**base, "event_id": "pz-2", "ts": "²"}),
        "ts 10^23": orjson.dumps({**base, "event_id": "pz-3", "ts": "99999999999999999999999"}),
        "qty × price overflow": orjson.dumps({**base, "event_id": "pz-4", "items": [huge_qty]}),
        "gross to infinity (1 of 2)": orjson.dumps({**base, "event_id": "pz-5", "items": [huge_qty]}),
        "gross to infinity (2 of 2)": orjson.dumps({**base, "event_id": "pz-6", "order_id": "o-6",
                                                    "items": [{**huge_qty, "price": 1.0}]}),
        "1 MiB payload": orjson.dumps({**base, "event_id": "pz-7", "query": "x" * (1024 * 1024)}),
    }


def produce_all(settings, records) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True,
                         "linger.ms": 20, "message.max.bytes": 4 * 1024 * 1024})
    failed: list = []
    for topic, key, value in records:
        while True:
            try:
                producer.produce(topic, key=key, value=value,
                                 on_delivery=lambda err, _m: err is not None and failed.append(err))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0 and not failed, f"broker did not take every message: {failed[:3]}"


def profile(settings, customer_id):
    raw = redis.Redis.from_url(settings.redis_url).get(keys.KeyScheme(settings.key_prefix).customer(customer_id))
    return keys.decode_profile(raw) if raw else None


@pytest.mark.faults
def test_poison_and_fuzz_are_dead_lettered_and_the_flow_goes_on(settings, run_flow):
    started = time.monotonic()
    rng = random.Random(SEED)
    kinds = poison("c-poison")
    fuzz = bad_values(rng, FUZZ)
    now = int(time.time() * 1000)
    accepted = [v for v in fuzz if not isinstance(parse_event(v, now_ms=now), Rejected)]
    assert not accepted, f"the fuzz made good messages: {accepted[:3]}"

    flow = run_flow(settings)
    topics = (settings.topic_web, settings.topic_store)
    records = [(settings.topic_store, b"c-poison", value) for value in kinds.values()]
    records += [(topics[n % 2], f"k-{rng.randrange(500)}".encode() if n % 7 else None, value)
                for n, value in enumerate(fuzz)]
    produce_all(settings, records)
    # good events after every bad one, on both topics; c-poison's first good purchase too
    after = [purchase(0, "c-poison", ["TR-1"], event_id="p-after-0"), purchase(0, "c-after", ["TR-1"])]
    produce_all(settings, [(settings.topic_store, e["customer_id"].encode(), orjson.dumps(e)) for e in after]
                + [(settings.topic_web, b"c-web", orjson.dumps({**purchase(0, "c-web", ["CF-1"]), "channel": "web"}))])

    for customer in ("c-poison", "c-after", "c-web"):
        wait_for(lambda c=customer: (p := profile(settings, c)) is not None and p.orders == 1, 90,
                 f"{customer}'s good purchase after the poison")
    poisoned = profile(settings, "c-poison")
    assert poisoned.gross == 10.0 and poisoned.orders == 1  # the 1e308 purchases left nothing behind

    expected = len(records)
    letters = consume(settings, settings.topic_deadletter, expected=expected, timeout=90)
    assert len(letters) == expected, f"{len(letters)} dead letters for {expected} bad messages"
    headers = [dict(m.headers()) for m in letters]
    positions = {(h["source_topic"], h["source_partition"], h["source_offset"]) for h in headers}
    assert len(positions) == expected  # each bad message once, at its own position
    assert all(h.get("reason") for h in headers)
    by_value = {m.value(): h for m, h in zip(letters, headers)}
    big = next(h for m, h in zip(letters, headers) if h.get("truncated") == b"true")
    assert int(big["original_size"]) == len(kinds["1 MiB payload"])
    assert b"exceeds the limit of 65536" in big["reason"]
    reasons = {name: by_value[value]["reason"].decode() for name, value in kinds.items() if value in by_value}
    assert reasons == {
        "ts 1.5e15 ms": "field 'ts' is out of range: 1.5e+15 epoch ms is not within the years 1 to 9999",
        "ts ²": "field 'ts' is not ISO-8601; got '²'",
        "ts 10^23": "field 'ts' is out of range: '99999999999999999999999' epoch ms is not within the years 1 to 9999",
        "qty × price overflow": "field 'items[0].qty' must be <= 10000; got 1e+308",
        "gross to infinity (1 of 2)": "field 'items[0].qty' must be <= 10000; got 1e+308",
        "gross to infinity (2 of 2)": "field 'items[0].qty' must be <= 10000; got 1e+308",
    }
    produced = Counter(value for _, _, value in records if len(value) < 512 * 1024)
    assert Counter(m.value() for m in letters if dict(m.headers()).get("truncated") != b"true") == produced
    assert flow.alive(), flow.log()
    assert "Traceback" not in flow.log(), flow.log()[-3000:]
    print(f"\n{expected} bad messages dead-lettered in {time.monotonic() - started:.1f} s")
