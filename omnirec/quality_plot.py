"""A plot of `omnirec evaluate` results: omnirec against the baselines, by protocol.

    omnirec evaluate FILE ... --plot out.png          # one run
    python -m bench.quality_plot out.png A.json B.json  # several runs (their --json output)

Three panels, one group of bars per run (protocol and filter): Recall@k, with each bar split
into the part that comes from repeat items (solid) and from explore items (hatched), NDCG@k
and HR@k. Needs matplotlib (the ``bench`` extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

COLORS = {"omnirec": "tab:blue", "popularity": "grey", "decayed_popularity": "silver",
          "top_personal": "tab:green", "gp_topfreq": "tab:orange", "tifu_knn": "tab:red"}


def run_label(result: dict[str, Any]) -> str:
    """The protocol and the filter of one run, for an axis label."""
    label = result.get("protocol", "?")
    f = result.get("filters") or {}
    if f.get("applied"):
        parts = []
        if f.get("min_baskets", 0) > 1:
            parts.append(f"≥{f['min_baskets']} baskets")
        if f.get("min_item_count", 0) > 1:
            parts.append(f"items ≥{f['min_item_count']}")
        if f.get("drop_noise_users"):
            parts.append("no noise users")
        label += "\n" + ", ".join(parts) + f"\n({f.get('customers', 0):,} customers)"
    return label


def plot_results(results: Sequence[dict[str, Any]], path: str | Path, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = results[0].get("k", 10)
    models = ["omnirec"] + [m for m in COLORS if m != "omnirec"
                            and any(m in r.get("baselines", {}) for r in results)]
    fig, axes = plt.subplots(1, 3, figsize=(max(12, 4.5 * len(results) + 6), 5))
    width = 0.8 / len(models)
    for ax, (key, name) in zip(axes, ((f"recall@{k}", f"Recall@{k}"), (f"ndcg@{k}", f"NDCG@{k}"),
                                      (f"hit_rate@{k}", f"HR@{k}"))):
        for i, model in enumerate(models):
            for j, result in enumerate(results):
                fig_ = result if model == "omnirec" else result.get("baselines", {}).get(model)
                if fig_ is None:
                    continue
                x = j + (i - (len(models) - 1) / 2) * width
                value = fig_[key]
                label = model if j == 0 else None
                if key.startswith("recall@") and "repeat" in fig_:
                    repeat = fig_["repeat"][f"recall_share@{k}"]
                    ax.bar(x, repeat, width, color=COLORS[model], label=label)
                    ax.bar(x, value - repeat, width, bottom=repeat, color=COLORS[model], alpha=0.45,
                           hatch="//", edgecolor="white")
                else:
                    ax.bar(x, value, width, color=COLORS[model], label=label)
                ax.text(x, value, f"{value:.3f}", ha="center", va="bottom", fontsize=6, rotation=90)
        ax.set_xticks(range(len(results)), [run_label(r) for r in results], fontsize=8)
        ax.set_title(name + (" (solid: repeat items, hatched: explore)" if key.startswith("recall@") else ""),
                     fontsize=9)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.15)
    axes[0].legend(fontsize=7, loc="upper left")
    names = sorted({Path(r.get("file", "?")).name for r in results})
    fig.suptitle(title or f"omnirec vs baselines by protocol, k = {k} ({', '.join(names)})")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
