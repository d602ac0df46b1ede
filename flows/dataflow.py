"""The omnirec dataflow: wiring only. Run it with `omnirec flow`, which calls
`python -m bytewax.run "flows.dataflow:build_flow()"` with workers and recovery.

The steps and the way messages move between them are the engine's (`online_models.engine.graph`):
this module turns that table into bytewax operators, and adds the edges.

    Kafka web.events, store.events, catalog.products, offers, recs.feedback   (KafkaSourceMessage)
      → as_raw                               Raw (original bytes, position, wall time read)
      → the engine's steps                   typed messages, keyed per step (see engine.graph)
      → writes                               Put | HashPut | ZAdd | SAdd | AddAlert
                                             → Redis, one pipeline per batch, last write per slot
      → dead letters                         DeadLetter → events.deadletter (bytes + reason headers)
      → alerts                               Alert → alerts.churn
    clock (a tick source)                    Heartbeat: lets silence move the churn clock, live
    broker_watch (emits nothing)             stops the flow when the input topics are lost or
                                             re-created on the broker (flows/broker_watch.py)

Metrics: Prometheus at OMNIREC_FLOW_METRICS_PORT (flows/metrics.py), counted at these edges.

Outages: the Redis sink retries forever (flows/redis_sink.py); the Kafka clients reconnect; an
offset out of range stops the flow (source_error) rather than jumping to the end.
"""

from __future__ import annotations

import copy
import sys

from bytewax import operators as op
from bytewax.connectors.kafka import operators as kop
from bytewax.dataflow import Dataflow, Stream, operator
from bytewax.operators import KeyedStream, StatefulBatchLogic

from flows import metrics
from flows.broker_watch import BrokerWatch
from flows.kafka_source import kafka_input
from flows.redis_sink import Backoff, CountOnly, RedisSink
from flows.steps import (
    alert_message,
    batch_from_kafka,
    dead_letter_message,
    from_kafka,
    is_alert,
    is_dead_letter,
    is_write,
)
from flows.ticks import HeartbeatSource
from omnirec import logs
from omnirec.recovery import input_topics
from omnirec.settings import Settings, get_settings
from online_models.engine import Engine, Step, graph
from online_models.messages import DeadLetter, Heartbeat, Raw

OFFSET_BEGINNING = -2


def wire(flow: Dataflow, raw: Stream[Raw], engine: Engine, heartbeats: Stream[Heartbeat] | None = None,
         ) -> tuple[Stream, Stream, Stream]:
    """Everything between the raw records and the outputs; tests call it with TestingSource.

    Returns the writes, the dead letters and the alerts."""
    produced: list[tuple[tuple[type, ...], Stream]] = [((Raw,), raw)]
    if heartbeats is not None:
        produced.append(((Heartbeat,), heartbeats))
    inputs = len(produced)
    for step in graph(engine):
        produced.append((step.emits, _build(flow, step, produced)))
    everything = op.merge("all_outputs", *(stream for _, stream in produced[inputs:]))
    return (op.flat_map_batch("writes", everything, _only(is_write)),
            op.flat_map_batch("dead_letters", everything, _only(is_dead_letter)),
            op.flat_map_batch("alerts", everything, _only(is_alert)))


def _build(flow: Dataflow, step: Step, produced) -> Stream:
    """The step's inputs (every earlier stream that can carry a type it accepts, keyed by the
    step's own key functions), then the step.

    The routing between steps is done a batch at a time (``flat_map_batch``, one Python call
    per batch and a loop inside it), not per message: bytewax's ``filter_map`` and ``map`` wrap
    a per-item callback in two generator layers, and every message passes the filters of every
    step that reads its stream."""
    inputs = []
    for emits, stream in produced:
        wanted = {kind: key for kind, key in step.accepts.items() if kind in emits}
        if wanted:
            select = _keyer(wanted) if step.stateful else _selector(wanted)
            inputs.append(op.flat_map_batch(f"{step.name}_from_{len(inputs)}", stream, select))
    source = inputs[0] if len(inputs) == 1 else op.merge(f"{step.name}_in", *inputs)
    if not step.stateful:
        return op.flat_map_batch(step.name, source, _each(step.fn))
    out = _stateful_per_batch(step.name, source, step.fn_batch)
    return op.flat_map_batch(f"{step.name}_unkey", out, _values)


