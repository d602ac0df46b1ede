"""Fit the ranking blend weights (``ranking.Weights``) on validation splits in event time.

    omnirec fit-weights STREAM[,CATALOG] [STREAM[,CATALOG] ...] [--context home|cart]
                        [--validation-share 0.3] [--json]
    python -m omnirec.fit_weights ...

The procedure (docs/weights.md), the same for any retailer's data:

1. Each stream is replayed through the flow's engine in event time (``evaluate.Evaluator``, the
   prequential protocol). Its last ``--validation-share`` of event time is the validation split:
   at each purchase there (every ``--every``-th, to bound the cost) the list of ``--context`` is
   asked for its ``CANDIDATE_DEPTH`` best candidates, with every candidate's parts (the signals
   ``Weights`` blend):

   - ``home`` (the home page): purchases of a customer who bought before; the labels are the
     distinct SKUs bought;
   - ``cart`` (the till and product pages): purchases of two items or more, the last one hidden
     and the others the basket, as ``omnirec evaluate`` scores cross-sell; the label is the
     hidden item. The till's tiers and penalties (``ranking._Till``) are kept as ranked.

   The engine keeps learning the stream as it goes (what it would know online). The simple
   baselines, GP-TopFreq and popularity (their cart variants: the basket left out), are scored at
   the same points.
2. Coordinate ascent over the weights, from the current defaults: each weight in turn tries
   ``GRID`` multiples of itself (a zero weight tries ``GRID`` absolute values), keeping the best;
   at most ``ROUNDS`` sweeps, stopping after one that improves nothing. The objective is the geometric mean over streams of Recall@k ÷ the same
   points' strongest simple baseline (GP-TopFreq or popularity, whichever recalls more), so that
   no stream counts more for having easier baskets, and one set of weights serves every stream.
   The strongest baseline and the geometric mean keep one stream from steering the fit: with
   GP-TopFreq alone as the divisor, a stream without repeat purchases (GP-TopFreq ≈ 0.01) moved
   the arithmetic mean of ratios ten times as much as a grocery stream.
3. The chosen weights, each stream's Recall@k before and after, and GP-TopFreq's are printed
   (with ``--json``, the last line is one JSON object). They become the context's blend in
   ``ranking.FITTED`` by hand-copy, with the command that produced them in docs/weights.md.

Re-scoring the collected candidates is cheap (numpy), so the search costs seconds; collecting is
one prequential replay per stream, run in parallel (one process per stream, ``--workers``).
"""

from __future__ import annotations

import argparse
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from omnirec import evaluate
from omnirec.report import print_json_last
from omnirec.settings import Settings
from online_models import ranking
from online_models.customer import CustomerState
from online_models.events import Event, parse_ts

PARTS = tuple(f.name for f in fields(ranking.Weights))
CONTEXTS = ("home", "cart")
CANDIDATE_DEPTH = 150  # candidates kept per point: the bought items and the explore pool fit
VALIDATION_SHARE = 0.3
EVERY = 1
# Coarse steps to move far, fine ones (0.7 to 1.4) to settle: the coarse grid alone stopped at
# weights a finer step still improved on every stream (docs/weights.md).
GRID = (0.0, 0.25, 0.5, 0.7, 0.85, 1.0, 1.2, 1.4, 2.0, 4.0)
ROUNDS = 4  # at most; a sweep that improves nothing ends the search


@dataclass
class Point:
    """One validation purchase: the candidates' parts (rows: candidates, columns: PARTS), their
    SKUs' tie-break order, which candidates were bought, and how many distinct SKUs were."""

    parts: np.ndarray
    order: np.ndarray  # rank of each candidate's SKU among the point's (ties by SKU, as ranking)
    hit: np.ndarray
    n_bought: int
    tier: np.ndarray  # the till's tiers (ranked first; 0 everywhere else) and penalty multipliers (1)
    multiplier: np.ndarray


