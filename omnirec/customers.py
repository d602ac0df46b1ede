"""``omnirec customers erase ID``: the erasure of ``DELETE /v1/customers/{id}``, from the command
line (Redis and the broker directly, no API needed). What is deleted and how the flow forgets
are decided in ``online_models.erasure``; this module only sends and applies it."""

from __future__ import annotations

import time

import orjson
import redis

from omnirec.settings import Settings
from online_models import erasure, keys


def erase(settings: Settings, customer_id: str, extra_aliases: tuple[str, ...] = ()) -> dict:
    """Tombstone first (the broker must acknowledge it, or nothing is deleted), then Redis."""
    from confluent_kafka import Producer

    scheme = keys.KeyScheme(settings.key_prefix)
    client = redis.Redis.from_url(settings.redis_url)
    try:
        raw = client.get(scheme.customer(customer_id))
        aliases = tuple(sorted({*(erasure.aliases_of(keys.decode_profile(raw)) if raw else ()), *extra_aliases}))
        tombstone = erasure.tombstone_envelope(customer_id, aliases, time.time_ns() // 1_000_000)
        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
        failures: list = []
        producer.produce(settings.topic_web, key=customer_id.encode(), value=orjson.dumps(tombstone),
                         on_delivery=lambda error, _msg: failures.append(error) if error else None)
        if producer.flush(15) or failures:
            raise RuntimeError(f"the broker did not acknowledge the tombstone ({failures or 'timeout'}): "
                               "nothing was deleted")
        pipe = client.pipeline(transaction=False)
        for write in erasure.writes(scheme, customer_id, aliases):
            write.apply(pipe)
        *deleted, (alerts, seen_deleted) = pipe.execute()
        deleted.append(seen_deleted)
        seen = [key for key in client.scan_iter(match=erasure.seen_key_pattern(scheme, customer_id), count=1000)
                if erasure.is_seen_key_of(scheme, key.decode(errors="replace"), customer_id)]
        for start in range(0, len(seen), 500):
            deleted.append(client.delete(*seen[start:start + 500]))
    finally:
        client.close()
    return {"customer_id": customer_id, "aliases": list(aliases), "keys_deleted": sum(deleted),
            "alerts_deleted": int(alerts), "tombstone_event_id": tombstone["event_id"]}
