"""Scale: the flow's cost per event and its Redis bytes per customer at a small and a large customer count.

    omnirec bench scale [--events 200000] [--small 5000] [--large 200000] [--json]

For each customer count, on a fresh broker: ``--events`` envelopes of that many shoppers
(``bench.common.compact_events``: the same mix of event types and the same span of event time
whatever the count, so a per-event cost compares like with like), then

1. the bare bytewax keyed pass over the same topics (``bench.ceiling_flow``): the ceiling;
2. the real flow, 1 worker, as ``omnirec flow`` runs it (``bench.throughput.run_real``).

Per run: CPU seconds (user + system, from /proc) from the first output to the last message,
per message; events/s over the same span; RSS at the end. Then, of the flow's Redis state:
MEMORY USAGE of a sample of customer and alias profile keys (``bench.memory.sample_usage``),
scaled by the number of such keys, per distinct customer; INFO used_memory before and after
the run is printed beside it (the Redis is shared, so that delta is noisier).

Goals (issue 12): cpu_growth = large ÷ small CPU per event ≤ 1.2; cpu_ratio_vs_ceiling = bare-pass
CPU per event ÷ the flow's, at the large count, ≥ 0.3; gib_per_million_customers at the large
count ≤ 0.4.
"""

from __future__ import annotations

import os

from bench import common as c
from bench.memory import sample_usage
from bench.throughput import run_ceiling, run_real

DAYS = 28.0  # below the flow's 30-day lateness bound
GOALS = {"cpu_growth": 1.2, "cpu_ratio_vs_ceiling": 0.3, "gib_per_million_customers": 0.4}


def per_message(run: dict) -> float:
    """CPU µs per message, from the first output to the end (start-up excluded)."""
    cpu = run["busy_cpu_s"] if run.get("busy_cpu_s") is not None else run["cpu_s"]
    return cpu * 1e6 / run["messages"]


def redis_bytes(r, prefix: str, customers: int, sample: int) -> dict:
    """MEMORY USAGE of the profiles (customer and alias keys), per distinct customer."""
    n_cust, cust_mem, cust_len = sample_usage(r, f"{prefix}:{{c:*}}:profile", sample)
    n_alias, alias_mem, _ = sample_usage(r, f"{prefix}:{{a:*}}:profile", sample)
    cust_mean = sum(cust_mem) / len(cust_mem) if cust_mem else 0.0
    alias_mean = sum(alias_mem) / len(alias_mem) if alias_mem else 0.0
    total = cust_mean * n_cust + alias_mean * n_alias
    per_customer = total / max(customers, 1)
    return {"customer_keys": n_cust, "alias_keys": n_alias, "bytes_per_profile_key": cust_mean,
            "value_bytes_per_profile": sum(cust_len) / len(cust_len) if cust_len else 0.0,
            "redis_bytes_per_customer": per_customer,
            "gib_per_million_customers": per_customer * 1_000_000 / 2**30}


def one_count(customers: int, events: int, timeout: float, sample: int, tag: str) -> dict:
    """Produce `events` events of `customers` shoppers, then the bare pass and the real flow."""
    prefixes = [c.new_prefix() for _ in range(2)]
    r = c.redis_client()
    try:
        with c.broker(f"scale-{tag}", prefixes[0]) as settings:
            catalog, stream = c.compact_events(customers, events, DAYS)
            info = c.produce_events(settings, stream, catalog=catalog, limit=events)
            if info.failed:
                raise RuntimeError(f"{info.failed} messages failed to produce")
            sentinels = c.produce_sentinels(settings, info.last_purchase, info.last_ts_ms, tag)
            total = len(catalog) + info.count + len(sentinels)
            c.log(f"{tag}: {info.count:,} events of {len(info.customers):,} customers over {DAYS:g} days; "
                  "bare pass …")
            ceiling = run_ceiling(settings, total, settings.flow_batch_size, timeout)
            c.log(f"  {ceiling['events_per_s']:,.0f} msg/s, {per_message(ceiling):.1f} µs CPU/msg; real flow …")
            used_before = r.info("memory")["used_memory"]
            flow_settings = settings.model_copy(update={"key_prefix": prefixes[1]})
            real = run_real(flow_settings, total, sentinels, timeout, tag=tag)
            used_after = r.info("memory")["used_memory"]
            c.log(f"  {real['events_per_s']:,.0f} msg/s, {per_message(real):.1f} µs CPU/msg")
            memory = redis_bytes(r, prefixes[1], len(info.customers), sample)
        return {"customers": len(info.customers), "events": info.count, "messages": total, "days": DAYS,
                "cpu_us_per_event": per_message(real), "ceiling_cpu_us_per_event": per_message(ceiling),
                "events_per_s": real["events_per_s"], "ceiling_events_per_s": ceiling["events_per_s"],
                "rss_mib": real["rss_mib"], "ceiling_rss_mib": ceiling["rss_mib"],
                "dead_letters": real.get("dead_letters"),
                "used_memory_delta_per_customer": (used_after - used_before) / max(len(info.customers), 1),
                **memory}
    finally:
        for prefix in prefixes:
            c.delete_prefix(prefix)
        r.close()


