"""The recommendation ranker that learns from what shoppers click and buy (river).

Ranking starts from the hand-set blend in `ranking.Weights`; this model learns, from
feedback, how much each candidate feature predicts a click or a purchase, and scales
the blend by it. Untrained, it predicts 0.5 for everything and leaves the order alone.

Each served item carries its feature vector inside its `recommendation_id`, so the flow
can learn from feedback without looking anything up. The model is tiny (one weight per
feature), lives under one key in the flow, and is read by the API as plain weights.
"""

from __future__ import annotations

import bisect
import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from river import linear_model, optim

FEATURES = ("complement", "category", "brand", "buy_again", "popularity", "price", "margin", "viewed")
# Every candidate feature is a share, a score of a few units at most, or log1p(price) / 10 (1.4 at the
# largest price a product may have): anything outside ± this did not come from the ranker.
FEATURE_BOUND = 10.0
LABELS = {"impression": 0, "click": 1, "accept": 1}  # dismiss teaches the ranker nothing more than its impression


def feature_vector(features: Mapping[str, float]) -> list[float]:
    get = features.get
    # most features of a suggestion are 0: rounding is the cost of signing its id (bench.decision)
    return [round(float(value), 4) if (value := get(name)) else 0.0 for name in FEATURES]


def as_features(vector: list[float]) -> dict[str, float]:
    return dict(zip(FEATURES, vector))


def clamp_feature(value: float) -> float:
    """One ranking feature within ± FEATURE_BOUND (NaN counts as 0).

    >>> clamp_feature(1e308), clamp_feature(-5), clamp_feature(float("nan"))
    (10.0, -5.0, 0.0)
    """
    value = float(value)
    if value != value:
        return 0.0
    return max(-FEATURE_BOUND, min(FEATURE_BOUND, value))


def _example(features: Mapping[str, float]) -> tuple[float, ...] | None:
    """The feature vector the model learns from, clamped to its range; None when a value is not
    a finite number (such an update is rejected, never learnt)."""
    try:
        values = tuple(float(features.get(name, 0.0)) for name in FEATURES)
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in values):
        return None
    return tuple(clamp_feature(v) for v in values)


@dataclass(slots=True)
class RankerWeights:
    """What the API needs to score: the model's weights, no river at read time."""

    intercept: float = 0.0
    weights: dict[str, float] = field(default_factory=dict)
    trained_on: int = 0

    def predict(self, features: Mapping[str, float]) -> float:
        z = self.intercept + sum(w * features.get(name, 0.0) for name, w in self.weights.items())
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


class RecRanker:
    """P(click or purchase | candidate features), learnt one feedback event at a time.

    >>> ranker = RecRanker()
    >>> for _ in range(300):
    ...     _ = ranker.learn({"complement": 1.0}, "click")
    ...     _ = ranker.learn({"popularity": 1.0}, "impression")
    >>> ranker.weights().predict({"complement": 1.0}) > 0.5 > ranker.weights().predict({"popularity": 1.0})
    True
    """

    # Feedback from several partitions arrives in an order that depends on how they were read,
    # and SGD depends on the order it sees examples in: the newest this many wait in a buffer
    # sorted by event time, and are learnt oldest first as newer ones push them out.
    BUFFER = 2048

    def __init__(self) -> None:
        self.model = linear_model.LogisticRegression(optimizer=optim.SGD(0.05), intercept_lr=0.01, l2=1e-4)
        self.trained_on = 0
        self.pending: list[tuple[int, str, tuple[float, ...], str]] = []  # (ts, event id, features, event)

    def __deepcopy__(self, memo: dict) -> RecRanker:
        """Copied before each message (engine.guard) and each epoch: the buffered examples are
        immutable tuples, shared; only the model is copied."""
        clone = RecRanker.__new__(RecRanker)
        clone.model = copy.deepcopy(self.model, memo)
        clone.trained_on = self.trained_on
        clone.pending = list(self.pending)
        return clone

    def learn_at(self, features: Mapping[str, float], event: str, ts_ms: int, event_id: str) -> bool:
        """Learn one feedback event in event-time order (see ``BUFFER``); False (nothing learnt)
        for an event that teaches nothing or features that are not finite numbers."""
        vector = _example(features)
        if event not in LABELS or vector is None:
            return False
        bisect.insort(self.pending, (ts_ms, event_id, vector, event))
        if len(self.pending) > self.BUFFER:
            _, _, vector, oldest = self.pending.pop(0)
            self.learn(dict(zip(FEATURES, vector)), oldest)
        return True

    def learn(self, features: Mapping[str, float], event: str) -> bool:
        """One example, at once; False (nothing learnt) as in ``learn_at``. Features are clamped to
        ± FEATURE_BOUND, so no example can move a weight by more than a bounded step."""
        label = LABELS.get(event)
        vector = _example(features)
        if label is None or vector is None:
            return False
        self.model.learn_one(dict(zip(FEATURES, vector)), label)
        self.trained_on += 1
        return True

    def weights(self) -> RankerWeights:
        """The weights after every example, the buffered ones included (learnt by a copy)."""
        ranker = self
        if self.pending:
            ranker = copy.deepcopy(self)
            for _, _, vector, event in ranker.pending:
                ranker.learn(dict(zip(FEATURES, vector)), event)
        model = ranker.model
        return RankerWeights(float(model.intercept), {k: float(v) for k, v in model.weights.items()},
                             ranker.trained_on)
