"""A realistic, seeded input for the equality tests: the simulator's shoppers plus feedback.

``build_input()`` returns the Kafka records in the order a live system would send them:
the catalogue and the offers first, then the simulator's event-time ordered stream of web,
app and store events (anonymous sessions, ``identify`` stitching, purchases in both
channels, returns, surveys, a few producer-retry duplicates and malformed messages),
interleaved with the feedback the API would have sent on ``recs.feedback``: offer
impressions, accepts and dismissals (some in the control group) and impressions and
clicks on served recommendations. Same seed, same records.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import orjson
from confluent_kafka import Producer

from omnirec.replay import producer_config
from omnirec.settings import Settings
from omnirec.simulate import iter_events, iter_messages, load_demo_catalog
from online_models.events import parse_ts
from online_models.learning import FEATURES

SEED = 11
CUSTOMERS = 200
DAYS = 75
START_TS_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: history, far behind the wall clock
OFFERS_PATH = "omnirec/data/demo_offers.json"
CELLS = ("new", "regular|men", "regular|women", "discount|kids", "lapsing")


@dataclass(frozen=True)
class Record:
    topic: str  # a Settings field name: topic_web, topic_store, ...
    key: bytes | None
    value: bytes


def build_input(customers: int = CUSTOMERS, days: float = DAYS, seed: int = SEED) -> list[Record]:
    from pathlib import Path

    catalog = load_demo_catalog()
    offers_file = orjson.loads((Path(__file__).parents[2] / OFFERS_PATH).read_bytes())
    offers = offers_file["offers"] if isinstance(offers_file, dict) else offers_file
    records = [Record("topic_catalog", p["sku"].encode(), orjson.dumps(p)) for p in catalog]
    records += [Record("topic_offers", o["offer_id"].encode(), orjson.dumps(o)) for o in offers]
    rng = random.Random(f"equality-feedback:{seed}")
    offer_ids = [o["offer_id"] for o in offers]
    events = iter_events(customers, START_TS_MS, seed, catalog, days=days)
    for message in iter_messages(events, seed, bad_fraction=0.004, duplicate_fraction=0.01):
        records.append(Record("topic_store" if message.channel == "store" else "topic_web", message.key,
                              message.value))
        try:
            event = orjson.loads(message.value)
        except orjson.JSONDecodeError:
            continue
        records.extend(_feedback_for(event, rng, offer_ids))
    return records


def _feedback_for(event: dict, rng: random.Random, offer_ids: list[str]) -> list[Record]:
    """What a shopper's answer to offers and recommendations around this event looks like."""
    customer = event.get("customer_id")
    if event.get("type") == "product_view":
        customer = customer or "anonymous"  # what the API sends for an anonymous visitor's click
    if not customer or event.get("type") not in ("purchase", "product_view", "store_visit"):
        return []
    ts = parse_ts(event["ts"])
    out = []

    def send(kind: str, n: int, **fields) -> None:
        body = {"event_id": f"fb-{event['event_id']}-{n}-{kind}", "type": kind, "ts": ts + 60_000 * (n + 1),
                "customer_id": customer, "channel": event.get("channel"), **fields}
        out.append(Record("topic_feedback", customer.encode(), orjson.dumps(body)))

    if event["type"] in ("purchase", "store_visit") and rng.random() < 0.35:
        offer = rng.choice(offer_ids)
        decision = {"offer_id": offer, "cell": rng.choice(CELLS), "control": rng.random() < 0.05,
                    "decision_id": f"d-{event['event_id']}"}
        send("impression", 0, **decision)
        answer = rng.random()
        if answer < 0.3:
            send("accept", 1, **decision)
        elif answer < 0.5:
            send("dismiss", 1, **decision)
    elif event["type"] == "product_view" and rng.random() < 0.12:
        sku = event.get("sku") or (event.get("items") or [{}])[0].get("sku")
        if sku:
            served = {"sku": sku, "recommendation_id": f"r-{event['event_id']}",
                      "features": [round(rng.random(), 3) for _ in FEATURES]}
            send("impression", 0, **served)
            if rng.random() < 0.3:
                send("click", 1, **served)
    return out


def describe(records: list[Record]) -> str:
    topics = Counter(r.topic for r in records)
    return ", ".join(f"{topic.removeprefix('topic_')} {n}" for topic, n in sorted(topics.items()))


def produce_records(settings: Settings, records: list[Record], flush_every: int | None = None) -> None:
    """Send every record to its topic; ``flush_every`` N: wait for delivery after each N records,
    so that the broker stores the input as many small batches instead of a few large ones."""
    config = producer_config(settings)
    if flush_every:
        config.update({"linger.ms": 0, "batch.num.messages": flush_every})
    producer = Producer(config)
    failures: list = []

    def delivered(error, _message) -> None:
        if error is not None:
            failures.append(error)

    for i, record in enumerate(records, 1):
        while True:
            try:
                producer.produce(getattr(settings, record.topic), key=record.key, value=record.value,
                                 on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        if flush_every and i % flush_every == 0:
            assert producer.flush(15) == 0, "broker did not take a batch"
    assert producer.flush(30) == 0 and not failures, f"broker did not take every record: {failures[:3]}"
