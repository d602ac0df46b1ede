"""Signed ids: what the API issues verifies, anything else is refused before it is read, and keys
rotate by key id."""

import base64

import orjson
import pytest

from omnirec.settings import Settings
from online_models.refs import (
    BadRef,
    DecisionRef,
    RecommendationRef,
    SigningKeys,
    decode_ref,
    encode_recommendation,
    encode_ref,
)

OLD = SigningKeys.of({"2026a": "the old secret, 16+ bytes"})
BOTH = SigningKeys.of({"2026a": "the old secret, 16+ bytes", "2026b": "the new secret, 16+ bytes"})
NEW = SigningKeys.of({"2026b": "the new secret, 16+ bytes"})
DECISION = DecisionRef("c-1", "winback-15", "lapsed", "web", False, 1_795_601_700_000, 7)
ITEM = RecommendationRef("c-1", "cart", "store", 1_795_601_700_000, 9, "BL-1", (0.5, 0.0, 1.0))


def test_ids_round_trip_and_name_the_key_that_signed_them():
    for ref, kind in ((DECISION, DecisionRef), (ITEM, RecommendationRef)):
        text = encode_ref(ref, BOTH)
        assert text.split(".")[1] == "2026b"  # the newest key signs
        assert decode_ref(text, kind, BOTH) == ref


def test_an_answers_item_id_is_the_id_of_its_recommendation_ref():
    # the answer signs its items without building the ref: the same id, which decodes to the ref
    text = encode_recommendation("c-1", "cart", "store", 1_795_601_700_000, 9, "BL-1", [0.5, 0.0, 1.0], BOTH)
    assert text == encode_ref(ITEM, BOTH) and decode_ref(text, RecommendationRef, BOTH) == ITEM


def test_rotation_old_ids_verify_while_their_key_is_listed():
    issued_before = encode_ref(DECISION, OLD)
    assert decode_ref(issued_before, DecisionRef, BOTH) == DECISION
    with pytest.raises(BadRef, match="a key id this API does not know"):
        decode_ref(issued_before, DecisionRef, NEW)


def _altered(text: str, **changes) -> str:
    """What a client could do: decode the payload, change a field, re-encode, keep the mac."""
    tag, kid, body, mac = text.split(".")
    fields = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    names = list(DecisionRef.__slots__)
    for name, value in changes.items():
        fields[names.index(name)] = value
    forged = base64.urlsafe_b64encode(orjson.dumps(fields)).rstrip(b"=").decode()
    return f"{tag}.{kid}.{forged}.{mac}"


@pytest.mark.parametrize("forge", [
    lambda t: _altered(t, customer_id="c-2"),  # dismiss an offer for somebody else
    lambda t: _altered(t, offer_id="kids-10"),
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # a different mac
    lambda t: encode_ref(DECISION, SigningKeys.of({"2026b": "a secret I made up myself"})),
    lambda t: t.rsplit(".", 1)[0],  # the mac left off
    lambda t: "d1." + t.split(".")[2],  # the unsigned format of before
    lambda t: "d1.2026b." + base64.urlsafe_b64encode(b"[1e308]").decode() + ".x",
])
def test_forged_altered_or_unsigned_ids_are_refused(forge):
    with pytest.raises(BadRef):
        decode_ref(forge(encode_ref(DECISION, BOTH)), DecisionRef, BOTH)


def test_a_decision_id_is_not_a_recommendation_id():
    with pytest.raises(BadRef, match="not a RecommendationRef id"):
        decode_ref(encode_ref(DECISION, BOTH), RecommendationRef, BOTH)


def test_signing_keys_setting_is_validated_at_start():
    assert Settings(signing_keys={"k1": "sixteen bytes ok"}).signing_keys
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Settings(signing_keys={"k1": "short"})
    with pytest.raises(ValueError, match="signing key id"):
        Settings(signing_keys={"k.1": "sixteen bytes ok"})
