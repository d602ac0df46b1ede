"""Fail loudly when the broker loses the flow's input topics, instead of stalling in silence.

librdkafka reconnects to a restarted broker by itself, and a broker that keeps its data (Kafka)
is simply read on from the stored offsets. A broker that comes back *without* the topics (tansu
keeps them in memory), or with topics deleted and created again, is another matter: the
Kafka source waits at offsets that refer to the old data. Measured here: after a tansu restart
and re-producing fewer messages than before, the flow stayed up and read nothing for as long as
we watched, without a word. This source emits nothing; a thread checks every
``OMNIREC_BROKER_CHECK_S`` that each input topic still exists with the id it had when the flow
started, and the next poll raises with both ids, so the flow exits non-zero for its supervisor
(and `omnirec flow` then refuses the stale recovery state until `--reset-recovery`). A broker
that is merely down is waited for. The same thread sets the consumer-lag gauge
(``flows.metrics.CONSUMER_LAG``) from the input partitions' high watermarks.
"""

from __future__ import annotations

import sys
import threading
from datetime import datetime, timedelta, timezone

from bytewax.inputs import DynamicSource, StatelessSourcePartition

from flows import metrics


class BrokerChanged(RuntimeError):
    pass


class _Watch(StatelessSourcePartition[None]):
    def __init__(self, bootstrap: str, topics: list[str], every_s: float, config: dict,
                 active: bool) -> None:
        self._every = timedelta(seconds=every_s)
        self._next = datetime.now(timezone.utc) + self._every
        self._problem: str | None = None
        self._raised = False
        self._stop = threading.Event()
        self._thread = None
        if active:
            self._thread = threading.Thread(target=self._run, args=(bootstrap, topics, every_s, config),
                                            name="broker-watch", daemon=True)
            self._thread.start()

    def _run(self, bootstrap: str, topics: list[str], every_s: float, config: dict) -> None:

        from omnirec.recovery import TopicMissing, admin_client, topic_ids

        admin = admin_client(bootstrap, **config)
        expected: dict[str, str | None] | None = None
        unreachable = False
        while not self._stop.wait(0 if expected is None and not unreachable else every_s):
            try:
                now = topic_ids(admin, topics, timeout=max(1.0, every_s))
            except TopicMissing as missing:
                if expected is not None:
                    self._problem = (f"input topic {missing} is gone from the broker at {bootstrap} "
                                     f"(it had id {expected.get(str(missing))}): the broker lost it")
                    break
                unreachable = True
                continue
            except Exception as exc:  # noqa: BLE001 - KafkaException, or anything else: the watch must not die
                if not unreachable:
                    print(f"omnirec flow: broker at {bootstrap} unreachable ({type(exc).__name__}: {exc}); waiting",
                          file=sys.stderr, flush=True)
                unreachable = True
                continue
            if unreachable and expected is not None:
                print(f"omnirec flow: broker at {bootstrap} answers again", file=sys.stderr, flush=True)
            unreachable = False
            if expected is None:
                expected = now
                continue
            try:
                metrics.POSITIONS.report(metrics.high_watermarks(admin, metrics.POSITIONS.partitions(),
                                                                 max(1.0, every_s)))
            except Exception as exc:  # noqa: BLE001 - a metric must never stop the watch
                print(f"omnirec flow: consumer lag not measured: {exc}", file=sys.stderr, flush=True)
            changed = [f"{t} (id {expected[t]}, now {now[t]})" for t in topics
                       if expected[t] and now.get(t) and expected[t] != now[t]]
            if changed:
                self._problem = (f"input topics were created again on the broker at {bootstrap}: "
                                 f"{', '.join(changed)}; the stored offsets refer to the old data")
                break
        if self._problem is not None:
            self._exit_unless_raised(max(10.0, 3 * every_s))

    def _exit_unless_raised(self, grace_s: float) -> None:
        """The worker raises at its next poll of this source; a worker blocked elsewhere (a sink
        waiting for Redis or the broker) never polls it, so after ``grace_s`` the process exits."""
        import os

        if self._stop.wait(grace_s) or self._raised:
            return
        print(f"omnirec flow: {self._problem}. The worker did not stop within {grace_s:.0f} s "
              "(blocked in a sink?): exiting (3); restart with `omnirec flow --reset-recovery`.",
              file=sys.stderr, flush=True)
        os._exit(3)

    def next_batch(self) -> list[None]:
        if self._problem is not None:
            message = (f"{self._problem}. Stopping rather than waiting for offsets that will not "
                       f"come; restart with `omnirec flow --reset-recovery` to read the topics again.")
            print(f"omnirec flow: {message}", file=sys.stderr, flush=True)
            self._raised = True
            raise BrokerChanged(message)
        self._next = datetime.now(timezone.utc) + self._every
        return []

    def next_awake(self) -> datetime:
        return self._next

    def close(self) -> None:
        self._stop.set()


class BrokerWatch(DynamicSource[None]):
    """One watching thread, on worker 0."""

    def __init__(self, bootstrap: str, topics: list[str], every_s: float, config: dict | None = None) -> None:
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.every_s = every_s
        self.config = dict(config or {})

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Watch:
        return _Watch(self.bootstrap, self.topics, self.every_s, self.config, active=worker_index == 0)
