"""Run every benchmark, then render the plots.

    python -m bench.run_all [--quick] [--all] [--json]

``--all`` adds the next-best-offer bench, the Ta-Feng quality evaluation (prequential,
leave-last-basket-out, and leave-last-basket-out with Romanov et al.'s filter; writes
bench/results/quality_tafeng.json and bench/results/quality_protocols.png; ~20 min)
and the CDNOW churn evaluation. Ta-Feng is prepared in /tmp/omni_out if missing.

Each bench runs as its own `python -m bench.<name> --json` process (fresh broker each), so one
failing does not stop the rest; the summary table lists the headline figure beside its ceiling.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

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
    "memory": ["--customers", "50000"],  # the default 100,000 exceeded the 480 s flow timeout on 2 shared cores
}


TAFENG_DIR = Path("/tmp/omni_out")
TAFENG = [str(TAFENG_DIR / "tafeng_events.jsonl"), "--catalog", str(TAFENG_DIR / "tafeng_catalog.jsonl")]
# name -> (module, args); run with --all, after the four benches
EXTRA = {
    "nbo": ("bench.nbo", []),
    "quality_prequential": ("omnirec.evaluate", [*TAFENG, "--protocol", "prequential"]),
    "quality_llbo": ("omnirec.evaluate", [*TAFENG, "--protocol", "leave-last-basket-out"]),
    "quality_romanov": ("omnirec.evaluate", [*TAFENG, "--protocol", "leave-last-basket-out",
                                             "--min-baskets", "5", "--min-item-count", "10"]),
    "churn": ("omnirec.evaluate_churn", []),
}
TIFU_KNN = {"recall@10": 0.1301, "ndcg@10": 0.1011}  # Hu et al., SIGIR 2020, Ta-Feng, last basket


def _prepare_tafeng() -> None:
    if not (TAFENG_DIR / "tafeng_events.jsonl").exists():
        subprocess.run([sys.executable, "-m", "omnirec.datasets", "tafeng", str(TAFENG_DIR)],
                       cwd=str(c.ROOT), check=True)


def _save_quality(results: dict[str, dict]) -> None:
    pre, llbo = results.get("quality_prequential", {}), results.get("quality_llbo", {})
    if "error" in pre or "error" in llbo or not pre or not llbo:
        return
    doc = {"dataset": "Ta-Feng", "k": pre.get("k", 10), "prequential": pre, "leave-last-basket-out": llbo,
           "published": {"TIFU-KNN": {"protocol": "leave-last-basket-out", **TIFU_KNN}},
           "goal": {"recall@10_prequential": 0.13, "cross_sell_vs_popularity": 2.0}}
    romanov = results.get("quality_romanov", {})
    if romanov and "error" not in romanov:
        doc["leave-last-basket-out, Romanov et al.'s filter"] = romanov
    (c.RESULTS / "quality_tafeng.json").write_text(json.dumps(doc, indent=1))
    try:
        from omnirec.quality_plot import plot_results

        runs = [pre, llbo] + ([romanov] if romanov and "error" not in romanov else [])
        plot_results(runs, c.RESULTS / "quality_protocols.png")
    except Exception as exc:  # noqa: BLE001 - plots are a convenience
        c.log(f"[yellow]quality plot skipped: {exc}[/]")


def main(argv: list[str] | None = None) -> dict:
    p = c.parser(__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small N everywhere (a few minutes in all)")
    p.add_argument("--all", action="store_true",
                   help="also nbo, Ta-Feng quality (both protocols) and CDNOW churn (~15 min more)")
    p.add_argument("--only", default="", help="comma-separated subset, e.g. latency,memory")
    args = p.parse_args(argv)
    plan = {n: (f"bench.{n}", a) for n, a in (QUICK if args.quick else FULL).items()}
    if args.all or any(n in EXTRA for n in args.only.split(",")):
        plan.update(EXTRA)
    names = [n for n in plan if not args.only or n in args.only.split(",")]
    if any(n.startswith("quality") for n in names):
        _prepare_tafeng()
    results: dict[str, dict] = {}
    timings: dict[str, float] = {}
    for name in names:
        module, extra = plan[name]
        cmd = [sys.executable, "-m", module, *extra, "--json"]
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
    _save_quality(results)
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
    if "nbo" in results:
        rows.append(["NBO value / oracle, last 1k of 20k", g("nbo", "value_vs_oracle"), 1.0,
                     g("nbo", "value_vs_oracle"), "oracle policy (true propensities)"])
    if "quality_prequential" in results:
        rec, pop = g("quality_prequential", "cross_sell_hit_rate@10"), \
            (results["quality_prequential"].get("baselines") or {}).get("popularity", {}).get("cross_sell_hit_rate@10")
        rows.append(["Ta-Feng Recall@10, prequential", g("quality_prequential", "recall@10"), 0.13, "–", "goal"])
        rows.append(["Ta-Feng cross-sell HR@10", rec, pop, (rec or 0) / (pop or 1), "popularity baseline"])
    if "quality_llbo" in results:
        rows.append(["Ta-Feng Recall@10, last basket", g("quality_llbo", "recall@10"), TIFU_KNN["recall@10"],
                     (g("quality_llbo", "recall@10") or 0) / TIFU_KNN["recall@10"], "TIFU-KNN published"])
    if "churn" in results:
        rows.append(["CDNOW churn AUC", g("churn", "auc"), g("churn", "auc_bgnbd"), "–",
                     f"BG/NBD (recency {g('churn', 'auc_recency')})"])
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
