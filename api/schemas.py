"""Request bodies (validated by pydantic; a bad one is a 422 with the reason) and response bodies."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from online_models.events import EARLIEST_TS_MS, LATEST_TS_MS

MAX_K = 50


class CrossSellRequest(BaseModel):
    customer_id: str | None = Field(None, max_length=128)
    basket: list[str] = Field(..., min_length=1, max_length=100, description="SKUs in the basket")
    store_id: str | None = Field(None, max_length=64)
    channel: str | None = Field("store", pattern="^(web|app|store)$")
    k: int = Field(5, ge=1, le=MAX_K)
    exclude: list[str] = Field(default_factory=list, max_length=100,
                               description="SKUs or categories (a category covers everything under it) to leave out")

    @field_validator("basket")
    @classmethod
    def _non_empty_skus(cls, skus: list[str]) -> list[str]:
        if any(not sku.strip() for sku in skus):
            raise ValueError("basket SKUs must be non-empty strings")
        return list(dict.fromkeys(skus))


class FeedbackRequest(BaseModel):
    """What the customer did with a next-best-offer (`decision_id`) or with one recommended
    item (its `recommendation_id`)."""

    decision_id: str | None = Field(None, max_length=1000)  # carries the offer model's ~30 features
    recommendation_id: str | None = Field(None, max_length=600)
    event: Literal["impression", "click", "accept", "dismiss"]
    ts: int | None = Field(None, ge=EARLIEST_TS_MS, le=LATEST_TS_MS,
                           description="event time, epoch ms (2000-01-01 .. 2100-01-01); default: now")

    @model_validator(mode="after")
    def _one_subject(self) -> FeedbackRequest:
        if bool(self.decision_id) == bool(self.recommendation_id):
            raise ValueError("send exactly one of 'decision_id' or 'recommendation_id'")
        return self


# --- responses (documented in the OpenAPI document; the routes serve orjson bytes of the same shape) ---


class RecommendedItem(BaseModel):
    sku: str
    score: float
    reasons: list[str]
    name: str | None = None
    category: str | None = None
    price: float | None = None
    recommendation_id: str = Field(description="signed; send it back with feedback on this item")


class Recommendations(BaseModel):
    customer_id: str | None
    known_customer: bool
    context: str
    fallback: str | None = Field(None, description="why the answer is only popular items; null when personal")
    items: list[RecommendedItem]


class OfferSummary(BaseModel):
    offer_id: str
    name: str
    kind: str
    propensity: float
    expected_value: float
    priority: float


class ChosenOffer(OfferSummary):
    value: float
    valid_days: float
    bundle_skus: list[str]


class NextBestOffer(BaseModel):
    customer_id: str
    cell: str | None = Field(description="the customer cell the offer learns in (null without the profile scope)")
    offer: ChosenOffer | None
    decision_id: str | None = Field(description="signed; send it back with feedback on the offer")
    control: bool
    exploration: bool
    reasons: list[str] = Field(description="facts about the customer only with the profile scope")
    runner_ups: list[OfferSummary]
    not_eligible: dict[str, str] = Field(description="offer id → the gate that stopped it, in words")


class Erasure(BaseModel):
    """What `DELETE /v1/customers/{id}` removed; the flow removes the rest when the tombstone arrives."""

    customer_id: str
    aliases: list[str] = Field(description="the anonymous / loyalty ids erased with the customer")
    keys_deleted: int = Field(description="Redis keys deleted: profile, aliases, alert `seen` keys")
    alerts_deleted: int = Field(description="churn-alert stream entries deleted")
    tombstone_event_id: str = Field(description="the `erase` event sent to the customer's partition")


class Profile(BaseModel):
    """The 360° view of a customer (RFM, net value, channel mix, categories, churn …)."""

    model_config = ConfigDict(extra="allow")

    customer_id: str
    aliases: list[str]
    rfm: dict[str, float | int | None]
    return_rate: float
    channel_mix: dict[str, float]
    top_categories: list[dict[str, str | float]]
    value: dict[str, Any]


class ChurnAlert(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    customer_id: str
    score: float
    tier: str | None = None
    reasons: list[str]
    suggested_offer: OfferSummary | None = None


class ChurnAlerts(BaseModel):
    alerts: list[ChurnAlert]
    next: str | None = Field(description="pass as `since` for the next page")


class FeedbackAccepted(BaseModel):
    accepted: bool
    event_id: str


class CatalogItem(BaseModel):
    sku: str
    name: str
    category: str
    brand: str | None = None
    price: float
    in_stock: bool


class CatalogSearch(BaseModel):
    items: list[CatalogItem]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str = Field(description="ready | degraded (no broker: feedback refused) | unavailable (no Redis)")
    redis: str
    broker: str
    detail: str | None = None
    products: int | None = None


class FlowCounters(BaseModel):
    """The flow's Prometheus metrics as its `/metrics` shows them, each summed over its labels and
    over the flow processes reporting (every second, to Redis); per process since it started."""

    events: int = Field(description="Kafka records read: omnirec_flow_events_total")
    dead_letters: int = Field(description="omnirec_flow_dead_letters_total")
    step_errors: int = Field(description="omnirec_flow_step_errors_total")
    redis_retries: int = Field(description="omnirec_flow_redis_retries_total")
    churn_alerts: int = Field(description="churn alerts raised: omnirec_flow_churn_alerts_total")
    consumer_lag: int = Field(description="records on the broker not read yet: omnirec_flow_consumer_lag")
    processes: int = Field(description="flow processes reporting (0: none has reported)")
    updated_ms: int | None = Field(description="wall time of the newest report; null: none yet")


class ApiCounters(BaseModel):
    """This API process's answers since it started, from the counters its `/metrics` shows
    (omnirec_api_requests_total by status, omnirec_api_shed_total); this answer not yet counted."""

    requests: int
    client_errors: int = Field(description="4xx")
    server_errors: int = Field(description="5xx")
    rate_limited: int = Field(description="429")
    unavailable: int = Field(description="503 (Redis or the broker away, or shed)")
    shed: int = Field(description="503 at once: too many requests in flight")


class MetricsSummary(BaseModel):
    flow_messages: int = Field(description="messages the flow has parsed, added up over all its executions "
                                           "(replays after a restart included)")
    flow_updated_ms: int
    alerts_today: int
    offer_impressions: float
    offer_accepts: float
    offer_acceptance_rate: float | None
    now_ms: int
    flow: FlowCounters
    api: ApiCounters