@operator
def _stateful_per_batch(step_id: str, up, run_batch) -> KeyedStream:
    """``op.stateful_flat_map``, handing the step all of a batch's messages of a key in one call
    (``Step.fn_batch``: one copy of the state per key and batch, not per message). Its inner
    steps are named as ``stateful_flat_map``'s (``stateful`` → ``stateful_batch``), and its
    snapshots are the same states: a recovery store written before this reads the same."""
    return _stateful("stateful", up, run_batch)


@operator
def _stateful(step_id: str, up, run_batch) -> KeyedStream:
    return op.stateful_batch("stateful_batch", up, lambda resume: _PerBatch(run_batch, resume))


class _PerBatch(StatefulBatchLogic):
    def __init__(self, run_batch, state) -> None:
        self.run_batch, self.state = run_batch, state

    def on_batch(self, values: list) -> tuple[list, bool]:
        self.state, emits = self.run_batch(self.state, values)
        return emits, self.state is None  # a step that returns no state drops the key

    def snapshot(self):
        return copy.deepcopy(self.state)  # bytewax pickles it later: it must not change meanwhile


def _keyer(wanted):
    """A batch's messages of the wanted types, each as (its key, itself); those without a key
    (the key function says None) are left out."""
    def keyed(batch: list) -> list:
        out = []
        for message in batch:
            key_fn = wanted.get(type(message))
            if key_fn is not None and (k := key_fn(message)) is not None:
                out.append((k, message))
        return out
    return keyed


def _selector(wanted):
    return lambda batch: [message for message in batch if type(message) in wanted]


def _only(predicate):
    return lambda batch: [message for message in batch if predicate(message)]


def _each(fn):
    return lambda batch: [out for message in batch for out in fn(message)]


def _values(batch: list) -> list:
    return [kv[1] for kv in batch]


def build_flow(settings: Settings | None = None) -> Dataflow:
    settings = settings or get_settings()
    logs.configure(settings.log_format, settings.log_level)
    metrics.serve(settings.flow_metrics_port)
    flow = Dataflow("omnirec")
    engine = Engine(settings.engine())
    metrics.publish(settings.redis_url, engine.scheme.flow_metrics())  # the same numbers, for the dashboard
    kin = kafka_input(
        "kafka_in", flow,
        brokers=[settings.kafka_bootstrap],
        topics=input_topics(settings),
        starting_offset=OFFSET_BEGINNING,
        batch_size=settings.flow_batch_size,
        add_config=source_config(settings),
        idle_poll_s=settings.flow_idle_poll_ms / 1000,
    )
    raw = op.flat_map_batch("as_raw", kin.oks, batch_from_kafka)
    heartbeats = op.input("clock", flow, HeartbeatSource(settings.churn_tick_s))
    writes, letters, alerts = wire(flow, raw, engine, heartbeats)
    source_errors = op.filter_map("source_errors", kin.errs, source_error)
    all_letters = op.merge("all_dead_letters", letters, source_errors)
    # The messages read are counted by the sink of the worker that read them, once per batch read:
    # a message whose writes all land on another process's sink (or that writes nothing) would
    # otherwise wait in this process's count for its next write (two processes settled at 51 of 52).
    counted = op.flat_map_batch("reads_counted", op.merge("read", raw, source_errors), _count_batch)
    op.output("redis_out", op.merge("redis_in", writes, counted), RedisSink(
        settings.redis_url, engine.scheme,
        Backoff(settings.redis_retry_base_s, settings.redis_retry_max_s), settings.redis_socket_timeout_s))
    sink = sink_config(settings)
    kop.output("alerts_out", op.map("alerts_to_kafka", alerts, alert_message),
               brokers=[settings.kafka_bootstrap], topic=settings.topic_churn_alerts, add_config=sink)
    kop.output("deadletter_out", op.map("to_kafka", all_letters, dead_letter_message),
               brokers=[settings.kafka_bootstrap], topic=settings.topic_deadletter, add_config=sink)
    watch = op.input("broker_watch", flow, BrokerWatch(
        settings.kafka_bootstrap, input_topics(settings), settings.broker_check_s, watch_config(settings)))
    op.inspect("broker_watch_out", watch)  # it emits nothing: it raises when the topics are lost
    return flow


