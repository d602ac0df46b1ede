"""Every key a flow wrote under a prefix, byte for byte, and a readable diff of two such dumps.

DESIGN.md ("Scale", "Redis") promises that the same input gives the same Redis state for
every key, whatever the worker count, process count, batch sizes, input pacing or kill -9
restarts. ``dump_state`` reads that state whole, ``diff_states`` says which keys differ (per
key family, with counts, the first few names and a short diff of the first few), so a
developer can use an equality test as a measurement tool:

    python -m tests.integration.state_dump REDIS_URL PREFIX_A PREFIX_B

Values are compared as Redis returns them (bytes), per type:

- string: GET;
- hash: HGETALL (field → value);
- zset: ZRANGE 0 -1 WITHSCORES (member, score) in Redis's order (score, then member);
- set: SMEMBERS, sorted;
- list: LRANGE 0 -1;
- stream: the entries' field/value payloads, sorted. Entry ids are excluded because they
  are the wall-clock time of the XADD; the order of entries is excluded because alerts of
  different churn shards reach the stream in whichever order the workers run (each
  payload carries its own event time and alert id, so nothing a reader needs is lost).

TTLs are not compared (they count down on the wall clock); the key's value is.
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgpack
import orjson
import redis

# Keys that are not part of the materialised view, each with why it cannot be equal between
# two correct runs. Nothing else is excluded. Patterns match the name after the prefix.
NON_DETERMINISTIC: dict[str, str] = {
    # flows/redis_sink.py: HINCRBY of the messages each batch parsed (a resumed flow re-reads
    # and re-counts what it had read since its last snapshot: at-least-once) and HSET of the
    # wall-clock time of the last batch. A dashboard counter, documented as "not part of
    # the materialised view".
    r":\{metrics\}:flow$": "flow metrics: wall-clock `updated_ms`, `messages` re-counts replays",
}
_EXCLUDED = [re.compile(pattern) for pattern in NON_DETERMINISTIC]

# Key families, for the report: (name, pattern on the name after the prefix). The first match wins.
FAMILIES: tuple[tuple[str, re.Pattern], ...] = tuple((name, re.compile(pattern)) for name, pattern in (
    ("profiles", r"^:\{c:.*\}:profile$"),
    ("aliases", r"^:\{a:.*\}:profile$"),
    ("neighbours", r"^:\{i:.*\}:neighbors$"),
    ("popularity", r"^:\{pop\}:global$"),
    ("basket counts", r"^:\{pop\}:baskets$"),
    ("repeat habits", r"^:\{pop\}:repeats$"),
    ("store popularity", r"^:\{pop(:.*)?\}:stores?$"),
    ("catalog", r"^:\{catalog\}:products$"),
    ("offer definitions", r"^:\{offers\}:definitions$"),
    ("offer stats", r"^:\{o:.*\}:stats$|^:\{offers\}:with-stats$"),
    ("ranker", r"^:\{ranker\}:weights$"),
    ("churn shards", r"^:\{churn:\d+\}:model$"),
    ("alert stream", r"^:\{alerts\}:churn$"),
    ("alert ids seen", r"^:\{alerts\}:seen:"),
))


def family(name: str) -> str:
    for label, pattern in FAMILIES:
        if pattern.search(name):
            return label
    return "other"


@dataclass(frozen=True)
class Value:
    """One key's content: its Redis type and a comparable, hashable form of its value."""

    kind: str
    data: Any

    def size(self) -> int:
        return 1 if self.kind == "string" else len(self.data)


State = dict[str, Value]


def dump_state(redis_url: str, prefix: str) -> State:
    """Every key under ``prefix:`` (name with the prefix stripped → Value), but the excluded ones."""
    client = redis.Redis.from_url(redis_url)
    try:
        names = sorted(k for k in client.scan_iter(match=f"{_glob_escape(prefix)}:*", count=1000))
        names = [k for k in names if not any(p.search(k.decode()[len(prefix):]) for p in _EXCLUDED)]
        pipe = client.pipeline(transaction=False)
        for key in names:
            pipe.type(key)
        kinds = [k.decode() if isinstance(k, bytes) else k for k in pipe.execute()]
        readers: dict[str, Callable] = {
            "string": lambda key: pipe.get(key),
            "hash": lambda key: pipe.hgetall(key),
            "zset": lambda key: pipe.zrange(key, 0, -1, withscores=True),
            "set": lambda key: pipe.smembers(key),
            "list": lambda key: pipe.lrange(key, 0, -1),
            "stream": lambda key: pipe.xrange(key),
        }
        present = [(key, kind) for key, kind in zip(names, kinds) if kind in readers]
        unknown = [key for key, kind in zip(names, kinds) if kind not in readers and kind != "none"]
        if unknown:
            raise AssertionError(f"state_dump cannot read the type of {unknown[:5]}: add a reader")
        for key, kind in present:
            readers[kind](key)
        state: State = {}
        for (key, kind), raw in zip(present, pipe.execute()):
            if raw is None or (kind != "string" and not raw):
                continue  # expired or deleted between SCAN and the read
            state[key.decode()[len(prefix):]] = Value(kind, _normalise(kind, raw))
        return state
    finally:
        client.close()


