"""`omnirec offers load FILE.json`: validate a file of offer definitions and publish it."""

from __future__ import annotations

from pathlib import Path

import orjson

from omnirec.settings import Settings
from online_models.offers import Offer, OfferError, offer_from_dict


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
