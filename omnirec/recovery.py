"""Which broker and topics a recovery directory belongs to, and whether it still fits them.

bytewax keeps the Kafka source's offsets only in its recovery snapshots. Resumed against another
broker, or against topics that were deleted and created again (tansu keeps topics in memory, so
every restart does that), those offsets point into other data: the flow skips the new topics'
first messages, or waits at an offset that will never come, and says nothing. So the directory
records its broker's cluster id (the bootstrap servers where the broker has none) and the id of
every input topic, and `omnirec flow` checks them, and that no stored offset lies beyond the end of
its partition, before it starts bytewax. A mismatch stops it with a message naming both sides,
unless `--reset-recovery` (which discards the recovery state: the flow reads the topics again from
the beginning, and its absolute writes converge in Redis).
"""

from __future__ import annotations

import json
import pickle
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from omnirec.settings import Settings

IDENTITY_FILE = "omnirec-identity.json"
KAFKA_STEP = "omnirec.kafka_in.kafka_input"  # flows.dataflow: Dataflow("omnirec"), kop.input("kafka_in")
NO_TOPIC_ID = frozenset({"", "AAAAAAAAAAAAAAAAAAAAAA"})  # brokers without topic ids send zeros


class RecoveryMismatch(RuntimeError):
    """The recovery directory belongs to another broker or other topics."""


class TopicMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class BrokerIdentity:
    cluster: str  # the cluster id from metadata, or the bootstrap servers where there is none
    bootstrap: str
    topics: dict[str, str | None]  # input topic → topic id (None: the broker has no topic ids)

    def describe(self) -> str:
        return f"cluster {self.cluster!r} at {self.bootstrap}"


def input_topics(settings: Settings) -> list[str]:
    """The topics the flow reads (flows.dataflow.build_flow)."""
    return [settings.topic_web, settings.topic_store, settings.topic_catalog, settings.topic_offers,
            settings.topic_feedback]


def admin_client(bootstrap: str, **extra: object):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, **extra})


def topic_ids(admin, topics: list[str], timeout: float = 10.0) -> dict[str, str | None]:
    """Topic → id; raises TopicMissing for a topic the broker does not have (without creating it:
    a metadata request would, on brokers that auto-create), KafkaException when it cannot tell."""
    from confluent_kafka import KafkaError, KafkaException, TopicCollection

    found: dict[str, str | None] = {}
    for name, future in admin.describe_topics(TopicCollection(list(topics)),
                                              request_timeout=timeout).items():
        try:
            description = future.result(timeout=timeout)
        except TimeoutError:  # concurrent.futures': no answer in time (a broker restarting): cannot tell
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"no description of {name} within {timeout:g} s")
                                 ) from None
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if getattr(error, "code", lambda: None)() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise TopicMissing(name) from None
            raise
        topic_id = str(description.topic_id) if description.topic_id is not None else ""
        found[name] = None if topic_id in NO_TOPIC_ID else topic_id
    return found


class BrokerUnavailable(RecoveryMismatch):
    """The broker did not answer, so the recovery directory could not be checked."""


def current_identity(settings: Settings, timeout: float = 10.0) -> BrokerIdentity:
    from confluent_kafka import KafkaException

    admin = admin_client(settings.kafka_bootstrap)
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailable(f"no Kafka broker answered at {settings.kafka_bootstrap} within "
                                f"{timeout:.0f} s ({exc}); the recovery directory cannot be checked "
                                "against it. Start the broker (or `omnirec stack up`) and retry.") from None
    topics = input_topics(settings)
    missing = [t for t in topics if t not in metadata.topics]
    if missing:
        raise RecoveryMismatch(f"the broker at {settings.kafka_bootstrap} has no topic "
                               f"{', '.join(missing)} (create them first: `omnirec stack up` does)")
    return BrokerIdentity(cluster=metadata.cluster_id or settings.kafka_bootstrap,
                          bootstrap=settings.kafka_bootstrap, topics=topic_ids(admin, topics, timeout))


