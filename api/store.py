"""Everything the API reads from Redis. One pipeline (one round trip) per request; the item
tables (catalog, popularity lists, offers, repeat habits and every item's neighbour list) are
shared by every request and refreshed in the background.

Home recommendations used to cost two round trips: their anchors (the customer's recent views
and purchases) are known only once the profile is read, and their neighbour lists took a second
trip. They now come from the neighbour table, re-read on a timer (``OMNIREC_API_NEIGHBORS_REFRESH_S``)
in chunks so that the event loop never stalls; a product page's or a basket's own items are read
fresh in the request's one pipeline. A stitched alias is followed once per API process: the
link is kept (bounded), and later reads pipeline the alias and its customer together."""

from __future__ import annotations

import asyncio
import logging
import time

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


NEIGHBOR_CHUNK = 500  # neighbour lists read and decoded per step of a refresh (bounds the loop's pause)
MAX_LINKS = 100_000  # stitched aliases remembered (an alias never links to another customer)


class Store:
    def __init__(self, client: aioredis.Redis, scheme: keys.KeyScheme, churn_shards: int = 8,
                 repeat_half_life_days: float = 180.0, repeats_refresh_s: float = 30.0) -> None:
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
        self.repeats_refresh_s = repeats_refresh_s
        self._repeats_built_at: float | None = None
        self._raw_repeats: dict[bytes, bytes] = {}
        self.neighbor_table: dict[str, list[Neighbor]] = {}  # sku → its neighbours (home page anchors)
        self._links: dict[str, str] = {}  # alias → the customer it was stitched to

    async def fetch(
        self, customer_id: str | None, alias_id: str | None, skus: tuple[str, ...]
    ) -> tuple[CustomerState | None, dict[str, list[Neighbor]]]:
        """The profile and the neighbour lists of `skus`, in one round trip (the first read of
        a stitched alias in this process costs a second one, to follow the link)."""
        pipe = self.client.pipeline(transaction=False)
        linked = self._links.get(alias_id) if alias_id and not customer_id else None
        profile_key = self.scheme.customer(customer_id) if customer_id else self.scheme.alias(alias_id or "")
        pipe.get(profile_key)
        if linked is not None:
            pipe.get(self.scheme.customer(linked))
        for sku in skus:
            pipe.get(self.scheme.neighbors(sku))
        replies = await pipe.execute()
        raw_profile = replies[0]
        raw_linked = replies[1] if linked is not None else None
        raw_neighbors = replies[2 if linked is not None else 1:]
        neighbors = {sku: keys.decode_neighbors(raw, self.basket_counts) for sku, raw in zip(skus, raw_neighbors) if raw}
        state = keys.decode_profile(raw_profile) if raw_profile else None
        if isinstance(state, str):  # an alias now linked to a customer
            if state != linked:
                self._remember_link(alias_id or "", state)
                raw_linked = await self.client.get(self.scheme.customer(state))
            state = keys.decode_profile(raw_linked) if raw_linked else None
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


    def anchor_neighbors(self, anchors, at_hand: dict[str, list[Neighbor]]) -> dict[str, list[Neighbor]]:
        """`at_hand` (read with the request) plus the table's lists of the other anchors."""
        table = self.neighbor_table
        found = {sku: table[sku] for sku in anchors if sku not in at_hand and sku in table}
        return {**found, **at_hand} if found else at_hand

    def _remember_link(self, alias_id: str, customer_id: str) -> None:
        if len(self._links) >= MAX_LINKS:
            self._links.pop(next(iter(self._links)))  # the oldest: insertion order
        self._links[alias_id] = customer_id

    async def profiles(self, customer_ids: list[str], client: aioredis.Redis | None = None) -> list[CustomerState | None]:
        """The customers' profiles in one pipeline (on `client`: by default the request pool)."""
        pipe = (client or self.client).pipeline(transaction=False)
        for customer_id in customer_ids:
            pipe.get(self.scheme.customer(customer_id))
        states = [keys.decode_profile(raw) if raw else None for raw in await pipe.execute()]
        return [state if isinstance(state, CustomerState) else None for state in states]

    async def alerts(self, start: str, count: int) -> list[dict]:
        """Churn alerts from stream id `start` on (`-`: the oldest; `(id`: after it)."""
        entries = await self.client.xrange(self.scheme.churn_alerts(), min=start, max="+", count=count)
        return [alert_entry(entry) for entry in entries]

    async def flow_metrics(self, alerts_since_ms: int) -> tuple[dict[bytes, bytes], int]:
        """The flow metrics hash (its message count, and the flow's Prometheus numbers:
        ``online_models.flow_metrics``) and the number of alerts raised since `alerts_since_ms`."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.scheme.flow_metrics())
        pipe.xrange(self.scheme.churn_alerts(), min=str(alerts_since_ms), max="+", count=100_000)
        flow, alerts = await pipe.execute()
        return flow, len(alerts)

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
        if self._repeats_due(raw_repeats):
            self._raw_repeats, self._repeats_built_at = raw_repeats, time.monotonic()
            category_of = {sku: product.category for sku, product in catalog.items()}
            # a rebuild walks every item: off the event loop, at most once per repeats_refresh_s
            self.repeats = await asyncio.to_thread(_build_repeats, raw_repeats, category_of,
                                                   self.repeat_half_life_days)
        self.popularity = PopularityIndex.build(
            [(sku.decode(), score) for sku, score in global_scores],
            {store: [(sku.decode(), sc) for sku, sc in scores] for store, scores in zip(store_ids, store_lists)},
            catalog,
        )

    def _repeats_due(self, raw_repeats: dict[bytes, bytes]) -> bool:
        """Rebuild the repeat habits when they changed, but not more often than every
        ``repeats_refresh_s`` (population statistics move slowly; a rebuild walks every item)."""
        if self._repeats_built_at is None or (raw_repeats and not self.repeats.views):
            return True
        return (raw_repeats != self._raw_repeats
                and time.monotonic() - self._repeats_built_at >= self.repeats_refresh_s)

    async def refresh_neighbors(self) -> None:
        """Re-read every catalog item's neighbour list, `NEIGHBOR_CHUNK` at a time (one pipeline
        each, then a pause for the requests waiting), and swap the table in whole."""
        skus = sorted(self.catalog)
        table: dict[str, list[Neighbor]] = {}
        for start in range(0, len(skus), NEIGHBOR_CHUNK):
            chunk = skus[start: start + NEIGHBOR_CHUNK]
            pipe = self.client.pipeline(transaction=False)
            for sku in chunk:
                pipe.get(self.scheme.neighbors(sku))
            for sku, raw in zip(chunk, await pipe.execute()):
                if raw:
                    table[sku] = keys.decode_neighbors(raw, self.basket_counts)
            await asyncio.sleep(0)
        self.neighbor_table = table

    async def refresh_neighbors_forever(self, every_s: float) -> None:
        while True:
            try:
                await self.refresh_neighbors()
            except (RedisError, ValueError) as exc:
                log.warning("neighbour table refresh failed: %s", exc)
            await asyncio.sleep(every_s)

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


def _build_repeats(raw_repeats: dict[bytes, bytes], category_of: dict[str, str],
                   half_life_days: float) -> RepeatModel:
    return RepeatModel.build({sku.decode(): keys.decode_repeats(sku.decode(), raw) for sku, raw in raw_repeats.items()},
                             category_of, half_life_days)


def alert_entry(entry) -> dict:
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
