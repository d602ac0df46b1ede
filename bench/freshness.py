"""Freshness: a purchase produced to Kafka → the customer visible in the API, under live traffic;
and the idle cost: the CPU the flow and the broker burn at a trickle of traffic.

    omnirec bench freshness [--probes 200] [--rate 1000] [--idle-rate 50] [--idle-seconds 20] [--json]

The flow and the API run. First `omnirec.simulate` plays `--idle-rate` events/s for
`--idle-seconds`: the CPU seconds (user + system, from /proc) of the flow and of the broker over
that window, as a share of one core (goal ≤ 10 %). Then it plays `--rate` events/s of background
traffic; each probe produces a purchase for a fresh customer id and polls
GET /v1/customers/{id} every 10 ms until it answers 200 (goal: p99 ≤ 1 s at 1,000 events/s). The
ceiling, measured on the same probes: a plain Kafka consumer assigned to the store topic sees the
same message (broker delivery alone). The background rate achieved is printed beside the target
(the simulator shares the machine).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid

import orjson

from bench import common as c
from bench.latency import API_KEY, start_uvicorn
from omnirec import stack
from omnirec.simulate import format_ts


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def broker_pid(bootstrap: str) -> int | None:
    """The tansu process listening at `bootstrap` (bench.common.broker starts it)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if any(b"tansu" in a for a in argv[:1]) and f"tcp://{bootstrap}".encode() in argv:
            return int(entry)
    return None


