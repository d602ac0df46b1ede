"""Messages pickled as their fields: bytewax pickles every message that crosses workers.

A ``slots`` dataclass pickles through ``copyreg`` and its ``__getstate__`` / ``__setstate__``:
10–40 µs for a round trip of one of the engine's messages, over 100 µs per event had every hop
between steps crossed a process (``bench.throughput``: two processes cost twice the CPU per
message of one worker). Pickled as ``(class, fields)`` instead, a message is rebuilt by its own
``__init__``: a few µs.
"""

from __future__ import annotations

import operator
from dataclasses import fields


def pickled_by_fields(cls: type) -> type:
    """Class decorator (outside ``@dataclass``): pickle instances as ``cls(*fields)``. Every field
    must be an ``__init__`` argument, in order. A class whose fields change reads pickles of the
    old shape no more: meant for messages, which live only between steps (and, for timers, in
    the recovery store of the step that holds them, which a change of shape resets anyway)."""
    names = [f.name for f in fields(cls)]
    if not all(f.init for f in fields(cls)):
        raise TypeError(f"{cls.__name__}: every field must be an __init__ argument to pickle by fields")
    get = operator.attrgetter(*names)
    if len(names) == 1:
        cls.__reduce__ = lambda self: (cls, (get(self),))
    else:
        cls.__reduce__ = lambda self: (cls, get(self))
    return cls