def main(argv: list[str] | None = None) -> dict:
    p = c.parser(__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=200_000, help="events at each customer count (default 200k)")
    p.add_argument("--small", type=int, default=5_000, help="customers of the small run (default 5k)")
    p.add_argument("--large", type=int, default=200_000, help="customers of the large run (default 200k)")
    p.add_argument("--sample", type=int, default=1000, help="profile keys sampled with MEMORY USAGE")
    p.add_argument("--timeout", type=float, default=900, help="seconds per run")
    args = p.parse_args(argv)

    small = one_count(args.small, args.events, args.timeout, args.sample, "small")
    large = one_count(args.large, args.events, args.timeout, args.sample, "large")
    result = {
        "events": args.events, "customers_small": small["customers"], "customers_large": large["customers"],
        "cpu_us_per_event_small": small["cpu_us_per_event"], "cpu_us_per_event_large": large["cpu_us_per_event"],
        "cpu_growth": large["cpu_us_per_event"] / small["cpu_us_per_event"],
        "ceiling_cpu_us_per_event": large["ceiling_cpu_us_per_event"],
        "cpu_ratio_vs_ceiling": large["ceiling_cpu_us_per_event"] / large["cpu_us_per_event"],
        "events_per_s_small": small["events_per_s"], "events_per_s_large": large["events_per_s"],
        "rss_mib_small": small["rss_mib"], "rss_mib_large": large["rss_mib"],
        "redis_bytes_per_customer_small": small["redis_bytes_per_customer"],
        "redis_bytes_per_customer_large": large["redis_bytes_per_customer"],
        "gib_per_million_customers": large["gib_per_million_customers"],
        "goals": GOALS, "small": small, "large": large,
    }
    result["met"] = {"cpu_growth": result["cpu_growth"] <= GOALS["cpu_growth"],
                     "cpu_ratio_vs_ceiling": result["cpu_ratio_vs_ceiling"] >= GOALS["cpu_ratio_vs_ceiling"],
                     "gib_per_million_customers":
                         result["gib_per_million_customers"] <= GOALS["gib_per_million_customers"]}
    rows = [[name, run["customers"], run["events"], run["cpu_us_per_event"], run["ceiling_cpu_us_per_event"],
             run["ceiling_cpu_us_per_event"] / run["cpu_us_per_event"], run["events_per_s"],
             run["ceiling_events_per_s"], run["rss_mib"], run["redis_bytes_per_customer"],
             run["gib_per_million_customers"]] for name, run in (("small", small), ("large", large))]
    c.out.print(c.table(
        f"Flow cost at two customer counts, {args.events:,} events each (ceiling: bare bytewax keyed pass, same run)",
        ["run", "customers", "events", "flow CPU µs/msg", "bare CPU µs/msg", "bare ÷ flow", "flow msg/s",
         "bare msg/s", "flow RSS MiB", "Redis B/customer", "GiB per M customers"], rows,
        caption=(f"cpu_growth {result['cpu_growth']:.2f} (goal ≤ 1.2); bare ÷ flow CPU at the large count "
                 f"{result['cpu_ratio_vs_ceiling']:.3f} (goal ≥ 0.3); {result['gib_per_million_customers']:.3f} "
                 f"GiB per million customers (goal ≤ 0.4); {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")))
    c.finish("scale", result, args.json)
    return result


if __name__ == "__main__":
    main()
