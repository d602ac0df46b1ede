"""What the API answers, as pure functions: the HTTP edge reads Redis and the clock, and these
turn what it read into the JSON bodies it serves (and the feedback envelopes it produces).

No clock and no randomness in here: the caller passes `now_ms`, nonces and seeds, so an
evaluator or a test gets the same bytes the API would serve.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from online_models import flow_metrics, offers, ranking, rules
from online_models.customer import CustomerState
from online_models.events import ANONYMOUS_CUSTOMER, DAY_MS, Product
from online_models.learning import feature_vector
from online_models.profile import Population
from online_models.refs import (
    DecisionRef,
    RecommendationRef,
    SigningKeys,
    decode_ref,
    encode_recommendation,
    encode_ref,
)

# How much of the popularity lists the API reads (and the evaluators index the same way).
STORE_LIST = 50
GLOBAL_LIST = 2000  # enough of the head to fill per-category lists


def recommendations_body(state: CustomerState | None, customer_id: str | None, request: ranking.Request,
                         suggestions: Sequence[ranking.Suggestion], now_ms: int,
                         nonces: Sequence[int], signing: SigningKeys) -> dict[str, Any]:
    """The recommendations answer; each item carries its signed `recommendation_id` (one nonce per item)."""
    known_id = state.customer_id if state else customer_id
    items = []
    context, channel = request.context, request.channel
    for suggestion, nonce in zip(suggestions, nonces, strict=True):
        sku = suggestion.sku
        ref = encode_recommendation(known_id, context, channel, now_ms, nonce, sku,
                                    feature_vector(suggestion.features), signing)  # a RecommendationRef
        items.append({"sku": sku, "score": suggestion.score, "reasons": suggestion.reasons,
                      "name": suggestion.name, "category": suggestion.category, "price": suggestion.price,
                      "recommendation_id": ref})
    return {"customer_id": known_id, "known_customer": state is not None, "context": request.context,
            "fallback": ranking.fallback_reason(state, request, list(suggestions)), "items": items}


def decision_body(customer_id: str, decision: offers.Decision, situation: offers.Situation,
                  nonce: int, signing: SigningKeys, reveal_profile: bool) -> dict[str, Any]:
    """The next-best-offer answer; a chosen offer carries its signed `decision_id`. Without
    ``reveal_profile`` (a caller without the profile scope) the cell and the reasons that tell
    something about the customer are left out."""
    body = {"customer_id": customer_id, "cell": decision.cell if reveal_profile else None, "offer": None,
            "decision_id": None, "control": decision.control, "exploration": decision.explored,
            "reasons": decision.reasons if reveal_profile else decision.public_reasons,
            "runner_ups": [c.summary() for c in decision.runner_ups],
            "not_eligible": decision.rejected if reveal_profile else decision.public_rejected}
    if decision.chosen is not None:
        chosen = decision.chosen
        ref = DecisionRef(customer_id, chosen.offer.offer_id, chosen.cell, situation.channel,
                          decision.control, situation.now_ms, nonce, decision.removed_by_gate(), chosen.features)
        body["decision_id"] = encode_ref(ref, signing)
        body["offer"] = {**chosen.summary(), "value": chosen.offer.value, "valid_days": chosen.offer.valid_days,
                         "bundle_skus": list(chosen.offer.bundle_skus)}
    return body


def suggested_offer(decision: offers.Decision) -> dict[str, Any] | None:
    """What a churn alert shows as its win-back suggestion."""
    return decision.chosen.summary() if decision.chosen else None


def win_back_suggestion(all_offers: Iterable[offers.Offer], offer_stats: Mapping[str, offers.OfferStats],
                        state: CustomerState | None, tier: str | None, churn_score: float | None,
                        catalog: Mapping[str, Product], arbitration: offers.ArbitrationSettings, now_ms: int,
                        seed: int) -> dict[str, Any] | None:
    """A churn alert's suggested offer: the next best offer in a churn-alert context, through the
    same gates as any next best offer (so it may be none), chosen by the offers' means
    (``ArbitrationSettings.for_suggestions``)."""
    situation = offers.Situation(now_ms, None, None, "churn_alert", tier, churn_score=churn_score)
    return suggested_offer(offers.decide(all_offers, offer_stats, state, situation, catalog,
                                         arbitration.for_suggestions(), seed=seed))


def came_back(alert: Mapping[str, Any], state: CustomerState | None) -> bool:
    """Whether a churn alert's customer has bought since the lapse it follows (its ``episode``,
    the last purchase before the silence): they are back, and the alert is no longer worth a
    call. The demo's retention list showed only such alerts; the API leaves them out.

    >>> came_back({"id": "1-0", "episode": 100, "value_at_risk": 50.0}, None)
    False
    """
    episode = alert.get("episode")
    last = state.last_purchase_ts if state is not None else None
    return episode is not None and last is not None and last > int(episode)


def alerts_by_value(alerts: Iterable[dict[str, Any]], median_value_at_risk: float | None,
                    tier: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Churn alerts worth a retention call, most value at risk first: those whose value at risk
    clears the value floor (``rules.clears_value_floor``, relative to the population's median
    value at risk) and, when ``tier`` is given, of that tier; ties by the alert's id (the order
    they were raised in).

    >>> found = alerts_by_value([{"id": "1-0", "value_at_risk": 0.0}, {"id": "2-0", "value_at_risk": 90.0},
    ...                          {"id": "3-0", "value_at_risk": 300.0}, {"id": "4-0", "value_at_risk": 40.0}], 100.0)
    >>> [a["id"] for a in found]
    ['3-0', '2-0']
    """
    kept = [a for a in alerts if rules.clears_value_floor(float(a.get("value_at_risk") or 0.0), median_value_at_risk)
            and (tier is None or a.get("tier") == tier)]
    kept.sort(key=lambda a: (-float(a["value_at_risk"]), stream_order(a["id"])))
    return kept if limit is None else kept[:limit]


