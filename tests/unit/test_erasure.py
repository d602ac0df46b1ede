"""Erasure in the engine: a tombstone drops the customer's and their aliases' state for a marker,
deletes what the flow wrote of them, takes them out of their churn shard, and makes late events
of that id change nothing until the retention is over."""

import orjson

from omnirec.settings import Settings
from online_models import erasure, keys
from online_models.engine import Engine, Runner
from online_models.erasure import Erased
from online_models.events import DAY_MS, Rejected, Tombstone, parse_event
from online_models.messages import WRITE_TYPES, Delete, DeleteAlerts, Fired, Raw, Timer
from online_models.timers import AlertGate

from .helpers import T0, MemoryPipe

SETTINGS = Settings(key_prefix="t", churn_wall_clock=False, erasure_retention_days=30)
SCHEME = keys.KeyScheme("t")
ERASED_AT = T0 + 10 * DAY_MS


def envelope(event_id, kind, ts, customer=None, anonymous=None, **extra):
    body = {"event_id": event_id, "type": kind, "ts": ts, "channel": "web", **extra}
    if customer:
        body["customer_id"] = customer
    if anonymous:
        body["anonymous_id"] = anonymous
    return body


def bought(event_id, ts, customer=None, anonymous=None):
    return envelope(event_id, "purchase", ts, customer, anonymous, order_id=f"o-{event_id}",
                    items=[{"sku": "TR-1", "qty": 1, "price": 10.0, "category": "men/trousers"}])


def history(customer="c-gone", alias="anon-gone"):
    return [
        envelope(f"v-{customer}", "product_view", T0, anonymous=alias, sku="TR-1"),
        envelope(f"i-{customer}", "identify", T0 + 1000, customer=customer, anonymous=alias),
        *[bought(f"p-{customer}-{n}", T0 + n * DAY_MS, customer=customer) for n in range(1, 5)],
    ]


class Flow:
    """The engine run in process, with what Redis would hold."""

    def __init__(self) -> None:
        self.pipe = MemoryPipe()
        self.offset = 0
        self.runner = Runner(Engine(SETTINGS.engine()), on_output=self._written)

    def _written(self, message) -> None:
        if type(message) in WRITE_TYPES:
            message.apply(self.pipe)

    def send(self, *bodies) -> None:
        for body in bodies:
            self.offset += 1
            self.runner.feed(Raw(SETTINGS.topic_web, 0, self.offset, None, orjson.dumps(body)))

    def keys_naming(self, text: str) -> set[str]:
        return {slot[0] for slot, value in self.pipe.data.items()
                if text in slot[0] or (isinstance(value, bytes) and text.encode() in value)}


def test_a_tombstone_envelope_parses_and_a_bad_one_is_rejected():
    body = erasure.tombstone_envelope("c-1", ["anon-2", "anon-1", "anon-2"], ERASED_AT, "e-1")
    assert parse_event(orjson.dumps(body)) == Tombstone("e-1", "c-1", ERASED_AT, ("anon-1", "anon-2"))
    # never judged late: an erasure asked for now joins a stream of older events
    assert isinstance(parse_event(orjson.dumps(body), stream_ts_ms=ERASED_AT + 365 * DAY_MS), Tombstone)
    assert "aliases" in parse_event(orjson.dumps({**body, "aliases": "anon-1"})).reason
    assert isinstance(parse_event(orjson.dumps({**body, "customer_id": ""})), Rejected)


def test_the_tombstone_drops_the_customer_and_their_aliases_everywhere():
    flow = Flow()
    flow.send(*history(), *history("c-kept", "anon-kept"))
    assert flow.keys_naming("c-gone") >= {SCHEME.customer("c-gone"), SCHEME.alias("anon-gone")}
    kept_before = {k: flow.pipe.data[(k, None)] for k in flow.keys_naming("c-kept")}
    shard = flow.runner.state("population", f"shard:{_shard('c-gone')}")
    assert "c-gone" in shard.sample.rows
    total = shard.sketch.value.total

    flow.send(erasure.tombstone_envelope("c-gone", [], ERASED_AT, "erase-1"))

    assert flow.keys_naming("c-gone") == set()
    assert flow.keys_naming("anon-gone") == set()  # its alias was known to the flow's own state
    assert {k: flow.pipe.data[(k, None)] for k in flow.keys_naming("c-kept")} == kept_before
    assert flow.runner.state("customers", "c-gone") == Erased("c-gone", ERASED_AT + 30 * DAY_MS)
    shard = flow.runner.state("population", f"shard:{_shard('c-gone')}")  # steps run on copies
    assert "c-gone" not in shard.sample.rows and shard.sketch.value.total == total - 1


