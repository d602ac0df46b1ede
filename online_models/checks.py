"""Checks every state class and model of the engine must pass, in the style of river's
``utils.estimator_checks``: a list of small functions, each asserting one property, that a
test suite runs over every case it is given.

- ``check_message_not_mutated``: a step never changes the message it was given (messages
  are shared between steps, and bytewax may hand the same object to several).
- ``check_copy_round_trip``: ``copy.deepcopy`` and ``pickle`` give an equal, independent
  state (bytewax snapshots by copying, recovery by pickling).
- ``check_codec_round_trip``: decoding the Redis bytes and encoding again gives the same bytes.
- ``check_seeded_repeat``: the same seeded input gives the same state, byte for byte.

Equality is judged on bytes (the Redis codec where there is one, else pickle), so a state
class needs no ``__eq__`` of its own.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StateCase:
    """One state to check: how to build it (deterministically), and its codec if it has one.

    ``decode`` must return an object ``encode`` accepts (a full round trip); leave it out
    for write-only codecs (readers decode them into views)."""

    name: str
    build: Callable[[], Any]
    encode: Callable[[Any], bytes] | None = None
    decode: Callable[[bytes], Any] | None = None
    step: Callable[[Any, Any], tuple[Any, Any]] | None = None  # (state, message) -> (state, emits)
    message: Any = None  # a message for ``step``
    rebuild: Callable[[], Any] | None = None  # the same state from a second, independent run

    def fingerprint(self, state: Any) -> bytes:
        return self.encode(state) if self.encode is not None else pickle.dumps(state)


def check_message_not_mutated(case: StateCase) -> None:
    if case.step is None:
        return
    before = pickle.dumps(case.message)
    case.step(case.build(), case.message)
    assert pickle.dumps(case.message) == before, f"{case.name}: the step changed its input message"


def check_copy_round_trip(case: StateCase) -> None:
    state = case.build()
    print_before = case.fingerprint(state)
    for clone in (copy.deepcopy(state), pickle.loads(pickle.dumps(state))):
        assert case.fingerprint(clone) == print_before, f"{case.name}: a copy differs from the original"
        if case.step is not None:
            case.step(clone, case.message)  # moving the copy must leave the original alone
    assert case.fingerprint(state) == print_before, f"{case.name}: changing a copy changed the original"


def check_codec_round_trip(case: StateCase) -> None:
    if case.encode is None or case.decode is None:
        return
    raw = case.encode(case.build())
    assert case.encode(case.decode(raw)) == raw, f"{case.name}: decode → encode changed the bytes"


def check_seeded_repeat(case: StateCase) -> None:
    again = case.rebuild or case.build
    assert case.fingerprint(case.build()) == case.fingerprint(again()), (
        f"{case.name}: the same input built different states")


CHECKS = (check_message_not_mutated, check_copy_round_trip, check_codec_round_trip, check_seeded_repeat)


def yield_checks(case: StateCase) -> Iterator[Callable[[], None]]:
    """Every check, bound to ``case``, named after it (for parametrised tests)."""
    for check in CHECKS:
        def bound(check=check) -> None:
            check(case)
        bound.__name__ = f"{check.__name__}[{case.name}]"
        yield bound