def _normalise(kind: str, raw: Any) -> Any:
    if kind == "hash":
        return tuple(sorted(raw.items()))
    if kind == "zset":
        return tuple((member, float(score)) for member, score in raw)
    if kind == "set":
        return tuple(sorted(raw))
    if kind == "list":
        return tuple(raw)
    if kind == "stream":  # payloads only: ids are wall-clock, order across shards is scheduling
        return tuple(sorted(tuple(sorted(fields.items())) for _id, fields in raw))
    return raw


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def digest(state: State) -> str:
    """A short fingerprint of a dump, to see cheaply whether it still changes."""
    h = hashlib.blake2b(digest_size=12)
    for name in sorted(state):
        h.update(name.encode() + b"\0" + repr(state[name]).encode() + b"\1")
    return h.hexdigest()


def count_families(state: State) -> Counter:
    return Counter(family(name) for name in state)


# --- the diff ------------------------------------------------------------------------------


def diff_states(expected: State, actual: State, expected_label: str = "expected",
                actual_label: str = "actual", examples: int = 3) -> str | None:
    """None when equal; else a report: per family the keys only in one run and the keys
    whose value differs (counts, first names), then a short diff of the first few keys."""
    only_expected = sorted(set(expected) - set(actual))
    only_actual = sorted(set(actual) - set(expected))
    differ = sorted(name for name in set(expected) & set(actual) if expected[name] != actual[name])
    if not (only_expected or only_actual or differ):
        return None
    families = sorted({family(n) for n in [*expected, *actual]})
    lines = [(f"{len(only_expected) + len(only_actual) + len(differ)} of {len(set(expected) | set(actual))} "
              f"keys differ between {expected_label} and {actual_label} "
              f"({len(differ)} with other values, {len(only_expected)} only in {expected_label}, "
              f"{len(only_actual)} only in {actual_label}):")]
    for fam in families:
        total = sum(1 for n in set(expected) | set(actual) if family(n) == fam)
        d = [n for n in differ if family(n) == fam]
        e = [n for n in only_expected if family(n) == fam]
        a = [n for n in only_actual if family(n) == fam]
        if not (d or e or a):
            lines.append(f"  {fam}: {total} keys, all equal")
            continue
        parts = []
        if d:
            parts.append(f"{len(d)} differ (e.g. {', '.join(d[:examples])})")
        if e:
            parts.append(f"{len(e)} only in {expected_label} (e.g. {', '.join(e[:examples])})")
        if a:
            parts.append(f"{len(a)} only in {actual_label} (e.g. {', '.join(a[:examples])})")
        lines.append(f"  {fam}: {total - len(d) - len(e) - len(a)} of {total} keys equal; " + "; ".join(parts))
    shown = 0
    seen_families: set[str] = set()
    for name in differ:  # one example per family first, then more
        if family(name) in seen_families:
            continue
        seen_families.add(family(name))
        lines.append(f"  -- {name}:")
        lines.extend("     " + line for line in value_diff(expected[name], actual[name], expected_label,
                                                             actual_label))
        shown += 1
        if shown >= 6:
            break
    return "\n".join(lines)


def assert_same_state(expected: State, actual: State, expected_label: str, actual_label: str,
                      context: str = "") -> None:
    """Fail with the diff report only (no traceback through dumps of a thousand keys)."""
    import pytest

    report = diff_states(expected, actual, expected_label, actual_label)
    if report is not None:
        pytest.fail(report + (f"\n  ({context})" if context else ""), pytrace=False)