def idle_cost(pids: dict[str, int], seconds: float) -> dict:
    """The share of one core each process used over `seconds` of wall time."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    t0 = time.perf_counter()
    time.sleep(seconds)
    wall = time.perf_counter() - t0
    return {name: (cpu_seconds(pid) - before[name]) / wall for name, pid in pids.items()}


def simulate(env: dict, customers: int, rate: float, log_name: str) -> subprocess.Popen:
    return c.spawn([sys.executable, "-m", "omnirec.simulate", "--customers", str(customers), "--rate", str(rate)],
                   log_name, env=env)


class Watcher(threading.Thread):
    """Records when each probe message arrives at a plain consumer of the store topic."""

    def __init__(self, settings, marker: bytes, fetch_wait_ms: int | None = 5) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import OFFSET_END, Consumer, TopicPartition

        self.seen: dict[bytes, float] = {}
        self.marker = marker
        self.running = True
        conf = {"bootstrap.servers": settings.kafka_bootstrap, "group.id": "bench-fresh",
                "enable.auto.commit": False, "log_level": 0}
        if fetch_wait_ms is not None:
            conf["fetch.wait.max.ms"] = fetch_wait_ms
        self.cons = Consumer(conf)
        md = self.cons.list_topics(settings.topic_store, timeout=10).topics[settings.topic_store]
        self.cons.assign([TopicPartition(settings.topic_store, p, OFFSET_END) for p in md.partitions])

    def run(self) -> None:
        while self.running:
            msg = self.cons.poll(0.05)
            if msg is None or msg.error():
                continue
            key = msg.key() or b""
            if key.startswith(self.marker):
                self.seen[key] = time.perf_counter()
        self.cons.close()


def main(argv: list[str] | None = None) -> dict:
    p = c.parser(__doc__.split("\n\n")[0])
    p.add_argument("--probes", type=int, default=200)
    p.add_argument("--rate", type=float, default=1000, help="background events/s during the probes")
    p.add_argument("--idle-rate", type=float, default=50, help="events/s while the idle cost is measured")
    p.add_argument("--idle-seconds", type=float, default=20, help="wall seconds of the idle-cost window")
    p.add_argument("--bg-customers", type=int, default=2000)
    p.add_argument("--poll", type=float, default=0.010, help="API poll interval, s")
    p.add_argument("--probe-timeout", type=float, default=20)
    args = p.parse_args(argv)

    prefix = c.new_prefix()
    procs: list[subprocess.Popen] = []
    lat, broker_lat, default_lat, timeouts = [], [], [], 0
    sent: list[tuple[bytes, float]] = []
    try:
        with c.broker("freshness", prefix) as settings, c.tempdir("fresh-flow") as rdir:
            catalog, _ = c.history(1, 1)
            prod = c.producer(settings, **{"linger.ms": 0})
            c.produce_catalog(prod, settings, catalog)
            prod.flush(30)
            env = c.flow_env(settings, OMNIREC_API_KEYS=json.dumps({API_KEY: ["recommend", "profile", "admin"]}),
                             OMNIREC_RATE_LIMIT_PER_S="0")  # the bench measures the API, not its limiter
            procs.append(c.start_real_flow(settings, rdir, "bench-fresh-flow.log"))
            api_port = stack.free_port()
            procs.append(start_uvicorn("api.main:app", api_port, env, "bench-fresh-api.log"))
            flow_pid, tansu_pid = procs[0].pid, broker_pid(settings.kafka_bootstrap)
            if tansu_pid is None:
                raise RuntimeError(f"no tansu process found listening at {settings.kafka_bootstrap}")
            def produced() -> int:
                return c.topic_size(settings, settings.topic_web) + c.topic_size(settings, settings.topic_store)

            trickle = simulate(env, args.bg_customers, args.idle_rate, "bench-fresh-simulate-idle.log")
            size0 = produced()
            c.wait_until(lambda: produced() >= size0 + args.idle_rate, 180, interval=0.5, procs=[trickle],
                         what="the simulator's trickle to flow")
            time.sleep(2)  # the flow catches up with the start of the trickle
            c.log(f"idle cost: {args.idle_rate:g} ev/s for {args.idle_seconds:g} s …")
            size1, t_idle = produced(), time.perf_counter()
            idle = idle_cost({"flow": flow_pid, "broker": tansu_pid}, args.idle_seconds)
            idle_rate = (produced() - size1) / (time.perf_counter() - t_idle)
            c.stop(trickle)
            c.log(f"  flow {idle['flow']:.1%} + broker {idle['broker']:.1%} of a core at {idle_rate:.0f} ev/s achieved")
            procs.append(simulate(env, args.bg_customers, args.rate, "bench-fresh-simulate.log"))
            bg0 = produced()
            c.wait_until(lambda: produced() >= bg0 + args.rate, 180, interval=0.5, procs=procs,
                         what="the background traffic to flow")
            bg_start, t_bg = produced(), time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", api_port, timeout=5)
            headers = {"Authorization": f"Bearer {API_KEY}"}

            def status(path: str) -> int:
                nonlocal conn
                try:
                    conn.request("GET", path, headers=headers)
                    resp = conn.getresponse()
                    resp.read()
                    return resp.status
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", api_port, timeout=5)
                    return 0

            c.wait_until(lambda: status("/readyz") == 200, 300, interval=0.2, procs=procs, what="API ready")
            watcher = Watcher(settings, b"fresh-")
            watcher.start()
            default_watcher = Watcher(settings, b"fresh-", fetch_wait_ms=None)  # as bytewax's source
            default_watcher.start()
            time.sleep(3)  # let background traffic flow and the flow settle
            rng = random.Random(5)
            template = {"type": "purchase", "channel": "store", "store_id": "s-1", "anonymous_id": None}
            c.log(f"{args.probes} probes under {args.rate:g} ev/s background traffic …")
            for i in range(args.probes):
                cid = f"fresh-{uuid.uuid4().hex[:12]}"
                prod_item = rng.choice(catalog)
                event = {**template, "event_id": uuid.uuid4().hex, "customer_id": cid,
                         "order_id": f"o-{uuid.uuid4().hex[:10]}", "ts": format_ts(time.time_ns() // 1_000_000),
                         "items": [{"sku": prod_item["sku"], "qty": 1, "price": prod_item["price"]}]}
                path = f"/v1/customers/{cid}"
                t0 = time.perf_counter()
                prod.produce(settings.topic_store, key=cid.encode(), value=orjson.dumps(event))
                prod.poll(0)
                deadline = t0 + args.probe_timeout
                while True:
                    if status(path) == 200:
                        lat.append(time.perf_counter() - t0)
                        break
                    if time.perf_counter() > deadline:
                        timeouts += 1
                        break
                    for proc in procs:
                        if proc.poll() is not None:
                            raise RuntimeError(f"{proc.args[:4]} exited with {proc.returncode}")
                    time.sleep(args.poll)
                    prod.poll(0)
                sent.append((cid.encode(), t0))
                if (i + 1) % 50 == 0:
                    c.log(f"  {i + 1} probes, p50 so far {c.percentile(lat, 50) * 1000:.0f} ms")
                time.sleep(rng.uniform(0.0, 0.1))  # no phase lock with the flow's epochs
            time.sleep(1.0)  # late arrivals at the default-config consumer
            watcher.running = default_watcher.running = False
            for key, t0 in sent:
                if key in watcher.seen:
                    broker_lat.append(watcher.seen[key] - t0)
                if key in default_watcher.seen:
                    default_lat.append(default_watcher.seen[key] - t0)
            prod.flush(10)
            del prod
            bg = c.topic_size(settings, settings.topic_web) + c.topic_size(settings, settings.topic_store)
            bg_rate = (bg - bg_start) / (time.perf_counter() - t_bg)
    finally:
        for proc in reversed(procs):
            c.stop(proc)
        c.delete_prefix(prefix)

    s, b, d = c.summary(lat), c.summary(broker_lat), c.summary(default_lat)
    result = {"probes": args.probes, "background_rate": args.rate, "background_messages": bg,
              "timeouts": timeouts, "p50_s": s["p50"], "p90_s": s["p90"], "p99_s": s["p99"], "max_s": s["max"],
              "ceiling_broker_p50_s": b["p50"], "ceiling_broker_p99_s": b["p99"],
              "ratio_p50": s["p50"] / b["p50"] if b["n"] else None,
              "default_consumer_p50_s": d["p50"], "default_consumer_p99_s": d["p99"],
              "background_rate_achieved": bg_rate,
              "idle_rate": args.idle_rate, "idle_rate_achieved": idle_rate,
              "idle_flow_core_share": idle["flow"], "idle_broker_core_share": idle["broker"],
              "idle_core_share": idle["flow"] + idle["broker"],
              "fetch_wait_ms": settings.flow_fetch_wait_ms,
              "goals": {"p99_s<=1": s["p99"] <= 1.0, "idle_core_share<=0.10": idle["flow"] + idle["broker"] <= 0.10},
              "samples_s": lat, "broker_samples_s": broker_lat}
    rows = [["produce → visible in API", s["n"], s["p50"] * 1000, s["p90"] * 1000, s["p99"] * 1000, s["max"] * 1000],
            ["ceiling: plain consumer, fetch.wait.max.ms=5", b["n"], b["p50"] * 1000, b["p90"] * 1000, b["p99"] * 1000,
             b["max"] * 1000],
            ["plain consumer, librdkafka default fetch.wait.max.ms", d["n"], d["p50"] * 1000, d["p90"] * 1000,
             d["p99"] * 1000, d["max"] * 1000]]
    c.out.print(c.table(
        f"Freshness, {args.probes} probes, background {args.rate:g} ev/s live traffic (ms)",
        ["path", "n", "p50", "p90", "p99", "max"], rows,
        caption=(f"ratio p50 visible / broker delivery: {result['ratio_p50'] or float('nan'):.1f}×; "
                 f"timeouts ({args.probe_timeout:g} s): {timeouts}; API polled every {args.poll * 1000:g} ms")))
    c.out.print(c.table(
        f"Idle cost at {args.idle_rate:g} ev/s ({idle_rate:.0f} achieved), {args.idle_seconds:g} s window",
        ["process", "share of one core"],
        [["flow", f"{idle['flow']:.1%}"], ["broker (tansu)", f"{idle['broker']:.1%}"],
         ["together (goal ≤ 10 %)", f"{idle['flow'] + idle['broker']:.1%}"]],
        caption=f"fetch.wait.max.ms {settings.flow_fetch_wait_ms}; background during probes: {bg_rate:.0f} ev/s "
                f"achieved of {args.rate:g}"))
    c.finish("freshness", result, args.json)
    return result


if __name__ == "__main__":
    main()
