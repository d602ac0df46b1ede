"""Identity stitching: an anonymous web id or a loyalty card becomes a known customer.

Until an `identify` event links it, an alias (anonymous id / loyalty card) has a profile
of its own. On `identify` that profile is handed to the customer to merge, and from
then on the alias only forwards its events to the customer.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from online_models import decay
from online_models.customer import BasketSignal, CustomerState
from online_models.events import Event, Feedback
from online_models.pickling import pickled_by_fields


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Merge:
    """Sent to a customer's key: fold this alias profile in."""

    alias_id: str
    profile: CustomerState
    event_id: str
    ts_ms: int  # of the identify event


@dataclass(slots=True)
class AliasOutcome:
    forward: list[tuple[str, Event | Merge]] = field(default_factory=list)  # (customer_id, msg)
    signals: list[BasketSignal] = field(default_factory=list)
    profile_changed: bool = False
    linked_to: str | None = None


@dataclass(slots=True)
class AliasState:
    alias_id: str
    customer_id: str | None = None
    profile: CustomerState | None = None

    def __deepcopy__(self, memo: dict) -> AliasState:
        return AliasState(self.alias_id, self.customer_id, copy.deepcopy(self.profile) if self.profile else None)

    def apply(self, event: Event, decay_: decay.Decay) -> AliasOutcome:
        outcome = AliasOutcome()
        if event.type == "identify" and event.customer_id:
            if self.customer_id != event.customer_id:
                profile = self.profile or CustomerState(self.alias_id)
                outcome.forward.append((event.customer_id, Merge(self.alias_id, profile, event.event_id, event.ts_ms)))
                self.customer_id, self.profile = event.customer_id, None
                outcome.linked_to = event.customer_id
            return outcome
        if self.customer_id:
            outcome.forward.append((self.customer_id, event))
            return outcome
        if self.profile is None:
            self.profile = CustomerState(self.alias_id)
        outcome.signals = self.profile.apply(event, decay_)
        outcome.profile_changed = True
        return outcome


def apply_to_customer(
    state: CustomerState, message: Event | Merge | Feedback, decay_: decay.Decay
) -> list[BasketSignal]:
    """The customer step's one verb: an event, offer feedback, or the merge of a stitched alias."""
    if isinstance(message, Feedback):
        if state.remember(message.event_id, message.ts_ms):
            state.record_feedback(message.type, message.offer_id, message.ts_ms, message.channel, message.sku)
        return []
    if isinstance(message, Merge):
        if not state.is_duplicate(message.event_id):
            state.merge(message.profile)  # first: the merge rebuilds the dedup window
            state.remember(message.event_id, message.ts_ms)
        return []
    return state.apply(message, decay_)