@dataclass
class Collected:
    name: str
    points: list[Point]
    gp_topfreq_recall: float
    popularity_recall: float

    @property
    def baseline_recall(self) -> float:
        """The strongest simple baseline's Recall@k at these points: the bar to beat."""
        return max(self.gp_topfreq_recall, self.popularity_recall)


class _Collector(evaluate.Evaluator):
    """Prequential replay that, after ``split_ts``, keeps each point's candidates (module doc, step 1)."""

    def __init__(self, k: int, split_ts: int, every: int, context: str, settings: Settings | None = None) -> None:
        super().__init__(k, settings, protocol="prequential")
        self.split_ts, self.every, self.context = split_ts, every, context
        self.replayer.every_signal = True  # a part the current blend leaves at 0 may be worth weighting
        self.points: list[Point] = []
        self.gp_hits = 0.0
        self.popularity_hits = 0.0
        self._seen = 0

    def evaluate(self, event: Event, key, state: CustomerState | None) -> None:
        if event.ts_ms < self.split_ts:
            return
        bought = list(dict.fromkeys(item.sku for item in event.items))
        if self.context == "home":
            if state is None or state.orders < 1:
                return
            basket, labels = (), set(bought)
        elif (held_out := evaluate.cross_sell_split(bought)) is not None:
            basket, labels = held_out[0], {held_out[1]}
        else:
            return
        self._seen += 1
        if self._seen % self.every:
            return
        request = ranking.Request(self.context, skus=basket, channel=event.channel, store_id=event.store_id,
                                  k=CANDIDATE_DEPTH, now_ms=event.ts_ms)
        suggestions = self.replayer.recommend_for(state, request)
        self.points.append(_point(suggestions, labels))
        gp = self.baselines.recommend("gp_topfreq", key, self.k, exclude=basket)
        self.gp_hits += len(labels.intersection(gp)) / len(labels)
        popular = self.baselines.recommend("popularity", key, self.k, exclude=basket)
        self.popularity_hits += len(labels.intersection(popular)) / len(labels)


def _point(suggestions: list[ranking.Suggestion], labels: set[str]) -> Point:
    skus = [s.sku for s in suggestions]
    parts = np.array([[s.features.get(part, 0.0) for part in PARTS] for s in suggestions], dtype=float)
    order = np.argsort(np.argsort(np.array(skus, dtype=object)))
    return Point(parts.reshape(len(skus), len(PARTS)), order, np.array([sku in labels for sku in skus], dtype=bool),
                 len(labels), np.array([s.tier for s in suggestions], dtype=int),
                 np.array([s.multiplier for s in suggestions], dtype=float))


def split_time(paths: list[Path], share: float) -> int:
    """The event time after which the last ``share`` of the stream's time span lies."""
    first = last = None
    for path in paths:
        with open(path, "rb") as f:
            for line in f:
                record = orjson.loads(line) if line.strip() else {}
                if record.get("type") == "product" or "ts" not in record:
                    continue
                ts = parse_ts(record["ts"])
                first = ts if first is None else min(first, ts)
                last = ts if last is None else max(last, ts)
    if first is None or last is None:
        raise ValueError(f"no timed events in {', '.join(map(str, paths))}")
    return int(last - share * (last - first))


def collect(stream: str, k: int = 10, share: float = VALIDATION_SHARE, every: int = EVERY,
            context: str = "home") -> Collected:
    """Replay one ``FILE[,CATALOG]`` and keep its validation points of ``context``."""
    file, _, catalog = stream.partition(",")
    paths = ([Path(catalog)] if catalog else []) + [Path(file)]
    settings = Settings()
    collector = _Collector(k, split_time([Path(file)], share), every, context, settings)
    collector.prequential(evaluate.read_records(paths, settings))
    n = max(1, len(collector.points))
    return Collected(Path(file).name, collector.points, collector.gp_hits / n, collector.popularity_hits / n)


