"""Every recommendation read costs one Redis round trip against the real Redis, home pages
included: their anchors (the customer's purchases) take their neighbour lists from the store's
neighbour table, refreshed in the background (measured before: two trips per home page)."""

from __future__ import annotations

import asyncio

import redis
import redis.asyncio as aioredis

from api.store import Store
from online_models import keys, ranking
from online_models.customer import CustomerState
from online_models.decay import Decay
from online_models.events import Product
from online_models.items import ItemNeighbors
from tests.unit.helpers import purchase


class CountingClient:
    """The Redis client, counting the round trips made through it."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client, self.trips = client, 0

    def pipeline(self, **kw):
        pipe = self.client.pipeline(**kw)
        execute = pipe.execute

        async def counted(*a, **k):
            self.trips += 1
            return await execute(*a, **k)

        pipe.execute = counted
        return pipe

    async def get(self, key):
        self.trips += 1
        return await self.client.get(key)


def test_home_recommendations_read_redis_once(redis_url, key_prefix):
    scheme = keys.KeyScheme(key_prefix)
    state = CustomerState("c-1")
    state.apply(purchase("p1", skus=("TR-1",)), Decay(14))
    sync = redis.Redis.from_url(redis_url)
    sync.set(scheme.customer("c-1"), keys.encode_customer(state))
    sync.set(scheme.neighbors("TR-1"), keys.encode_neighbors(
        ItemNeighbors("TR-1", log_count=3.0, last_ts_log=1.0, partners={"BL-1": 2.5})))

    async def scenario():
        client = aioredis.Redis.from_url(redis_url)
        counting = CountingClient(client)
        store = Store(counting, scheme)
        store.catalog = {"TR-1": Product("TR-1", "Trousers", "men/trousers", price=50.0),
                         "BL-1": Product("BL-1", "Belt", "men/belts", price=20.0)}
        store.basket_counts = {"TR-1": 3.0, "BL-1": 2.8}  # log basket counts, as refresh() reads them
        await store.refresh_neighbors()
        assert "TR-1" in store.neighbor_table
        counting.trips = 0
        request = ranking.Request("home")
        found, at_hand = await store.fetch("c-1", None, ())
        anchors = [sku for sku in ranking.anchors(found, request) if sku not in request.skus]
        neighbors = store.anchor_neighbors(anchors, at_hand)
        await client.aclose()
        return found, neighbors, counting.trips

    found, neighbors, trips = asyncio.run(scenario())
    assert found is not None and found.customer_id == "c-1"
    assert trips == 1
    assert [n.sku for n in neighbors["TR-1"]] == ["BL-1"]  # the anchor's complements, from the table
