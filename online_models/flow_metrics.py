"""The flow's Prometheus numbers in Redis, for the dashboard: the codec of the ``prom:`` fields of
the flow metrics hash (``KeyScheme.flow_metrics()``). The flow writes them (flows/metrics.py,
from its prometheus-client collectors: no second set of counters), the API reads them
(``answers.metrics_summary``).

Each flow process writes, every ``PUBLISH_EVERY_S``, the current value of every sample of the
published metrics, named exactly as its ``/metrics`` text names it, under its bytewax process id,
with the wall time it wrote them::

    prom:0:omnirec_flow_events_total{topic="web.events"}   1200
    prom:0:omnirec_flow_consumer_lag{partition="3",topic="web.events"}   0
    prom:0:updated_ms   1795601700000

Absolute values (HSET, never HINCRBY) and whole numbers. The reader sums each metric over its
labels and over the processes that reported within ``STALE_MS`` of the newest report, as
``sum(omnirec_flow_events_total)`` over the flow's scrape targets would: a process of an earlier
layout (two processes, then one) stops reporting and drops out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

EVENTS = "omnirec_flow_events_total"
DEAD_LETTERS = "omnirec_flow_dead_letters_total"
STEP_ERRORS = "omnirec_flow_step_errors_total"
REDIS_RETRIES = "omnirec_flow_redis_retries_total"
CHURN_ALERTS = "omnirec_flow_churn_alerts_total"
CONSUMER_LAG = "omnirec_flow_consumer_lag"

# summary field → the metric (sample name) it sums
TOTALS = {"events": EVENTS, "dead_letters": DEAD_LETTERS, "step_errors": STEP_ERRORS,
          "redis_retries": REDIS_RETRIES, "churn_alerts": CHURN_ALERTS, "consumer_lag": CONSUMER_LAG}
PUBLISHED = tuple(TOTALS.values())

PREFIX = "prom:"
UPDATED = "updated_ms"
PUBLISH_EVERY_S = 1.0
STALE_MS = 30_000  # a process that has not reported for this long (behind the newest) is gone


def sample_name(name: str, labels: Mapping[str, str]) -> str:
    """A sample as the Prometheus text format writes it (prometheus-client's: labels sorted, escaped).

    >>> sample_name("omnirec_flow_events_total", {"topic": "web.events"})
    'omnirec_flow_events_total{topic="web.events"}'
    >>> sample_name("omnirec_flow_consumer_lag", {"topic": "web.events", "partition": "3"})
    'omnirec_flow_consumer_lag{partition="3",topic="web.events"}'
    >>> sample_name("omnirec_flow_redis_retries_total", {}), sample_name("m", {"r": 'a"b'})
    ('omnirec_flow_redis_retries_total', 'm{r="a\\\\"b"}')
    """
    if not labels:
        return name
    pairs = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return f"{name}{{{pairs}}}"


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def fields(process: int, samples: Mapping[str, float], updated_ms: int) -> dict[str, int]:
    """The hash fields of one process's report.

    >>> fields(1, {'omnirec_flow_events_total{topic="t"}': 3.0}, 99)
    {'prom:1:omnirec_flow_events_total{topic="t"}': 3, 'prom:1:updated_ms': 99}
    """
    out = {f"{PREFIX}{process}:{name}": int(round(value)) for name, value in samples.items()}
    out[f"{PREFIX}{process}:{UPDATED}"] = int(updated_ms)
    return out


def reports(raw: Mapping[Any, Any]) -> dict[str, dict[str, int]]:
    """Process id → its fields (sample name or ``updated_ms`` → value), from the whole hash
    (bytes or str; fields that are not ``prom:`` ones, and unreadable values, are left out)."""
    out: dict[str, dict[str, int]] = {}
    for key, value in raw.items():
        key = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
        if not key.startswith(PREFIX):
            continue
        process, sep, name = key[len(PREFIX):].partition(":")
        try:
            number = int(value)
        except (TypeError, ValueError):
            continue
        if sep:
            out.setdefault(process, {})[name] = number
    return out


def read(raw: Mapping[Any, Any]) -> dict[str, Any]:
    """The dashboard's flow numbers: each published metric summed over its labels and over the
    live processes (those that reported within ``STALE_MS`` of the newest report), how many
    processes that is, and when the newest reported (None: none has).

    >>> read({b"messages": b"7", b'prom:0:omnirec_flow_events_total{topic="a"}': b"2",
    ...       b'prom:0:omnirec_flow_events_total{topic="b"}': b"3", b"prom:0:updated_ms": b"100000",
    ...       b'prom:1:omnirec_flow_events_total{topic="a"}': b"4", b"prom:1:updated_ms": b"90000",
    ...       b'prom:2:omnirec_flow_events_total{topic="a"}': b"50", b"prom:2:updated_ms": b"1000"})["events"]
    9
    >>> read({})["updated_ms"], read({})["processes"], read({})["events"]
    (None, 0, 0)
    """
    by_process = reports(raw)
    newest = max((r.get(UPDATED, 0) for r in by_process.values()), default=None)
    live = [r for r in by_process.values() if newest is not None and r.get(UPDATED, 0) >= newest - STALE_MS]
    totals = dict.fromkeys(TOTALS, 0)
    for report in live:
        for name, value in report.items():
            metric = name.partition("{")[0]
            for field, wanted in TOTALS.items():
                if metric == wanted:
                    totals[field] += value
    return {**totals, "processes": len(live), "updated_ms": newest}
