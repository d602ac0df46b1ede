"""Request bodies (validated by pydantic; a bad one is a 422 with the reason)."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

MAX_K = 50


class CrossSellRequest(BaseModel):
    customer_id: str | None = Field(None, max_length=128)
    basket: list[str] = Field(..., min_length=1, max_length=100, description="SKUs in the basket")
    store_id: str | None = Field(None, max_length=64)
    channel: str | None = Field("store", pattern="^(web|app|store)$")
    k: int = Field(5, ge=1, le=MAX_K)

    @field_validator("basket")
    @classmethod
    def _non_empty_skus(cls, skus: list[str]) -> list[str]:
        if any(not sku.strip() for sku in skus):
            raise ValueError("basket SKUs must be non-empty strings")
        return list(dict.fromkeys(skus))
