"""The omnirec dataflow: wiring only. Run it with `omnirec flow`, which calls
`python -m bytewax.run "flows.dataflow:build_flow()"` with workers and recovery.

    Kafka web.events, store.events, catalog.products, offers, recs.feedback
      → parse                      Event | Product | Offer | Feedback | DeadLetter
      → dead letters               → events.deadletter (original bytes + reason headers)
      → aliases (by anon/loyalty)  stitching: own profile until `identify`, then forward
      → customers (by customer)    CustomerState; dedup by event_id
      → item counts (by sku)       popularity, basket counts → pair updates
      → item neighbours (by sku)   co-occurrence → complements
      → offer stats (by offer)     impressions / accepts per customer cell → propensity
      → ranker (one key)           river model of clicks on served recommendations
      → churn (by shard)           rhythm → score → due-time timers, woken by clock ticks
                                   → alerts.churn + a Redis stream
      → Redis (one pipeline per batch, absolute values)
"""

from __future__ import annotations

from bytewax import operators as op
from bytewax.connectors.kafka import operators as kop
from bytewax.dataflow import Dataflow, Stream

from flows.messages import DeadLetter, RawMessage, Write
from flows.redis_sink import RedisSink
from flows.steps import ChurnSettings, FlowContext, alert_message, dead_letter_message
from flows.ticks import TickSource
from omnirec.settings import Settings, get_settings
from online_models import decay, keys
from online_models.churn import Alert
from online_models.customer import BasketSignal
from online_models.events import DAY_MS, Event, Feedback, ParseLimits, Product
from online_models.offers import Offer

OFFSET_BEGINNING = -2


def make_context(settings: Settings) -> FlowContext:
    return FlowContext(
        scheme=keys.KeyScheme(settings.key_prefix),
        churn=ChurnSettings(settings.churn_shards, settings.churn_threshold, settings.churn_wall_clock,
                            int(settings.churn_catch_up_s * 1000)),
        catalog_topic=settings.topic_catalog,
        offers_topic=settings.topic_offers,
        feedback_topic=settings.topic_feedback,
        popularity=decay.Decay(settings.half_life_days),
        cooccurrence=decay.Decay(settings.cooccurrence_half_life_days),
        limits=ParseLimits(
            max_bytes=settings.max_event_bytes,
            max_lateness_ms=int(settings.max_event_lateness_days * DAY_MS),
            max_future_ms=int(settings.max_event_future_hours * 3_600_000),
        ),
    )


