"""The Redis key scheme and byte codec, shared by the writer (flow) and the reader (API).

Every key sits under a configurable prefix and carries a hash tag per entity
(`rec:{c:c-42}:profile`), so the layout works on Redis Cluster unchanged. Blobs carry
the schema version; a reader refuses a version it does not know instead of guessing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
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

SCHEMA_VERSION = 1  # the JSON blobs (items, offers, churn shards, the ranker)
JSON_SCHEMA_VERSION = SCHEMA_VERSION
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


# --- customer profiles: msgpack, positional (schema v2) ------------------------------------------
#
# A profile is the bulk of what Redis holds (one or more per customer), so it is packed: msgpack,
# fields by position (no names), every dict as a flat [key, value, …] list sorted by key, SKUs
# named once in a sorted string table and referred to by index, timestamps as milliseconds
# before the customer's last event (small integers pack in fewer bytes), log-weights as integers
# of 1e-4. Every float is rounded first: a customer's events arrive from several topics in an
# order that depends on how they were read, and float sums differ in their last bits with the
# order; rounding keeps those bits out of the bytes (same input, same bytes). Lists, not maps, so
# the bytes do not depend on dict order. Readers get the same ``CustomerState`` back (less the
# dedup window and the cart-pair list, which only the flow needs).

PROFILE_VERSION = 2
_CUSTOMER, _LINK = 0, 1
_LOG_WEIGHT_SCALE = 10_000  # 4 decimals, as readers have always had them


def _num(value: float) -> float | int:
    """Rounded to 6 decimals; whole numbers as integers (1 byte instead of 9)."""
    if isinstance(value, int):
        return value
    value = round(value, 6)
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def _pack_ts(ts: int | None, base: int) -> int | None:
    return None if ts is None else base - ts


def _unpack_ts(rel: int | None, base: int) -> int | None:
    return None if rel is None else base - rel


def _flat(mapping: Mapping[str, Any], value=lambda v: v) -> list:
    return [item for key in sorted(mapping) for item in (key, value(mapping[key]))]


def _pairs(flat: list, value=lambda v: v) -> dict:
    return {flat[i]: value(flat[i + 1]) for i in range(0, len(flat), 2)}


def _by_sku(index: Mapping[str, int], mapping: Mapping[str, Any], value) -> list:
    return [item for sku in sorted(mapping, key=index.__getitem__) for item in (index[sku], value(mapping[sku]))]


def _from_sku(skus: list[str], flat: list, value) -> dict:
    return {skus[flat[i]]: value(flat[i + 1]) for i in range(0, len(flat), 2)}


def _window(window) -> list:
    """A day window's mask is one bit per day (hundreds of bits): big-endian bytes, not an integer."""
    return [window.newest, window.mask.to_bytes((window.mask.bit_length() + 7) // 8, "big"), window.older]


def _weight(log_w: float) -> int:
    return round(log_w * _LOG_WEIGHT_SCALE)


def _unweight(q: int) -> float:
    return q / _LOG_WEIGHT_SCALE


def encode_customer(state: CustomerState) -> bytes:
    base = state.last_ts or 0
    categories = decay.top(state.categories, MAX_CATEGORIES)
    brands = decay.top(state.brands, MAX_BRANDS)
    sku_interest = decay.top(state.sku_interest, MAX_SKU_INTEREST)
    basket_vector = decay.top(state.basket_vector, MAX_VECTOR)
    skus = sorted({*state.bought, *sku_interest, *state.views, *state.cart, *state.cart_ts, *state.not_interested,
                   *basket_vector})
    index = {sku: i for i, sku in enumerate(skus)}

    def ts(t):
        return _pack_ts(t, base)

    r, contacts = state.rhythm, state.contacts
    return msgpack.packb([
        PROFILE_VERSION, _CUSTOMER, state.customer_id, base, skus, state.aliases,
        ts(state.first_ts), ts(state.first_purchase_ts), ts(state.last_purchase_ts),
        state.orders, _num(state.units), _num(state.gross), _num(state.returned), _num(state.returned_units),
        _num(state.discounted), _flat(state.channel_orders), _flat(state.channel_events),
        _flat(categories, _weight), _flat(brands, _weight), _by_sku(index, sku_interest, _weight),
        _by_sku(index, state.bought, lambda rec: [_num(rec[0]), ts(int(rec[1])), ts(int(rec[2] if len(rec) > 2 else rec[1]))]),
        _by_sku(index, state.views, ts), _by_sku(index, state.cart, _num), _by_sku(index, state.cart_ts, ts),
        state.store_visits, _flat(state.stores), state.last_store, ts(state.last_store_ts),
        [[ts(t), offer, channel] for t, offer, channel in contacts.shown], _flat(contacts.dismissed, ts),
        _flat(contacts.accepted), _by_sku(index, state.not_interested, ts),
        [_window(r.purchase_days), _window(r.visit_days), _window(r.web_days), _window(r.store_days),
         None if r.gross_lw is None else _num(r.gross_lw), None if r.returned_lw is None else _num(r.returned_lw),
         r.returns, [ts(t) for t in r.recent_returns], None if r.survey_score is None else _num(r.survey_score),
         ts(r.survey_ts), [ts(t) for t in r.cart_adds]],
        None if state.churn_keys is None else list(state.churn_keys), state.churn_version,
        _by_sku(index, basket_vector, _weight),  # last: v2 blobs written before it still decode
    ])


def _decode_customer(blob: list) -> CustomerState:
    (_, _, customer_id, base, skus, aliases, first_ts, first_purchase_ts, last_purchase_ts, orders, units, gross,
     returned, returned_units, discounted, channel_orders, channel_events, categories, brands, sku_interest, bought,
     views, cart, cart_ts, store_visits, stores, last_store, last_store_ts, shown, dismissed, accepted,
     not_interested, rhythm, churn_keys, churn_version, *later) = blob
    basket_vector = later[0] if later else []

    def ts(rel):
        return _unpack_ts(rel, base)

    windows = [{"newest": w[0], "mask": format(int.from_bytes(w[1], "big"), "x"), "older": w[2]} for w in rhythm[:4]]
    return CustomerState.from_dict({
        "customer_id": customer_id, "aliases": aliases, "first_ts": ts(first_ts), "last_ts": base or None,
        "first_purchase_ts": ts(first_purchase_ts), "last_purchase_ts": ts(last_purchase_ts), "orders": orders,
        "units": float(units), "gross": float(gross), "returned": float(returned),
        "returned_units": float(returned_units), "discounted": float(discounted),
        "channel_orders": _pairs(channel_orders), "channel_events": _pairs(channel_events),
        "categories": _pairs(categories, _unweight), "brands": _pairs(brands, _unweight),
        "sku_interest": _from_sku(skus, sku_interest, _unweight),
        "bought": _from_sku(skus, bought, lambda rec: [float(rec[0]), ts(rec[1]), ts(rec[2])]),
        "views": _from_sku(skus, views, ts), "cart": _from_sku(skus, cart, float),
        "cart_ts": _from_sku(skus, cart_ts, ts), "store_visits": store_visits, "stores": _pairs(stores),
        "last_store": last_store, "last_store_ts": ts(last_store_ts),
        "contacts": {"shown": [[ts(t), offer, channel] for t, offer, channel in shown],
                     "dismissed": _pairs(dismissed, ts), "accepted": _pairs(accepted)},
        "not_interested": _from_sku(skus, not_interested, ts),
        "rhythm": {"purchase_days": windows[0], "visit_days": windows[1], "web_days": windows[2],
                   "store_days": windows[3], "gross_lw": None if rhythm[4] is None else float(rhythm[4]),
                   "returned_lw": None if rhythm[5] is None else float(rhythm[5]), "returns": rhythm[6],
                   "recent_returns": [ts(t) for t in rhythm[7]],
                   "survey_score": None if rhythm[8] is None else float(rhythm[8]),
                   "survey_ts": ts(rhythm[9]), "cart_adds": [ts(t) for t in rhythm[10]]},
        "churn_keys": churn_keys, "churn_version": churn_version,
        "basket_vector": _from_sku(skus, basket_vector, _unweight),
    })


def encode_link(alias_id: str, customer_id: str) -> bytes:
    return msgpack.packb([PROFILE_VERSION, _LINK, alias_id, customer_id])


def encode_link_pair(pair: tuple[str, str]) -> bytes:
    return encode_link(*pair)


def decode_profile(raw: bytes) -> CustomerState | str:
    """A stored profile → the customer state, or the customer id an alias now links to.
    Reads schema v2 (msgpack) and v1 (JSON, written before v2: its first byte is ``{``)."""
    if raw[:1] == b"{":
        blob = _load(raw, JSON_SCHEMA_VERSION)
        if blob.get("kind") == "link":
            return blob["customer_id"]
        return CustomerState.from_dict(blob["state"])
    blob = msgpack.unpackb(raw)
    if not isinstance(blob, list) or not blob or blob[0] != PROFILE_VERSION:
        version = blob[0] if isinstance(blob, list) and blob else None
        raise SchemaMismatch(f"stored profile schema v{version}; this code reads v{PROFILE_VERSION} and v1")
    if blob[1] == _LINK:
        return blob[3]
    return _decode_customer(blob)


def encode_repeats(state: ItemRepeats) -> bytes:
    """``[[bucket, buyers, repeaters, repeats, log-gaps], …]`` by bucket: integers only."""
    return orjson.dumps({"v": SCHEMA_VERSION, "newest": state.newest_counted(),
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
    """What readers need of a churn shard: its population model and its sketches, and while it is
    too small to fit a model, its sample (at most ``min_fit_customers`` rows: readers pool the
    small shards' samples for the alerts' value floor)."""
    blob = {"v": SCHEMA_VERSION, "model": shard.model.to_dict(), "sketch": shard.sketch.to_dict(),
            "threshold": shard.threshold}
    small = shard.small_sample_rows()
    if small is not None:
        blob["small_sample"] = small
    return orjson.dumps(blob, option=orjson.OPT_SORT_KEYS)


def decode_churn_shard(raw: bytes) -> tuple[ChurnModel, PopulationSketch, list | None]:
    blob = _load(raw)
    return ChurnModel.from_dict(blob["model"]), PopulationSketch.from_dict(blob["sketch"]), blob.get("small_sample")


def alert_id(alert: Alert) -> str:
    return f"{alert.customer_id}:{alert.episode}"


def encode_alert(alert: Alert) -> bytes:
    return orjson.dumps({"alert_id": alert_id(alert), **alert.to_dict(), "ts": format_ts(alert.ts_ms)})


def popularity_score(log_weight: float) -> float:
    """ZADD score: the forward-decay log-weight itself, rounded so replays write equal bytes."""
    return round(log_weight, 6)


def _load(raw: bytes, expected: int = SCHEMA_VERSION) -> dict[str, Any]:
    blob = orjson.loads(raw)
    version = blob.get("v")
    if version != expected:
        raise SchemaMismatch(f"stored schema v{version}; this code reads v{expected}")
    return blob
