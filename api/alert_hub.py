"""One reader of the churn-alert stream for every live subscriber (`GET /v1/alerts/churn/stream`).

Measured before: each open stream held a connection of the request pool in a blocking XREAD, so
200 streams exhausted the pool (83 were cut, other requests took 0.3–2.3 s). Now one task,
started in the app's lifespan, reads the stream on its own connection (never the request pool),
adds each alert's tier and win-back suggestion once (one pipelined profile read per batch, on
that connection too), and hands the batch to every subscriber's bounded queue. A subscriber that
falls `OMNIREC_API_STREAM_QUEUE` batches behind is cut: its stream ends, and the client resumes
with Last-Event-ID, losing nothing."""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.deps import now_ms
from api.store import Store, alert_entry
from online_models import answers, offers
from online_models.customer import CustomerState

log = logging.getLogger("omnirec.api")
READ_BLOCK_MS = 1000
READ_COUNT = 100
RETRY_S = 1.0


@dataclass(eq=False)
class Subscription:
    queue: asyncio.Queue
    cut: bool = False  # fell too far behind: the stream ends, the client resumes


@dataclass(eq=False)
class AlertHub:
    store: Store
    client: aioredis.Redis  # its own connection: a blocking read never holds one of the request pool
    arbitration: offers.ArbitrationSettings
    queue_size: int = 256
    subscribers: set[Subscription] = field(default_factory=set)
    batches: int = 0  # batches read (tests wait on it)

    def subscribe(self) -> Subscription:
        sub = Subscription(asyncio.Queue(self.queue_size))
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscribers.discard(sub)

    async def run(self) -> None:
        """Read the stream from now on, for as long as the app lives."""
        last_id = "$"
        stream = self.store.scheme.churn_alerts()
        while True:
            try:
                reply = await self.client.xread({stream: last_id}, count=READ_COUNT, block=READ_BLOCK_MS)
                if not reply:
                    continue
                batch = [alert_entry(entry) for entry in reply[0][1]]
                last_id = batch[-1]["id"]
                batch = await enrich(self.store, self.arbitration, batch, self.client)
            except RedisError as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # redis-py turns a cancel during the blocking read into "Connection closed":
                    # the app is shutting down (it waited 5 s for this task in the demo's log)
                    raise asyncio.CancelledError from exc
                log.warning("alert stream reader: %s; retrying in %g s", exc, RETRY_S)
                await asyncio.sleep(RETRY_S)
                continue
            except Exception:  # one batch that cannot be enriched must not end every stream for good
                log.exception("alert stream reader: a batch after %s could not be prepared; skipping it", last_id)
                continue
            self.batches += 1
            self.publish(batch)

    def publish(self, batch: list[dict]) -> None:
        for sub in list(self.subscribers):
            try:
                sub.queue.put_nowait(batch)
            except asyncio.QueueFull:
                sub.cut = True
                self.subscribers.discard(sub)


async def still_away(store: Store, alerts: list[dict],
                     client: aioredis.Redis | None = None) -> tuple[list[dict], dict[str, CustomerState | None]]:
    """The alerts whose customers have not bought since (``answers.came_back``), each as it reads
    now (``answers.refreshed_alert``: score, reasons, value at risk) with its value tier from the
    population as it is now (the flow raises alerts without one: a rank in a population that was
    still moving when the timer was set), and their profiles by alert id. One pipelined profile read."""
    if not alerts:
        return [], {}
    states = await store.profiles([alert["customer_id"] for alert in alerts], client)
    away = [(alert, state) for alert, state in zip(alerts, states) if not answers.came_back(alert, state)]
    now = now_ms()
    for alert, state in away:
        answers.refreshed_alert(alert, state, store.population, now)
        if alert.get("tier") is None:
            alert["tier"] = store.population.tier_of(state) if state is not None else None
    return [alert for alert, _ in away], {alert["id"]: state for alert, state in away}


async def enrich(store: Store, arbitration: offers.ArbitrationSettings, batch: list[dict],
                 client: aioredis.Redis | None = None) -> list[dict]:
    """The batch's alerts whose customers are still away (``still_away``: a left-out alert counts
    as sent, so resuming loses nothing) and, for those worth a call, the next best offer in a
    churn-alert context (the same gates as any next best offer, so the suggestion may be none)."""
    out: list[dict] = []
    for start in range(0, len(batch), READ_COUNT):  # a resume's catch-up may hold 10,000: in chunks,
        away, states = await still_away(store, batch[start:start + READ_COUNT], client)  # the loop breathing
        suggest_win_back(store, arbitration, answers.alerts_by_value(away, store.population.median_value_at_risk()),
                         states)
        out.extend(away)
        await asyncio.sleep(0)
    return out


def suggest_win_back(store: Store, arbitration: offers.ArbitrationSettings, alerts: list[dict],
                     states: dict[str, CustomerState | None]) -> None:
    """Attach to each alert the next best offer in a churn-alert context (the same gates as any
    next best offer: a win-back only while they are lapsing or at risk, no price cut for who
    returned everything), so the suggestion may be none."""
    now = now_ms()
    for alert in alerts:
        state = states[alert["id"]]
        alert["suggested_offer"] = answers.win_back_suggestion(
            store.offers.values(), store.offer_stats, state, alert.get("tier"),
            store.population.churn_score(state, now), store.catalog, arbitration, now, seed=secrets.randbits(63))
