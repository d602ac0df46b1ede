"""What crosses workers is pickled by its fields (online_models.pickling): the same message back,
at a fraction of the cost of a slots dataclass's default pickling."""

from __future__ import annotations

import pickle
from collections import defaultdict

import orjson

from omnirec import simulate
from online_models.engine import Engine, Runner
from online_models.messages import Raw
from online_models.pickling import pickled_by_fields


def test_every_message_between_steps_comes_back_equal_from_a_pickle():
    catalog = simulate.build_demo_catalog()
    seen: dict[type, list] = defaultdict(list)
    runner = Runner(Engine(), on_output=lambda m: seen[type(m)].append(m),
                    on_step=lambda _name, m: seen[type(m)].append(m))
    for offset, event in enumerate(simulate.iter_events(40, 1_790_000_000_000, 5, catalog, days=20)):
        topic = "store.events" if event.get("channel") == "store" else "web.events"
        key = (event.get("customer_id") or event.get("anonymous_id") or "").encode()
        runner.feed(Raw(topic, 0, offset, key, orjson.dumps(event), None))
    assert len(seen) >= 10
    for kind, messages in seen.items():
        for message in messages[:50]:
            again = pickle.loads(pickle.dumps(message))
            assert again == message and type(again) is kind
        if kind.__module__.startswith("online_models.") and kind.__name__ != "CustomerState":
            assert "__reduce__" in vars(kind), f"{kind.__name__} is pickled the slow way"


def test_a_class_with_a_field_outside_init_cannot_be_pickled_by_fields():
    from dataclasses import dataclass, field

    import pytest

    @dataclass(frozen=True, slots=True)
    class Odd:
        a: int
        b: int = field(default=0, init=False)

    with pytest.raises(TypeError, match="__init__"):
        pickled_by_fields(Odd)
