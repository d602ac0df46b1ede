"""Shared helpers of the benchmarks: a fresh broker, a private Redis prefix, fast producing,
processes started and always stopped, percentiles, result files, rich tables.

Every bench prints its figures beside a ceiling measured in the same run; nothing here
asserts on time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import redis
from rich.console import Console
from rich.table import Table

from omnirec import stack
from omnirec.settings import Settings
from omnirec.simulate import DAY_MS, build_demo_catalog, format_ts, iter_events, to_message

RESULTS = Path(__file__).resolve().parent / "results"
LOGS = RESULTS / "logs"
ROOT = Path(__file__).resolve().parent.parent
console = Console(stderr=True)  # progress/log lines; tables go to stdout
out = Console(width=140)


def log(msg: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {msg}", highlight=False)


# ---------------------------------------------------------------- settings, Redis
def new_prefix() -> str:
    return f"bench-{uuid.uuid4().hex[:8]}"


def redis_url() -> str:
    return os.environ.get("OMNIREC_REDIS_URL", "redis://127.0.0.1:6379/0")


def make_settings(bootstrap: str, prefix: str, **extra: Any) -> Settings:
    return Settings(kafka_bootstrap=bootstrap, redis_url=redis_url(), key_prefix=prefix, **extra)


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(redis_url())


def delete_prefix(prefix: str) -> int:
    """Delete only this bench's keys (``prefix:*``)."""
    if not prefix.startswith("bench-"):
        raise ValueError(f"refusing to delete keys outside a bench prefix: {prefix!r}")
    r = redis_client()
    n = 0
    batch: list[bytes] = []
    for key in r.scan_iter(match=f"{prefix}:*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            n += r.unlink(*batch)
            batch.clear()
    if batch:
        n += r.unlink(*batch)
    r.close()
    return n


def count_keys(r: redis.Redis, pattern: str) -> int:
    return sum(1 for _ in r.scan_iter(match=pattern, count=5000))


# ---------------------------------------------------------------- processes
def spawn(argv: list[str], log_name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A child in its own process group, output to bench/results/logs/<log_name>."""
    LOGS.mkdir(parents=True, exist_ok=True)
    logf = open(LOGS / log_name, "wb")  # noqa: SIM115 - the child inherits it
    try:
        env = dict(env or os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env, cwd=str(ROOT))
    finally:
        logf.close()


def stop(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    if proc is not None:
        stack.stop_pid(proc.pid, timeout=timeout)


def tail(log_name: str, n: int = 30) -> str:
    try:
        return "\n".join((LOGS / log_name).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def rss_bytes(pid: int) -> int:
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss
    except Exception:  # noqa: BLE001 - fall back to /proc
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
    return 0


@contextmanager
def broker(name: str, prefix: str) -> Iterator[Settings]:
    """A fresh tansu on a free port with all topics; yields settings with a private prefix."""
    proc, bootstrap = stack.start_tansu(log_name=f"bench-tansu-{name}.log")
    try:
        settings = make_settings(bootstrap, prefix)
        stack.create_topics(settings)
        log(f"tansu pid {proc.pid} at {bootstrap}; Redis prefix {prefix}")
        yield settings
    finally:
        stack.stop_pid(proc.pid)


@contextmanager
def tempdir(name: str) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix=f"omnirec-bench-{name}-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def flow_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = stack.settings_env(settings)
    env.update(extra)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def start_real_flow(settings: Settings, recovery_base: Path, log_name: str, *,
                    process_id: int | None = None, addresses: str | None = None,
                    wrapper: list[str] | None = None) -> subprocess.Popen:
    """``python -m bytewax.run flows.dataflow:build_flow()`` as ``omnirec flow`` runs it
    (recovery initialised, -s whole seconds, -b 0)."""
    argv = stack.flow_argv(settings, workers=1, process_id=process_id, addresses=addresses,
                           recovery_dir=recovery_base)
    return spawn((wrapper or []) + argv, log_name, env=flow_env(settings))


# ---------------------------------------------------------------- events and producing
def producer(settings: Settings, **extra: Any):
    from confluent_kafka import Producer

    conf = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "linger.ms": 20,
        "batch.num.messages": 100_000,
        "batch.size": 4_000_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "acks": 1,
        "log_level": 3,
    }
    conf.update(extra)
    return Producer(conf)


def topic_for(settings: Settings, channel: str) -> str:
    return settings.topic_store if channel == "store" else settings.topic_web


class Produced:
    def __init__(self) -> None:
        self.count = 0
        self.failed = 0
        self.customers: set[str] = set()
        self.aliases: set[str] = set()
        self.last_ts_ms = 0
        self.last_purchase: dict | None = None
        self.seconds = 0.0


def produce_catalog(prod, settings: Settings, catalog: list[dict]) -> int:
    for p in catalog:
        prod.produce(settings.topic_catalog, key=p["sku"].encode(), value=orjson.dumps(p))
    return len(catalog)


def produce_events(settings: Settings, events: Iterable[dict], *, catalog: list[dict] | None = None,
                   limit: int | None = None) -> Produced:
    """Produce envelopes (and the catalog first) as fast as the broker takes them."""
    prod = producer(settings)
    info = Produced()
    errors: list = []

    def on_delivery(err, _msg):
        if err is not None:
            errors.append(err)

    t0 = time.perf_counter()
    if catalog:
        produce_catalog(prod, settings, catalog)
    for event in events:
        if limit is not None and info.count >= limit:
            break
        msg = to_message(event)
        while True:
            try:
                prod.produce(topic_for(settings, msg.channel), key=msg.key, value=msg.value,
                             on_delivery=on_delivery)
                break
            except BufferError:
                prod.poll(0.05)
        info.count += 1
        if event.get("customer_id"):
            info.customers.add(event["customer_id"])
        elif event.get("anonymous_id"):
            info.aliases.add(event["anonymous_id"])
        if event["type"] == "purchase":
            info.last_purchase = event
        if info.count % 10_000 == 0:
            prod.poll(0)
    remaining = prod.flush(120)
    info.seconds = time.perf_counter() - t0
    info.failed = len(errors) + remaining
    if info.last_purchase:
        info.last_ts_ms = _ts_ms(info.last_purchase["ts"])
    return info


def _ts_ms(ts: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


def history(customers: int, days: float, seed: int = 42) -> tuple[list[dict], Iterator[dict]]:
    """The demo catalogue and `days` of simulated history ending at today's midnight (UTC)."""
    catalog = build_demo_catalog()
    now = time.time_ns() // 1_000_000
    start = now - now % DAY_MS - int(days * DAY_MS)
    return catalog, iter_events(customers, start, seed, catalog, days=days)


COMPACT_MIX = (("product_view", 0.45), ("search", 0.05), ("add_to_cart", 0.15), ("purchase", 0.25),
               ("store_visit", 0.06), ("return", 0.02), ("survey", 0.02))


def compact_events(customers: int, events: int, days: float, seed: int = 42) -> tuple[list[dict], Iterator[dict]]:
    """`events` envelopes of `customers` shoppers spread evenly over `days` ending today:
    the same mix of event types whatever the customer count (so a per-event cost measured at
    5k and at 200k customers compares like with like), and fast enough for large counts."""
    import random

    catalog = build_demo_catalog()
    skus = [(p["sku"], p["price"]) for p in catalog]
    kinds, weights = zip(*COMPACT_MIX)
    now = time.time_ns() // 1_000_000
    start = now - now % DAY_MS - int(days * DAY_MS)
    step = days * DAY_MS / max(1, events)

    def generate() -> Iterator[dict]:
        rng = random.Random(seed)
        order = rng.sample(range(customers), min(customers, events))
        for i in range(events):
            # every customer at least once (when there are as many events), so that the count of
            # distinct customers is the one asked for; then at random
            who = order[i] if i < customers else rng.randrange(customers)
            kind = rng.choices(kinds, weights)[0]
            channel = "store" if kind == "store_visit" or (kind in ("purchase", "return") and who % 3 == 0) else "web"
            event = {"event_id": f"cx-{seed}-{i}", "type": kind, "ts": format_ts(start + int(i * step)),
                     "channel": channel, "customer_id": f"cx-{who:07d}",
                     "store_id": f"s-{who % 5 + 1}" if channel == "store" else None}
            if kind in ("purchase", "add_to_cart", "return"):
                picked = rng.sample(skus, 1 + (rng.random() < 0.5) + (rng.random() < 0.2)) if kind == "purchase" \
                    else [rng.choice(skus)]
                event["items"] = [{"sku": sku, "qty": 1, "price": price} for sku, price in picked]
                if kind == "purchase":
                    event["order_id"] = f"o-{i}"
            elif kind == "product_view":
                event["sku"] = rng.choice(skus)[0]
            elif kind == "search":
                event["query"] = "belt"
            elif kind == "survey":
                event["score"] = rng.randrange(11)
            yield event

    return catalog, generate()


def sentinel_purchase(template: dict, customer_id: str, ts_ms: int) -> dict:
    return {**template, "event_id": uuid.uuid4().hex, "customer_id": customer_id, "anonymous_id": None,
            "order_id": f"o-{uuid.uuid4().hex[:10]}", "ts": format_ts(ts_ms), "channel": "store",
            "session_id": None}


def produce_sentinels(settings: Settings, template: dict, ts_ms: int, tag: str) -> list[str]:
    """One purchase per partition of each event topic (explicit partition), each for its own
    sentinel customer: when every sentinel profile is in Redis, every partition was read."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 0})
    md = admin.list_topics(timeout=10).topics
    prod = producer(settings, **{"linger.ms": 0})
    ids = []
    for topic in settings.event_topics:
        for p in sorted(md[topic].partitions):
            cid = f"zz-sentinel-{tag}-{topic}-{p}"
            ev = sentinel_purchase(template, cid, ts_ms)
            prod.produce(topic, key=cid.encode(), value=orjson.dumps(ev), partition=p)
            ids.append(cid)
    prod.flush(30)
    return ids


class SentinelWatch:
    """Done when every sentinel was *processed*: its profile is in Redis, or the flow
    dead-lettered it (e.g. its timestamp judged too far ahead of / behind the stream).
    Dead-lettered sentinels are reported, so a figure never hides them."""

    def __init__(self, settings: Settings, sentinels: list[str]) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from online_models import keys

        self.scheme = keys.KeyScheme(settings.key_prefix)
        self.sentinels = sentinels
        self.keys = [self.scheme.customer(s) for s in sentinels]
        self.r = redis_client()
        self.dead: dict[str, str] = {}
        self.cons = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "bench-sentinel",
                              "enable.auto.commit": False, "fetch.wait.max.ms": 20, "log_level": 0})
        topic = settings.topic_deadletter
        md = self.cons.list_topics(topic, timeout=10).topics[topic]
        self.cons.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.partitions])
        self.wanted = {s.encode() for s in sentinels}

    def _drain(self) -> None:
        for msg in self.cons.consume(1000, 0.0):
            if msg.error() is None and msg.key() in self.wanted:
                reason = dict(msg.headers() or []).get("reason", b"").decode(errors="replace")
                self.dead[msg.key().decode()] = reason

    def done(self) -> bool:
        self._drain()
        missing = [k for s, k in zip(self.sentinels, self.keys) if s not in self.dead]
        return not missing or self.r.exists(*missing) == len(missing)

    def close(self) -> None:
        if self.dead:
            log(f"[yellow]{len(self.dead)} sentinel(s) dead-lettered by the flow: "
                f"{next(iter(self.dead.values()))}[/]")
        self.cons.close()
        self.r.close()


def topic_size(settings: Settings, topic: str) -> int:
    """Messages in a topic (sum of high watermarks): e.g. dead letters written so far."""
    from confluent_kafka import Consumer, TopicPartition

    cons = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "bench-size",
                     "enable.auto.commit": False, "log_level": 0})
    try:
        md = cons.list_topics(topic, timeout=10).topics[topic]
        return sum(cons.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in md.partitions)
    finally:
        cons.close()


# ---------------------------------------------------------------- profiling (py-spy)
def py_spy() -> str:
    import shutil

    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else (shutil.which("py-spy") or "py-spy")


def profile_top(raw_path: Path, n: int = 10) -> dict:
    """Own and cumulative sample counts per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    cum: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack_s, _, count_s = line.rpartition(" ")
        if not count_s.isdigit():
            continue
        cnt = int(count_s)
        frames = [_frame(f) for f in stack_s.split(";") if f and not f.startswith("process ")
                  and not f.startswith("thread ")]
        if not frames:
            continue
        total += cnt
        own[frames[-1]] += cnt
        for f in set(frames):
            if f not in ROOT_FRAMES:
                cum[f] += cnt
    def rows(counter):
        return [{"function": f, "samples": s, "share": s / total if total else 0.0}
                for f, s in counter.most_common(n)]
    # entry points (runpy, uvicorn.run, the event loop) sit in nearly every stack: not informative
    for f in [f for f, v in cum.items() if total and v / total >= 0.85]:
        del cum[f]
    project = Counter({f: v for f, v in cum.items()
                       if any(f"({pkg}/" in f for pkg in ("online_models", "flows", "api", "bench"))})
    return {"samples": total, "own": rows(own), "cumulative": rows(cum), "project": rows(project)}


ROOT_FRAMES = {"_run_code (<frozen runpy>)", "_run_module_as_main (<frozen runpy>)", "<module> (bytewax/run.py)"}
NATIVE = "<module> (bytewax/run.py)"


def _frame(frame: str) -> str:
    """'step (flows/steps.py:85)' → 'step (flows/steps.py)'; paths shortened to the package."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    if where == "run.py" or where.endswith("bytewax/run.py"):
        where = "bytewax/run.py"
    return f"{name} ({where})" if where else name


def frame_label(function: str) -> str:
    if function == NATIVE:
        return "native code under bytewax.run (Rust: timely, Kafka client, recovery sqlite)"
    return function



@contextmanager
def py_spy_record(pid: int, out_path: Path, rate: int = 97) -> Iterator[None]:
    """Sample every thread of `pid` (collapsed stacks into `out_path`) while the block runs."""
    import signal

    spy = subprocess.Popen([py_spy(), "record", "--pid", str(pid), "-r", str(rate), "-f", "raw",
                            "-o", str(out_path), "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield
    finally:
        try:
            os.kill(spy.pid, signal.SIGINT)
            spy.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            stop(spy)


# ---------------------------------------------------------------- statistics and output
def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    f = int(k)
    c = min(f + 1, len(s) - 1)
    return s[f] + (s[c] - s[f]) * (k - f)


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": percentile(values, 50), "p90": percentile(values, 90),
            "p99": percentile(values, 99), "max": max(values) if values else float("nan"),
            "mean": statistics.fmean(values) if values else float("nan")}


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "loadavg_1m": round(load[0], 2), "python": sys.version.split()[0],
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def table(title: str, columns: list[str], rows: list[list[Any]], caption: str | None = None) -> Table:
    t = Table(title=title, caption=caption, caption_justify="left")
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for row in rows:
        t.add_row(*[fmt(v) for v in row])
    return t


def fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def finish(name: str, result: dict[str, Any], as_json: bool) -> None:
    """Write bench/results/<name>.json; with --json the last stdout line is the object."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"bench": name, "machine": machine(), **result}
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    log(f"wrote {RESULTS / f'{name}.json'}")
    if as_json:
        sys.stdout.flush()
        print(json.dumps(result, default=str), flush=True)


def parser(description: str) -> argparse.ArgumentParser:
    import signal

    # a SIGTERM (e.g. `timeout`) unwinds through the finally blocks: children stopped, keys deleted
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    return p


def wait_until(pred, timeout: float, interval: float = 0.02, procs: Iterable[subprocess.Popen] = (),
               what: str = "condition") -> float:
    """Poll `pred` until true; returns the monotonic time it became true. Raises if a process dies."""
    deadline = time.monotonic() + timeout
    procs = list(procs)
    while True:
        if pred():
            return time.monotonic()
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"process {p.args[:4]} exited with {p.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
