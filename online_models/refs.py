"""Signed ids of served decisions and recommendations, carrying what feedback needs to be attributed.

The API hands out a `decision_id` with each next-best-offer and a `recommendation_id` with
each recommended item; a client sends the id back with its feedback, and the id alone tells who
was shown what, in which cell, and whether it was a control decision. No lookup table is needed
on the hot path.

Because the id is trusted, it is signed: `<tag>.<key id>.<payload>.<mac>`, where the mac is an
HMAC-SHA256 (truncated to 128 bits) of everything before it under the secret of that key id.
Measured before: ids were unsigned base64 JSON, and any key with the `recommend` scope could
dismiss an offer for another customer, or post features of 1e308 that set every ranker weight to
2.5e306. Rotation: `SigningKeys` holds every key id that verifies; the newest (the last) signs.

Pure: the secrets come in as an argument (from the settings), no clock, no I/O.

>>> keys = SigningKeys.of({"k1": "an old secret of 16+ chars", "k2": "the new secret, 16+ chars"})
>>> ref = DecisionRef("c-1", "belt-bundle", "men", "store", False, 1795601700000, 7)
>>> text = encode_ref(ref, keys)
>>> text.split(".")[1], decode_ref(text, DecisionRef, keys) == ref
('k2', True)
>>> forged = encode_ref(ref, SigningKeys.of({"k2": "somebody else's secret"}))
>>> decode_ref(forged, DecisionRef, keys)
Traceback (most recent call last):
...
online_models.refs.BadRef: DecisionRef id fails its signature check (forged or altered)
"""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields

import orjson

KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
MIN_SECRET_BYTES = 16
MAC_BYTES = 16


class BadRef(ValueError):
    """An id this API did not issue: malformed, unsigned, forged, altered, or signed with a key
    id it does not know (any more)."""


@dataclass(frozen=True, slots=True)
class SigningKeys:
    """Key id → secret; every one verifies, the last one signs."""

    keys: tuple[tuple[str, bytes], ...]

    @classmethod
    def of(cls, secrets: Mapping[str, str | bytes]) -> SigningKeys:
        pairs = tuple((kid, s.encode() if isinstance(s, str) else bytes(s)) for kid, s in secrets.items())
        if not pairs:
            raise ValueError("at least one signing key is needed")
        for kid, secret in pairs:
            if not KEY_ID.fullmatch(kid):
                raise ValueError(f"signing key id {kid!r}: 1-32 of A-Z a-z 0-9 _ -")
            if len(secret) < MIN_SECRET_BYTES:
                raise ValueError(f"signing key {kid!r}: the secret needs at least {MIN_SECRET_BYTES} bytes")
        return cls(pairs)

    @property
    def signing_id(self) -> str:
        return self.keys[-1][0]

    def secret(self, kid: str) -> bytes | None:
        return next((secret for known, secret in self.keys if known == kid), None)


@dataclass(frozen=True, slots=True)
class DecisionRef:
    customer_id: str
    offer_id: str
    cell: str
    channel: str | None
    control: bool
    ts_ms: int
    nonce: int
    removed: tuple[tuple[str, int], ...] = ()  # offers each gate removed from the decision
    features: tuple[float, ...] = ()  # what the offer's contextual model saw (``propensity.FEATURES``)


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
# Field names in order, read once: ``dataclasses.astuple`` deep-copies every nested tuple, and
# was half of a recommendation answer's CPU (10 signed ids per answer).
_FIELDS = {kind: tuple(f.name for f in fields(kind)) for kind in _KINDS.values()}


def _mac(secret: bytes, signed: str) -> str:
    # hmac.digest is OpenSSL's one-shot HMAC: a tenth of hmac.new's cost, 10 ids per answer
    digest = hmac.digest(secret, signed.encode(), "sha256")[:MAC_BYTES]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def encode_ref(ref: DecisionRef | RecommendationRef, keys: SigningKeys) -> str:
    tag = "d1" if isinstance(ref, DecisionRef) else "r1"
    return _signed(tag, [getattr(ref, name) for name in _FIELDS[type(ref)]], keys)


def encode_recommendation(customer_id: str | None, context: str, channel: str | None, ts_ms: int, nonce: int,
                          sku: str, features: list[float], keys: SigningKeys) -> str:
    """``encode_ref(RecommendationRef(...), keys)``, the same id, without building the ref: an
    answer signs one per item it shows."""
    return _signed("r1", [customer_id, context, channel, ts_ms, nonce, sku, features], keys)


def _signed(tag: str, values: list, keys: SigningKeys) -> str:
    kid, secret = keys.keys[-1]
    body = base64.urlsafe_b64encode(orjson.dumps(values)).rstrip(b"=").decode()
    signed = f"{tag}.{kid}.{body}"
    return f"{signed}.{_mac(secret, signed)}"


def decode_ref(text: str, expected: type, keys: SigningKeys) -> DecisionRef | RecommendationRef:
    """The ref inside an id this API issued; raises BadRef naming what is wrong otherwise. The
    signature is checked before anything in the payload is read."""
    name = expected.__name__
    parts = text.split(".")
    want = next(t for t, kind in _KINDS.items() if kind is expected)
    if _KINDS.get(parts[0]) is not expected:
        raise BadRef(f"not a {name} id (expected '{want}.…')")
    if len(parts) != 4:
        raise BadRef(f"malformed {name} id (unsigned, or not one this API issued)")
    tag, kid, body, mac = parts
    secret = keys.secret(kid)
    if secret is None:
        raise BadRef(f"{name} id signed with a key id this API does not know (retired, or never issued here)")
    if not hmac.compare_digest(_mac(secret, f"{tag}.{kid}.{body}"), mac):
        raise BadRef(f"{name} id fails its signature check (forged or altered)")
    try:
        fields = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        ref = expected(*fields)
        if isinstance(ref, DecisionRef):
            ref = DecisionRef(*fields[:7], tuple((str(g), int(n)) for g, n in ref.removed),
                              tuple(float(v) for v in ref.features))
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise BadRef(f"malformed {name} id") from None
    texts = (ref.customer_id, ref.offer_id, ref.cell) if isinstance(ref, DecisionRef) else (ref.context, ref.sku)
    if not all(isinstance(t, str) and t for t in texts) or not isinstance(ref.ts_ms, int):
        raise BadRef(f"malformed {name} id")
    if isinstance(ref, RecommendationRef):
        ref = RecommendationRef(ref.customer_id, ref.context, ref.channel, ref.ts_ms, ref.nonce, ref.sku,
                                tuple(ref.features))
    return ref
