"""Feedback to Kafka, acknowledged only once the broker has it.

confluent-kafka's producer is callback-driven: a thread polls it, and each delivery report
resolves the asyncio future of the request that produced the message.

The producer is idempotent, and an idempotent producer whose broker forgets it (a restarted
broker that kept no state, as tansu; a broker that lost the producer id) enters a *fatal* state
from which librdkafka never recovers: every later produce fails with `_FATAL`. Measured here
before this was handled: 58 of 58 requests after a broker restart got 503. So a fatal error
(reported by the error callback, a delivery report or `produce` itself) makes this class build a
new producer in place of the old one; a request that hit the fatal error is retried once on the
new producer, so a client sees at most the requests in flight at that moment fail.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading

from confluent_kafka import KafkaError, KafkaException, Producer


def is_fatal(error: KafkaError | None) -> bool:
    return error is not None and (error.fatal() or error.code() == KafkaError._FATAL)


class FeedbackProducer:
    def __init__(self, bootstrap: str, topic: str, timeout_s: float = 10.0,
                 reconnect_backoff_max_ms: int = 1000) -> None:
        self.topic = topic
        self.timeout_s = timeout_s
        self.rebuilds = 0
        self._config = {
            "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
            "linger.ms": 2, "message.timeout.ms": int(timeout_s * 1000),
            "reconnect.backoff.max.ms": reconnect_backoff_max_ms,
            # librdkafka's own lines through Python logging (served by the poller's poll), so
            # OMNIREC_LOG_FORMAT=json covers them too
            "logger": logging.getLogger("omnirec.kafka"),
        }
        self._lock = threading.Lock()
        self._fatal: Producer | None = None  # the producer that reported a fatal error
        self._producer = self._build()
        self._running = True
        self._poller = threading.Thread(target=self._poll, name="feedback-producer", daemon=True)
        self._poller.start()

    def _build(self) -> Producer:
        made: list[Producer] = []  # the error callback names the producer it belongs to
        producer = Producer({**self._config, "error_cb": lambda error: self._on_error(error, made)})
        made.append(producer)
        return producer

    def _on_error(self, error: KafkaError, made: list[Producer]) -> None:
        if is_fatal(error) and made and made[0] is self._producer:
            self._fatal = made[0]

    def _poll(self) -> None:
        while self._running:
            producer = self._producer
            try:
                producer.poll(0.05)
            except KafkaException as exc:  # poll raises a fatal error once it is reported
                error = exc.args[0] if exc.args else None
                if not (isinstance(error, KafkaError) and is_fatal(error)):
                    raise
                self._fatal = producer
            if self._fatal is not None:
                self._rebuild(self._fatal)

    def _rebuild(self, failed: Producer) -> None:
        """Replace ``failed`` by a new producer (once, however many callers saw it fail)."""
        with self._lock:
            if self._producer is not failed:
                return
            self._producer = self._build()
            self._fatal = None
            self.rebuilds += 1
        print(f"feedback producer: fatal error, rebuilt (rebuild {self.rebuilds})", file=sys.stderr, flush=True)
        try:
            failed.purge()  # what it still held fails now (its requests answer 503) …
            failed.poll(0)  # … by firing their delivery reports
        except KafkaException:
            pass  # it is fatal: it may say so again

    async def send(self, key: str, value: bytes, topic: str | None = None) -> None:
        """Returns once the broker acknowledged the message (to ``topic``, default the feedback
        topic); raises KafkaException otherwise."""
        for attempt in (1, 2):
            producer = self._producer
            try:
                await self._send_once(producer, key, value, topic or self.topic)
                return
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if attempt == 2 or not isinstance(error, KafkaError) or not is_fatal(error):
                    raise
                self._rebuild(producer)

    async def _send_once(self, producer: Producer, key: str, value: bytes, topic: str) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def delivered(error, _message) -> None:
            outcome = KafkaException(error) if error is not None else None
            loop.call_soon_threadsafe(_settle, done, outcome)

        producer.produce(topic, key=key.encode(), value=value, on_delivery=delivered)
        await asyncio.wait_for(done, self.timeout_s + 1)

    def broker_status(self, timeout_s: float = 0.5) -> str | None:
        """None when the broker answers and has the feedback topic; otherwise what is wrong.
        Blocking (a metadata request, at most `timeout_s`: a readiness probe must answer within
        its own timeout, often 1 s, even with the broker away): call it in a thread."""
        if self._fatal is not None:
            return "producer in a fatal state (being rebuilt)"
        try:
            metadata = self._producer.list_topics(timeout=timeout_s)  # all topics: creates none
        except KafkaException as exc:
            return f"broker unavailable: {exc.args[0].str() if exc.args else exc}"
        if self.topic not in metadata.topics:
            return f"broker has no topic {self.topic}"
        return None

    def close(self) -> None:
        self._running = False
        self._poller.join(timeout=2)
        self._producer.flush(5)


def _settle(future: asyncio.Future, error: Exception | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
