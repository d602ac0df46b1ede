"""The dataflow in process (TestingSource → TestingSink) and the engine's in-process Runner:
the same input gives the same stored bytes, for every key, whatever runs it."""

import zlib

import orjson
import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from flows.dataflow import wire
from omnirec.settings import Settings
from omnirec.simulate import build_demo_catalog, iter_events
from online_models.engine import Engine, Runner
from online_models.events import partition_key
from online_models.messages import WRITE_TYPES, DeadLetter, Raw, coalesce

from .helpers import T0, MemoryPipe

SETTINGS = Settings(key_prefix="t", churn_wall_clock=False)


def records():
    catalog = build_demo_catalog(2026)
    out = [Raw(SETTINGS.topic_catalog, 0, i, p["sku"].encode(), orjson.dumps(p))
           for i, p in enumerate(catalog)]
    events = list(iter_events(60, T0 - 40 * 86_400_000, 11, catalog, days=20))  # in the past
    for i, event in enumerate(events):
        topic = SETTINGS.topic_store if event["channel"] == "store" else SETTINGS.topic_web
        who = partition_key(event) or ""
        out.append(Raw(topic, zlib.crc32(who.encode()) % 2, i, who.encode(), orjson.dumps(event)))  # keyed, as producers do
    out.append(Raw(SETTINGS.topic_web, 0, len(events), None, b'{"type": "purchase"'))
    out.append(out[-2])  # a producer retry: the same event again
    return out


def run(records, workers: int = 1, batch_size: int = 50):
    flow = Dataflow("test")
    raw = op.input("in", flow, TestingSource(records, batch_size=batch_size))
    writes, letters, _alerts = wire(flow, raw, Engine(SETTINGS.engine()))
    out, dead = [], []
    op.output("redis_out", writes, TestingSink(out))
    op.output("dead_out", letters, TestingSink(dead))
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return materialise(out), dead


def materialise(writes):
    """What Redis would hold: the last write per slot, applied as the sink applies it."""
    pipe = MemoryPipe()
    for write in coalesce(writes).values():
        write.apply(pipe)
    return pipe.data


@pytest.fixture(scope="module")
def one_worker():
    return run(records())


def test_bad_messages_become_dead_letters_with_a_reason(one_worker):
    _, dead = one_worker
    assert len(dead) == 1 and "not valid JSON" in dead[0].reason


def test_customers_and_complements_materialise(one_worker):
    state, _ = one_worker
    from online_models import keys
    scheme = keys.KeyScheme("t")
    customers = [k for (k, _) in state if k.startswith("t:{c:")]
    assert len(customers) > 20
    counts = {member: score for (key, member), score in state.items() if key == scheme.basket_counts()}
    belts = keys.decode_neighbors(state[(scheme.neighbors("TR-001"), None)], counts)
    assert any(n.sku.startswith(("BL-", "SK-", "SH-")) for n in belts[:3])


def _differences(a, b):
    return sorted({slot[0] for slot in a.keys() | b.keys() if a.get(slot) != b.get(slot)})


def test_two_workers_write_the_same_bytes_as_one(one_worker):
    single, _ = one_worker
    double, dead = run(records(), workers=2)
    assert len(dead) == 1
    assert _differences(single, double) == []


def test_other_batch_sizes_write_the_same_bytes(one_worker):
    single, _ = one_worker
    assert _differences(single, run(records(), batch_size=37)[0]) == []


def test_the_runner_reaches_the_state_the_flow_writes(one_worker):
    """The evaluators drive the engine with Runner: it must store what the flow stores."""
    single, dead = one_worker
    writes, letters = [], []
    runner = Runner(Engine(SETTINGS.engine()),
                    on_output=lambda m: (writes if type(m) in WRITE_TYPES else letters).append(m))
    runner.feed_all(records())
    assert _differences(single, materialise(writes)) == []
    assert [m.reason for m in letters if isinstance(m, DeadLetter)] == [d.reason for d in dead]


def test_a_retried_offer_feedback_is_counted_once_by_the_offers_statistics():
    from online_models.engine import Engine, Runner
    from online_models.events import Feedback
    from online_models.messages import OfferOutcome

    runner = Runner(Engine(Settings().engine()))
    accept = Feedback(event_id="fb-1", type="accept", ts_ms=1_796_000_000_000, customer_id="c-1", channel="web",
                      offer_id="belt-bundle", cell="men|regular")
    outcomes = [m for m in runner.engine.customer(None, accept)[1] if isinstance(m, OfferOutcome)]
    assert outcomes == [OfferOutcome(accept)]
    for _ in range(3):  # the client retried: the same event id
        runner.feed(accept)
    assert runner.states["offer_stats"]["belt-bundle"].cells["men|regular"] == [1.0, 1.0]  # one trial, one accept


def test_one_offer_decision_is_one_trial_whatever_the_client_posts_of_it():
    """The uplift report read 100 % acceptance from a client that posted accepts only: an accept or
    a dismiss whose impression was never posted counts that impression, and an impression posted
    after its decision's accept (or twice) is not a second trial."""
    from online_models.engine import Engine, Runner
    from online_models.events import Feedback
    from online_models.propensity import DIMENSION

    runner = Runner(Engine(Settings().engine()))

    def post(event_id, kind, decision, ts=1_796_000_000_000):
        runner.feed(Feedback(event_id=event_id, type=kind, ts_ms=ts, customer_id="c-1", channel="web",
                             decision_id=decision, offer_id="belt-bundle", cell="men|regular",
                             features=(0.5,) * DIMENSION))

    post("fb-1", "accept", "d-1")  # no impression posted
    post("fb-2", "impression", "d-1", ts=1_796_000_000_500)  # arrives after its accept
    post("fb-3", "dismiss", "d-2")  # no impression posted
    post("fb-4", "impression", "d-3")
    post("fb-5", "impression", "d-3")  # the page rendered twice
    post("fb-6", "accept", "d-3")
    stats = runner.states["offer_stats"]["belt-bundle"]
    assert stats.cells["men|regular"] == [3.0, 2.0]  # three decisions, two accepted
    assert (stats.model.shown, stats.model.accepted) == (3, 2)  # the contextual model learns the same trials