def refreshed_alert(alert: dict[str, Any], state: CustomerState | None, population: Population, now_ms: int) -> None:
    """An alert as it reads now: its score, reasons and value at risk from the customer's profile
    and their shard's model at ``now_ms`` (``Population.churn_view``), since the flow wrote them
    when the customer started slipping. The audit found "last bought 14 days ago" read aloud 25
    days on, and a value at risk of 888 for a customer who had since sent most of it back (320)."""
    if state is None or state.last_purchase_ts is None:
        return
    view = population.churn_view(state, now_ms)
    if view["score"] is not None:
        alert.update(score=view["score"], reasons=view["reasons"], value_at_risk=view["value_at_risk"])


def resume_id(read_ids: Sequence[str], sent_ids: Iterable[str]) -> str | None:
    """Where a client that got ``sent_ids`` of the batch ``read_ids`` (stream order) resumes: the
    newest id up to which nothing unsent remains (alerts that were left out count as done), so a
    reconnect with it (``Last-Event-ID``) loses nothing and repeats as little as it can.

    >>> resume_id(["1-0", "2-0", "3-0"], ["3-0", "1-0"]), resume_id(["1-0", "2-0"], ["2-0"])
    ('1-0', None)
    """
    sent, done = set(sent_ids), None
    for alert_id in read_ids:
        if alert_id not in sent:
            break
        done = alert_id
    return done


def stream_order(alert_id: str) -> tuple[int, int]:
    """A Redis stream id ("ms-seq") as a sortable pair."""
    ms, _, seq = alert_id.partition("-")
    return (int(ms), int(seq or 0)) if ms.isdigit() and (seq or "0").isdigit() else (0, 0)