def test_late_events_of_an_erased_id_are_ignored_until_the_retention_is_over():
    flow = Flow()
    flow.send(*history())
    flow.send(erasure.tombstone_envelope("c-gone", ["anon-gone"], ERASED_AT, "erase-1"))
    assert flow.runner.state("aliases", "anon-gone") == Erased("anon-gone", ERASED_AT + 30 * DAY_MS)

    # a retry, a straggler of another partition, the alias's session, a purchase after the request
    flow.send(history()[2], bought("late-1", T0 + 2 * DAY_MS, customer="c-gone"),
              bought("late-2", T0 + 3 * DAY_MS, anonymous="anon-gone"),
              bought("late-3", ERASED_AT + 29 * DAY_MS, customer="c-gone"),
              erasure.tombstone_envelope("c-gone", [], ERASED_AT - DAY_MS, "erase-0"))  # an older request
    assert flow.keys_naming("c-gone") == set() and flow.keys_naming("anon-gone") == set()
    assert isinstance(flow.runner.state("customers", "c-gone"), Erased)

    flow.send(bought("new-1", ERASED_AT + 31 * DAY_MS, customer="c-gone"))  # the hold is over: a new customer
    fresh = keys.decode_profile(flow.pipe.data[(SCHEME.customer("c-gone"), None)])
    assert fresh.orders == 1 and fresh.aliases == [] and fresh.first_ts == ERASED_AT + 31 * DAY_MS


def test_the_flow_deletes_again_what_it_wrote_after_the_edge_erased():
    """The API deletes at once; writes in flight before the tombstone are deleted by it."""
    engine = Engine(SETTINGS.engine())
    state, emits = engine.customer(None, Tombstone("e", "c-9", ERASED_AT, ("loyalty:7",)))
    writes = [m for m in emits if type(m) in WRITE_TYPES]
    assert writes == [Delete(SCHEME.customer("c-9")), Delete(SCHEME.alias("loyalty:7")),
                      DeleteAlerts(SCHEME.churn_alerts(), SCHEME.churn_alert_seen(""), "c-9")]
    assert writes == erasure.writes(SCHEME, "c-9", ["loyalty:7"])  # what the edges apply


def test_the_alert_gate_raises_nothing_for_an_erased_customer():
    engine = Engine(SETTINGS.engine())
    from online_models.churn import Alert

    alert = Alert("c-9", T0 + DAY_MS, 0.9, 100.0, None, ("lapsing",), T0)
    timer = Timer("c-9", 1, T0, T0 + DAY_MS, alert)
    gate, _ = engine.alert_gate(None, timer)
    gate, raised = engine.alert_gate(gate, Tombstone("e", "c-9", ERASED_AT))
    assert engine.alert_gate(gate, Fired(timer))[1] == [] and gate.pending is None
    assert AlertGate().on_fired(Fired(timer)) == [alert]  # without the erasure it would have been raised


def test_seen_keys_are_told_apart_from_another_ids():
    pattern = erasure.seen_key_pattern(keys.KeyScheme("p[1]"), "c*1")
    assert pattern == "p\\[1\\]:{alerts}:seen:c\\*1:*"
    assert erasure.is_seen_key_of(SCHEME, SCHEME.churn_alert_seen("c-1:1795601700000"), "c-1")
    assert not erasure.is_seen_key_of(SCHEME, SCHEME.churn_alert_seen("c-1:x:1795601700000"), "c-1")
    assert not erasure.is_seen_key_of(SCHEME, SCHEME.churn_alert_seen("c-10:1795601700000"), "c-1")


def _shard(customer_id):
    from online_models import tiers

    return tiers.shard_of(customer_id, SETTINGS.churn_shards)
