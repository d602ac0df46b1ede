"""Memory: Redis bytes per customer and per item, flow RSS, extrapolated to 1M customers.

    python -m bench.memory [--customers 50000] [--days 7] [--json]

`--customers` simulated shoppers over `--days` of history go through the real flow (1 worker)
into Redis under a private prefix. MEMORY USAGE on a sample of up to 1,000 keys of each kind
(customer profiles, alias profiles/links, item neighbours) gives bytes per key; INFO
used_memory before/after is printed too (the Redis is shared, so that delta is noisier).
gib_per_million_customers = (customer bytes + alias bytes per customer) × 1M; the goal is ≤ 0.4.
Short histories make small profiles: the events per customer used are printed beside the figure.
The ceiling: the same number of customers as minimal keys (SET of a 16-byte value) measured with
MEMORY USAGE in the same Redis.
"""

from __future__ import annotations

import random
import threading
import time

from bench import common as c
from online_models import keys

GOAL_GIB = 0.4


def sample_usage(r, pattern: str, n: int, seed: int = 3) -> tuple[int, list[int], list[int]]:
    """(number of keys matching, MEMORY USAGE of a sample, value lengths of that sample)."""
    all_keys = list(r.scan_iter(match=pattern, count=5000))
    sample = random.Random(seed).sample(all_keys, min(n, len(all_keys)))
    pipe = r.pipeline(transaction=False)
    for k in sample:
        pipe.memory_usage(k, samples=0)
        pipe.strlen(k)
    out = pipe.execute() if sample else []
    return len(all_keys), [x or 0 for x in out[0::2]], [x or 0 for x in out[1::2]]


def field_bytes(r, pattern: str, n: int = 300) -> dict[str, float]:
    """Mean packed bytes per field of the stored customer profiles (where the bytes go), each
    field packed alone with msgpack as the profile codec packs it (approximately: names aside)."""
    import msgpack

    ks = list(r.scan_iter(match=pattern, count=5000))[:n]
    totals: dict[str, float] = {}
    vals = r.mget(ks) if ks else []
    for raw in vals:
        state = keys.decode_profile(raw) if raw else None
        if isinstance(state, str) or state is None:
            continue
        for name, v in state.to_dict().items():
            totals[name] = totals.get(name, 0.0) + len(msgpack.packb(v, default=str))
    return dict(sorted(((k, v / max(len(vals), 1)) for k, v in totals.items()), key=lambda kv: -kv[1]))


