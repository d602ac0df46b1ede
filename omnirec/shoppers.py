"""The simulator's latent shoppers: the truth behind their events that the models should
discover (``omnirec.simulate`` draws them and their events; ``omnirec.offer_truth`` decides
how they answer offers). Its own module so that neither of those imports the other."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Customer:
    """The latent truth behind one customer's events (what the models should discover)."""

    customer_id: str
    household: str
    lines: tuple[str, ...]
    segment: str
    channel_mix: tuple[float, float, float]
    sessions_per_week: float
    category_weights: dict[str, float]
    favourite_brands: tuple[str, ...]
    home_store: str
    lapse_after_days: float | None
    staples: dict[str, str] = field(default_factory=dict)  # replenished category → sku
    replenish_days: dict[str, float] = field(default_factory=dict)