def value_diff(expected: Value, actual: Value, expected_label: str = "expected",
               actual_label: str = "actual", limit: int = 6) -> list[str]:
    """A few lines saying how two values of one key differ (JSON blobs by path)."""
    if expected.kind != actual.kind:
        return [f"type {expected.kind} in {expected_label}, {actual.kind} in {actual_label}"]
    if expected.kind == "string":
        return _blob_diff(expected.data, actual.data, limit)
    if expected.kind == "hash":
        ours, theirs = dict(expected.data), dict(actual.data)
        out = _keyed_diff(ours, theirs, expected_label, actual_label, limit, field="field")
        for name in sorted(set(ours) & set(theirs)):
            if ours[name] != theirs[name] and len(out) < limit:
                out.extend(f"field {_show(name)}: {line}" for line in _blob_diff(ours[name], theirs[name], 2))
        return out[:limit]
    if expected.kind == "zset":
        ours, theirs = dict(expected.data), dict(actual.data)
        out = _keyed_diff(ours, theirs, expected_label, actual_label, limit, field="member")
        changed = [m for m in sorted(set(ours) & set(theirs)) if ours[m] != theirs[m]]
        if changed:
            out.append(f"{len(changed)} of {len(ours)} scores differ, e.g. " + ", ".join(
                f"{_show(m)} {ours[m]!r} vs {theirs[m]!r}" for m in changed[:3]))
        if not out:
            out.append("same members and scores in another order")
        return out[:limit]
    ours_c, theirs_c = Counter(expected.data), Counter(actual.data)
    missing, extra = list((ours_c - theirs_c).elements()), list((theirs_c - ours_c).elements())
    out = [(f"{len(expected.data)} entries in {expected_label}, {len(actual.data)} in {actual_label}; "
            f"{len(missing)} only in {expected_label}, {len(extra)} only in {actual_label}")]
    out.extend(f"only in {expected_label}: {_entry(e)}" for e in missing[:2])
    out.extend(f"only in {actual_label}: {_entry(e)}" for e in extra[:2])
    if not (missing or extra):
        out.append("same entries in another order")
    return out[:limit]


def _keyed_diff(ours: dict, theirs: dict, expected_label: str, actual_label: str, limit: int,
                field: str) -> list[str]:
    out = []
    missing, extra = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    if missing:
        out.append(f"{len(missing)} {field}s only in {expected_label}: {', '.join(map(_show, missing[:4]))}")
    if extra:
        out.append(f"{len(extra)} {field}s only in {actual_label}: {', '.join(map(_show, extra[:4]))}")
    return out[:limit]


def _entry(entry) -> str:
    text = " ".join(f"{_show(k)}={_show(v)}" for k, v in entry)
    return text if len(text) <= 200 else text[:200] + "…"


def _blob_diff(ours: bytes, theirs: bytes, limit: int) -> list[str]:
    try:
        a, b = orjson.loads(ours), orjson.loads(theirs)
    except (orjson.JSONDecodeError, TypeError):
        try:  # customer profiles are msgpack (online_models.keys): compare them field by field too
            a, b = msgpack.unpackb(ours), msgpack.unpackb(theirs)
        except (ValueError, TypeError, msgpack.ExtraData):
            return [_byte_diff(ours, theirs)]
    paths = list(_json_paths(a, b, "$"))
    if not paths:
        return ["same JSON, other bytes: " + _byte_diff(ours, theirs)]
    lines = [f"{len(paths)} JSON paths differ" + (":" if paths else "")]
    lines.extend(f"{path}: {_short(x)} vs {_short(y)}" for path, x, y in paths[: max(1, limit - 1)])
    return lines