def _count_batch(_batch: list) -> tuple[CountOnly]:
    return (CountOnly(),)


def source_config(settings: Settings) -> dict[str, object]:
    """librdkafka settings of the Kafka source."""
    return {
        # librdkafka's lines through Python logging (OMNIREC_LOG_FORMAT): bytewax hands add_config
        # to confluent-kafka's Consumer as it is, and consume() serves them
        "logger": logs.kafka_logger(),
        # librdkafka's default (500 ms) was most of an event's way to the API; 10 ms polled every
        # partition 100 times a second and kept the flow and the broker busy when idle (0.47 + 0.43
        # of a core at 50 events/s). Measured by `omnirec bench freshness`.
        "fetch.wait.max.ms": str(settings.flow_fetch_wait_ms),
        # a restarted broker is found again within a second, not up to 10 s later
        "reconnect.backoff.max.ms": str(settings.kafka_reconnect_backoff_max_ms),
        # an offset out of range (data gone: retention, a broker that lost it) is an error, not a
        # silent jump to the end of the partition (librdkafka's default, "largest")
        "auto.offset.reset": "error",
        # bytewax asks for librdkafka's statistics every second and parses them per partition
        # for a lag gauge; the flow has its own (flows/metrics.py), so they are not collected
        "statistics.interval.ms": "0",
    }


def sink_config(settings: Settings) -> dict[str, object]:
    """librdkafka settings of the alerts and dead-letter sinks (bytewax's KafkaSink)."""
    return {
        "reconnect.backoff.max.ms": str(settings.kafka_reconnect_backoff_max_ms),
        # alerts and dead letters wait for a broker that is away (0: forever) rather than being
        # dropped after librdkafka's default 5 minutes (bytewax's KafkaSink ignores delivery reports)
        "message.timeout.ms": "0",
        # through Python logging; bytewax polls its producer only as it writes a batch, so a sink's
        # lines (a broker that is away) come out when it next produces
        "logger": logs.kafka_logger(),
    }


def watch_config(settings: Settings) -> dict[str, object]:
    """librdkafka settings of the broker watch's admin client (topic ids, consumer lag)."""
    return {"reconnect.backoff.max.ms": str(settings.kafka_reconnect_backoff_max_ms),
            "logger": logs.kafka_logger()}


class SourceOffsetLost(RuntimeError):
    pass


def source_error(error) -> DeadLetter | None:
    """An error record of the Kafka source: a message that could not be read is dead-lettered;
    an offset out of range stops the flow (resuming there would skip or invent data); client-level
    errors (a broker down for a while) carry no message: librdkafka retries them by itself."""
    from confluent_kafka import KafkaError

    code = error.err.code()
    msg = error.msg
    if code in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
        raise SourceOffsetLost(
            f"the Kafka source's offset on {msg.topic}[{msg.partition}] is out of range ({error.err.str()}): "
            "the broker no longer has the data the recovery state points at. Restart with "
            "`omnirec flow --reset-recovery` to read the topics again from the beginning.")
    if msg.topic is None:
        print(f"omnirec flow: Kafka source: {error.err.str()}", file=sys.stderr, flush=True)
        return None
    return from_kafka(msg, str(error.err))
