"""Feedback to Kafka, acknowledged only once the broker has it.

confluent-kafka's producer is callback-driven: a thread polls it, and each delivery report
resolves the asyncio future of the request that produced the message.
"""

from __future__ import annotations

import asyncio
import threading

from confluent_kafka import KafkaException, Producer


class FeedbackProducer:
    def __init__(self, bootstrap: str, topic: str, timeout_s: float = 10.0) -> None:
        self.topic = topic
        self.timeout_s = timeout_s
        self._producer = Producer({
            "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
            "linger.ms": 2, "message.timeout.ms": int(timeout_s * 1000),
        })
        self._running = True
        self._poller = threading.Thread(target=self._poll, name="feedback-producer", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while self._running:
            self._producer.poll(0.05)

    async def send(self, key: str, value: bytes) -> None:
        """Returns once the broker acknowledged the message; raises KafkaException otherwise."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def delivered(error, _message) -> None:
            outcome = KafkaException(error) if error is not None else None
            loop.call_soon_threadsafe(_settle, done, outcome)

        self._producer.produce(self.topic, key=key.encode(), value=value, on_delivery=delivered)
        await asyncio.wait_for(done, self.timeout_s + 1)

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
