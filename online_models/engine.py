"""The engine: every stateful step of omnirec as a pure function, and the graph that joins them.

Each step has bytewax's shape ``(state | None, message) -> (state, emits)``; the messages are
the frozen types of ``online_models.messages`` (plus ``Event``, ``Product``, ``Offer``,
``Feedback``, ``Alert``). ``graph(engine)`` lists the steps in order with, for each message
type a step accepts, the function that keys it (``None``: not for this step). Two drivers
read that one table and nothing else:

- ``flows.dataflow.wire`` builds the bytewax dataflow from it (Kafka in, Redis and Kafka out);
- ``Runner`` (below) drives it in process, for the evaluators, benchmarks and tests.

So there is one parser, one router and one set of rules, and a figure measured through
``Runner`` measures the code the flow runs. Nothing here reads a clock: wall time arrives
only in ``Raw.received_ms`` and ``Heartbeat`` messages, stamped by the edge.

    Raw ─► parse (by topic/partition: watermark) ─► DeadLetter | Product | Offer | Feedback | Event | Progress | Tombstone
    Tombstone ─► erasures ─► ForgetAlias (to aliases);  Tombstone ─► customers, alert_gate (online_models.erasure)
    Event ─► aliases (by alias) ─► Forward ─┐
    Event, Forward, offer Feedback ─────────┴► customers (by customer) ─► Put, ItemBasket, ChurnUpdate, OfferOutcome
    ItemBasket ─► item_counts (by sku) ─► ToNeighbors, ZAdd, SAdd ─► item_neighbors (by sku) ─► Put
    OfferOutcome (offer feedback the customer step counted once) ─► offer_stats (by offer) ─► Put, SAdd
    recommendation Feedback with features ─► ranker ─► Put
    Progress, Heartbeat ─► stream_clock (one key) ─► ShardTick, BucketTick
    ChurnUpdate, ShardTick ─► population (by shard) ─► Timer, Put
    Timer, BucketTick ─► timer_buckets (by due bucket) ─► Fired
    Timer, Fired ─► alert_gate (by customer) ─► Alert ─► alert_writes ─► AddAlert
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from online_models import decay, erasure, keys, repeats, tiers
from online_models.churn import CHURN_SIGNAL_TYPES, Alert, PopulationShard
from online_models.clock import DAY_MS, MINUTE_MS, ClockSettings, PartitionClock, StreamClock
from online_models.customer import BasketSignal, CustomerState
from online_models.erasure import Erased, ForgetAlias, ForgetChurn
from online_models.events import (
    ANONYMOUS_CUSTOMER,
    Event,
    Feedback,
    ParseLimits,
    Product,
    Rejected,
    Tombstone,
    parse_event,
    parse_feedback,
    parse_product,
)
from online_models.identity import AliasState, Merge, apply_to_customer
from online_models.items import ItemCounts, ItemNeighbors
from online_models.learning import RecRanker, as_features
from online_models.messages import (
    WRITE_TYPES,
    AddAlert,
    BucketTick,
    ChurnUpdate,
    DeadLetter,
    Delete,
    DeleteAlerts,
    Fired,
    Forward,
    HashPut,
    Heartbeat,
    ItemBasket,
    OfferOutcome,
    Progress,
    Put,
    Raw,
    RepeatChange,
    SAdd,
    ShardTick,
    Timer,
    ToNeighbors,
    ZAdd,
)
from online_models.offers import Offer, OfferError, OfferStats, offer_from_dict
from online_models.repeats import ItemRepeats
from online_models.timers import AlertGate, TimerBucket

CLOCK_KEY = "clock"
RANKER_KEY = "ranker"


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """Everything the steps need to know, fixed for a run (built from ``omnirec.settings``)."""

    key_prefix: str = "rec"
    topic_catalog: str = "catalog.products"
    topic_offers: str = "offers"
    topic_feedback: str = "recs.feedback"
    half_life_days: float = 14.0
    cooccurrence_half_life_days: float = 60.0
    limits: ParseLimits = field(default_factory=ParseLimits)
    churn_shards: int = 8
    churn_threshold: float = 0.85
    clock: ClockSettings = field(default_factory=ClockSettings)
    alerts_maxlen: int = 10_000
    anonymous_ttl_s: int | None = None  # an unstitched alias profile expires in Redis after this
    erasure_retention_ms: int = 30 * DAY_MS  # an erased id's events before erasure + this are ignored


class Engine:
    """The step functions, bound to one run's settings (and nothing that changes)."""

    def __init__(self, settings: EngineSettings | None = None) -> None:
        self.settings = settings = settings or EngineSettings()
        self.scheme = keys.KeyScheme(settings.key_prefix)
        self.popularity = decay.Decay(settings.half_life_days)
        self.cooccurrence = decay.Decay(settings.cooccurrence_half_life_days)

    # --- parse (by topic/partition) ------------------------------------------------------------

    def parse(self, clock: PartitionClock | None, raw: Raw):
        """Bytes → a typed message or a dead letter. Lateness is judged against this partition's
        own watermark, which is recovered state (a restart judges as the first run did)."""
        clock = clock or PartitionClock()
        topic, s = raw.topic, self.settings
        if topic == s.topic_catalog:
            parsed = parse_product(raw.value, limits=s.limits)
        elif topic == s.topic_offers:
            parsed = parse_offer(raw.value)
        elif topic == s.topic_feedback:
            parsed = parse_feedback(raw.value, limits=s.limits)
        else:
            parsed = parse_event(raw.value, stream_ts_ms=clock.newest_ts, now_ms=raw.received_ms, limits=s.limits)
            if isinstance(parsed, Event):
                before = clock.newest_ts
                if clock.advance(parsed.ts_ms) and (before is None or parsed.ts_ms // MINUTE_MS > before // MINUTE_MS):
                    # the stream clock needs minutes, not every event
                    return clock, [parsed, Progress(raw.source, parsed.ts_ms, raw.received_ms)]
        if isinstance(parsed, Rejected):
            return clock, [DeadLetter(raw, parsed.reason)]
        return clock, [parsed]

    # --- identity and customers ----------------------------------------------------------------

    def alias(self, state: AliasState | Erased | None, event: Event | ForgetAlias):
        if isinstance(event, ForgetAlias):
            held = state.extended(event.until_ms) if isinstance(state, Erased) else Erased(event.alias_id, event.until_ms)
            return held, [Delete(self.scheme.alias(event.alias_id))]
        if isinstance(state, Erased):
            if state.ignores(event.ts_ms):
                return state, []
            state = None  # the hold is over: a new, empty alias
        alias_id = event.alias_id or ""
        state = state or AliasState(alias_id)
        outcome = state.apply(event, self.popularity)
        emits: list = [Forward(target, message) for target, message in outcome.forward]
        if outcome.linked_to:
            emits.append(Put(self.scheme.alias(alias_id), (alias_id, outcome.linked_to), keys.encode_link_pair))
        if outcome.profile_changed:
            emits.append(Put(self.scheme.alias(alias_id), state.profile, keys.encode_customer,
                             self.settings.anonymous_ttl_s))
        emits.extend(_memberships(outcome.signals))
        return state, emits

    def customer(self, state: CustomerState | Erased | None, message: Event | Forward | Feedback | Tombstone):
        if isinstance(message, Tombstone):
            return self._erase_customer(state, message)
        if isinstance(message, Forward):
            customer_id, message = message.customer_id, message.message
        else:
            customer_id = message.customer_id or ""
        if isinstance(state, Erased):
            if state.ignores(message.ts_ms):
                return state, []  # a late event (or a retry) of an erased customer
            state = None  # the hold is over: a new, empty customer
        state = state or CustomerState(customer_id)
        touched = _skus_bought(message)
        before = {sku: list(state.bought[sku]) for sku in touched if sku in state.bought}
        first_before = state.first_purchase_ts
        counted_offer = isinstance(message, Feedback) and message.offer_id and not state.is_duplicate(message.event_id)
        implied_impression = False
        if counted_offer:  # one trial per decision (``CustomerState.offer_trial``)
            counted_offer, implied_impression = state.offer_trial(message.decision_id, message.type, message.ts_ms)
        signals = apply_to_customer(state, message, self.popularity)
        emits: list = [Put(self.scheme.customer(state.customer_id), state, keys.encode_customer),
                       *_memberships(signals)]
        if counted_offer:  # the offer's statistics count it once, however often a client retried
            emits.append(OfferOutcome(message, implied_impression))
        if touched:
            after = {sku: state.bought[sku] for sku in touched if sku in state.bought}
            emits.extend(RepeatChange(sku, deltas) for sku, deltas in repeats.changes(before, after))
        if state.first_purchase_ts != first_before:  # a new shopper, or an earlier first purchase
            emits.append(RepeatChange(repeats.SHOPPERS, repeats.shoppers_change(first_before, state.first_purchase_ts)))
        if isinstance(message, Merge) or (isinstance(message, Event) and message.type in CHURN_SIGNAL_TYPES):
            emits.append(self._churn_update(state))
        return state, emits

    def _erase_customer(self, state: CustomerState | Erased | None, tombstone: Tombstone):
        """Drop the customer's state for a marker, delete what the flow wrote of them and of their
        aliases (again: the edge did at once, but writes may have followed), and take them out of
        their churn shard."""
        until = tombstone.ts_ms + self.settings.erasure_retention_ms
        customer_id = tombstone.customer_id
        aliases = set(tombstone.aliases)
        emits: list = []
        if isinstance(state, CustomerState):
            aliases.update(state.aliases)
            emits.append(ForgetChurn(customer_id, tiers.shard_of(customer_id, self.settings.churn_shards),
                                     state.churn_keys))
        held = state.extended(until) if isinstance(state, Erased) else Erased(customer_id, until)
        return held, [*erasure.writes(self.scheme, customer_id, tuple(aliases)), *emits]

    def _churn_update(self, state: CustomerState) -> ChurnUpdate:
        rhythm = state.rhythm_view()
        old, new = state.churn_keys, state.sketch_keys(rhythm)
        state.churn_keys = new
        state.churn_version += 1
        return ChurnUpdate(state.customer_id, tiers.shard_of(state.customer_id, self.settings.churn_shards),
                           rhythm, old, new, state.churn_version, state.last_ts or 0)

    # --- items -----------------------------------------------------------------------------------

    def item_counts(self, state: ItemCounts | None, message: ItemBasket):
        sku, signal = message.sku, message.signal
        state = state or ItemCounts(sku)
        pairs = state.apply_signal(signal, self.popularity, self.cooccurrence)
        emits: list = [ToNeighbors(target, update) for target, update in pairs]
        if signal.counts:
            emits.append(ZAdd(self.scheme.basket_counts(), sku, round(state.log_baskets, 6)))
        if signal.counts and state.log_popularity is not None:
            emits.append(ZAdd(self.scheme.popularity(), sku, keys.popularity_score(state.log_popularity)))
            store = signal.store_id
            if store and store in state.store_popularity:
                emits.append(ZAdd(self.scheme.store_popularity(store), sku,
                                  keys.popularity_score(state.store_popularity[store])))
                emits.append(SAdd(self.scheme.store_popularity_index(), store))
        return state, emits

    def item_repeats(self, state: ItemRepeats | None, message: RepeatChange):
        state = state or ItemRepeats(message.sku)
        state.apply(message.deltas)
        return state, [HashPut(self.scheme.repeats(), message.sku, state, keys.encode_repeats)]

    def item_neighbors(self, state: ItemNeighbors | None, message: ToNeighbors):
        state = state or ItemNeighbors(message.sku)
        state.apply(message.update)
        return state, [Put(self.scheme.neighbors(message.sku), state, keys.encode_neighbors)]

    def product_write(self, product: Product):
        return [HashPut(self.scheme.catalog(), product.sku, product, keys.encode_product)]

    # --- offers and the ranker ---------------------------------------------------------------------

    def offer_write(self, offer: Offer):
        return [HashPut(self.scheme.offers(), offer.offer_id, offer, keys.encode_offer)]

    def offer_stats(self, state: OfferStats | None, outcome: OfferOutcome):
        feedback = outcome.feedback
        state = state or OfferStats(feedback.offer_id or "")
        # the control group is counted apart: it measures uplift and must not steer learning
        cell = feedback.cell or "new"
        if outcome.implied_impression:  # its impression was never posted: the trial counts all the same
            state.record("impression", cell, feedback.control, (), feedback.features)
        state.record(feedback.type, cell, feedback.control, feedback.removed, feedback.features)
        return state, [Put(self.scheme.offer_stats(state.offer_id), state, keys.encode_offer_stats),
                       SAdd(self.scheme.offer_stats_index(), state.offer_id)]

    def ranker(self, state: RecRanker | None, feedback: Feedback):
        """One small model for the whole catalogue: feedback volume is low, so one key is enough."""
        state = state or RecRanker()
        if not state.learn_at(as_features(list(feedback.features)), feedback.type, feedback.ts_ms, feedback.event_id):
            return state, []
        return state, [Put(self.scheme.ranker(), state, keys.encode_ranker)]

    # --- churn -----------------------------------------------------------------------------------

    def stream_clock(self, state: StreamClock | None, message: Progress | Heartbeat):
        """The churn clock: tells population shards when the hour changes (refits follow event
        time) and timer buckets when the clock has passed their end."""
        state = state or StreamClock()
        cs = self.settings.clock
        if isinstance(message, Progress):
            state.progress(message.source, message.ts_ms, message.wall_ms)
            if state.open_bucket is None:
                state.open_bucket = (message.ts_ms - cs.lookback_ms) // cs.bucket_ms
        else:
            state.heartbeat(message.wall_ms)
        now = state.current(cs)
        if now is None or (state.now_ms is not None and now <= state.now_ms):
            return state, []
        before, state.now_ms = state.now_ms, now
        emits: list = []
        if before is None or now // cs.bucket_ms != before // cs.bucket_ms:
            emits.extend(ShardTick(shard, now) for shard in range(self.settings.churn_shards))
        if state.open_bucket is not None:
            while (state.open_bucket + 1) * cs.bucket_ms <= now:
                emits.append(BucketTick(state.open_bucket, now, True))
                state.open_bucket += 1
        return state, emits

    def population(self, state: PopulationShard | None, message: ChurnUpdate | ShardTick | ForgetChurn):
        state = state or PopulationShard(threshold=self.settings.churn_threshold)
        put = Put(self.scheme.churn_shard(message.shard), state, keys.encode_churn_shard)
        if isinstance(message, ShardTick):
            return state, [put] if state.tick(message.now_ms) else []
        if isinstance(message, ForgetChurn):
            state.forget(message.customer_id, message.sketch_keys)
            return state, [put]
        due, alert = state.update(message.customer_id, message.rhythm, message.old_keys, message.new_keys,
                                  message.event_ts)
        return state, [Timer(message.customer_id, message.version, message.event_ts, due, alert), put]

    def timer_bucket(self, state: TimerBucket | None, message: Timer | BucketTick):
        state = state or TimerBucket()
        if isinstance(message, BucketTick):
            return state, state.finish()
        return state, state.arm(message)

    def alert_gate(self, state: AlertGate | None, message: Timer | Fired | Tombstone):
        state = state or AlertGate()
        if isinstance(message, Tombstone):
            return state, state.erase(message.ts_ms + self.settings.erasure_retention_ms)
        if isinstance(message, Fired):
            return state, state.on_fired(message)
        return state, state.on_timer(message)

    def alert_write(self, alert: Alert):
        return [AddAlert(self.scheme.churn_alerts(), self.scheme.churn_alert_seen(keys.alert_id(alert)),
                         keys.encode_alert(alert), self.settings.alerts_maxlen)]

    # --- keys ---------------------------------------------------------------------------------

    def erasures(self, tombstone: Tombstone) -> list[ForgetAlias]:
        """A tombstone fans out to the keys of the aliases it names."""
        return erasure.alias_messages(tombstone, tombstone.ts_ms + self.settings.erasure_retention_ms)

    def bucket_key(self, timer: Timer) -> str | None:
        return None if timer.due_ts is None else f"due:{timer.due_ts // self.settings.clock.bucket_ms}"


def parse_offer(raw: bytes | None) -> Offer | Rejected:
    try:
        return offer_from_dict(orjson.loads(raw or b""))
    except orjson.JSONDecodeError as exc:
        return Rejected(f"not valid JSON: {exc}")
    except OfferError as exc:
        return Rejected(str(exc))


def route(event: Event) -> str | None:
    """The alias an event goes through first, if any: anything carrying an anonymous / loyalty
    id, so that a session's events reach the customer in order behind its `identify` merge."""
    return event.alias_id or None


def _whose_feedback(fb: Feedback) -> str | None:
    """The customer whose state a feedback changes: their contact history (offers), or what they
    are not interested in (a dismissed recommendation of a known shopper)."""
    if fb.offer_id:
        return fb.customer_id
    if fb.type == "dismiss" and fb.sku and fb.customer_id != ANONYMOUS_CUSTOMER:
        return fb.customer_id
    return None


def _skus_bought(message: Any) -> tuple[str, ...]:
    """The SKUs whose purchase record this message may change (a purchase, or a merge)."""
    if isinstance(message, Forward):
        message = message.message
    if isinstance(message, Event) and message.type == "purchase":
        return tuple(item.sku for item in message.items)
    if isinstance(message, Merge):
        return tuple(message.profile.bought)
    return ()


def _memberships(signals: Iterable[BasketSignal]) -> list[ItemBasket]:
    return [ItemBasket(sku, signal) for signal in signals for sku in signal.skus]


# --------------------------------------------------------------------------- the graph

KeyFn = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class Step:
    """One step of the graph. ``accepts`` maps each input type to its key function (a key of
    ``None`` skips the message); a step without ``stateful`` is a plain flat map."""

    name: str
    accepts: dict[type, KeyFn | None]
    fn: Callable
    emits: tuple[type, ...]
    stateful: bool = True
    # the step changes its state only after everything that can fail: the guard runs it on the
    # state itself, without a copy (a population shard is large and touched by most events)
    atomic: bool = False
    # stateful steps, once guarded: ``(state, [messages of one key]) -> (state, emits)``, the same
    # result as ``fn`` message by message (``guard``); the flow hands it a batch's messages per key
    fn_batch: Callable | None = None


OUTPUT_TYPES = (*WRITE_TYPES, DeadLetter, Alert)
FAILED_MESSAGE_BYTES = 4096  # of a derived message's repr, in the dead letter of a failed step


def guard(step: Step) -> Step:
    """The step, made safe for one bad message: if it raises, the message becomes a
    ``DeadLetter`` naming the step and the exception, the key's state stays as it was before
    the message (the step runs on a copy; the copy is kept only if the step returns), and the
    flow goes on with the next message. No message can then crash the flow, nor crash it again
    on every restart from recovery (a crash loop). Both drivers run guarded steps: ``graph``
    returns them."""
    fn = step.fn
    emits_ = tuple(dict.fromkeys((*step.emits, DeadLetter)))
    if not step.stateful:
        def run_one(message):
            try:
                return list(fn(message))
            except Exception as exc:  # noqa: BLE001 - one message must never stop the flow: it is dead-lettered
                return [step_failure(step, message, exc)]
        return replace(step, fn=_named(run_one, step, fn), emits=emits_)

    def run(state, message):
        work = state if step.atomic else _copy_state(state)
        try:
            new_state, emits = fn(work, message)
            return new_state, list(emits)  # a lazy emit must fail here, not downstream
        except Exception as exc:  # noqa: BLE001 - one message must never stop the flow: it is dead-lettered
            return state, [step_failure(step, message, exc)]

    def run_batch(state, messages):
        """One key's messages of a batch: one copy of the state for all of them, not one each
        (a replay's batch holds a customer's whole session: the copies were a sixth of the
        flow's CPU). Should one fail, they are run again one by one from the state as it was,
        so exactly that message is dead-lettered, as ``run`` would have it."""
        if step.atomic or len(messages) == 1:  # an atomic step makes no copy to save
            return _each_guarded(run, state, messages)
        work, out = _copy_state(state), []
        try:
            for message in messages:
                work, emits = fn(work, message)
                out.extend(emits)
            return work, out
        except Exception:  # noqa: BLE001 - replayed one by one: the failing message is dead-lettered
            return _each_guarded(run, state, messages)

    return replace(step, fn=_named(run, step, fn), fn_batch=_named(run_batch, step, fn), emits=emits_)


def _each_guarded(run: Callable, state: Any, messages: list) -> tuple[Any, list]:
    out: list = []
    for message in messages:
        state, emits = run(state, message)
        out.extend(emits)
    return state, out


def _named(run: Callable, step: Step, fn: Callable) -> Callable:
    run.__name__ = run.__qualname__ = f"guarded_{step.name}"
    run.__wrapped__ = fn
    return run


def _copy_state(state: Any) -> Any:
    """An independent copy of a step's state, to run the step on. Each state class has a cheap
    ``__deepcopy__`` (bytewax copies touched states at every epoch too): call it directly, not
    through ``copy.deepcopy``'s dispatch, which costs more than most of them."""
    if state is None:
        return None
    own = getattr(type(state), "__deepcopy__", None)
    return own(state, {}) if own is not None else copy.deepcopy(state)


def step_failure(step: Step, message: Any, exc: BaseException) -> DeadLetter:
    """The dead letter of a step that raised on ``message``: the original record when the message
    is one, else a synthetic record that identifies the message (its key and repr)."""
    key = None
    try:
        key_fn = step.accepts.get(type(message))
        key = key_fn(message) if key_fn is not None else None
    except Exception:  # noqa: BLE001 - the key only labels the dead letter; a failing key fn must not lose it
        key = None
    if isinstance(message, Raw):  # the record itself is dead-lettered: its headers say where it was
        reason = f"step {step.name!r} failed on the record: {type(exc).__name__}: {_text(exc)}"
        return DeadLetter(message, reason, step.name)
    ident = _identify(message)
    reason = (f"step {step.name!r} failed on {type(message).__name__}{f' {ident!r}' if ident else ''}"
              f"{f' (key {key!r})' if key is not None else ''}: {type(exc).__name__}: {_text(exc)}")
    try:
        shown = repr(message)
    except Exception:  # noqa: BLE001 - a message whose repr fails is still dead-lettered, by type
        shown = f"<{type(message).__name__}>"
    value = shown.encode("utf-8", "replace")[:FAILED_MESSAGE_BYTES]
    raw = Raw(f"step:{step.name}", None, None, None if key is None else str(key).encode(), value)
    return DeadLetter(raw, reason, step.name)


def _identify(message: Any) -> str | None:
    """What names a derived message for a person: its event id, through any wrapper."""
    for attr in ("message", "feedback", "timer", "signal"):
        inner = getattr(message, attr, None)
        if inner is not None and not isinstance(inner, (str, bytes)):
            message = inner
            break
    for attr in ("event_id", "customer_id", "sku", "offer_id"):
        value = getattr(message, attr, None)
        if isinstance(value, str) and value:
            return value[:80]
    return None


def _text(exc: BaseException, limit: int = 300) -> str:
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - str() of a foreign exception may itself fail
        text = ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def graph(engine: Engine) -> list[Step]:
    """The steps in topological order: the one description of how messages move. Each step is
    ``guard``ed: an exception in it dead-letters the one message and the flow goes on."""
    return [guard(step) for step in _steps(engine)]


def _steps(engine: Engine) -> list[Step]:
    e = engine
    return [
        Step("parse", {Raw: lambda raw: raw.source}, e.parse,
             (DeadLetter, Product, Offer, Feedback, Event, Progress, Tombstone)),
        Step("erasures", {Tombstone: None}, e.erasures, (ForgetAlias,), stateful=False),
        Step("catalog", {Product: None}, e.product_write, (HashPut,), stateful=False),
        Step("offers", {Offer: None}, e.offer_write, (HashPut,), stateful=False),
        Step("aliases", {Event: route, ForgetAlias: lambda m: m.alias_id}, e.alias, (Forward, Put, ItemBasket, Delete)),
        Step("customers", {
            Event: lambda ev: None if route(ev) else ev.customer_id or "",
            Forward: lambda fw: fw.customer_id,
            Feedback: _whose_feedback,
            Tombstone: lambda t: t.customer_id,
        }, e.customer, (Put, ItemBasket, ChurnUpdate, RepeatChange, OfferOutcome, Delete, DeleteAlerts, ForgetChurn)),
        Step("item_repeats", {RepeatChange: lambda m: m.sku}, e.item_repeats, (HashPut,)),
        Step("item_counts", {ItemBasket: lambda m: m.sku}, e.item_counts, (ToNeighbors, ZAdd, SAdd)),
        Step("item_neighbors", {ToNeighbors: lambda m: m.sku}, e.item_neighbors, (Put,)),
        Step("offer_stats", {OfferOutcome: lambda o: o.feedback.offer_id or None}, e.offer_stats, (Put, SAdd)),
        Step("ranker", {Feedback: lambda fb: RANKER_KEY if fb.features and not fb.offer_id else None}, e.ranker,
             (Put,)),
        Step("stream_clock", {Progress: lambda _: CLOCK_KEY, Heartbeat: lambda _: CLOCK_KEY},
             e.stream_clock, (ShardTick, BucketTick)),
        Step("population", {ChurnUpdate: lambda m: f"shard:{m.shard}", ShardTick: lambda m: f"shard:{m.shard}",
                            ForgetChurn: lambda m: f"shard:{m.shard}"},
             e.population, (Timer, Put), atomic=True),
        Step("timer_buckets", {Timer: e.bucket_key, BucketTick: lambda m: f"due:{m.bucket}"},
             e.timer_bucket, (Fired,)),
        Step("alert_gate", {Timer: lambda t: t.customer_id, Fired: lambda f: f.timer.customer_id,
                            Tombstone: lambda t: t.customer_id},
             e.alert_gate, (Alert,)),
        Step("alert_writes", {Alert: None}, e.alert_write, (AddAlert,), stateful=False),
    ]


# --------------------------------------------------------------------------- in process


@dataclass
class Runner:
    """Drives the graph in process: each message goes to every step that accepts its type, in
    the order the graph lists them, breadth first. States are kept per step and key, as
    bytewax keeps them; ``on_output`` sees every write, dead letter and alert."""

    engine: Engine
    on_output: Callable[[Any], None] | None = None
    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    on_step: Callable[[str, Any], None] | None = None  # sees (step name, message) before each step

    def __post_init__(self) -> None:
        self.routes: dict[type, list[tuple[Step, KeyFn | None]]] = {}
        self.steps = {step.name: step for step in graph(self.engine)}
        for step in self.steps.values():
            self.states.setdefault(step.name, {})
            for kind, key in step.accepts.items():
                self.routes.setdefault(kind, []).append((step, key))
        self._outputs = frozenset(OUTPUT_TYPES)

    def feed(self, message: Any) -> None:
        queue = deque((message,))
        while queue:
            item = queue.popleft()
            kind = type(item)
            if kind in self._outputs and self.on_output is not None:
                self.on_output(item)
            for step, key_fn in self.routes.get(kind, ()):
                if self.on_step is not None:
                    self.on_step(step.name, item)
                queue.extend(self._run(step, key_fn, item))

    def apply(self, step_name: str, message: Any) -> list:
        """Run one step on one message and return what it emits, without passing it on (an
        evaluator parses, looks at the event, then feeds the emits)."""
        step = self.steps[step_name]
        return list(self._run(step, step.accepts[type(message)], message))

    def _run(self, step: Step, key_fn: KeyFn | None, message: Any) -> Iterable[Any]:
        """One step on one message, its state kept per key as bytewax keeps it."""
        if not step.stateful:
            return step.fn(message)
        key = key_fn(message)
        if key is None:
            return ()
        states = self.states[step.name]
        state, emits = step.fn(states.get(key), message)
        if state is None:
            states.pop(key, None)
        else:
            states[key] = state
        return emits

    def feed_all(self, messages: Iterable[Any]) -> None:
        for message in messages:
            self.feed(message)

    def state(self, step: str, key: str) -> Any:
        return self.states[step].get(key)

    def advance_clock(self, until_ms: int) -> None:
        """The end of a replay: every partition's watermark moves to ``until_ms``, so timers
        due by then fire (live, silence does this through heartbeats)."""
        clock = self.states["stream_clock"].get(CLOCK_KEY)
        for source in list(clock.partitions) if clock else []:
            self.feed(Progress(source, until_ms, None))
