"""The flow's Prometheus metrics count at the edges, and the Redis metrics hash (the dashboard's
numbers) is fed from them."""

from __future__ import annotations

import urllib.request

from flows import metrics
from flows.steps import (
    FLOW_METRICS,
    alert_message,
    batch_from_kafka,
    dead_letter_message,
    from_kafka,
)
from omnirec.stack import free_port
from online_models import answers, flow_metrics
from online_models.churn import Alert
from online_models.messages import DeadLetter, Raw


class Record:
    def __init__(self, topic: str, value: bytes = b"{}") -> None:
        self.topic, self.partition, self.offset, self.key, self.value = topic, 0, 1, b"k", value


def value(name: str, **labels) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_events_dead_letters_step_errors_and_alerts_are_counted():
    before_web, before_store = value("omnirec_flow_events_total", topic="t.web"), value(
        "omnirec_flow_events_total", topic="t.store")
    FLOW_METRICS.take()  # what earlier tests read is somebody else's report
    for _ in range(3):
        from_kafka(Record("t.web"))
    from_kafka(Record("t.store"))
    assert value("omnirec_flow_events_total", topic="t.web") - before_web == 3
    assert value("omnirec_flow_events_total", topic="t.store") - before_store == 1
    assert FLOW_METRICS.take() == 4 and FLOW_METRICS.take() == 0  # the hash's `messages`, reported once

    batch = [Record("t.web"), Record("t.store"), Record("t.web")]
    raws = batch_from_kafka(batch)  # what the flow calls: the counters moved once per topic and batch
    assert [(r.topic, r.offset, r.value) for r in raws] == [("t.web", 1, b"{}"), ("t.store", 1, b"{}"),
                                                           ("t.web", 1, b"{}")]
    assert len({r.received_ms for r in raws}) == 1 and raws[0].received_ms is not None
    assert value("omnirec_flow_events_total", topic="t.web") - before_web == 5
    assert FLOW_METRICS.take() == 3
    assert metrics.POSITIONS.next[("t.store", 0)] == 2

    raw = Raw("t.web", 0, 1, b"k", b"nope", 0)
    bad_json = value("omnirec_flow_dead_letters_total", reason="bad_json")
    step = value("omnirec_flow_step_errors_total", step="churn")
    dead_letter_message(DeadLetter(raw, "not valid JSON: unexpected character"))
    dead_letter_message(DeadLetter(raw, "ZeroDivisionError: division by zero", step="churn"))
    assert value("omnirec_flow_dead_letters_total", reason="bad_json") - bad_json == 1
    assert value("omnirec_flow_step_errors_total", step="churn") - step == 1

    alerts = value("omnirec_flow_churn_alerts_total")
    alert_message(Alert("c-1", 1_795_601_700_000, 0.9, 10.0, None, ("lapsing",)))
    assert value("omnirec_flow_churn_alerts_total") - alerts == 1


def test_the_flow_serves_its_metrics_on_the_port_setting():
    port = free_port()
    metrics.serve(port)
    metrics.serve(port)  # once per process
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for name in ("omnirec_flow_events_total", "omnirec_flow_dead_letters_total", "omnirec_flow_step_errors_total",
                 "omnirec_flow_redis_batch_seconds_bucket", "omnirec_flow_redis_retries_total",
                 "omnirec_flow_churn_alerts_total", "omnirec_flow_consumer_lag"):
        assert name in text, name
    metrics.serve(0)  # 0: off, nothing happens


class Offsets:
    """Stands in for the admin client: ListOffsets answers from each partition's high watermark;
    a partition of topic 'z.gone' fails, and ``away`` fails the whole request."""

    def __init__(self, ends, away: bool = False) -> None:
        self.ends, self.away = ends, away

    def list_offsets(self, specs, request_timeout):
        from concurrent.futures import Future

        from confluent_kafka import KafkaError, KafkaException

        if self.away:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        out = {}
        for tp in specs:
            future = Future()
            if tp.topic == "z.gone":
                future.set_exception(KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)))
            else:
                future.set_result(type("Info", (), {"offset": self.ends[(tp.topic, tp.partition)]})())
            out[tp] = future
        return out


def test_consumer_lag_is_the_high_watermark_minus_the_next_offset_read():
    positions = metrics.ReadPositions()
    for offset in range(10):
        positions.read("t.lag", 0, offset)  # read 0..9: next is 10
    positions.read("t.lag", 1, 41)
    positions.read("z.gone", 0, 3)
    positions.read("t.lag", 2, None)  # an error record carries no offset: not a position
    ends = metrics.high_watermarks(Offsets({("t.lag", 0): 25, ("t.lag", 1): 42}), positions.partitions(), 1.0)
    assert ends == {("z.gone", 0): None, ("t.lag", 0): 25, ("t.lag", 1): 42}
    assert positions.report(ends) == {("t.lag", 0): 15, ("t.lag", 1): 0}
    assert value("omnirec_flow_consumer_lag", topic="t.lag", partition="0") == 15
    assert value("omnirec_flow_consumer_lag", topic="t.lag", partition="1") == 0
    positions.read("t.lag", 0, 24)  # caught up
    positions.report(ends)
    assert value("omnirec_flow_consumer_lag", topic="t.lag", partition="0") == 0
    away = Offsets({}, away=True)  # a broker that is away: nothing known, nothing changed
    assert metrics.high_watermarks(away, [("t.lag", 0)], 1.0) == {("t.lag", 0): None}


