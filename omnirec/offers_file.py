"""`omnirec offers load FILE.json`: validate a file of offer definitions and publish it."""

from __future__ import annotations

from pathlib import Path

import orjson

from omnirec.settings import Settings
from online_models.offers import Offer, OfferError, OfferStats, offer_from_dict


def read_offers(path: Path) -> tuple[list[Offer], list[str]]:
    """Every offer of the file, and every problem, each naming the offer and the field."""
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        return [], [f"{path}: not valid JSON: {exc}"]
    items = data.get("offers") if isinstance(data, dict) else data
    if not isinstance(items, list):
        return [], [f"{path}: expected a JSON list of offers (or {{\"offers\": [...]}})"]
    offers, errors, seen = [], [], set()
    for index, item in enumerate(items):
        try:
            offer = offer_from_dict(item)
        except OfferError as exc:
            errors.append(f"{path} [{index}]: {exc}")
            continue
        if offer.offer_id in seen:
            errors.append(f"{path} [{index}]: offer {offer.offer_id!r} appears twice")
        seen.add(offer.offer_id)
        offers.append(offer)
    return offers, errors


def publish(offers: list[Offer], settings: Settings) -> int:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    failures: list = []
    for offer in offers:
        producer.produce(settings.topic_offers, key=offer.offer_id.encode(), value=orjson.dumps(offer.to_dict()),
                         on_delivery=lambda err, _msg: failures.append(err) if err else None)
    remaining = producer.flush(15)
    if failures or remaining:
        raise RuntimeError(f"{len(failures) + remaining} offers were not acknowledged by the broker")
    return len(offers)


def read_from_redis(settings: Settings) -> tuple[dict[str, Offer], list[OfferStats]]:
    """The offers and their stats as the flow materialised them (two round trips)."""
    import redis

    from online_models import keys

    scheme = keys.KeyScheme(settings.key_prefix)
    client = redis.Redis.from_url(settings.redis_url)
    try:
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(scheme.offers())
        pipe.smembers(scheme.offer_stats_index())
        raw_offers, ids = pipe.execute()
        offer_ids = sorted(i.decode() for i in ids)
        pipe = client.pipeline(transaction=False)
        for offer_id in offer_ids:
            pipe.get(scheme.offer_stats(offer_id))
        raw_stats = pipe.execute()
    finally:
        client.close()
    offers = {o.offer_id: o for o in (keys.decode_offer(raw) for raw in raw_offers.values())}
    return offers, [keys.decode_offer_stats(raw) for raw in raw_stats if raw]
