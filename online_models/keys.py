"""The Redis key scheme and byte codec, shared by the writer (flow) and the reader (API).

Every key sits under a configurable prefix and carries a hash tag per entity
(`rec:{c:c-42}:profile`), so the layout works on Redis Cluster unchanged. Blobs carry
the schema version; a reader refuses a version it does not know instead of guessing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from online_models import decay
from online_models.churn import Alert, ChurnModel, PopulationShard
from online_models.customer import MAX_BRANDS, MAX_CATEGORIES, MAX_SKU_INTEREST, CustomerState
from online_models.events import Product, format_ts, product_from_dict
from online_models.items import ItemNeighbors, Neighbor, complements
from online_models.learning import RankerWeights, RecRanker
from online_models.nextbasket import MAX_VECTOR
from online_models.offers import Offer, OfferStats, offer_from_dict
from online_models.repeats import ItemRepeats
from online_models.tiers import PopulationSketch

SCHEMA_VERSION = 1
NEIGHBORS_STORED = 30


class SchemaMismatch(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class KeyScheme:
    prefix: str = "rec"

    def customer(self, customer_id: str) -> str:
        return f"{self.prefix}:{{c:{customer_id}}}:profile"

    def alias(self, alias_id: str) -> str:
        """Anonymous / loyalty alias: its own profile until stitched, then a link."""
        return f"{self.prefix}:{{a:{alias_id}}}:profile"

    def neighbors(self, sku: str) -> str:
        return f"{self.prefix}:{{i:{sku}}}:neighbors"

    def catalog(self) -> str:
        return f"{self.prefix}:{{catalog}}:products"

    def basket_counts(self) -> str:
        """ZSET sku → decayed basket count (log): what complement scores divide by."""
        return f"{self.prefix}:{{pop}}:baskets"

    def repeats(self) -> str:
        """HASH sku → the item's repeat-purchase counts by 30-day bucket (``encode_repeats``)."""
        return f"{self.prefix}:{{pop}}:repeats"

    def popularity(self) -> str:
        return f"{self.prefix}:{{pop}}:global"

    def store_popularity_index(self) -> str:
        """Set of store ids that have a popularity list, so readers can find them."""
        return f"{self.prefix}:{{pop}}:stores"

    def store_popularity(self, store_id: str) -> str:
        return f"{self.prefix}:{{pop:{store_id}}}:store"

    def offers(self) -> str:
        return f"{self.prefix}:{{offers}}:definitions"

    def offer_stats(self, offer_id: str) -> str:
        return f"{self.prefix}:{{o:{offer_id}}}:stats"

    def offer_stats_index(self) -> str:
        return f"{self.prefix}:{{offers}}:with-stats"

    def churn_shard(self, shard: int) -> str:
        return f"{self.prefix}:{{churn:{shard}}}:model"

    def churn_alerts(self) -> str:
        return f"{self.prefix}:{{alerts}}:churn"

    def churn_alert_seen(self, alert_id: str) -> str:
        """Same hash tag as the stream: the idempotent XADD script touches both keys."""
        return f"{self.prefix}:{{alerts}}:seen:{alert_id}"

    def flow_metrics(self) -> str:
        return f"{self.prefix}:{{metrics}}:flow"

    def ranker(self) -> str:
        return f"{self.prefix}:{{ranker}}:weights"


# --- codec -------------------------------------------------------------------------------


def encode_customer(state: CustomerState) -> bytes:
    """Readers need no dedup window; log-weights keep 4 decimals (1e-4 relative), every other
    number 6. A customer's events arrive from several topics in an order that depends on how
    they were read, and float sums differ in their last bits with the order: rounding keeps
    those bits out of the stored bytes (same input, same bytes)."""
    data = state.to_dict()
    data.pop("seen_ids")
    data.pop("recent_adds")  # what cart pairs are formed from; readers need the cart
    for name, keep in (("categories", MAX_CATEGORIES), ("brands", MAX_BRANDS), ("sku_interest", MAX_SKU_INTEREST),
                       ("basket_vector", MAX_VECTOR)):
        data[name] = {key: round(value, 4) for key, value in decay.top(data[name], keep).items()}
    return orjson.dumps({"v": SCHEMA_VERSION, "kind": "customer", "state": _rounded(data)},
                        option=orjson.OPT_SORT_KEYS)  # dict order follows arrival order


def _rounded(value: Any, digits: int = 6) -> Any:
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v, digits) for v in value]
    return value


def encode_link(alias_id: str, customer_id: str) -> bytes:
    return orjson.dumps({"v": SCHEMA_VERSION, "kind": "link", "alias": alias_id, "customer_id": customer_id})


