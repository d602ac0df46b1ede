"""A process-local view of the catalog for the customer step (category and brand of a SKU).

Products pass through this process's item step, which records them here; a SKU owned by
another process's worker is read once from the catalog hash in Redis. A miss is
remembered for a few seconds so an unknown SKU does not cost a Redis call per event.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping

import redis

from online_models import keys
from online_models.events import Product

MISS_TTL_S = 5.0


class CatalogCache(Mapping[str, Product]):
    def __init__(self, redis_url: str | None = None, scheme: keys.KeyScheme | None = None) -> None:
        self._products: dict[str, Product] = {}
        self._misses: dict[str, float] = {}
        self._client = redis.Redis.from_url(redis_url) if redis_url else None
        self._catalog_key = (scheme or keys.KeyScheme()).catalog()

    def record(self, product: Product) -> None:
        self._products[product.sku] = product
        self._misses.pop(product.sku, None)

    def __getitem__(self, sku: str) -> Product:
        product = self._products.get(sku)
        if product is None:
            product = self._fetch(sku)
        if product is None:
            raise KeyError(sku)
        return product

    def _fetch(self, sku: str) -> Product | None:
        if self._client is None or time.monotonic() < self._misses.get(sku, 0.0):
            return None
        raw = self._client.hget(self._catalog_key, sku)
        if raw is None:
            self._misses[sku] = time.monotonic() + MISS_TTL_S
            return None
        product = keys.decode_product(raw)
        self._products[sku] = product
        return product

    def __iter__(self) -> Iterator[str]:
        return iter(self._products)

    def __len__(self) -> int:
        return len(self._products)