def recall(points: list[Point], weights: np.ndarray, k: int) -> float:
    """Mean Recall@k of the points' candidates ranked by ``weights`` (ties by SKU)."""
    total = 0.0
    for point in points:
        if not len(point.hit):
            continue
        scores = (point.parts @ weights) * point.multiplier
        top = np.lexsort((point.order, -scores, point.tier))[:k]
        total += point.hit[top].sum() / point.n_bought
    return total / max(1, len(points))


def objective(collected: list[Collected], weights: np.ndarray, k: int) -> float:
    ratios = [max(recall(c.points, weights, k), 1e-9) / max(c.baseline_recall, 1e-9) for c in collected]
    return float(np.exp(np.mean(np.log(ratios))))


def fit(collected: list[Collected], start: ranking.Weights, k: int = 10) -> tuple[ranking.Weights, list[dict]]:
    """Coordinate ascent from ``start`` (module doc, step 2); returns the weights and the trace."""
    current = np.array([getattr(start, part) for part in PARTS], dtype=float)
    best = objective(collected, current, k)
    trace = [{"round": 0, "objective": round(best, 5)}]
    for sweep in range(1, ROUNDS + 1):
        for index, part in enumerate(PARTS):
            tries = [g * current[index] for g in GRID] if current[index] > 0 else list(GRID)
            for value in tries:
                trial = current.copy()
                trial[index] = value
                score = objective(collected, trial, k)
                if score > best + 1e-6:
                    best, current = score, trial
        trace.append({"round": sweep, "objective": round(best, 5)})
        if trace[-1]["objective"] <= trace[-2]["objective"]:
            break
    return replace(start, **{part: round(float(v), 4) for part, v in zip(PARTS, current, strict=True)}), trace


def run(streams: list[str], k: int = 10, share: float = VALIDATION_SHARE, every: int = EVERY,
        workers: int = 2, context: str = "home") -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=ctx) as pool:
        collected = list(pool.map(collect, streams, [k] * len(streams), [share] * len(streams),
                                  [every] * len(streams), [context] * len(streams)))
    start = ranking.FITTED[context]
    chosen, trace = fit(collected, start, k)
    start_v = np.array([getattr(start, p) for p in PARTS])
    chosen_v = np.array([getattr(chosen, p) for p in PARTS])
    per_stream = {c.name: {"points": len(c.points), "gp_topfreq_recall": round(c.gp_topfreq_recall, 4),
                           "popularity_recall": round(c.popularity_recall, 4),
                           "recall_start": round(float(recall(c.points, start_v, k)), 4),
                           "recall_chosen": round(float(recall(c.points, chosen_v, k)), 4)} for c in collected}
    floor = chosen.buy_again / (chosen.buy_again + chosen.due) if chosen.buy_again + chosen.due > 0 else 1.0
    return {"context": context, "k": k, "validation_share": share, "every": every, "start": asdict(start),
            "chosen": asdict(chosen),
            "buy_again_floor": round(floor, 4), "streams": per_stream, "trace": trace}


def cli(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m omnirec.fit_weights", description=__doc__.split("\n\n")[0])
    parser.add_argument("streams", nargs="+", help="FILE or FILE,CATALOG (JSONL of envelopes)")
    parser.add_argument("--context", choices=CONTEXTS, default="home",
                        help="home: home lists; cart: baskets with one item hidden (the till, product pages)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--validation-share", type=float, default=VALIDATION_SHARE)
    parser.add_argument("--every", type=int, default=EVERY, help="keep every N-th validation point")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", dest="as_json", action="store_true")
    args = parser.parse_args(argv)
    if not 0 < args.validation_share < 1:
        parser.error("--validation-share must be in (0, 1)")
    result = run(args.streams, args.k, args.validation_share, max(1, args.every), args.workers, args.context)
    print(f"chosen weights: {result['chosen']} (buy-again floor {result['buy_again_floor']})")
    for name, fig in result["streams"].items():
        print(f"  {name}: {fig}")
    if args.as_json:
        print_json_last(result)
    return result


if __name__ == "__main__":
    cli()
