"""`omnirec bench decision` measures the API's own answer: real suggestions with signed ids."""

from __future__ import annotations

import json
import random

from bench import decision
from online_models.clock import DAY_MS
from online_models.refs import RecommendationRef, decode_ref


def test_the_measured_answer_is_the_apis_with_ids_that_verify():
    replayer = decision.build(customers=80, days=20, seed=3)
    now = decision.START_MS + 20 * DAY_MS
    state = next(s for s in replayer.customers.values() if len(s.bought) >= 2)
    for context, request in decision.requests_for(state, random.Random(1), now).items():
        body = decision.answer(replayer, state, request)
        assert body["context"] == context and body["items"], context
        ref = decode_ref(body["items"][0]["recommendation_id"], RecommendationRef, decision.SIGNING)
        assert ref.sku == body["items"][0]["sku"] and ref.customer_id == state.customer_id


def test_the_last_line_is_one_json_object_with_the_goal(capsys):
    assert decision.main(["--customers", "60", "--days", "15", "--requests", "20", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result["contexts"]) == {"home", "product", "cart"} and result["goal_ms"] == 0.5
    assert result["worst_mean_ms"] > 0 and result["reference_decode_profile"]["mean_ms"] > 0