def wire(
    flow: Dataflow, raw: Stream[RawMessage], ctx: FlowContext, ticks: Stream[int] | None = None,
) -> tuple[Stream[Write], Stream[DeadLetter], Stream[Alert]]:
    """Everything between the raw records and the outputs; tests call it with TestingSource.

    `ticks` carries the stream's clock to the churn timers (see flows/ticks.py)."""
    parsed = op.map("parse", raw, ctx.parse)  # Event | Product | Offer | Feedback | DeadLetter
    letters = op.filter("dead_letters", parsed, lambda x: isinstance(x, DeadLetter))
    products = op.filter("products", parsed, lambda x: isinstance(x, Product))
    offers = op.filter("offers", parsed, lambda x: isinstance(x, Offer))
    feedback = op.filter("feedback", parsed, lambda x: isinstance(x, Feedback))
    events = op.filter("events", parsed, lambda x: isinstance(x, Event))

    routed = op.branch("by_identity", events, lambda e: ctx.route(e)[0] == "customer")
    alias_keyed = op.key_on("alias_key", routed.falses, lambda e: e.alias_id or "")
    alias_out = op.stateful_flat_map("aliases", alias_keyed, ctx.alias_step)
    alias_out = op.map("alias_unkey", alias_out, lambda kv: kv[1])  # forward | Write | signal
    forwarded = op.filter_map("forwarded", alias_out, _forwarded)  # (cid, (cid, Event | Merge))

    direct = op.map("customer_key", routed.trues, lambda e: (e.customer_id, (e.customer_id, e)))
    contacts = op.filter_map("offer_contacts", feedback,  # contact history is about offers
                             lambda f: (f.customer_id, (f.customer_id, f)) if f.offer_id else None)
    to_customers = op.merge("customer_messages", direct, forwarded, contacts)
    customer_out = op.stateful_flat_map("customers", to_customers, ctx.customer_step)
    customer_out = op.map("customer_unkey", customer_out, lambda kv: kv[1])  # Write | signal

    signals = op.filter("signals", op.merge("all_out", alias_out, customer_out),
                        lambda x: isinstance(x, BasketSignal))
    memberships = op.flat_map("split_baskets", signals, _split_signal)  # (sku, (sku, signal))
    product_writes = op.map("product_writes", products, ctx.product_write)
    count_out = op.stateful_flat_map("item_counts", memberships, ctx.item_counts_step)
    count_out = op.map("counts_unkey", count_out, lambda kv: kv[1])
    pairs = op.filter_map("pairs", count_out, _pair)  # (sku, (sku, update))
    neighbor_out = op.stateful_flat_map("item_neighbors", pairs, ctx.item_neighbors_step)
    neighbor_out = op.map("neighbors_unkey", neighbor_out, lambda kv: kv[1])

    offer_feedback = op.filter_map("offer_feedback", feedback,
                                   lambda f: (f.offer_id, (f.offer_id, f)) if f.offer_id else None)
    stats_out = op.stateful_flat_map("offer_stats", offer_feedback, ctx.offer_stats_step)
    stats_out = op.map("stats_unkey", stats_out, lambda kv: kv[1])
    offer_writes = op.map("offer_writes", offers, ctx.offer_write)
    served_items = op.filter_map("recommendation_feedback", feedback,
                                 lambda f: ("ranker", ("ranker", f)) if f.features else None)
    ranker_out = op.stateful_flat_map("ranker", served_items, ctx.ranker_step)
    ranker_out = op.map("ranker_unkey", ranker_out, lambda kv: kv[1])

    churn_updates = op.filter_map("churn_updates", customer_out,
                                  lambda x: (x[1], x[2]) if isinstance(x, tuple) and x[0] == "churn" else None)
    churn_in = churn_updates
    if ticks is not None:
        churn_in = op.merge("churn_messages", churn_updates, op.flat_map("tick_shards", ticks, ctx.tick_to_shards))
    churn_out = op.stateful_flat_map("churn", churn_in, ctx.churn_step)
    churn_out = op.map("churn_unkey", churn_out, lambda kv: kv[1])
    alerts = op.filter_map("alerts", churn_out, lambda x: x[1] if isinstance(x, tuple) and x[0] == "alert" else None)
    alert_writes = op.map("alert_writes", alerts, ctx.alert_write)

    writes = op.filter(
        "writes", op.merge("write_sources", product_writes, offer_writes, alias_out, customer_out,
                           count_out, neighbor_out, stats_out, ranker_out, churn_out, alert_writes),
        lambda x: isinstance(x, Write),
    )
    return writes, letters, alerts


def build_flow(settings: Settings | None = None) -> Dataflow:
    settings = settings or get_settings()
    flow = Dataflow("omnirec")
    ctx = make_context(settings)
    kin = kop.input(
        "kafka_in", flow,
        brokers=[settings.kafka_bootstrap],
        topics=[settings.topic_web, settings.topic_store, settings.topic_catalog,
                settings.topic_offers, settings.topic_feedback],
        starting_offset=OFFSET_BEGINNING,
        batch_size=settings.flow_batch_size,
        # librdkafka waits up to 500 ms for a full fetch by default: most of an event's way to the API.
        add_config={"fetch.wait.max.ms": "10"},
    )
    raw = op.map("as_raw", kin.oks, RawMessage.from_kafka)
    ticks = op.input("clock", flow, TickSource(ctx.clock, settings.churn_tick_s))
    writes, letters, alerts = wire(flow, raw, ctx, ticks)
    source_errors = op.map("source_errors", kin.errs, lambda e: DeadLetter(RawMessage.from_kafka(e.msg), str(e.err)))
    all_letters = op.merge("all_dead_letters", letters, source_errors)
    op.output("redis_out", writes, RedisSink(settings.redis_url, ctx.scheme, settings.churn_alerts_maxlen))
    kop.output("alerts_out", op.map("alerts_to_kafka", alerts, alert_message),
               brokers=[settings.kafka_bootstrap], topic=settings.topic_churn_alerts)
    kop.output("deadletter_out", op.map("to_kafka", all_letters, dead_letter_message),
               brokers=[settings.kafka_bootstrap], topic=settings.topic_deadletter)
    return flow


def _forwarded(item):
    if isinstance(item, tuple) and item[0] == "forward":
        return (item[1], (item[1], item[2]))
    return None


def _pair(item):
    if isinstance(item, tuple) and item[0] == "pair":
        return (item[1], (item[1], item[2]))
    return None


def _split_signal(signal: BasketSignal):
    return [(sku, (sku, signal)) for sku in signal.skus]
