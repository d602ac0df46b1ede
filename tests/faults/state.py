"""Comparing the state two runs left in Redis."""

from __future__ import annotations

from online_models import keys
from tests.integration.kafka_tools import snapshot


def differences(redis_url: str, a: str, b: str) -> list[str]:
    """Keys (prefix stripped) whose values differ between prefixes ``a`` and ``b``, or that only
    one has; the flow metrics hash is left out (it counts wall-clock things)."""
    left, right = snapshot(redis_url, a), snapshot(redis_url, b)
    metrics = keys.KeyScheme(a).flow_metrics().removeprefix(a)
    names = (set(left) | set(right)) - {metrics}
    return sorted(k for k in names if left.get(k) != right.get(k))
