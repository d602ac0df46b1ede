"""A personal next-basket model in the TIFU-KNN / TAIW family, computed online.

Three signals, each cheap enough to compute per request for a million customers:

- **the personal vector** (TIFU-KNN's user vector): per customer, a time-decayed item vector.
  Each order adds ``2 ** (-age / HALF_LIFE_DAYS)`` to its items, stored in forward-decay form
  (``decay.Decay``: log-weight = λ × event time), so an update touches only the new basket's
  items, the stored numbers never need rewriting, and the vector is the same whatever order the
  customer's orders arrived in (TIFU-KNN decays per basket, which would depend on it). Readers
  use it relative to the customer's heaviest item, so only the gaps between orders count. It is
  bounded like the purchase history (``CustomerState.basket_vector``, ``MAX_VECTOR`` items).
- **timing** (TAIW's time-aware weight): how the days since the customer last bought an item
  compare with their cycle for it (their own mean gap, shrunk towards the item's learned cycle
  from ``repeats.RepeatModel``). Near the cycle the item is due; just bought, or long overdue
  (the habit has lapsed), it is less likely.
- **neighbour evidence** ("customers who bought your items also bought"): the co-purchase lists
  the flow keeps per item (``items.ItemNeighbors``), read for the customer's heaviest
  ``NEIGHBOUR_SOURCES`` items and summed, weighted by the personal vector. Item-to-item lists stand
  in for TIFU-KNN's nearest customers: the same kind of evidence, with no all-pairs scan, and the
  lists already exist for cross-sell.

Ranking (``ranking._score_personal``) splits candidates into two pools: *repeat* (items the
customer bought, scored by frequency, the personal vector and timing) and *explore* (items they
have not, scored by the neighbour evidence); both blend with the other signals through
``ranking.Weights``, whose defaults are fitted by ``omnirec.fit_weights`` (docs/weights.md).

Pure: no clock is read, ``now`` is passed in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from online_models import decay

if TYPE_CHECKING:  # items imports customer, which imports this module
    from online_models.items import Neighbor

# As the co-purchase statistics' half-life (EngineSettings.cooccurrence_half_life_days): a basket
# two months old counts half as much as today's, next to the customer's other items.
HALF_LIFE_DAYS = 60.0
VECTOR_DECAY = decay.Decay(HALF_LIFE_DAYS)
MAX_VECTOR = 64  # as many items as the purchase history keeps (customer.MAX_BOUGHT)
NEIGHBOUR_SOURCES = 10  # the customer's heaviest items whose co-purchase lists are read
# Width of the timing bump in log(1 + days) units: at e (2.7) times the cycle, or a 1/e of it,
# an item is 0.6 × as due as at its cycle.
CYCLE_WIDTH = 1.0
OVERDUE_FLOOR = 0.3  # a long-overdue habit never drops below this share of due: it may resume


def add_basket(vector: dict[str, float], skus: Iterable[str], ts_ms: int) -> None:
    """Fold one order (at event time ``ts_ms``) into the personal vector."""
    log_weight = VECTOR_DECAY.log_weight(1.0, ts_ms)
    for sku in skus:
        decay.add(vector, sku, log_weight)
    decay.prune(vector, MAX_VECTOR)


def merge(vector: dict[str, float], other: Mapping[str, float]) -> None:
    """Fold an alias's vector in: the same as if its orders had been this customer's."""
    for sku, log_weight in other.items():
        decay.add(vector, sku, log_weight)
    decay.prune(vector, MAX_VECTOR)


def personal(vector: Mapping[str, float], keep: int = MAX_VECTOR) -> dict[str, float]:
    """The ``keep`` heaviest items, each relative to the heaviest (in (0, 1])."""
    if not vector:
        return {}
    heaviest = decay.top(dict(vector), keep)
    top = max(heaviest.values())
    return {sku: math.exp(value - top) for sku, value in heaviest.items()}


def sources(vector: Mapping[str, float]) -> list[str]:
    """The items whose co-purchase lists the neighbour evidence reads, heaviest first."""
    return list(decay.top(dict(vector), NEIGHBOUR_SOURCES))


def timing(since_days: float | None, cycle_days: float | None) -> float:
    """How due an item is, in (0, 1]: 1 at the cycle, less before it and (down to
    ``OVERDUE_FLOOR``) long after it; 1 when nothing is known of the timing.

    >>> timing(7.0, 7.0), round(timing(1.0, 7.0), 3), round(timing(60.0, 7.0), 3)
    (1.0, 0.383, 0.3)
    """
    if since_days is None or cycle_days is None:
        return 1.0
    distance = math.log1p(since_days) - math.log1p(cycle_days)
    due = math.exp(-0.5 * (distance / CYCLE_WIDTH) ** 2)
    return max(due, OVERDUE_FLOOR) if distance > 0 else due


def neighbour_evidence(weights: Mapping[str, float], neighbors: Mapping[str, list[Neighbor]]
                       ) -> dict[str, float]:
    """Items bought with the customer's items, each scored by the personal-vector-weighted mean
    of its co-purchase scores (in [0, 1]): "customers who bought your items also bought"."""
    total = sum(weights.values())
    if total <= 0:
        return {}
    evidence: dict[str, float] = {}
    found = evidence.get
    for source, weight in weights.items():
        for neighbor in neighbors.get(source, ()):
            sku = neighbor.sku
            evidence[sku] = found(sku, 0.0) + weight * neighbor.score / total
    return evidence
