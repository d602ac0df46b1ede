"""The shared checks (``online_models.checks``) over every state the engine keeps.

Every stateful step of the engine's graph is covered by being in the graph: its states are
built by running the engine over a seeded simulated stream, and checked. State classes that
live inside others are listed below."""

import copy
import zlib

import orjson
import pytest

from omnirec.settings import Settings
from omnirec.simulate import build_demo_catalog, iter_events
from online_models import checks, keys, propensity
from online_models.churn import RhythmState
from online_models.engine import Engine, Runner, graph
from online_models.events import format_ts, partition_key
from online_models.messages import Raw

from .helpers import T0

SETTINGS = Settings(key_prefix="chk", churn_wall_clock=False)
ENGINE = Engine(SETTINGS.engine())


def records(seed=5):
    catalog = build_demo_catalog(2026)
    out = [Raw(SETTINGS.topic_catalog, 0, i, None, orjson.dumps(p)) for i, p in enumerate(catalog)]
    events = list(iter_events(40, T0 - 60 * 86_400_000, seed, catalog, days=50))
    for i, event in enumerate(events):
        topic = SETTINGS.topic_store if event["channel"] == "store" else SETTINGS.topic_web
        key = (partition_key(event) or "").encode()
        out.append(Raw(topic, zlib.crc32(key) % 2, i, key, orjson.dumps(event)))
    buyers = sorted({e["customer_id"] for e in events if e.get("customer_id")})[:10]
    for i, customer in enumerate(buyers):  # offer feedback, and clicks on recommendations
        ts = format_ts(T0 - 5 * 86_400_000 + i * 60_000)
        for kind in ("impression", "accept" if i % 2 else "dismiss"):
            out.append(Raw(SETTINGS.topic_feedback, 0, len(out), None, orjson.dumps({
                "event_id": f"fb-{i}-{kind}", "type": kind, "ts": ts, "customer_id": customer,
                "offer_id": "winback-15", "cell": "new",
                "features": [1.0, 0.0, 0.0, 0.0, 0.25, i / 64] + [0.0] * (propensity.DIMENSION - 6)})))
        out.append(Raw(SETTINGS.topic_feedback, 0, len(out), None, orjson.dumps({
            "event_id": f"rk-{i}", "type": "click" if i % 3 else "impression", "ts": ts, "customer_id": customer,
            "sku": "BL-001", "features": [0.5, 1.0, 0.0, 0.0, 0.2, 0.1, 0.3, 1.0]})))
    return out


def run(seed=5) -> Runner:
    runner = Runner(ENGINE)
    runner.feed_all(records(seed))
    runner.advance_clock(T0 + 400 * 86_400_000)  # timers fire: buckets finish, gates raise
    return runner


RUN, AGAIN = run(), run()

CODECS = {  # step → (encode, decode) of the blob it writes, where readers decode the same class
    "customers": (keys.encode_customer, keys.decode_profile),
    "offer_stats": (keys.encode_offer_stats, keys.decode_offer_stats),
    "item_neighbors": (keys.encode_neighbors, None),
    "population": (keys.encode_churn_shard, None),
    "ranker": (keys.encode_ranker, None),
}


def _busiest(step: str):
    """The key of the step with the largest state (pickled): the one most worth checking."""
    import pickle

    states = RUN.states[step]
    assert states, f"the seeded stream never reached {step}"
    return max(sorted(states), key=lambda key: len(pickle.dumps(states[key])))


def step_cases():
    for step in graph(ENGINE):
        if not step.stateful:
            continue
        key = _busiest(step.name)
        encode, decode = CODECS.get(step.name, (None, None))
        message = next(m for m in _messages_for(step) if step.accepts[type(m)](m) is not None)
        yield checks.StateCase(step.name, lambda step=step.name, key=key: copy.deepcopy(RUN.states[step][key]),
                               encode, decode, step.fn, message,
                               rebuild=lambda step=step.name, key=key: AGAIN.states[step][key])


def _messages_for(step):
    """Messages this step was given in a fresh run."""
    seen = []
    runner = Runner(ENGINE, on_step=lambda name, message: seen.append(message) if name == step.name else None)
    runner.feed_all(records())
    runner.advance_clock(T0 + 400 * 86_400_000)
    return seen


def live_stream_clock():
    """A stream clock as a live flow holds it (wall times in its samples), which the offline
    run above never builds."""
    from online_models.clock import ClockSettings, StreamClock

    clock, settings = StreamClock(), ClockSettings(settle_ms=5_000)
    for wall, source, ts in ((1_000, "web.events/0", T0), (3_000, "store.events/1", T0 + 1), (9_000, "web.events/0", T0 + 2)):
        clock.progress(source, ts, wall)
        clock.now_ms = clock.current(settings) or clock.now_ms
    return clock


NESTED = [  # state classes inside others, or states the seeded run does not build: listed here
    checks.StateCase("stream_clock_live", live_stream_clock),
    checks.StateCase("rhythm_state", lambda: RUN.states["customers"][_busiest("customers")].rhythm.copy(),
                     lambda r: orjson.dumps(r.to_dict()), lambda raw: RhythmState.from_dict(orjson.loads(raw))),
    checks.StateCase("contacts", lambda: RUN.states["customers"][_busiest("customers")].contacts.copy()),
]

CASES = [*step_cases(), *NESTED]


@pytest.mark.parametrize("check", [c for case in CASES for c in checks.yield_checks(case)],
                         ids=lambda c: c.__name__)
def test_state_checks(check):
    check()


def test_every_stateful_step_is_checked():
    names = {case.name for case in CASES}
    assert {s.name for s in graph(ENGINE) if s.stateful} <= names


def test_the_ranker_rejects_non_finite_feedback_and_clamps_the_rest():
    import math

    from online_models.learning import FEATURE_BOUND, RecRanker

    ranker = RecRanker()
    for bad in (float("nan"), float("inf"), -float("inf")):
        assert ranker.learn({"complement": bad}, "click") is False
        assert ranker.learn_at({"price": bad}, "click", 1, "e") is False
    assert ranker.trained_on == 0 and not ranker.pending
    for _ in range(50):  # features of 1e308 (measured before: every weight went to 2.5e306)
        assert ranker.learn({name: 1e308 for name in ("complement", "category", "brand")}, "click")
    weights = ranker.weights()
    assert all(math.isfinite(w) and abs(w) < 50 * FEATURE_BOUND for w in weights.weights.values())
