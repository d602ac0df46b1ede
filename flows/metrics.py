"""The flow's Prometheus metrics (prometheus-client), served by the flow process itself at
``http://HOST:OMNIREC_FLOW_METRICS_PORT/metrics`` when that setting is not 0.

These counters are the one count. The dashboard reads them too: every ``PUBLISH_EVERY_S`` (1 s)
each flow process writes their current values, sample by sample as its ``/metrics`` names them,
to the ``prom:`` fields of the flow metrics hash in Redis (``publish``; the codec is
``online_models.flow_metrics``), and ``GET /v1/metrics/summary`` sums them. The hash's older
fields ``messages`` and ``redis_retries`` (added up over every execution of the flow, replays
included: what the tests wait on) are fed from the same counters by the Redis sink
(``Reported``), not by a second tally.

- ``omnirec_flow_events_total{topic}``: Kafka records read
- ``omnirec_flow_dead_letters_total{reason}``: dead letters by kind of reason (a bounded set)
- ``omnirec_flow_step_errors_total{step}``: messages an engine step failed on (also dead-lettered)
- ``omnirec_flow_redis_batch_seconds``: time to write one batch to Redis, retries included
- ``omnirec_flow_redis_retries_total``: Redis batches sent again after a connection error
- ``omnirec_flow_churn_alerts_total``: churn alerts raised (produced to ``alerts.churn``)
- ``omnirec_flow_consumer_lag{topic,partition}``: records on the broker the flow has not read yet
  (the partition's high watermark minus the next offset to read), checked with the broker watch
  (every ``OMNIREC_BROKER_CHECK_S``), for each partition this process has read from since it started

Counts are per process and since it started (Prometheus counters); a resumed flow counts what it
replays again. With several flow processes on one host, give each its own port. All but the batch
latency histogram are published to Redis (each a few dozen fields at most)."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from online_models import flow_metrics as published

log = logging.getLogger("omnirec.flow.metrics")

EVENTS_IN = Counter(published.EVENTS, "Kafka records read by the flow, by topic", ["topic"])
DEAD_LETTERS = Counter(published.DEAD_LETTERS, "Dead letters written, by kind of reason", ["reason"])
STEP_ERRORS = Counter(published.STEP_ERRORS, "Messages an engine step failed on, by step", ["step"])
REDIS_BATCH_SECONDS = Histogram(
    "omnirec_flow_redis_batch_seconds", "Time to write one batch to Redis, retries included",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
REDIS_RETRIES = Counter(published.REDIS_RETRIES, "Redis batches sent again after a connection error")
CHURN_ALERTS = Counter(published.CHURN_ALERTS, "Churn alerts raised")
CONSUMER_LAG = Gauge(published.CONSUMER_LAG,
                     "Records on the broker not read yet (high watermark - next offset), by topic and partition",
                     ["topic", "partition"])


class ReadPositions:
    """The next offset to read of each (topic, partition), as the Kafka source hands records on
    (the source keeps its offsets in bytewax's snapshots, out of reach: this is what was read)."""

    def __init__(self) -> None:
        self.next: dict[tuple[str, int], int] = {}

    def read(self, topic: str | None, partition: int | None, offset: int | None) -> None:
        if topic is not None and partition is not None and offset is not None and offset >= 0:
            self.next[(topic, partition)] = offset + 1  # one dict store: cheap enough per record

    def partitions(self) -> list[tuple[str, int]]:
        return sorted(self.next)

    def report(self, ends: dict[tuple[str, int], int | None]) -> dict[tuple[str, int], int]:
        """Set the lag gauge from the partitions' high watermarks (``None``: unknown, left as it was)."""
        lags = {}
        for (topic, partition), next_offset in list(self.next.items()):
            end = ends.get((topic, partition))
            if end is None:
                continue
            lags[(topic, partition)] = lag = max(0, end - next_offset)
            CONSUMER_LAG.labels(topic, str(partition)).set(lag)
        return lags


POSITIONS = ReadPositions()


def high_watermarks(admin, partitions: list[tuple[str, int]], timeout_s: float) -> dict[tuple[str, int], int | None]:
    """Each partition's high watermark (the offset the next record will get), or None if the broker
    did not say: one ListOffsets request through the broker watch's admin client (a second consumer
    in the flow process made its Kafka source fail, measured here)."""
    from confluent_kafka import KafkaException, TopicPartition
    from confluent_kafka.admin import OffsetSpec

    ends: dict[tuple[str, int], int | None] = dict.fromkeys(partitions)
    poll = getattr(admin, "poll", None)
    if poll is not None:
        poll(0)  # hands what librdkafka logged to Python logging (the client's ``logger``)
    if not partitions:
        return ends
    try:
        futures = admin.list_offsets({TopicPartition(t, p): OffsetSpec.latest() for t, p in partitions},
                                     request_timeout=timeout_s)
    except KafkaException:
        return ends
    for tp, future in futures.items():
        try:
            offset = future.result(timeout=timeout_s).offset
        except (KafkaException, TimeoutError):
            continue
        ends[(tp.topic, tp.partition)] = offset if offset >= 0 else None
    return ends

# What a reason starts with → its label: the reasons themselves carry values (unbounded).
_REASON_KINDS = (
    ("not valid JSON", "bad_json"), ("envelope must be", "bad_json"), ("empty message", "empty"),
    ("message of", "too_large"), ("unknown event type", "unknown_type"), ("unknown feedback type", "unknown_type"),
    ("missing field", "missing_field"), ("field 'ts'", "bad_timestamp"), ("timestamp", "timestamp_out_of_range"),
    ("field", "bad_field"), ("event needs", "missing_field"), ("identify needs", "missing_field"),
    ("product_view needs", "missing_field"), ("survey needs", "bad_field"), ("feedback needs", "missing_field"),
)


def reason_kind(reason: str, step: str | None = None) -> str:
    """A dead letter's reason as a label of a small fixed set.

    >>> reason_kind("field 'items[0].qty' must be > 0; got -2"), reason_kind("not valid JSON: …")
    ('bad_field', 'bad_json')
    >>> reason_kind("ZeroDivisionError: …", step="churn"), reason_kind("Broker: Message corrupt")
    ('step_error', 'other')
    """
    if step is not None:
        return "step_error"
    return next((kind for prefix, kind in _REASON_KINDS if reason.startswith(prefix)), "other")


def total(counter: Counter) -> int:
    """The sum of a counter over its labels."""
    return int(sum(sample.value for metric in counter.collect() for sample in metric.samples
                   if sample.name.endswith("_total")))


class Reported:
    """What of a counter's total has not been reported yet (to the Redis metrics hash): each
    Redis sink partition takes the part it reports, so no count is reported twice."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.reported = 0
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            now = total(self.counter)
            delta, self.reported = now - self.reported, now
        return delta


# What goes to Redis for the dashboard: every metric but the latency histogram.
PUBLISHED = (EVENTS_IN, DEAD_LETTERS, STEP_ERRORS, REDIS_RETRIES, CHURN_ALERTS, CONSUMER_LAG)


def samples() -> dict[str, float]:
    """The current value of every sample of the published metrics, named as ``/metrics`` names
    it (read from the collectors themselves; the counters' ``_created`` times left out)."""
    out: dict[str, float] = {}
    for collector in PUBLISHED:
        for metric in collector.collect():
            for sample in metric.samples:
                if sample.name in published.PUBLISHED:
                    out[published.sample_name(sample.name, sample.labels)] = sample.value
    return out


def process_id(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """This flow process's bytewax process id: ``-i``/``--process-id`` of ``bytewax.run`` (as
    ``omnirec flow -i`` passes it), else ``BYTEWAX_PROCESS_ID``, else 0 (one process).

    >>> process_id(["run.py", "flows.dataflow:build_flow()", "-r", "rec", "-i", "1", "-a", "h:1;h:2"], {})
    1
    >>> process_id(["run.py", "--process-id=2"], {}), process_id(["run.py", "-w", "2"], {"BYTEWAX_PROCESS_ID": "3"})
    (2, 3)
    >>> process_id([], {}), process_id(["run.py", "-i", "x"], {})
    (0, 0)
    """
    value = environ.get("BYTEWAX_PROCESS_ID", "0")
    for i, arg in enumerate(argv):
        if arg in ("-i", "--process-id") and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--process-id="):
            value = arg.partition("=")[2]
    try:
        return int(value)
    except ValueError:
        return 0


class Publisher:
    """Writes this process's ``samples()`` to the flow metrics hash (``online_models.flow_metrics``
    fields: absolute values, with the wall time). A Redis that is away is skipped in silence: the
    Redis sink reports outages, and the next report carries the whole count again."""

    def __init__(self, client, key: str, process: int, clock=lambda: time.time_ns() // 1_000_000) -> None:
        self._client = client
        self._key = key
        self._process = process
        self._clock = clock
        self._stop = threading.Event()

    def publish(self) -> bool:
        from redis.exceptions import RedisError

        try:
            self._client.hset(self._key, mapping=published.fields(self._process, samples(), self._clock()))
        except RedisError as exc:
            log.debug("flow metrics not published: %s", exc)
            return False
        return True

    def run(self, every_s: float) -> None:
        while True:
            self.publish()
            if self._stop.wait(every_s):
                return

    def stop(self) -> None:
        self._stop.set()


_publishing: dict[str, Publisher] = {}


def publish(redis_url: str, key: str, every_s: float = published.PUBLISH_EVERY_S) -> Publisher:
    """Report this process's metrics to the Redis hash ``key`` every ``every_s`` from a daemon
    thread, once per process and key, and once more at exit."""
    if key in _publishing:
        return _publishing[key]
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis.from_url(redis_url, socket_timeout=2.0, socket_connect_timeout=2.0,
                                  retry=Retry(NoBackoff(), 0))
    publisher = _publishing[key] = Publisher(client, key, process_id(sys.argv, os.environ))
    threading.Thread(target=publisher.run, args=(every_s,), name="flow-metrics-publisher", daemon=True).start()
    atexit.register(publisher.publish)
    return publisher


_served: list[int] = []


def serve(port: int) -> None:
    """Serve /metrics on ``port`` (0: not at all) once per process. A port that is taken is
    reported and the flow goes on: metrics must not stop it."""
    if not port or port in _served:
        return
    try:
        start_http_server(port)
    except OSError as exc:
        print(f"omnirec flow: metrics not served, port {port}: {exc}", file=sys.stderr, flush=True)
        return
    _served.append(port)
    print(f"omnirec flow: Prometheus metrics at http://0.0.0.0:{port}/metrics", file=sys.stderr, flush=True)