def encode_link_pair(pair: tuple[str, str]) -> bytes:
    return encode_link(*pair)


def decode_profile(raw: bytes) -> CustomerState | str:
    """A stored profile → the customer state, or the customer id an alias now links to."""
    blob = _load(raw)
    if blob.get("kind") == "link":
        return blob["customer_id"]
    return CustomerState.from_dict(blob["state"])


def encode_repeats(state: ItemRepeats) -> bytes:
    """``[[bucket, buyers, repeaters, repeats, log-gaps], …]`` by bucket: integers only."""
    return orjson.dumps({"v": SCHEMA_VERSION, "newest": state.newest,
                         "b": [[bucket, *counts] for bucket, counts in sorted(state.buckets.items())]})


def decode_repeats(sku: str, raw: bytes) -> ItemRepeats:
    data = _load(raw)
    return ItemRepeats(sku, {row[0]: list(row[1:]) for row in data["b"]}, data.get("newest"))


def encode_neighbors(state: ItemNeighbors) -> bytes:
    """The item's own count and its most frequent partners' co-counts (log, 6 decimals)."""
    return orjson.dumps({
        "v": SCHEMA_VERSION,
        "sku": state.sku,
        "log_count": None if state.log_count is None else round(state.log_count, 6),
        "last_ts_log": None if state.last_ts_log is None else round(state.last_ts_log, 6),
        "partners": [[sku, round(log_co, 6)] for sku, log_co in state.candidates(NEIGHBORS_STORED)],
    })


def decode_neighbors(raw: bytes, basket_counts: Mapping[str, float]) -> list[Neighbor]:
    """Complements ranked with every partner's published basket count (``basket_counts``)."""
    blob = _load(raw)
    return complements(blob["log_count"], blob["last_ts_log"], blob["partners"], basket_counts)


def encode_product(product: Product) -> bytes:
    return orjson.dumps({"v": SCHEMA_VERSION, **product.to_dict()})


def decode_product(raw: bytes) -> Product:
    blob = _load(raw)
    blob.pop("v")
    return product_from_dict(blob)


def encode_offer(offer: Offer) -> bytes:
    return orjson.dumps({"v": SCHEMA_VERSION, **offer.to_dict()})


def decode_offer(raw: bytes) -> Offer:
    blob = _load(raw)
    blob.pop("v")
    return offer_from_dict(blob)


def encode_offer_stats(stats: OfferStats) -> bytes:
    return orjson.dumps({"v": SCHEMA_VERSION, **stats.to_dict()}, option=orjson.OPT_SORT_KEYS)


def decode_offer_stats(raw: bytes) -> OfferStats:
    return OfferStats.from_dict(_load(raw))


def encode_ranker(ranker: RecRanker) -> bytes:
    weights = ranker.weights()
    return orjson.dumps({"v": SCHEMA_VERSION, "intercept": round(weights.intercept, 6),
                         "weights": {k: round(w, 6) for k, w in sorted(weights.weights.items())},
                         "trained_on": weights.trained_on})


def decode_ranker(raw: bytes) -> RankerWeights:
    blob = _load(raw)
    return RankerWeights(blob["intercept"], blob["weights"], blob["trained_on"])


def encode_churn_shard(shard: PopulationShard) -> bytes:
    """What readers need of a churn shard: its population model and its sketches."""
    return orjson.dumps({"v": SCHEMA_VERSION, "model": shard.model.to_dict(), "sketch": shard.sketch.to_dict(),
                         "threshold": shard.threshold}, option=orjson.OPT_SORT_KEYS)


def decode_churn_shard(raw: bytes) -> tuple[ChurnModel, PopulationSketch]:
    blob = _load(raw)
    return ChurnModel.from_dict(blob["model"]), PopulationSketch.from_dict(blob["sketch"])


def alert_id(alert: Alert) -> str:
    return f"{alert.customer_id}:{alert.episode}"


def encode_alert(alert: Alert) -> bytes:
    return orjson.dumps({"alert_id": alert_id(alert), **alert.to_dict(), "ts": format_ts(alert.ts_ms)})


def popularity_score(log_weight: float) -> float:
    """ZADD score: the forward-decay log-weight itself, rounded so replays write equal bytes."""
    return round(log_weight, 6)


def _load(raw: bytes) -> dict[str, Any]:
    blob = orjson.loads(raw)
    version = blob.get("v")
    if version != SCHEMA_VERSION:
        raise SchemaMismatch(f"stored schema v{version}; this code reads v{SCHEMA_VERSION}")
    return blob
