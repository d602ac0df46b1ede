"""Feedback on a served offer or recommended item, to Kafka (`recs.feedback`)."""

from __future__ import annotations

import asyncio

import orjson
from confluent_kafka import KafkaException
from fastapi import APIRouter, HTTPException, Response

from api.auth import RecommendScope
from api.deps import FeedbackDep, SigningDep, now_ms
from api.errors import KEYED, responses
from api.responses import json_response
from api.schemas import FeedbackAccepted, FeedbackRequest
from online_models import answers
from online_models.refs import BadRef

router = APIRouter(tags=["offers"])


@router.post("/v1/feedback", status_code=202, response_model=FeedbackAccepted,
             responses=responses(400, *KEYED, 503))
async def feedback(body: FeedbackRequest, _: RecommendScope, producer: FeedbackDep, signing: SigningDep) -> Response:
    """Feedback on an id this API issued; a forged or altered id is 400 and nothing is produced."""
    try:
        envelope = answers.feedback_envelope(body.decision_id, body.recommendation_id, body.event, body.ts,
                                             now_ms(), signing)
    except BadRef as exc:
        raise HTTPException(400, str(exc)) from None
    try:
        await producer.send(envelope["customer_id"] or "", orjson.dumps(envelope))
    except (asyncio.TimeoutError, KafkaException) as exc:
        raise HTTPException(503, f"Feedback not accepted, the broker did not acknowledge it: {exc}") from None
    return json_response({"accepted": True, "event_id": envelope["event_id"]}, 202)
