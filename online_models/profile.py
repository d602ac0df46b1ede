"""The 360° view of a customer, computed from state at a given `now` (event time or wall time)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from online_models import decay, rules, tiers
from online_models.churn import ChurnModel, pooled_median_value_at_risk
from online_models.customer import CustomerState
from online_models.events import Product, format_ts
from online_models.ranking import pretty

TOP_CATEGORIES = 5


@dataclass
class Population:
    """What the churn shards publish, merged for readers: one model per shard, value tiers
    from the merged sketches. Empty until the flow has written its first shard."""

    models: dict[int, ChurnModel] = field(default_factory=dict)
    sketch: tiers.PopulationSketch = field(default_factory=tiers.PopulationSketch)
    shards: int = 8
    value_tiers: tiers.ValueTiers | None = None
    # the shards too small to fit a model: their sample rows pooled, and the model they score with
    small_rows: list = field(default_factory=list)
    small_model: ChurnModel | None = None
    _pooled: list[float | None] = field(default_factory=list, repr=False)  # computed once, when first asked

    @classmethod
    def merge(cls, shards: int,
              published: Mapping[int, tuple[ChurnModel, tiers.PopulationSketch, list | None]]) -> Population:
        """``published``: per shard, its model, sketches, and its sample while too small to fit."""
        sketch = tiers.PopulationSketch.merged(s for _, s, _ in published.values())
        value_tiers = sketch.tiers() if published else None
        small = [(model, rows) for model, _, rows in published.values() if rows]
        return cls({i: model for i, (model, _, _) in published.items()}, sketch, shards, value_tiers,
                   [row for _, rows in small for row in rows], small[0][0] if small else None)

    def tier_of(self, state: CustomerState) -> str | None:
        return self.value_tiers.tier_of_log(state.rhythm_view().value_log()) if self.value_tiers else None

    def churn_score(self, state: CustomerState | None, now_ms: int) -> float | None:
        """The customer's churn score now, from their shard's model (``None``: never bought)."""
        if state is None:
            return None
        model = self.models.get(tiers.shard_of(state.customer_id, self.shards), ChurnModel())
        return model.score(state.rhythm_view(), now_ms)

    def median_value_at_risk(self) -> float | None:
        """The population's median value at risk (the shards' models, each fitted on its own
        sample; where none is fitted yet, the small shards' samples pooled, computed once per
        refresh of what the readers hold): what the churn alerts' value floor is relative to."""
        values = sorted(m.median_value_at_risk for m in self.models.values() if m.median_value_at_risk)
        if values:
            return values[len(values) // 2]
        if self.small_model is None:
            return None
        if not self._pooled:
            self._pooled.append(pooled_median_value_at_risk(self.small_rows, self.small_model))
        return self._pooled[0]

    def churn_view(self, state: CustomerState, now_ms: int) -> dict[str, Any]:
        """The customer's churn score, its reasons and their value at risk now, from their shard's
        model (what the profile shows, and what an alert is refreshed with when it is read)."""
        rhythm = state.rhythm_view()
        model = self.models.get(tiers.shard_of(state.customer_id, self.shards), ChurnModel())
        score = model.score(rhythm, now_ms)
        return {
            "score": None if score is None else round(score, 4),
            "reasons": model.reasons(rhythm, now_ms) if score is not None else [],
            "value_at_risk": round(model.value_at_risk(rhythm, now_ms), 2) if score is not None else 0.0,
        }

    def assess(self, state: CustomerState, now_ms: int) -> dict[str, Any]:
        """Tier, RFM cell, behaviour segment and churn score of one customer, with reasons."""
        rhythm = state.rhythm_view()
        verdicts = rule_verdicts(state, now_ms)
        churn = self.churn_view(state, now_ms)
        return {
            "tier": self.tier_of(state),
            "rfm": self.sketch.rfm(rhythm.value_log(), rhythm.last_purchase_ts, rhythm.purchases)
            if self.value_tiers else None,
            "segment": tiers.segment(rhythm, now_ms),
            "segments": tiers.segments(rhythm, now_ms),
            "rules": verdicts,
            "churn": {**churn, "risk": rules.churn_risk(churn["score"], verdicts["lapse"])},
        }


def rule_verdicts(state: CustomerState, now_ms: int) -> dict[str, Any]:
    """What the retail rules (``rules``) say about this customer, from the same facts the
    offers read: so a sales assistant sees why a discount is withheld or a win-back is due."""
    rhythm = state.rhythm_view()
    usual = rules.usual_gap_days(rhythm.gap_n, rhythm.gap_mean)
    lapse = None
    if state.last_purchase_ts is not None:
        lapse = rules.lapse_stage(max(0, now_ms - state.last_purchase_ts) / decay.DAY_MS, usual, rhythm.purchases)
    return {
        "usual_gap_days": None if usual is None else round(usual, 1),
        "lapse": lapse,
        "discount_driven_returner": rules.is_discount_driven_returner(
            state.discount_share, state.return_rate, state.orders),
    }


def profile_view(
    state: CustomerState, now_ms: int, catalog: Mapping[str, Product], population: Population | None = None,
) -> dict[str, Any]:
    recency_days = None
    if state.last_purchase_ts is not None:
        recency_days = round(max(0, now_ms - state.last_purchase_ts) / decay.DAY_MS, 2)
    shares, brand_shares = state.interest_shares(catalog)  # both in one pass
    category_shares = sorted(shares.items(), key=lambda kv: -kv[1])
    total_events = sum(state.channel_events.values()) or 1
    return {
        "customer_id": state.customer_id,
        "aliases": state.aliases,
        "first_seen": _ts(state.first_ts),
        "last_seen": _ts(state.last_ts),
        "rfm": {
            "recency_days": recency_days,
            "frequency": state.orders,
            "monetary_gross": round(state.gross, 2),
            "returned": round(state.returned, 2),
            "net_value": round(state.net_value, 2),
            "avg_order_value": round(state.net_value / state.orders, 2) if state.orders else 0.0,
        },
        "return_rate": round(state.return_rate, 4),
        "channel_mix": {ch: round(n / total_events, 4) for ch, n in sorted(state.channel_events.items())},
        "orders_by_channel": dict(sorted(state.channel_orders.items())),
        "top_categories": [
            {"category": cat, "label": pretty(cat), "share": round(share, 4)}
            for cat, share in category_shares[:TOP_CATEGORIES]
        ],
        "top_brands": [
            {"brand": brand, "share": round(share, 4)}
            for brand, share in sorted(brand_shares.items(), key=lambda kv: -kv[1])[:3]
        ],
        "recent_views": [{"sku": sku, "name": _name(catalog, sku)} for sku in reversed(state.recent_views)],
        "basket": [{"sku": sku, "qty": qty, "name": _name(catalog, sku)} for sku, qty in state.basket.items()],
        "store_visits": state.store_visits,
        "last_store": state.last_store,
        "survey_score": state.rhythm.survey_score,
        "value": (population or Population()).assess(state, now_ms),
    }


def _ts(ts_ms: int | None) -> str | None:
    return format_ts(ts_ms) if ts_ms is not None else None


def _name(catalog: Mapping[str, Product], sku: str) -> str | None:
    product = catalog.get(sku)
    return product.name if product else None
