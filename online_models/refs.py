"""Ids of served decisions and recommendations that carry what feedback needs to be attributed.

The API hands out a `decision_id` with each next-best-offer and a `recommendation_id` with
each list of recommendations; a client sends the id back with its feedback, and the id
alone tells who was shown what, in which cell, and whether it was a control decision. No
lookup table is needed on the hot path.
"""

from __future__ import annotations

import base64
from dataclasses import astuple, dataclass

import orjson


@dataclass(frozen=True, slots=True)
class DecisionRef:
    customer_id: str
    offer_id: str
    cell: str
    channel: str | None
    control: bool
    ts_ms: int
    nonce: int


@dataclass(frozen=True, slots=True)
class RecommendationRef:
    """One served item: the ranker learns from feedback on it with the features it was ranked on."""

    customer_id: str | None
    context: str
    channel: str | None
    ts_ms: int
    nonce: int
    sku: str
    features: tuple[float, ...]


_KINDS = {"d1": DecisionRef, "r1": RecommendationRef}


def encode_ref(ref: DecisionRef | RecommendationRef) -> str:
    tag = "d1" if isinstance(ref, DecisionRef) else "r1"
    return f"{tag}." + base64.urlsafe_b64encode(orjson.dumps(list(astuple(ref)))).rstrip(b"=").decode()


def decode_ref(text: str, expected: type) -> DecisionRef | RecommendationRef:
    """Raises ValueError naming what is wrong with an id we did not issue."""
    tag, _, body = text.partition(".")
    if _KINDS.get(tag) is not expected:
        want = next(t for t, kind in _KINDS.items() if kind is expected)
        raise ValueError(f"not a {expected.__name__} id (expected '{want}.…')")
    try:
        fields = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        ref = expected(*fields)
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise ValueError(f"malformed {expected.__name__} id") from None
    texts = (ref.customer_id, ref.offer_id, ref.cell) if isinstance(ref, DecisionRef) else (ref.context, ref.sku)
    if not all(isinstance(t, str) and t for t in texts) or not isinstance(ref.ts_ms, int):
        raise ValueError(f"malformed {expected.__name__} id")
    return ref
