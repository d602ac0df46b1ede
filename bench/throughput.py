"""Flow throughput (Kafka → bytewax → Redis), beside the bare-bytewax ceiling over the same topics.

    python -m bench.throughput [--events 200000] [--no-2proc] [--profile] [--json]

1. N realistic envelopes (omnirec.simulate + the demo catalogue) are produced to a fresh
   tansu broker, then one sentinel purchase per partition of each event topic.
2. ceiling: ``bench.ceiling_flow`` (kafka in → orjson → key_on → stateful_map count → discard),
   done when its Redis counter reaches every message.
3. the real flow, 1 worker (``python -m bytewax.run flows.dataflow:build_flow()`` with recovery,
   -s 2 -b 0), done when every sentinel customer's profile is in Redis.
4. the real flow as two processes (-i 0/1 -a host:p1;host:p2), own recovery partitions each.
5. ``--profile``: the 1-worker run again under py-spy (sampling every thread); top 10 by own
   and by cumulative time.

Rates are messages / (done − first output), i.e. without interpreter start-up; the wall time
including start-up is printed too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench import common as c
from omnirec import stack
from online_models import keys

KIND = {"own": "own time", "cumulative": "cumulative time",
        "project": "cumulative time, project code only"}


def run_ceiling(settings, total: int, batch: int, timeout: float) -> dict:
    counter = f"{settings.key_prefix}:ceiling:count"
    r = c.redis_client()
    r.delete(counter)
    env = dict(os.environ, BENCH_BOOTSTRAP=settings.kafka_bootstrap, BENCH_REDIS_URL=c.redis_url(),
               BENCH_TOPICS=f"{settings.topic_web},{settings.topic_store},{settings.topic_catalog}",
               BENCH_COUNTER_KEY=counter, BENCH_BATCH=str(batch))
    with c.tempdir("ceiling") as rdir:
        stack.init_recovery(rdir)
        argv = [sys.executable, "-m", "bytewax.run", "bench.ceiling_flow:build()", "-w", "1",
                "-r", str(rdir), "-s", str(max(1, round(settings.snapshot_interval_s))), "-b", "0"]
        t_spawn = time.monotonic()
        proc = c.spawn(argv, "bench-ceiling-flow.log", env=env)
        try:
            def count() -> int:
                return int(r.get(counter) or 0)
            t_first = c.wait_until(lambda: count() > 0, timeout, procs=[proc], what="ceiling first output")
            first = _proc_stats(proc.pid)
            t_done = c.wait_until(lambda: count() >= total, timeout, procs=[proc], what="ceiling all messages")
            stats = {**_proc_stats(proc.pid), "cpu_s_first": first["cpu_s"]}
        except BaseException:
            c.log(c.tail("bench-ceiling-flow.log"))
            raise
        finally:
            c.stop(proc)
            r.delete(counter)
    return _rates("ceiling (bare bytewax)", total, t_spawn, t_first, t_done, stats)


def _proc_stats(pid: int) -> dict:
    """CPU seconds (user + system) and RSS of a running process, from /proc (Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        cpu_s = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    except (OSError, ValueError, IndexError):
        cpu_s = float("nan")
    return {"cpu_s": cpu_s, "rss_mib": c.rss_bytes(pid) / 2**20}


def _rates(name: str, total: int, t_spawn: float, t_first: float, t_done: float, stats: dict) -> dict:
    busy = max(t_done - t_first, 1e-9)
    return {"name": name, "messages": total, "seconds": busy, "wall_s": t_done - t_spawn,
            "startup_s": t_first - t_spawn, "events_per_s": total / busy,
            "cpu_s": stats.get("cpu_s"), "rss_mib": stats.get("rss_mib"),
            # CPU from the first output to the end: the work on the messages, without start-up
            "busy_cpu_s": stats["cpu_s"] - stats["cpu_s_first"] if "cpu_s_first" in stats else None}


def run_real(settings, total: int, sentinels: list[str], timeout: float, *, processes: int = 1,
             profile_out: Path | None = None, tag: str = "1w") -> dict:
    scheme = keys.KeyScheme(settings.key_prefix)
    r = c.redis_client()
    catalog_key = scheme.catalog()
    procs: list[subprocess.Popen] = []
    letters_before = c.topic_size(settings, settings.topic_deadletter)
    spy: subprocess.Popen | None = None
    with c.tempdir(f"flow-{tag}") as rdir:
        if processes == 1:
            addresses = None
        else:
            addresses = ";".join(f"127.0.0.1:{stack.free_port()}" for _ in range(processes))
        t_spawn = time.monotonic()
        try:
            for i in range(processes):
                procs.append(c.start_real_flow(
                    settings, rdir, f"bench-flow-{tag}-{i}.log",
                    process_id=i if addresses else None, addresses=addresses))
            if profile_out is not None:
                spy = subprocess.Popen(
                    [c.py_spy(), "record", "--pid", str(procs[0].pid), "-r", "97", "-f", "raw",
                     "-o", str(profile_out), "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
            t_first = c.wait_until(lambda: r.exists(catalog_key) > 0, timeout, procs=procs,
                                   what=f"{tag} first output")
            first = [_proc_stats(p.pid) for p in procs]
            watch = c.SentinelWatch(settings, sentinels)
            try:
                t_done = c.wait_until(watch.done, timeout, interval=0.02, procs=procs,
                                      what=f"{tag} sentinels processed")
            finally:
                watch.close()
            stats = [_proc_stats(p.pid) for p in procs]
        except BaseException:
            for i in range(processes):
                c.log(c.tail(f"bench-flow-{tag}-{i}.log"))
            raise
        finally:
            if spy is not None:
                try:
                    os.kill(spy.pid, signal.SIGINT)
                    spy.wait(30)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    c.stop(spy)
            for p in procs:
                c.stop(p)
    merged = {"cpu_s": sum(s["cpu_s"] for s in stats), "rss_mib": sum(s["rss_mib"] for s in stats),
              "cpu_s_first": sum(s["cpu_s"] for s in first)}
    name = "real flow, 1 worker" if processes == 1 else f"real flow, {processes} processes"
    if profile_out is not None:
        name += " (under py-spy)"
    res = _rates(name, total, t_spawn, t_first, t_done, merged)
    res["redis_keys"] = c.count_keys(r, f"{settings.key_prefix}:*")
    time.sleep(0.5)  # dead letters are produced asynchronously by the (now stopped) flow
    res["dead_letters"] = c.topic_size(settings, settings.topic_deadletter) - letters_before
    return res


def main(argv: list[str] | None = None) -> dict:
    p = c.parser(__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=200_000, help="envelopes to produce (default 200k)")
    p.add_argument("--days", type=float, default=28,
                   help="history length the events span (default 28: below the flow's 30-day "
                        "lateness bound; 90 shows the per-process watermark dead-lettering events)")
    p.add_argument("--no-2proc", action="store_true", help="skip the two-process run")
    p.add_argument("--profile", action="store_true", help="also run the 1-worker flow under py-spy")
    p.add_argument("--timeout", type=float, default=400, help="seconds per run")
    p.add_argument("--scale", nargs=2, type=int, metavar=("SMALL", "LARGE"),
                   help="the same number of events at two customer counts (e.g. 5000 100000): the "
                        "flow's CPU per event at each, beside the bare pass; cost must grow with "
                        "events, not customers")
    args = p.parse_args(argv)
    if args.scale:  # the same as `python -m bench.scale --small S --large L`
        from bench import scale

        return scale.main(["--small", str(args.scale[0]), "--large", str(args.scale[1]), "--events",
                           str(args.events), "--timeout", str(args.timeout), *(["--json"] if args.json else [])])

    prefixes = [c.new_prefix() for _ in range(4)]
    runs: list[dict] = []
    result: dict = {}
    prof = None
    try:
        with c.broker("throughput", prefixes[0]) as settings:
            customers = max(50, int(args.events / (0.9 * args.days)))  # ~1.1 events/customer/day
            catalog, events = c.history(customers, args.days)
            c.log(f"producing {args.events:,} events ({customers:,} simulated customers) + catalogue …")
            info = c.produce_events(settings, events, catalog=catalog, limit=args.events)
            if info.failed:
                raise RuntimeError(f"{info.failed} messages failed to produce")
            sentinels = c.produce_sentinels(settings, info.last_purchase, info.last_ts_ms, "tp")
            total = len(catalog) + info.count + len(sentinels)
            c.log(f"produced {total:,} messages in {info.seconds:.1f}s "
                  f"({info.count / info.seconds:,.0f}/s); {len(info.customers):,} customers, "
                  f"{len(info.aliases):,} anonymous ids")

            c.log("ceiling: bare bytewax keyed pass …")
            ceiling = run_ceiling(settings, total, settings.flow_batch_size, args.timeout)
            runs.append(ceiling)
            c.log(f"  {ceiling['events_per_s']:,.0f} msg/s")

            c.log("real flow, 1 worker …")
            s1 = settings.model_copy(update={"key_prefix": prefixes[1]})
            one = run_real(s1, total, sentinels, args.timeout, tag="1w")
            runs.append(one)
            c.log(f"  {one['events_per_s']:,.0f} msg/s")

            two = None
            if not args.no_2proc:
                c.log("real flow, 2 processes …")
                s2 = settings.model_copy(update={"key_prefix": prefixes[2]})
                two = run_real(s2, total, sentinels, args.timeout, processes=2, tag="2p")
                runs.append(two)
                c.log(f"  {two['events_per_s']:,.0f} msg/s")

            if args.profile:
                c.log("real flow, 1 worker, under py-spy …")
                s3 = settings.model_copy(update={"key_prefix": prefixes[3]})
                raw = c.RESULTS / "throughput_profile.txt"
                c.RESULTS.mkdir(parents=True, exist_ok=True)
                prof_run = run_real(s3, total, sentinels, args.timeout, profile_out=raw, tag="prof")
                runs.append(prof_run)
                if raw.exists():
                    prof = c.profile_top(raw)
                else:
                    c.log("[yellow]py-spy wrote no profile (ptrace not permitted?)[/]")

        ceil = ceiling["events_per_s"]
        result = {
            "events": info.count, "days": args.days, "messages": total,
        "dead_letters_1w": one.get("dead_letters"), "customers_simulated": customers,
            "distinct_customers": len(info.customers), "anonymous_ids": len(info.aliases),
            "produce_per_s": info.count / info.seconds,
            "events_per_s": one["events_per_s"], "ceiling_events_per_s": ceil,
            "ratio": one["events_per_s"] / ceil,
            "events_per_s_2proc": two["events_per_s"] if two else None,
            "speedup_2proc": (two["events_per_s"] / one["events_per_s"]) if two else None,
            "runs": runs, "profile": prof,
        }
    finally:
        for pre in prefixes:
            c.delete_prefix(pre)

    rows = []
    for run in runs:
        rows.append([run["name"], run["messages"], run["seconds"], run["wall_s"], run["events_per_s"],
                     run["events_per_s"] / ceil, run["cpu_s"] * 1e6 / run["messages"] if run["cpu_s"] else None,
                     run["rss_mib"], run.get("dead_letters", "–")])
    c.out.print(c.table(
        f"Flow throughput — N = {info.count:,} events ({args.days:g} days of history) + "
        f"{total - info.count:,} catalogue/sentinel messages",
        ["run", "messages", "busy s", "wall s", "msg/s", "× ceiling", "CPU µs/msg", "RSS MiB", "dead letters"],
        rows,
        caption=(f"ceiling = bare bytewax keyed pass over the same topics, same run; "
                 f"2 proc vs 1 worker speed-up: {result['speedup_2proc'] or float('nan'):.2f}×; "
                 f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")))
    if prof:
        for kind in ("own", "cumulative", "project"):
            c.out.print(c.table(f"py-spy top 10 by {KIND[kind]} ({prof['samples']:,} samples, all threads)",
                                ["function", "samples", "share"],
                                [[c.frame_label(r["function"]), r["samples"], f"{r['share']:.1%}"] for r in prof[kind]]))
    c.finish("throughput", result, args.json)
    return result


if __name__ == "__main__":
    main()
