"""The contact history of one customer: which offers were shown, dismissed, accepted.

Kept inside the customer state so that the contact policy reads it in the same round
trip as the profile, and so that a web impression counts against the store's cap too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_SHOWN = 32


@dataclass(slots=True)
class Contacts:
    """What the customer was shown and how they answered, across every channel."""

    shown: list[list] = field(default_factory=list)  # [ts, offer_id, channel], newest last
    dismissed: dict[str, int] = field(default_factory=dict)  # offer_id → ts
    accepted: dict[str, int] = field(default_factory=dict)  # offer_id → count

    def record(self, kind: str, offer_id: str, ts_ms: int, channel: str | None) -> None:
        if kind == "impression":
            self.shown.append([ts_ms, offer_id, channel or ""])
            del self.shown[:-MAX_SHOWN]
        elif kind == "dismiss":
            self.dismissed[offer_id] = max(ts_ms, self.dismissed.get(offer_id, 0))
        elif kind == "accept":
            self.accepted[offer_id] = self.accepted.get(offer_id, 0) + 1

    def shown_since(self, since_ms: int) -> int:
        return sum(1 for ts, _, _ in self.shown if ts >= since_ms)

    def copy(self) -> Contacts:
        return Contacts([list(entry) for entry in self.shown], dict(self.dismissed), dict(self.accepted))

    def to_dict(self) -> dict[str, Any]:
        return {"shown": self.shown, "dismissed": self.dismissed, "accepted": self.accepted}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Contacts:
        data = data or {}
        return cls(list(data.get("shown", [])), dict(data.get("dismissed", {})), dict(data.get("accepted", {})))