def _json_paths(a: Any, b: Any, path: str) -> Iterable[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                yield f"{path}.{k}", a.get(k, "<absent>"), b.get(k, "<absent>")
            elif a[k] != b[k]:
                yield from _json_paths(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and len(a) <= 64:
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                yield from _json_paths(x, y, f"{path}[{i}]")
    elif a != b or type(a) is not type(b):
        yield path, a, b


def _byte_diff(ours: bytes, theirs: bytes) -> str:
    at = next((i for i, (x, y) in enumerate(zip(ours, theirs)) if x != y), min(len(ours), len(theirs)))
    lo = max(0, at - 30)
    return (f"{len(ours)} vs {len(theirs)} bytes, first difference at byte {at}: "
            f"{ours[lo:at + 40]!r} vs {theirs[lo:at + 40]!r}")


def _short(value: Any) -> str:
    text = orjson.dumps(value).decode() if not isinstance(value, str) else value
    return text if len(text) <= 120 else text[:120] + "…"


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    text = str(value)
    return text if len(text) <= 80 else text[:80] + "…"


# --- waiting for a flow to settle ----------------------------------------------------------


def flow_metrics(redis_url: str, prefix: str) -> dict[str, int]:
    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.hgetall(f"{prefix}:{{metrics}}:flow")
    finally:
        client.close()
    return {k.decode(): int(v) for k, v in raw.items()}


def wait_until_settled(redis_url: str, prefix: str, produced: int, *, quiet_s: float = 7.0,
                       timeout: float = 120.0, since_ms: int | None = None,
                       alive: Callable[[], bool] | None = None,
                       describe: Callable[[], str] | None = None) -> State:
    """Wait until the flow has parsed at least ``produced`` messages and its state has stopped
    changing, and return that state.

    "Stopped" means: no batch has parsed a message for ``quiet_s`` seconds (the flow metrics'
    ``updated_ms``), and two dumps one second apart are equal. ``quiet_s`` is longer than the
    flow's idle-partition rule (flows/steps.py ``Watermarks.idle_ms`` = 5 s) plus a clock
    tick, because once every partition has gone quiet the churn clock moves to the newest
    partition and may still fire alerts. ``alive`` (e.g. ``FlowHandle.alive``) turns a dead
    flow into an immediate failure with ``describe()`` (e.g. its log). ``since_ms`` (wall time
    the flows were started): a batch must have been parsed after it, because the message count
    is cumulative over executions: after kill -9 restarts it has reached ``produced`` before the
    last execution has re-read what the killed ones never committed (a slow start then looked
    "quiet").
    """
    deadline = time.monotonic() + timeout
    last: tuple[str, State] | None = None
    while True:
        if alive is not None and not alive():
            raise AssertionError(f"the flow of {prefix} died before settling:\n{describe() if describe else ''}")
        metrics = flow_metrics(redis_url, prefix)
        parsed, updated = metrics.get("messages", 0), metrics.get("updated_ms", 0)
        quiet = time.time() * 1000 - updated >= quiet_s * 1000
        fresh = since_ms is None or updated >= since_ms
        if parsed >= produced and quiet and fresh:
            state = dump_state(redis_url, prefix)
            fingerprint = digest(state)
            if last is not None and last[0] == fingerprint:
                return state
            last = (fingerprint, state)
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the flow of {prefix} did not settle within {timeout:.0f} s: parsed {parsed} of {produced} "
                f"messages, last batch {time.time() - updated / 1000:.1f} s ago"
                + (f"\n{describe()[-3000:]}" if describe else ""))
        time.sleep(1.0)


def recovery_progress(recovery_dir: str) -> tuple[int, int, int] | None:
    """(executions started, epoch the latest one resumed at, last epoch committed) of a flow's
    recovery partition (bytewax's sqlite; one process: ``part-0``), or None while it cannot be
    read. An execution resumes at the epoch after the last one committed, so an execution
    has made a snapshot once ``committed >= resumed``."""
    import sqlite3
    from pathlib import Path

    parts = sorted(Path(recovery_dir).glob("part-*.sqlite3"))
    if not parts:
        return None
    db = sqlite3.connect(f"file:{parts[0]}?mode=ro", uri=True, timeout=5)
    try:
        latest = db.execute("SELECT ex_num, resume_epoch FROM exs ORDER BY ex_num DESC LIMIT 1").fetchone()
        committed = db.execute("SELECT MAX(commit_epoch) FROM commits").fetchone()[0]
        started = db.execute("SELECT COUNT(*) FROM exs").fetchone()[0]
    except sqlite3.OperationalError:  # locked, or not created yet
        return None
    finally:
        db.close()
    if latest is None:
        return (0, 0, -1)
    return (started, latest[1], -1 if committed is None else committed)


def snapshot_since(recovery_dir: str, executions_before: int) -> bool:
    """A flow started after ``executions_before`` executions has committed a snapshot."""
    progress = recovery_progress(recovery_dir)
    return progress is not None and progress[0] > executions_before and progress[2] >= progress[1]


def executions(recovery_dir: str) -> int:
    progress = recovery_progress(recovery_dir)
    return progress[0] if progress else 0


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__)
        return 2
    url, a, b = argv
    report = diff_states(dump_state(url, a), dump_state(url, b), a, b)
    print(report or f"every key under {a} equals its twin under {b}")
    return 1 if report else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