def main(argv: list[str] | None = None) -> dict:
    p = c.parser(__doc__.split("\n\n")[0])
    p.add_argument("--customers", type=int, default=50_000)  # 100k does not fit in 10 min on 2 shared cores
    p.add_argument("--days", type=float, default=7, help="history length (events per customer grow with it)")
    p.add_argument("--sample", type=int, default=1000)
    p.add_argument("--timeout", type=float, default=480)
    args = p.parse_args(argv)

    prefix = c.new_prefix()
    r = c.redis_client()
    scheme = keys.KeyScheme(prefix)
    rss_peak = 0
    try:
        used_before = r.info("memory")["used_memory"]
        with c.broker("memory", prefix) as settings, c.tempdir("memory-flow") as rdir:
            catalog, events = c.history(args.customers, args.days)
            c.log(f"producing {args.customers:,} customers × {args.days:g} days …")
            info = c.produce_events(settings, events, catalog=catalog)
            sentinels = c.produce_sentinels(settings, info.last_purchase, info.last_ts_ms, "mem")
            c.log(f"  {info.count:,} events in {info.seconds:.0f}s; {len(info.customers):,} customers, "
                  f"{len(info.aliases):,} anonymous ids; running the flow …")
            t0 = time.monotonic()
            flow = c.start_real_flow(settings, rdir, "bench-memory-flow.log")
            stop_sampling = threading.Event()

            def sample_rss() -> None:
                nonlocal rss_peak
                while not stop_sampling.is_set():
                    rss_peak = max(rss_peak, c.rss_bytes(flow.pid))
                    stop_sampling.wait(0.5)
            sampler = threading.Thread(target=sample_rss, daemon=True)
            sampler.start()
            try:
                watch = c.SentinelWatch(settings, sentinels)
                try:
                    c.wait_until(watch.done, args.timeout, interval=0.2, procs=[flow], what="all events in Redis")
                finally:
                    watch.close()
                rss_end = c.rss_bytes(flow.pid)
            except BaseException:
                c.log(c.tail("bench-memory-flow.log"))
                raise
            finally:
                stop_sampling.set()
                c.stop(flow)
            flow_s = time.monotonic() - t0
        used_after = r.info("memory")["used_memory"]

        n_cust, cust_mem, cust_len = sample_usage(r, f"{prefix}:{{c:*}}:profile", args.sample)
        fields = field_bytes(r, f"{prefix}:{{c:c*}}:profile")
        n_alias, alias_mem, _ = sample_usage(r, f"{prefix}:{{a:*}}:profile", args.sample)
        n_items, item_mem, item_len = sample_usage(r, f"{prefix}:{{i:*}}:neighbors", args.sample)
        n_cust -= len(sentinels)
        other = {k: r.memory_usage(k, samples=0) or 0
                 for k in (scheme.catalog(), scheme.popularity(), scheme.store_popularity_index())
                 if r.exists(k)}
        # ceiling: the smallest useful key per customer, same Redis, same key shape
        floor_prefix = c.new_prefix()
        pipe = r.pipeline(transaction=False)
        floor_keys = [f"{floor_prefix}:{{c:c-{i}}}:profile" for i in range(min(args.sample, 1000))]
        for k in floor_keys:
            pipe.set(k, b"0123456789abcdef")
        pipe.execute()
        pipe = r.pipeline(transaction=False)
        for k in floor_keys:
            pipe.memory_usage(k, samples=0)
        floor = c.summary([x or 0 for x in pipe.execute()])["mean"]
        c.delete_prefix(floor_prefix)
    finally:
        c.delete_prefix(prefix)

    cust = c.summary(cust_mem)
    alias = c.summary(alias_mem)
    item = c.summary(item_mem)
    aliases_per_customer = n_alias / max(n_cust, 1)
    per_customer = cust["mean"] + aliases_per_customer * (alias["mean"] if alias["n"] else 0.0)
    gib = per_customer * 1_000_000 / 2**30
    events_per_customer = info.count / max(len(info.customers), 1)
    result = {
        "customers_simulated": args.customers, "days": args.days, "events": info.count,
        "events_per_customer": events_per_customer, "flow_seconds": flow_s,
        "customer_keys": n_cust, "alias_keys": n_alias, "item_keys": n_items,
        "redis_bytes_per_customer": cust["mean"], "redis_bytes_per_customer_p99": cust["p99"],
        "profile_value_bytes_mean": c.summary(cust_len)["mean"],
        "redis_bytes_per_alias": alias["mean"], "aliases_per_customer": aliases_per_customer,
        "redis_bytes_per_customer_incl_aliases": per_customer,
        "redis_bytes_per_item": item["mean"], "item_value_bytes_mean": c.summary(item_len)["mean"],
        "shared_keys_bytes": other, "profile_field_bytes": fields,
        "used_memory_delta_bytes": used_after - used_before,
        "used_memory_delta_per_customer": (used_after - used_before) / max(n_cust, 1),
        "flow_rss_peak_mib": rss_peak / 2**20, "flow_rss_end_mib": rss_end / 2**20,
        "gib_per_million_customers": gib, "goal_gib_per_million": GOAL_GIB,
        "ceiling_bytes_per_key": floor, "ratio_vs_minimal_key": cust["mean"] / floor if floor else None,
    }
    rows = [
        ["customer profile", n_cust, cust["mean"], cust["p50"], cust["p99"], cust["max"], result["profile_value_bytes_mean"]],
        ["alias (anonymous) profile/link", n_alias, alias["mean"], alias["p50"], alias["p99"], alias["max"], "–"],
        ["item neighbours", n_items, item["mean"], item["p50"], item["p99"], item["max"], result["item_value_bytes_mean"]],
        ["ceiling: minimal key (16-byte value)", len(floor_keys), floor, "–", "–", "–", 16],
    ]
    c.out.print(c.table(
        f"Redis memory (MEMORY USAGE, sample ≤ {args.sample:,} keys per kind) — {args.customers:,} customers × "
        f"{args.days:g} days = {info.count:,} events ({events_per_customer:.1f} per identified customer)",
        ["key kind", "keys", "mean B", "p50 B", "p99 B", "max B", "value B"], rows,
        caption=(f"per customer incl. {aliases_per_customer:.2f} alias keys: {per_customer:,.0f} B → "
                 f"{gib:.3f} GiB per million customers (goal ≤ {GOAL_GIB}); ×{result['ratio_vs_minimal_key']:.1f} "
                 f"a minimal key. INFO used_memory delta {(used_after - used_before) / 2**20:,.1f} MiB "
                 f"(shared Redis). Flow RSS peak {rss_peak / 2**20:,.0f} MiB, end {rss_end / 2**20:,.0f} MiB; "
                 f"flow took {flow_s:.0f}s.")))
    top = list(fields.items())[:8]
    c.out.print(c.table("Where a customer profile's bytes go (mean JSON bytes per field, sample of 300)",
                        ["field", "bytes"], [[k, v] for k, v in top]))
    c.finish("memory", result, args.json)
    return result


if __name__ == "__main__":
    main()
