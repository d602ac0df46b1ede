"""Erasure of one customer (a data-protection request): what is deleted, and how the flow forgets.

An erasure has two halves that decide the same things from the same functions here:

- **At once** (``DELETE /v1/customers/{id}``, ``omnirec customers erase ID``): the edge reads the
  customer's profile for their aliases, sends a tombstone (``tombstone_envelope``) to the
  customer's partition of the events topic, and applies ``writes`` to Redis, plus a scan for the
  customer's ``seen`` keys of alerts no longer in the stream (``seen_key_pattern``,
  ``is_seen_key_of``).
- **In the flow**, when the tombstone (``events.Tombstone``) arrives: the customer's and each
  alias's keyed state becomes an ``Erased`` marker, the same ``writes`` run again (so whatever the
  flow wrote between the request and the tombstone is deleted too), the churn shard forgets the
  customer (``ForgetChurn``), and the alert gate raises nothing more for them. While a marker
  holds, an event of that id with an event time before ``until_ms`` (the erasure plus
  ``OMNIREC_ERASURE_RETENTION_DAYS``) is ignored: late events, retries and other partitions'
  stragglers cannot bring the customer back. An event after that starts a new, empty customer.

Aggregates the customer contributed to (item popularity, co-occurrence, repeat counts, offer
statistics, the churn model's fit) hold no id and are kept; the Kafka topics keep the raw events
until their own retention.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from online_models import keys
from online_models.events import ERASE_TYPE, Tombstone
from online_models.messages import Delete, DeleteAlerts, Write


@dataclass(frozen=True, slots=True)
class Erased:
    """The keyed state of an erased customer or alias: events of it before ``until_ms`` are ignored."""

    subject: str
    until_ms: int

    def __deepcopy__(self, memo: dict) -> Erased:
        return self  # frozen

    def ignores(self, ts_ms: int) -> bool:
        return ts_ms < self.until_ms

    def extended(self, until_ms: int) -> Erased:
        """A second tombstone for the same id never shortens the first one's hold."""
        return self if until_ms <= self.until_ms else Erased(self.subject, until_ms)


@dataclass(frozen=True, slots=True)
class ForgetAlias:
    """To an alias's key: the customer it belongs to was erased."""

    alias_id: str
    customer_id: str
    until_ms: int


@dataclass(frozen=True, slots=True)
class ForgetChurn:
    """To the customer's churn shard: take them out of its sketches (their last buckets) and sample."""

    customer_id: str
    shard: int
    sketch_keys: tuple[int | None, int | None, int | None] | None


def writes(scheme: keys.KeyScheme, customer_id: str, aliases: tuple[str, ...] | list[str]) -> list[Write]:
    """Every Redis write that erases the customer: their profile, each alias's profile or link,
    and their churn-alert entries with those entries' ``seen`` keys."""
    out: list[Write] = [Delete(scheme.customer(customer_id))]
    out.extend(Delete(scheme.alias(alias)) for alias in sorted(set(aliases)))
    out.append(DeleteAlerts(scheme.churn_alerts(), scheme.churn_alert_seen(""), customer_id))
    return out


def aliases_of(profile: object) -> tuple[str, ...]:
    """The aliases a stored profile lists (``keys.decode_profile`` gives a state or a link)."""
    return tuple(getattr(profile, "aliases", ()) or ())


def seen_key_pattern(scheme: keys.KeyScheme, customer_id: str) -> str:
    """A Redis SCAN ``MATCH`` pattern for the customer's alert ``seen`` keys (glob characters in
    the prefix or the id escaped). It may match another id's keys too (``c-1`` vs ``c-1:x``):
    filter with ``is_seen_key_of``."""
    return _glob_escape(scheme.churn_alert_seen(f"{customer_id}:")) + "*"


def is_seen_key_of(scheme: keys.KeyScheme, key: str, customer_id: str) -> bool:
    """True iff ``key`` is the ``seen`` key of one of the customer's alerts (``<id>:<episode>``)."""
    head = scheme.churn_alert_seen(f"{customer_id}:")
    episode = key[len(head):] if key.startswith(head) else ""
    return episode.lstrip("-").isdigit() and episode.isascii()


def tombstone_envelope(customer_id: str, aliases: tuple[str, ...] | list[str], now_ms: int,
                       event_id: str | None = None) -> dict:
    """The ``erase`` envelope the edges send, keyed by the customer id (``events.partition_key``)."""
    return {"type": ERASE_TYPE, "event_id": event_id or f"erase-{uuid.uuid4().hex}", "ts": now_ms,
            "customer_id": customer_id, "aliases": sorted(set(aliases))}


def alias_messages(tombstone: Tombstone, until_ms: int) -> list[ForgetAlias]:
    return [ForgetAlias(alias, tombstone.customer_id, until_ms) for alias in tombstone.aliases]


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)
