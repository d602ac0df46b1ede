"""Run every benchmark, then render the plots.

    python -m bench.run_all [--quick] [--json]

Each bench runs as its own `python -m bench.<name> --json` process (fresh broker each), so one
failing does not stop the rest; the summary table lists the headline figure beside its ceiling.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from bench import common as c

QUICK = {
    "throughput": ["--events", "50000", "--profile"],
    "latency": ["--customers", "500", "--duration", "3", "--step", "2", "--profile"],
    "freshness": ["--probes", "60"],
    "memory": ["--customers", "20000", "--days", "7"],
}
FULL = {
    "throughput": ["--profile"],
    "latency": ["--profile"],
    "freshness": [],
    "memory": [],
}


def main(argv: list[str] | None = None) -> dict:
    p = c.parser(__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small N everywhere (a few minutes in all)")
    p.add_argument("--only", default="", help="comma-separated subset, e.g. latency,memory")
    args = p.parse_args(argv)
    plan = QUICK if args.quick else FULL
    names = [n for n in plan if not args.only or n in args.only.split(",")]
    results: dict[str, dict] = {}
    timings: dict[str, float] = {}
    for name in names:
        cmd = [sys.executable, "-m", f"bench.{name}", *plan[name], "--json"]
        c.log(f"$ {' '.join(cmd[1:])}")
        t0 = time.monotonic()
        proc = subprocess.run(cmd, cwd=str(c.ROOT), stdout=subprocess.PIPE, text=True, check=False)
        timings[name] = time.monotonic() - t0
        lines = proc.stdout.strip().splitlines()
        print("\n".join(lines[:-1]), flush=True)  # the bench's own tables
        try:
            results[name] = json.loads(lines[-1]) if proc.returncode == 0 else {"error": proc.returncode}
        except (IndexError, ValueError):
            results[name] = {"error": "no JSON line"}
    try:
        from bench import plots

        pngs = plots.render()
    except Exception as exc:  # noqa: BLE001 - plots are a convenience
        c.log(f"[yellow]plots skipped: {exc}[/]")
        pngs = []

    def g(name: str, key: str):
        return results.get(name, {}).get(key)
    rows = [
        ["throughput, 1 worker (msg/s)", g("throughput", "events_per_s"), g("throughput", "ceiling_events_per_s"),
         g("throughput", "ratio"), "bare bytewax keyed pass"],
        ["throughput, 2 processes (msg/s)", g("throughput", "events_per_s_2proc"), g("throughput", "ceiling_events_per_s"),
         (g("throughput", "events_per_s_2proc") or 0) / (g("throughput", "ceiling_events_per_s") or 1), ""],
        ["API p99 at top rate, mixed (ms)", g("latency", "p99_ms"), "–", "–", ""],
        ["API max sustained rate (req/s)", g("latency", "max_rps"), g("latency", "ceiling_rps"), g("latency", "ratio"),
         "trivial FastAPI endpoint"],
        ["freshness p50 (s)", g("freshness", "p50_s"), g("freshness", "ceiling_broker_p50_s"),
         g("freshness", "ratio_p50"), "plain consumer (visible/ceiling)"],
        ["freshness p99 (s)", g("freshness", "p99_s"), g("freshness", "ceiling_broker_p99_s"), "–", ""],
        ["Redis GiB per 1M customers", g("memory", "gib_per_million_customers"), 0.4, "–", "goal, not a ceiling"],
    ]
    c.out.print(c.table(f"omnirec benchmarks ({'quick' if args.quick else 'full'})",
                        ["figure", "value", "ceiling", "ratio", "ceiling is"], rows,
                        caption="seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items())))
    summary = {"quick": args.quick, "seconds": timings, "plots": [str(x) for x in pngs],
               **{f"{n}": {k: v for k, v in r.items() if not isinstance(v, (list, dict)) or k == "error"}
                  for n, r in results.items()}}
    c.finish("run_all", summary, args.json)
    return summary


if __name__ == "__main__":
    main()