def test_the_flow_edge_records_what_it_read():
    before = dict(metrics.POSITIONS.next)
    record = Record("t.positions")
    record.partition, record.offset = 3, 7
    from_kafka(record)
    assert metrics.POSITIONS.next[("t.positions", 3)] == 8
    assert {k: v for k, v in metrics.POSITIONS.next.items() if k != ("t.positions", 3)} == before


class HashClient:
    """Stands in for the publisher's Redis client: keeps what HSET wrote."""

    def __init__(self) -> None:
        self.hash: dict[str, int] = {}

    def hset(self, key, mapping):
        self.hash.update(mapping)


def page_samples(text: str) -> dict[str, float]:
    """The published metrics' samples of a /metrics text, named as it names them."""
    from prometheus_client.parser import text_string_to_metric_families

    return {flow_metrics.sample_name(s.name, s.labels): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name in flow_metrics.PUBLISHED}


def test_the_dashboard_summary_reads_what_the_flows_metrics_page_shows():
    """After the flow read N records, dead-lettered some and raised an alert, the summary's flow
    numbers are the sums of its /metrics samples, and the Redis hash holds each sample as shown."""
    port = free_port()
    metrics.serve(port)
    for _ in range(5):
        from_kafka(Record("t.summary"))
    raw = Raw("t.summary", 0, 1, b"k", b"nope", 0)
    dead_letter_message(DeadLetter(raw, "not valid JSON: unexpected character"))
    dead_letter_message(DeadLetter(raw, "unknown event type 'x'"))
    dead_letter_message(DeadLetter(raw, "KeyError: 'x'", step="profile"))
    alert_message(Alert("c-1", 1_795_601_700_000, 0.9, 10.0, None, ("lapsing",)))
    metrics.REDIS_RETRIES.inc()
    metrics.CONSUMER_LAG.labels("t.summary", "0").set(4)

    client = HashClient()
    assert metrics.Publisher(client, "rec:{metrics}:flow", 0, clock=lambda: 1_000).publish()
    page = page_samples(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode())
    assert page['omnirec_flow_events_total{topic="t.summary"}'] >= 5

    published = {k.removeprefix("prom:0:"): v for k, v in client.hash.items() if k != "prom:0:updated_ms"}
    assert published == page  # every sample, by the name /metrics gives it, with its value

    summary = answers.metrics_summary(client.hash, 0, [], {}, 2_000)["flow"]
    by_metric = {field: sum(v for name, v in page.items() if name.partition("{")[0] == metric)
                 for field, metric in flow_metrics.TOTALS.items()}
    assert summary == {**by_metric, "processes": 1, "updated_ms": 1_000}
    assert summary["dead_letters"] >= 3 and summary["step_errors"] >= 1 and summary["churn_alerts"] >= 1


def test_every_published_metric_is_a_sample_of_the_flows_collectors():
    names = {s.name for c in metrics.PUBLISHED for m in c.collect() for s in m.samples}
    assert set(flow_metrics.PUBLISHED) <= names | {flow_metrics.CONSUMER_LAG}  # the gauge: once set


def test_processes_that_stopped_reporting_drop_out_and_each_process_reports_under_its_id():
    hash_fields = {
        **flow_metrics.fields(0, {'omnirec_flow_events_total{topic="a"}': 10, "omnirec_flow_redis_retries_total": 1},
                              100_000),
        **flow_metrics.fields(1, {'omnirec_flow_events_total{topic="a"}': 7}, 99_000),
        **flow_metrics.fields(2, {'omnirec_flow_events_total{topic="a"}': 500}, 100_000 - flow_metrics.STALE_MS - 1),
        "messages": 999, "updated_ms": 5,  # the sink's own fields: not Prometheus numbers
    }
    read = flow_metrics.read({k.encode(): str(v).encode() for k, v in hash_fields.items()})
    assert (read["events"], read["redis_retries"], read["processes"], read["updated_ms"]) == (17, 1, 2, 100_000)
    assert metrics.process_id(["run.py", "flows.dataflow:build_flow()", "-i", "1", "-a", "h:1;h:2"], {}) == 1
    assert metrics.process_id(["run.py", "flows.dataflow:build_flow()", "-w", "2"], {}) == 0


def test_a_redis_that_is_away_skips_a_report_without_raising():
    from redis.exceptions import ConnectionError as RedisConnectionError

    class Away:
        def hset(self, key, mapping):
            raise RedisConnectionError("refused")

    assert metrics.Publisher(Away(), "k", 0).publish() is False