def feedback_envelope(decision_id: str | None, recommendation_id: str | None, event: str,
                      ts_ms: int | None, now_ms: int, signing: SigningKeys) -> dict[str, Any]:
    """The `recs.feedback` envelope for feedback on a decision or on a recommended item.

    Its event_id is derived from the subject, so a client's retry of the same feedback is
    counted once downstream. Raises `refs.BadRef` naming what is wrong with an id we did not
    issue (forged, altered, unsigned, or signed with a key id that is no longer configured):
    nothing is produced for it, so the flow never learns from it.
    """
    ref = (decode_ref(decision_id, DecisionRef, signing) if decision_id
           else decode_ref(recommendation_id, RecommendationRef, signing))
    subject = f"{decision_id or recommendation_id}|{event}"
    envelope = {
        "event_id": hashlib.sha256(subject.encode()).hexdigest()[:32],
        "type": event, "ts": ts_ms or now_ms, "customer_id": ref.customer_id or ANONYMOUS_CUSTOMER,
        "channel": ref.channel, "recommendation_id": recommendation_id, "decision_id": decision_id,
    }
    if isinstance(ref, DecisionRef):
        envelope.update(offer_id=ref.offer_id, cell=ref.cell, control=ref.control)
        if ref.removed and event == "impression":  # each decision's gate counts travel once
            envelope["removed"] = dict(ref.removed)
        if ref.features and event in ("impression", "accept"):  # what the offer's model learns from
            envelope["features"] = list(ref.features)
    else:
        envelope.update(sku=ref.sku, features=list(ref.features))
    return envelope


def search_catalog(catalog: Iterable[Product], q: str, limit: int) -> list[dict[str, Any]]:
    """Products whose SKU or name contains every word of `q` (case-insensitive), in stock first,
    then by name (for a known customer the route orders them with ``ranking.search_order``).

    >>> shop = [Product("TR-1", "Slim trousers", "men/trousers", in_stock=False),
    ...         Product("TR-2", "Wide trousers", "men/trousers"), Product("BL-1", "Belt", "men/belts")]
    >>> [p["sku"] for p in search_catalog(shop, "TROUSERS", 10)]
    ['TR-2', 'TR-1']
    >>> [p["sku"] for p in search_catalog(shop, "tr 1", 10)]
    ['TR-1']
    """
    found = matching_products(catalog, q)
    found.sort(key=lambda p: (not p.in_stock, p.name))
    return product_rows(found[:limit])


def matching_products(catalog: Iterable[Product], q: str) -> list[Product]:
    """Products whose SKU or name contains every word of `q` (case-insensitive), unordered."""
    words = q.lower().split()
    return [p for p in catalog if all(word in f"{p.sku} {p.name}".lower() for word in words)]


def product_rows(products: Iterable[Product]) -> list[dict[str, Any]]:
    return [{"sku": p.sku, "name": p.name, "category": p.category, "brand": p.brand, "price": p.price,
             "in_stock": p.in_stock} for p in products]


def day_start_ms(now_ms: int) -> int:
    """Midnight (UTC) of the day `now_ms` falls in.

    >>> day_start_ms(DAY_MS * 3 + 5)
    259200000
    """
    return now_ms - now_ms % DAY_MS


def metrics_summary(flow_hash: Mapping[Any, Any], alerts_today: int, offer_stats: Iterable[offers.OfferStats],
                    api_counts: Mapping[str, int], now_ms: int) -> dict[str, Any]:
    """For dashboards: messages the flow has processed, alerts raised today, offer acceptance, and
    the numbers the flow's and this API's Prometheus metrics show (``flow``: read from the flow
    metrics hash, see ``online_models.flow_metrics``; ``api``: this process's counters).

    ``flow_hash`` is the flow metrics hash as read (bytes or str)."""
    stats = list(offer_stats)
    shown = sum(s.totals()[0] for s in stats)
    accepted = sum(s.totals()[1] for s in stats)
    return {
        "flow_messages": _count(flow_hash, "messages"),
        "flow_updated_ms": _count(flow_hash, "updated_ms"),
        "alerts_today": alerts_today,
        "offer_impressions": shown, "offer_accepts": accepted,
        "offer_acceptance_rate": round(accepted / shown, 4) if shown else None,
        "now_ms": now_ms,
        "flow": flow_metrics.read(flow_hash),
        "api": dict(api_counts),
    }


def _count(raw: Mapping[Any, Any], name: str) -> int:
    value = raw.get(name, raw.get(name.encode(), 0))
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
