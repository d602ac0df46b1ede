"""Request bodies (validated by pydantic; a bad one is a 422 with the reason)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

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

    decision_id: str | None = Field(None, max_length=600)
    recommendation_id: str | None = Field(None, max_length=600)
    event: Literal["impression", "click", "accept", "dismiss"]
    ts: int | None = Field(None, gt=946_684_800_000, description="event time, epoch ms; default: now")

    @model_validator(mode="after")
    def _one_subject(self) -> FeedbackRequest:
        if bool(self.decision_id) == bool(self.recommendation_id):
            raise ValueError("send exactly one of 'decision_id' or 'recommendation_id'")
        return self
