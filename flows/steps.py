"""The functions the dataflow's steps call: unpack, call the domain, repack.

Each stateful mapper has bytewax's shape `(state | None, value) -> (state, emits)`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import orjson

from flows.messages import DeadLetter, RawMessage, Write
from flows.ticks import stream_clock, wall_ms
from online_models import decay, keys, tiers
from online_models.churn import Alert, ChurnShard
from online_models.customer import BasketSignal, CustomerState
from online_models.events import (
    Event,
    Feedback,
    ParseLimits,
    Product,
    Rejected,
    parse_event,
    parse_feedback,
    parse_product,
)
from online_models.identity import AliasState, Merge, apply_to_customer
from online_models.items import ItemCounts, ItemNeighbors, OwnCount, PairUpdate
from online_models.learning import RecRanker, as_features
from online_models.offers import Offer, OfferError, OfferStats, offer_from_dict


@dataclass
class Watermarks:
    """The newest event time seen on each (topic, partition) this process reads.

    Lateness is judged per partition: at full replay speed a sparse partition runs ahead
    in event time, and that must not make a busy partition's events look late. The
    stream's clock for timers (churn alerts) is the slowest *active* partition's: one
    that has been silent for `idle_ms` of wall time no longer holds the clock back (a
    lapsing customer's partition may be the silent one).
    """

    idle_ms: int = 5_000
    by_partition: dict[tuple[str, int | None], int] = field(default_factory=dict)
    moved_at: dict[tuple[str, int | None], int] = field(default_factory=dict)  # wall ms

    def of(self, raw: RawMessage) -> int | None:
        return self.by_partition.get((raw.topic, raw.partition))

    def advance(self, raw: RawMessage, ts_ms: int, wall: int | None = None) -> None:
        key = (raw.topic, raw.partition)
        if ts_ms > self.by_partition.get(key, ts_ms - 1):
            self.by_partition[key] = ts_ms
            self.moved_at[key] = wall if wall is not None else wall_ms()

    def stream_time(self, wall: int | None = None) -> int | None:
        if not self.by_partition:
            return None
        wall = wall if wall is not None else wall_ms()
        active = [ts for key, ts in self.by_partition.items() if wall - self.moved_at.get(key, 0) < self.idle_ms]
        return min(active) if active else max(self.by_partition.values())


@dataclass
class FlowMetrics:
    """Process-wide counters; each Redis sink partition adds what it has not yet reported."""

    messages: int = 0
    reported: int = 0

    def take(self) -> int:
        delta, self.reported = self.messages - self.reported, self.messages
        return delta


FLOW_METRICS = FlowMetrics()


@dataclass(frozen=True)
class ChurnSettings:
    shards: int = 8
    threshold: float = 0.85
    use_wall_clock: bool = True
    catch_up_ms: int = 3_600_000


# What moves a customer's churn timer enough to tell their shard at once; visits and carts
# are folded into the rhythm and travel with the next of these.
CHURN_SIGNAL_TYPES = frozenset({"purchase", "return", "survey", "store_visit"})


@dataclass
class FlowContext:
    """Everything the steps share in one process: settings-derived constants and caches."""

    scheme: keys.KeyScheme
    catalog_topic: str
    offers_topic: str
    feedback_topic: str
    popularity: decay.Decay
    cooccurrence: decay.Decay
    limits: ParseLimits
    churn: ChurnSettings = field(default_factory=lambda: ChurnSettings())
    watermarks: Watermarks = field(default_factory=Watermarks)

    # --- parse ----------------------------------------------------------------------------

    def parse(self, raw: RawMessage) -> Event | Product | Offer | Feedback | DeadLetter:
        FLOW_METRICS.messages += 1
        if raw.topic == self.catalog_topic:
            parsed = parse_product(raw.value, limits=self.limits)
        elif raw.topic == self.offers_topic:
            parsed = _parse_offer(raw.value)
        elif raw.topic == self.feedback_topic:
            parsed = parse_feedback(raw.value, limits=self.limits)
        else:
            parsed = parse_event(raw.value, stream_ts_ms=self.watermarks.of(raw),
                                 now_ms=time.time_ns() // 1_000_000, limits=self.limits)
            if isinstance(parsed, Event):
                self.watermarks.advance(raw, parsed.ts_ms)
        if isinstance(parsed, Rejected):
            return DeadLetter(raw, parsed.reason)
        return parsed

    # --- identity ---------------------------------------------------------------------------

    @staticmethod
    def route(event: Event) -> tuple[str, str]:
        """('alias', id) for anything carrying an anonymous / loyalty id, so that a session's
        events reach the customer in order behind its `identify` merge; else ('customer', id)."""
        if event.alias_id:
            return ("alias", event.alias_id)
        return ("customer", event.customer_id or "")

    def alias_step(self, state: AliasState | None, event: Event):
        alias_id = event.alias_id or ""
        state = state or AliasState(alias_id)
        outcome = state.apply(event, self.popularity)
        emits: list = [("forward", target, message) for target, message in outcome.forward]
        if outcome.linked_to:
            emits.append(Write("link", self.scheme.alias(alias_id), (alias_id, outcome.linked_to)))
        if outcome.profile_changed:
            emits.append(Write("customer", self.scheme.alias(alias_id), state.profile))
        emits.extend(outcome.signals)
        return state, emits

    def ranker_step(self, ranker: RecRanker | None, keyed: tuple[str, Feedback]):
        """One small model for the whole catalogue: feedback volume is low, so one key is enough."""
        _, feedback = keyed
        ranker = ranker or RecRanker()
        if not ranker.learn(as_features(list(feedback.features)), feedback.type):
            return ranker, []
        return ranker, [Write("ranker", self.scheme.ranker(), ranker)]

    def customer_step(self, state: CustomerState | None, keyed: tuple[str, Event | Merge | Feedback]):
        customer_id, message = keyed
        state = state or CustomerState(customer_id)
        signals = apply_to_customer(state, message, self.popularity)
        emits: list = [Write("customer", self.scheme.customer(state.customer_id), state), *signals]
        if isinstance(message, Merge) or (isinstance(message, Event) and message.type in CHURN_SIGNAL_TYPES):
            shard = tiers.shard_of(customer_id, self.churn.shards)
            update = ("update", shard, customer_id, state.rhythm.copy(), state.last_ts or 0)
            emits.append(("churn", f"churn:{shard}", update))
        return state, emits

    # --- churn --------------------------------------------------------------------------------

    def clock(self) -> int | None:
        return stream_clock(self.watermarks.stream_time(), wall_ms(), use_wall=self.churn.use_wall_clock,
                            catch_up_ms=self.churn.catch_up_ms)

    def tick_to_shards(self, now_ms: int) -> list[tuple[str, tuple]]:
        return [(f"churn:{i}", ("tick", i, now_ms)) for i in range(self.churn.shards)]

    def churn_step(self, shard: ChurnShard | None, message: tuple):
        """Move a customer in the shard's sketches and timers, or advance its clock; emit alerts.

        message: ("update", shard, customer_id, rhythm, ts_ms) | ("tick", shard, now_ms)."""
        shard_state = shard or ChurnShard(threshold=self.churn.threshold)
        if message[0] == "tick":
            alerts = shard_state.advance(message[2])
            if not alerts:
                return shard_state, []
        else:
            _, _, customer_id, rhythm, ts_ms = message
            alerts = shard_state.update(customer_id, rhythm, ts_ms)
        emits: list = [("alert", alert) for alert in alerts]
        emits.append(Write("churn_shard", self.scheme.churn_shard(message[1]), shard_state))
        return shard_state, emits

    def alert_write(self, alert: Alert) -> Write:
        return Write("alert", self.scheme.churn_alerts(), alert, member=keys.alert_id(alert))

    # --- items ------------------------------------------------------------------------------

    def product_write(self, product: Product) -> Write:
        return Write("product", self.scheme.catalog(), product, member=product.sku)

    def offer_write(self, offer: Offer) -> Write:
        return Write("offer", self.scheme.offers(), offer, member=offer.offer_id)

    def offer_stats_step(self, state: OfferStats | None, keyed: tuple[str, Feedback]):
        offer_id, feedback = keyed
        state = state or OfferStats(offer_id)
        if feedback.control:  # the control group measures uplift; it must not steer learning
            return state, []
        state.record(feedback.type, feedback.cell or "new")
        return state, [Write("offer_stats", self.scheme.offer_stats(offer_id), state),
                       Write("sadd", self.scheme.offer_stats_index(), None, member=offer_id)]

    def item_counts_step(self, state: ItemCounts | None, message: tuple[str, BasketSignal]):
        sku, payload = message
        state = state or ItemCounts(sku)
        pairs = state.apply_signal(payload, self.popularity, self.cooccurrence)
        emits: list = [("pair", target, update) for target, update in pairs]
        if payload.new_sku in (None, sku):
            emits.extend(self._popularity_writes(state, payload.store_id))
        return state, emits

    def _popularity_writes(self, state: ItemCounts, store_id: str | None) -> list[Write]:
        if state.log_popularity is None:
            return []
        score = keys.popularity_score(state.log_popularity)
        writes = [Write("zadd", self.scheme.popularity(), score, member=state.sku)]
        if store_id and store_id in state.store_popularity:
            score = keys.popularity_score(state.store_popularity[store_id])
            writes.append(Write("zadd", self.scheme.store_popularity(store_id), score, member=state.sku))
            writes.append(Write("sadd", self.scheme.store_popularity_index(), None, member=store_id))
        return writes

    def item_neighbors_step(self, state: ItemNeighbors | None, message: tuple[str, PairUpdate | OwnCount]):
        sku, update = message
        state = state or ItemNeighbors(sku)
        state.apply(update)
        return state, [Write("neighbors", self.scheme.neighbors(sku), state)]


def _parse_offer(raw: bytes | None) -> Offer | Rejected:
    try:
        return offer_from_dict(orjson.loads(raw or b""))
    except orjson.JSONDecodeError as exc:
        return Rejected(f"not valid JSON: {exc}")
    except OfferError as exc:
        return Rejected(str(exc))


def alert_message(alert: Alert):
    from bytewax.connectors.kafka import KafkaSinkMessage

    return KafkaSinkMessage(key=alert.customer_id.encode(), value=keys.encode_alert(alert))


def dead_letter_message(letter: DeadLetter):
    """Original key and bytes, with the reason and the source position in headers."""
    from bytewax.connectors.kafka import KafkaSinkMessage

    raw = letter.raw
    headers = [
        ("reason", letter.reason.encode()),
        ("source_topic", raw.topic.encode()),
        ("source_partition", str(raw.partition).encode()),
        ("source_offset", str(raw.offset).encode()),
    ]
    return KafkaSinkMessage(key=raw.key, value=raw.value if raw.value is not None else b"", headers=headers)
