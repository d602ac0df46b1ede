"""Everything the API reads from Redis. One pipeline (one round trip) per request; the catalog
and popularity lists are shared by every request and refreshed in the background."""

from __future__ import annotations

import asyncio
import logging

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from online_models import erasure, keys
from online_models.answers import GLOBAL_LIST, STORE_LIST
from online_models.customer import CustomerState
from online_models.events import Product
from online_models.items import Neighbor, PopularityIndex
from online_models.learning import RankerWeights
from online_models.offers import Offer, OfferStats
from online_models.profile import Population
from online_models.repeats import RepeatModel

log = logging.getLogger("omnirec.api")


class Store:
    def __init__(self, client: aioredis.Redis, scheme: keys.KeyScheme, churn_shards: int = 8,
                 repeat_half_life_days: float = 180.0) -> None:
        self.client = client
        self.scheme = scheme
        self.catalog: dict[str, Product] = {}
        self.popularity = PopularityIndex()
        self.basket_counts: dict[str, float] = {}  # sku → log basket count: complement scores divide by it
        self.offers: dict[str, Offer] = {}
        self.offer_stats: dict[str, OfferStats] = {}
        self.ranker: RankerWeights | None = None
        self._raw_catalog: dict[bytes, bytes] = {}
        self.churn_shards = churn_shards
        self.population = Population(shards=churn_shards)
        self.repeats = RepeatModel()  # learned repeat-purchase habits (rebuilt when they change)
        self.repeat_half_life_days = repeat_half_life_days
        self._raw_repeats: dict[bytes, bytes] = {}

    async def fetch(
        self, customer_id: str | None, alias_id: str | None, skus: tuple[str, ...]
    ) -> tuple[CustomerState | None, dict[str, list[Neighbor]]]:
        """The profile and the neighbour lists of `skus`, in one round trip.

        An alias that was stitched to a customer costs a second trip, once per request.
        """
        pipe = self.client.pipeline(transaction=False)
        profile_key = self.scheme.customer(customer_id) if customer_id else self.scheme.alias(alias_id or "")
        pipe.get(profile_key)
        for sku in skus:
            pipe.get(self.scheme.neighbors(sku))
        raw_profile, *raw_neighbors = await pipe.execute()
        neighbors = {sku: keys.decode_neighbors(raw, self.basket_counts) for sku, raw in zip(skus, raw_neighbors) if raw}
        state = keys.decode_profile(raw_profile) if raw_profile else None
        if isinstance(state, str):  # an alias now linked to a customer
            raw = await self.client.get(self.scheme.customer(state))
            state = keys.decode_profile(raw) if raw else None
        return state if isinstance(state, CustomerState) else None, neighbors

    async def aliases(self, customer_id: str) -> tuple[str, ...]:
        """The aliases the customer's stored profile lists."""
        raw = await self.client.get(self.scheme.customer(customer_id))
        return erasure.aliases_of(keys.decode_profile(raw)) if raw else ()

    async def erase(self, customer_id: str, aliases: tuple[str, ...]) -> tuple[int, int]:
        """Delete every key of the customer and of ``aliases``, their churn-alert entries and the
        alerts' ``seen`` keys (``online_models.erasure``); returns (keys deleted, alert entries deleted)."""
        pipe = self.client.pipeline(transaction=False)
        for write in erasure.writes(self.scheme, customer_id, aliases):
            write.apply(pipe)
        *deleted, (alerts, seen_deleted) = await pipe.execute()
        deleted.append(seen_deleted)
        seen = [key async for key in self.client.scan_iter(match=erasure.seen_key_pattern(self.scheme, customer_id),
                                                             count=1000)
                if erasure.is_seen_key_of(self.scheme, key.decode(errors="replace"), customer_id)]
        for start in range(0, len(seen), 500):  # seen keys share the stream's hash tag: one slot
            deleted.append(await self.client.delete(*seen[start:start + 500]))
        return sum(deleted), int(alerts)

    async def profiles(self, customer_ids: list[str]) -> list[CustomerState | None]:
        pipe = self.client.pipeline(transaction=False)
        for customer_id in customer_ids:
            pipe.get(self.scheme.customer(customer_id))
        states = [keys.decode_profile(raw) if raw else None for raw in await pipe.execute()]
        return [state if isinstance(state, CustomerState) else None for state in states]

    async def neighbors(self, skus: list[str]) -> dict[str, list[Neighbor]]:
        if not skus:
            return {}
        pipe = self.client.pipeline(transaction=False)  # not MGET: keys sit in different slots
        for sku in skus:
            pipe.get(self.scheme.neighbors(sku))
        raws = await pipe.execute()
        return {sku: keys.decode_neighbors(raw, self.basket_counts) for sku, raw in zip(skus, raws) if raw}

    async def alerts(self, start: str, count: int) -> list[dict]:
        """Churn alerts from stream id `start` on (`-`: the oldest; `(id`: after it)."""
        entries = await self.client.xrange(self.scheme.churn_alerts(), min=start, max="+", count=count)
        return [_alert_entry(entry) for entry in entries]

    async def alerts_after(self, last_id: str, block_ms: int) -> list[dict]:
        """Alerts raised after `last_id` (`$`: from now on), waiting up to `block_ms` for one."""
        reply = await self.client.xread({self.scheme.churn_alerts(): last_id}, count=100, block=block_ms)
        return [_alert_entry(entry) for entry in reply[0][1]] if reply else []

    async def flow_metrics(self, alerts_since_ms: int) -> tuple[int, int, int]:
        """The flow's message count and last update, and the alerts raised since `alerts_since_ms`."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.scheme.flow_metrics())
        pipe.xrange(self.scheme.churn_alerts(), min=str(alerts_since_ms), max="+", count=100_000)
        flow, alerts = await pipe.execute()
        return int(flow.get(b"messages", 0)), int(flow.get(b"updated_ms", 0)), len(alerts)

    async def refresh(self) -> None:
        """Reload the catalog and popularity lists (one pipeline, then one per store list)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.scheme.catalog())
        pipe.zrange(self.scheme.popularity(), 0, GLOBAL_LIST - 1, desc=True, withscores=True)
        pipe.smembers(self.scheme.store_popularity_index())
        pipe.hgetall(self.scheme.offers())
        pipe.smembers(self.scheme.offer_stats_index())
        pipe.get(self.scheme.ranker())
        pipe.zrange(self.scheme.basket_counts(), 0, -1, withscores=True)
        pipe.hgetall(self.scheme.repeats())
        raw_catalog, global_scores, stores, raw_offers, stats_ids, raw_ranker, counts, raw_repeats = await pipe.execute()
        self.basket_counts = {sku.decode(): score for sku, score in counts}
        store_ids = sorted(s.decode() for s in stores)
        offer_ids = sorted(o.decode() for o in stats_ids)
        pipe = self.client.pipeline(transaction=False)
        for store_id in store_ids:
            pipe.zrange(self.scheme.store_popularity(store_id), 0, STORE_LIST - 1, desc=True, withscores=True)
        for offer_id in offer_ids:
            pipe.get(self.scheme.offer_stats(offer_id))
        for shard in range(self.churn_shards):
            pipe.get(self.scheme.churn_shard(shard))
        replies = await pipe.execute()
        store_lists = replies[: len(store_ids)]
        raw_stats = replies[len(store_ids): len(store_ids) + len(offer_ids)]
        raw_shards = replies[len(store_ids) + len(offer_ids):]
        self.population = Population.merge(self.churn_shards, {
            shard: keys.decode_churn_shard(raw) for shard, raw in enumerate(raw_shards) if raw})
        self.offers = _decode_all(raw_offers, keys.decode_offer)
        self.ranker = keys.decode_ranker(raw_ranker) if raw_ranker else None
        self.offer_stats = {oid: keys.decode_offer_stats(raw) for oid, raw in zip(offer_ids, raw_stats) if raw}
        catalog = self._decode_changed(raw_catalog)
        self.catalog = catalog
        if raw_repeats != self._raw_repeats or not self.repeats.views:
            self._raw_repeats = raw_repeats
            self.repeats = RepeatModel.build(
                {sku.decode(): keys.decode_repeats(sku.decode(), raw) for sku, raw in raw_repeats.items()},
                {sku: product.category for sku, product in catalog.items()}, self.repeat_half_life_days)
        self.popularity = PopularityIndex.build(
            [(sku.decode(), score) for sku, score in global_scores],
            {store: [(sku.decode(), sc) for sku, sc in scores] for store, scores in zip(store_ids, store_lists)},
            catalog,
        )

    def _decode_changed(self, raw_catalog: dict[bytes, bytes]) -> dict[str, Product]:
        """Decode only the products whose bytes changed since the last refresh."""
        previous, known = self._raw_catalog, self.catalog
        unchanged = {sku.decode(): known[sku.decode()] for sku, raw in raw_catalog.items()
                     if previous.get(sku) == raw and sku.decode() in known}
        changed = {sku: raw for sku, raw in raw_catalog.items() if sku.decode() not in unchanged}
        self._raw_catalog = raw_catalog
        return {**unchanged, **_decode_all(changed, keys.decode_product)}

    async def refresh_forever(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.refresh()
            except (RedisError, ValueError) as exc:  # keep serving from the last good copy
                log.warning("catalog refresh failed: %s", exc)


def _alert_entry(entry) -> dict:
    entry_id, fields = entry
    return {"id": entry_id.decode(), **orjson.loads(fields[b"alert"])}


def _decode_all(raw: dict[bytes, bytes], decode) -> dict:
    decoded = {}
    for name, blob in raw.items():
        try:
            decoded[name.decode()] = decode(blob)
        except (ValueError, KeyError) as exc:
            log.warning("skipping unreadable %r: %s", name, exc)
    return decoded