def read_identity(rdir: str | Path) -> BrokerIdentity | None:
    try:
        data = json.loads((Path(rdir) / IDENTITY_FILE).read_text())
        return BrokerIdentity(cluster=data["cluster"], bootstrap=data["bootstrap"], topics=dict(data["topics"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_identity(rdir: str | Path, identity: BrokerIdentity) -> None:
    Path(rdir).mkdir(parents=True, exist_ok=True)
    path = Path(rdir) / IDENTITY_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(identity), indent=2, sort_keys=True))
    tmp.replace(path)


def stored_offsets(rdir: str | Path) -> dict[tuple[str, int], int]:
    """(topic, partition) → the next offset the Kafka source would read on resume (only real
    offsets: a partition never read holds OFFSET_BEGINNING, -2)."""
    offsets: dict[tuple[str, int], int] = {}
    for db in sorted(Path(rdir).glob("part-*.sqlite3")):
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            commit = con.execute("SELECT MAX(commit_epoch) FROM commits").fetchone()[0]
            if commit is None:
                continue
            rows = con.execute(
                "SELECT state_key, ser_change FROM snaps s WHERE step_id = ? AND snap_epoch = "
                "(SELECT MAX(snap_epoch) FROM snaps t WHERE t.step_id = s.step_id AND "
                "t.state_key = s.state_key AND t.snap_epoch <= ?)", (KAFKA_STEP, commit)).fetchall()
        finally:
            con.close()
        for state_key, blob in rows:
            if blob is None:
                continue
            offset = pickle.loads(blob)  # noqa: S301 - bytewax's own snapshot of an int
            index, _, topic = state_key.partition("-")
            if isinstance(offset, int) and offset >= 0:
                offsets[(topic, int(index))] = offset
    return offsets


def end_offsets(settings: Settings, stored: dict[tuple[str, int], int],
                timeout: float = 10.0) -> dict[tuple[str, int], int | None]:
    """(topic, partition) → its end as far as ``stored`` needs it: the high watermark, or the
    stored offset itself where a read shows the partition reaches it; None where the broker has
    no such partition.

    tansu reports the start of a partition's last batch + 1 as its high watermark (a caught-up
    flow's offset would look beyond it), so an offset above the watermark is checked by reading
    the message just before it."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "omnirec-recovery-check",
                         "enable.auto.commit": False, "auto.offset.reset": "error", "log_level": 0})
    try:
        ends: dict[tuple[str, int], int | None] = {}
        for topic, partition in stored:
            try:
                ends[(topic, partition)] = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=timeout, cached=False)[1]
            except KafkaException:
                ends[(topic, partition)] = None
        doubtful = {tp: o for tp, o in stored.items() if ends[tp] is not None and o > ends[tp]}
        if doubtful:
            consumer.assign([TopicPartition(t, p, o - 1) for (t, p), o in doubtful.items()])
            deadline = time.monotonic() + min(timeout, 3.0)
            while doubtful and time.monotonic() < deadline:
                msg = consumer.poll(0.2)
                if msg is None or msg.error():
                    continue  # out of range: the message is not there
                tp = (msg.topic(), msg.partition())
                if tp in doubtful and msg.offset() >= doubtful[tp] - 1:
                    ends[tp] = max(ends[tp], msg.offset() + 1)
                    del doubtful[tp]
        return ends
    finally:
        consumer.close()


def mismatches(recorded: BrokerIdentity | None, current: BrokerIdentity,
               stored: dict[tuple[str, int], int], ends: dict[tuple[str, int], int | None]) -> list[str]:
    """What does not fit, one sentence each (empty: the directory belongs to this broker)."""
    found: list[str] = []
    if recorded is None:
        if stored:
            found.append(f"it holds offsets of {len(stored)} partitions but no record of its broker "
                         f"(written by an older omnirec?); this broker is {current.describe()}")
    else:
        if recorded.cluster != current.cluster:
            found.append(f"it belongs to {recorded.describe()}, this broker is {current.describe()}")
        if set(recorded.topics) != set(current.topics):
            found.append(f"it was made for topics {sorted(recorded.topics)}, the flow now reads "
                         f"{sorted(current.topics)}")
        for name in sorted(set(recorded.topics) & set(current.topics)):
            before, now = recorded.topics[name], current.topics[name]
            if before and now and before != now:
                found.append(f"topic {name} was created again since (id {before}, now {now})")
    for (topic, partition), offset in sorted(stored.items()):
        end = ends.get((topic, partition))
        if end is None:
            found.append(f"it resumes {topic}[{partition}] at offset {offset}, a partition this "
                         f"broker does not have")
        elif offset > end:
            found.append(f"it resumes {topic}[{partition}] at offset {offset}, beyond the partition's "
                         f"end ({end}) on this broker")
    return found


def reset(rdir: str | Path) -> None:
    """Discard the recovery state (partitions and identity); `init_recovery` makes new ones."""
    rdir = Path(rdir)
    for path in [*rdir.glob("part-*.sqlite3*"), rdir / IDENTITY_FILE]:
        path.unlink(missing_ok=True)


def check(settings: Settings, rdir: str | Path, timeout: float = 10.0) -> BrokerIdentity:
    """Raise RecoveryMismatch unless ``rdir`` fits the broker and topics of ``settings``; record
    the broker's identity in a directory that has none yet. Returns the broker's identity."""
    current = current_identity(settings, timeout)
    recorded = read_identity(rdir)
    stored = stored_offsets(rdir)
    ends = end_offsets(settings, stored, timeout) if stored else {}
    found = mismatches(recorded, current, stored, ends)
    if found:
        made_on = recorded.describe() if recorded else "an unrecorded broker"
        raise RecoveryMismatch(
            f"the recovery directory {rdir} does not match the broker at {settings.kafka_bootstrap}\n"
            f"  (the directory was made on {made_on}; this broker is {current.describe()}):\n  - "
            + "\n  - ".join(found)
            + "\nResuming would skip or wait for messages that are not there. Run `omnirec flow "
              "--reset-recovery` to start again from the beginning of the topics, or point "
              "OMNIREC_RECOVERY_DIR / --recovery-dir at this broker's own directory.")
    if recorded is None or recorded != current:
        write_identity(rdir, current)  # new, or the same broker at another address
    return current
