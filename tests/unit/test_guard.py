"""An exception in any step dead-letters its one message, keeps the key's state as it was, and
the flow goes on (issue 13): through the in-process Runner and through the bytewax wiring."""

from __future__ import annotations

import orjson
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from flows.dataflow import wire
from flows.steps import dead_letter_message
from online_models.engine import Engine, Runner, Step, graph, guard
from online_models.messages import DeadLetter, Raw

TS = 1_795_601_700_000


def purchase(event_id: str, customer: str, price: float = 10.0) -> bytes:
    return orjson.dumps({"event_id": event_id, "type": "purchase", "ts": TS, "channel": "store",
                         "customer_id": customer, "order_id": f"o-{event_id}",
                         "items": [{"sku": "TR-1", "qty": 1, "price": price}]})


class Faulty(Engine):
    """An engine whose customer step half-mutates the state and then fails on a 13.13 price."""

    def customer(self, state, message):
        state, emits = super().customer(state, message)
        if any(item.price == 13.13 for item in getattr(message, "items", ())):
            state.orders += 1000  # a half-done update: must not survive
            raise OverflowError("cannot convert float infinity to integer")
        return state, emits


def raws(*values: bytes) -> list[Raw]:
    return [Raw("store.events", 0, offset, b"c-1", value, None) for offset, value in enumerate(values)]


def test_a_failing_step_dead_letters_the_message_and_keeps_the_state():
    letters = []
    runner = Runner(Faulty(), on_output=lambda m: isinstance(m, DeadLetter) and letters.append(m))
    runner.feed_all(raws(purchase("e1", "c-1"), purchase("e2", "c-1", 13.13), purchase("e3", "c-1"),
                         purchase("e4", "c-2", 13.13)))
    assert [letter.step for letter in letters] == ["customers", "customers"]
    assert letters[0].reason == ("step 'customers' failed on Event 'e2' (key 'c-1'): "
                                 "OverflowError: cannot convert float infinity to integer")
    assert letters[0].raw.topic == "step:customers" and letters[0].raw.key == b"c-1"
    assert b"event_id='e2'" in letters[0].raw.value  # the message itself, as far as it goes
    state = runner.state("customers", "c-1")
    assert state.orders == 2 and state.gross == 20.0  # e1 and e3, nothing of e2
    assert runner.state("customers", "c-2") is None  # a first message that failed leaves no state
    assert runner.state("item_counts", "TR-1") is not None  # the other steps went on


def test_a_failing_parse_dead_letters_the_original_record():
    class BadParse(Engine):
        def parse(self, clock, raw):
            if raw.offset == 1:
                raise ValueError("year 49503 is out of range")
            return super().parse(clock, raw)

    letters = []
    runner = Runner(BadParse(), on_output=lambda m: isinstance(m, DeadLetter) and letters.append(m))
    records = raws(purchase("e1", "c-1"), purchase("e2", "c-1"), purchase("e3", "c-1"))
    runner.feed_all(records)
    assert len(letters) == 1 and letters[0].raw is records[1]  # original bytes, topic and offset
    assert letters[0].reason == "step 'parse' failed on the record: ValueError: year 49503 is out of range"
    assert runner.state("customers", "c-1").orders == 2


def test_guard_wraps_stateless_steps_and_lazy_emits():
    def explode(_message):
        yield "fine"
        raise KeyError("sku")

    step = guard(Step("catalog", {int: None}, explode, (str,), stateful=False))
    [letter] = step.fn(7)
    assert isinstance(letter, DeadLetter) and letter.reason == "step 'catalog' failed on int: KeyError: 'sku'"
    assert DeadLetter in step.emits and step.fn.__wrapped__ is explode


def test_every_step_of_the_graph_is_guarded():
    assert all(step.fn.__name__ == f"guarded_{step.name}" for step in graph(Engine()))


def test_the_bytewax_wiring_survives_a_failing_step():
    flow = Dataflow("guarded")
    records = raws(purchase("e1", "c-1"), purchase("e2", "c-1", 13.13), purchase("e3", "c-1"))
    raw = op.input("in", flow, TestingSource(records))
    writes, letters, _ = wire(flow, raw, Faulty())
    out, dead = [], []
    op.output("writes_out", writes, TestingSink(out))
    op.output("dead_out", letters, TestingSink(dead))
    run_main(flow)
    assert [d.step for d in dead] == ["customers"] and "OverflowError" in dead[0].reason
    profiles = [w.value for w in out if w.key.endswith(":profile") and ":{c:c-1}" in w.key]
    assert profiles[-1].orders == 2
    headers = dict(dead_letter_message(dead[0]).headers)
    assert headers["step"] == b"customers" and headers["source_topic"] == b"step:customers"


def test_a_dead_letter_too_large_to_produce_is_truncated_with_headers_saying_so():
    from flows.steps import DEAD_LETTER_MAX_VALUE_BYTES

    big = b"x" * (1024 * 1024)
    message = dead_letter_message(DeadLetter(Raw("web.events", 3, 42, b"k" * 10_000, big), "message too big"))
    headers = dict(message.headers)
    assert len(message.value) == DEAD_LETTER_MAX_VALUE_BYTES and message.value == big[:len(message.value)]
    assert headers["truncated"] == b"true" and headers["original_size"] == b"1048576"
    assert headers["original_key_size"] == b"10000" and len(message.key) == 4096
    assert headers["source_offset"] == b"42" and headers["reason"] == b"message too big"
    small = dead_letter_message(DeadLetter(Raw("web.events", 0, 1, b"k", b"{bad"), "not valid JSON"))
    assert small.value == b"{bad" and "truncated" not in dict(small.headers)


def test_a_key_s_messages_of_one_batch_give_what_they_give_one_by_one():
    """The flow hands a stateful step all of a batch's messages of a key at once (one copy of
    the state, not one per message); a failing one among them is dead-lettered alone."""
    [customers] = [step for step in graph(Faulty()) if step.name == "customers"]
    parse = Faulty().parse
    clock = None
    messages = []
    for raw in raws(purchase("e1", "c-1"), purchase("e2", "c-1", 13.13), purchase("e3", "c-1"),
                    purchase("e4", "c-1", 20.0)):
        clock, parsed = parse(clock, raw)
        messages.extend(m for m in parsed if type(m) in customers.accepts)
    one_by_one_state, one_by_one = None, []
    for message in messages:
        one_by_one_state, emits = customers.fn(one_by_one_state, message)
        one_by_one.extend(emits)
    state, emits = customers.fn_batch(None, messages)
    assert state.orders == one_by_one_state.orders == 3 and state.gross == one_by_one_state.gross == 40.0
    assert [type(m) for m in emits] == [type(m) for m in one_by_one]
    assert [m.step for m in emits if isinstance(m, DeadLetter)] == ["customers"]
    clean, _ = customers.fn_batch(None, [m for m in messages if "e2" not in repr(m)])
    assert clean.orders == 3  # no failure: one pass on one copy
