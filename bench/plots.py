"""PNGs from bench/results/*.json: latency percentiles by rate, freshness histogram,
throughput vs ceiling bars, Redis bytes per key, Ta-Feng quality (quality_tafeng.json,
written by ``python -m bench.run_all --all`` from the two ``omnirec.evaluate`` runs).

    python -m bench.plots
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.common import RESULTS, log


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def render() -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: list[Path] = []

    lat = _load("latency")
    if lat and lat.get("per_rate"):
        rows = lat["per_rate"]
        endpoints = list(dict.fromkeys(r["endpoint"] for r in rows))
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharey=True)
        for ax, q in zip(axes, ("p50", "p90", "p99")):
            for ep in endpoints:
                pts = sorted((r["rate"], r[q]) for r in rows if r["endpoint"] == ep)
                ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=ep,
                        linestyle="--" if "trivial" in ep else "-")
            ax.set_title(f"{q} latency by request rate")
            ax.set_xlabel("requests/s (open loop)")
            ax.set_yscale("log")
            ax.axhline(50, color="grey", linewidth=0.8, linestyle=":")
        axes[0].set_ylabel("ms from scheduled send")
        axes[-1].legend(fontsize=8)
        fig.suptitle(f"API latency — max sustained mixed {lat.get('max_rps', 0):,.0f} req/s vs trivial "
                     f"{lat.get('ceiling_rps', 0):,.0f} req/s")
        fig.tight_layout()
        out.append(_save(fig, "latency_percentiles.png"))

    fr = _load("freshness")
    if fr and fr.get("samples_s"):
        fig, ax = plt.subplots(figsize=(8, 4.5))
        ax.hist([x * 1000 for x in fr["samples_s"]], bins=30, alpha=0.8, label="produce → visible in API")
        if fr.get("broker_samples_s"):
            ax.hist([x * 1000 for x in fr["broker_samples_s"]], bins=30, alpha=0.6,
                    label="ceiling: produce → plain consumer")
        ax.set_xlabel("ms")
        ax.set_ylabel("probes")
        ax.set_title(f"Freshness: p50 {fr['p50_s'] * 1000:.0f} ms, p99 {fr['p99_s'] * 1000:.0f} ms "
                     f"({fr['probes']} probes, {fr['background_rate']:g} ev/s background)")
        ax.legend()
        fig.tight_layout()
        out.append(_save(fig, "freshness_hist.png"))

    tp = _load("throughput")
    if tp and tp.get("runs"):
        fig, ax = plt.subplots(figsize=(8, 4.5))
        names = [r["name"] for r in tp["runs"]]
        vals = [r["events_per_s"] for r in tp["runs"]]
        bars = ax.barh(names, vals, color=["grey"] + ["tab:blue"] * (len(vals) - 1))
        for b, v in zip(bars, vals):
            ax.text(v, b.get_y() + b.get_height() / 2, f" {v:,.0f} ({v / vals[0]:.0%})", va="center")
        ax.invert_yaxis()
        ax.set_xlabel("messages/s")
        ax.set_title(f"Flow throughput vs bare-bytewax ceiling (N = {tp['events']:,} events)")
        ax.set_xlim(0, max(vals) * 1.3)
        fig.tight_layout()
        out.append(_save(fig, "throughput_vs_ceiling.png"))

    mem = _load("memory")
    if mem:
        fig, ax = plt.subplots(figsize=(8, 4))
        kinds = ["customer", "alias", "item", "minimal key"]
        vals = [mem["redis_bytes_per_customer"], mem["redis_bytes_per_alias"], mem["redis_bytes_per_item"],
                mem["ceiling_bytes_per_key"]]
        ax.bar(kinds, vals, color=["tab:blue", "tab:blue", "tab:green", "grey"])
        ax.set_ylabel("bytes per key (MEMORY USAGE)")
        ax.set_title(f"Redis: {mem['gib_per_million_customers']:.2f} GiB per million customers "
                     f"(goal ≤ {mem['goal_gib_per_million']})")
        fig.tight_layout()
        out.append(_save(fig, "memory_bytes_per_key.png"))

    q = _load("quality_tafeng")
    if q:
        out.append(_quality(plt, q))
    return out


TIFU_KNN = {"recall@10": 0.1301, "ndcg@10": 0.1011}  # Hu et al., SIGIR 2020, Ta-Feng, last basket


def _quality(plt, q: dict) -> Path:
    """omnirec vs the three baselines: Recall@10 and cross-sell HR@10 per protocol."""
    protocols = [p for p in ("prequential", "leave-last-basket-out") if q.get(p)]
    models = ["omnirec", "popularity", "decayed_popularity", "gp_topfreq"]
    colors = ["tab:blue", "grey", "silver", "tab:orange"]
    metrics = [("recall@10", "Recall@10"), ("cross_sell_hit_rate@10", "cross-sell HR@10")]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    width = 0.8 / len(models)
    for ax, (key, label) in zip(axes, metrics):
        for i, (m, col) in enumerate(zip(models, colors)):
            vals = [(q[p] if m == "omnirec" else q[p]["baselines"][m])[key] for p in protocols]
            xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(protocols))]
            bars = ax.bar(xs, vals, width, label=m, color=col)
            for b, v in zip(bars, vals):
                ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.3f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(protocols)), protocols)
        ax.set_title(label)
        if key == "recall@10":
            ax.axhline(TIFU_KNN["recall@10"], color="tab:red", linestyle="--", linewidth=1,
                       label="TIFU-KNN published 0.1301 (last basket)")
            ax.axhline(0.13, color="black", linestyle=":", linewidth=0.8, label="goal 0.13 (prequential)")
        else:
            for j, p in enumerate(protocols):
                goal = 2 * q[p]["baselines"]["popularity"][key]
                ax.hlines(goal, j - 0.45, j + 0.45, color="black", linestyle=":", linewidth=0.8,
                          label="goal 2× popularity" if j == 0 else None)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.35)
        ax.legend(fontsize=7, loc="upper left", ncol=2)
    pre = q.get("prequential") or {}
    fig.suptitle(f"Ta-Feng quality, k = {q.get('k', 10)} "
                 f"({pre.get('events', 0):,} events; prequential n = {pre.get('n_evaluated', 0):,})")
    fig.tight_layout()
    return _save(fig, "quality_tafeng.png")


def _save(fig, name: str) -> Path:
    import matplotlib.pyplot as plt

    path = RESULTS / name
    fig.savefig(path, dpi=110)
    plt.close(fig)
    log(f"wrote {path}")
    return path


if __name__ == "__main__":
    render()
