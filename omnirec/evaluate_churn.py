"""Churn evaluation on real data: our online score against BG/NBD and recency, in one run.

    omnirec evaluate-churn [FILE.jsonl] [--calibration-end DATE --holdout-end DATE] [--json]
    python -m omnirec.evaluate_churn ...

Without a file, CDNOW_master.txt is read out of the ``lifetimes==0.11.3`` wheel
(``omnirec.datasets``; the package is never installed or imported) and turned into purchase
envelopes (same-day purchases merged). Protocol (Fader, Hardie & Lee 2005): calibration to
1997-09-30 (week 39), holdout to 1998-06-30 (week 78).

1. Replay the calibration events in event time through the domain code: one ``Rhythm`` per
   customer, ``N`` ``ChurnShard``s (value sketch, BG/NBD sample re-fitted weekly on event
   time, due-time index), watermark ticks at each day boundary.
2. At calibration end, score every customer with a calibration purchase and compute the AUC
   for "no purchase in the holdout" (ties count half).
3. Same run, same calibration data: BG/NBD fitted by maximum likelihood (scipy) and the AUCs
   of −E[purchases in the holdout] and of weeks since the last purchase.
4. Keep replaying the holdout with weekly watermark ticks: alerts per week and their precision
   (alerted customers who then did not buy again before the holdout end), overall and among the
   top tiers.

With ``--json`` the last line printed is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from omnirec.report import print_json_last
from online_models import churn, tiers
from online_models.events import DAY_MS, Event, Item, parse_ts

CDNOW_CALIBRATION_END = "1997-09-30"
CDNOW_HOLDOUT_END = "1998-06-30"
CDNOW_SAMPLE_MEMBER = "lifetimes/datasets/CDNOW_sample.txt"
PUBLISHED_SAMPLE = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}  # FHL 2005, ll −9582.4
WEEK_MS = 7 * DAY_MS
TOP_TIERS = ("platinum", "gold")


# --------------------------------------------------------------------------- reading


def _event(obj: dict[str, Any]) -> Event | None:
    """An envelope → Event, without the live stream's sanity window (history is old)."""
    try:
        kind = obj["type"]
        cid = obj.get("customer_id")
        if not cid or kind not in {"purchase", "return", "add_to_cart", "remove_from_cart", "page_view",
                                   "product_view", "search", "store_visit", "survey"}:
            return None
        items = tuple(
            Item(sku=str(it.get("sku", "?")), qty=float(it.get("qty", 1) or 1),
                 price=float(it.get("price", 0) or 0), category=it.get("category"))
            for it in (obj.get("items") or ())
        )
        return Event(event_id=str(obj.get("event_id") or ""), type=kind, ts_ms=parse_ts(obj["ts"]),
                     channel=obj.get("channel") or "web", customer_id=str(cid),
                     store_id=obj.get("store_id"), session_id=obj.get("session_id"),
                     order_id=obj.get("order_id"), items=items, sku=obj.get("sku"),
                     score=obj.get("score"))
    except Exception:  # noqa: BLE001 - a bad line is skipped and counted
        return None


def read_events(path: str | Path) -> tuple[list[Event], Counter[str]]:
    """Customer events of a JSONL file in event-time order, duplicates (event_id) dropped."""
    out: list[Event] = []
    skipped: Counter[str] = Counter()
    seen: set[str] = set()
    with open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                skipped["bad_json"] += 1
                continue
            if not isinstance(obj, dict) or obj.get("type") == "product":
                skipped["not_an_event"] += 1
                continue
            event = _event(obj)
            if event is None:
                skipped["not_a_customer_event"] += 1
                continue
            if event.event_id and event.event_id in seen:
                skipped["duplicate"] += 1
                continue
            seen.add(event.event_id)
            out.append(event)
    out.sort(key=lambda e: e.ts_ms)
    return out, skipped


def cdnow_file() -> Path:
    """CDNOW master as envelopes, converted once into the cache."""
    from omnirec import datasets

    target = datasets.cache_dir() / "cdnow_events.jsonl"
    if not target.is_file():
        datasets.cdnow_to_jsonl(target)
    return target


def _day_end_ms(text: str) -> int:
    """'YYYY-MM-DD' → the first millisecond after that day (UTC); other forms via parse_ts."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return parse_ts(text)
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1000) + DAY_MS


# --------------------------------------------------------------------------- AUC


def auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve (Mann–Whitney with average ranks for ties)."""
    pairs = sorted(zip(scores, labels), key=lambda p: p[0])
    rank_sum = 0.0
    positives = sum(1 for _, y in pairs if y)
    negatives = len(pairs) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    i = 0
    while i < len(pairs):
        j = i
        while j + 1 < len(pairs) and pairs[j + 1][0] == pairs[i][0]:
            j += 1
        avg_rank = (i + j) / 2 + 1
        rank_sum += avg_rank * sum(1 for k in range(i, j + 1) if pairs[k][1])
        i = j + 1
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


# --------------------------------------------------------------------------- BG/NBD (batch anchor)


def bgnbd_nll(log_params, x, t_x, T):
    import numpy as np
    from scipy.special import betaln, gammaln

    r, alpha, a, b = np.exp(log_params)
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = betaln(a, b + x) - betaln(a, b)
    a3 = -(r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        a4 = np.where(x > 0, np.log(a) - np.log(np.maximum(b + x - 1, 1e-12)) - (r + x) * np.log(alpha + t_x),
                      -np.inf)
    return -float(np.sum(a1 + a2 + np.logaddexp(a3, a4)))


def fit_bgnbd_scipy(x, t_x, T) -> dict[str, float]:
    """Maximum likelihood BG/NBD (Fader, Hardie & Lee 2005), times in weeks."""
    import numpy as np
    from scipy.optimize import minimize

    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    best = None
    for start in ([0.0, 0.0, 0.0, 0.0], [math.log(0.5), math.log(5.0), 0.0, math.log(3.0)]):
        res = minimize(bgnbd_nll, np.array(start), args=(x, t_x, T), method="Nelder-Mead",
                       options={"xatol": 1e-9, "fatol": 1e-9, "maxiter": 20000, "maxfev": 20000})
        if best is None or res.fun < best.fun:
            best = res
    r, alpha, a, b = (float(v) for v in np.exp(best.x))
    return {"r": r, "alpha": alpha, "a": a, "b": b, "loglik": -float(best.fun)}


def bgnbd_expected(params: dict[str, float], x, t_x, T, horizon: float):
    """E[purchases in (T, T + horizon]] given (x, t_x, T) (FHL 2005, eq. 10)."""
    import numpy as np
    from scipy.special import hyp2f1

    r, alpha, a, b = params["r"], params["alpha"], params["a"], params["b"]
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    if abs(a - 1) < 1e-9:
        a += 1e-6
    hyp = hyp2f1(r + x, b + x, a + b + x - 1, horizon / (alpha + T + horizon))
    head = (a + b + x - 1) / (a - 1) * (1 - ((alpha + T) / (alpha + T + horizon)) ** (r + x) * hyp)
    odds = np.where(x > 0, a / np.maximum(b + x - 1, 1e-12) * ((alpha + T) / (alpha + t_x)) ** (r + x), 0.0)
    return head / (1 + odds)


def cdnow_sample_summary(path: Path | None = None, end: str = CDNOW_CALIBRATION_END):
    """(x, t_x, T) in weeks of the CDNOW 1/10 sample: same-day merged, T to ``end``."""
    if path is None:
        from omnirec import datasets

        path = datasets.fetch_wheel_file(*datasets.CDNOW_PACKAGE, CDNOW_SAMPLE_MEMBER)
    end_day = date.fromisoformat(end)
    days: dict[str, set[date]] = defaultdict(set)
    with open(path) as fh:
        for line in fh:
            parts = line.split()
            if len(parts) != 5:
                continue
            ymd = parts[2]
            day = date(int(ymd[:4]), int(ymd[4:6]), int(ymd[6:]))
            if day <= end_day:
                days[parts[0]].add(day)
    x, t_x, T = [], [], []
    for customer in sorted(days):
        ordered = sorted(days[customer])
        x.append(len(ordered) - 1)
        t_x.append((ordered[-1] - ordered[0]).days / 7)
        T.append((end_day - ordered[0]).days / 7)
    return x, t_x, T


def fit_cdnow_sample(path: Path | None = None) -> dict[str, float]:
    return fit_bgnbd_scipy(*cdnow_sample_summary(path))


# --------------------------------------------------------------------------- replay


class Replay:
    """The domain code, driven as the flow drives it: rhythms per customer, shards, watermarks."""

    def __init__(self, shards: int = 4, threshold: float = 0.85, sample_size: int = churn.SAMPLE_SIZE,
                 refit_every_days: float = 7.0, horizon_weeks: float = 39.0) -> None:
        model = churn.ChurnModel(horizon_weeks=horizon_weeks)
        self.n_shards = shards
        self.shards = [churn.ChurnShard(threshold=threshold, sample_size=sample_size,
                                        refit_every_days=refit_every_days, model=model)
                       for _ in range(shards)]
        self.rhythms: dict[str, churn.Rhythm] = {}
        self.alerts: list[churn.Alert] = []

    def shard(self, customer_id: str) -> churn.ChurnShard:
        return self.shards[tiers.shard_of(customer_id, self.n_shards)]

    def apply(self, event: Event) -> None:
        rhythm = self.rhythms.get(event.customer_id)
        if rhythm is None:
            rhythm = self.rhythms[event.customer_id] = churn.Rhythm()
        rhythm.observe(event)
        self.alerts += self.shard(event.customer_id).update(event.customer_id, rhythm, event.ts_ms)

    def tick(self, watermark_ms: int) -> list[churn.Alert]:
        fired: list[churn.Alert] = []
        for shard in self.shards:
            fired += shard.advance(watermark_ms)
        self.alerts += fired
        return fired

    def run(self, events: Iterable[Event], tick_ms: int = DAY_MS, until_ms: int | None = None) -> None:
        """Apply events, ticking every shard at each ``tick_ms`` boundary of event time."""
        next_tick = None
        for event in events:
            if until_ms is not None and event.ts_ms >= until_ms:
                break
            if next_tick is None:
                next_tick = (event.ts_ms // tick_ms + 1) * tick_ms
            while event.ts_ms >= next_tick:
                self.tick(next_tick)
                next_tick += tick_ms
            self.apply(event)

    def refit_all(self, now_ms: int) -> None:
        for shard in self.shards:
            shard.refit(now_ms)

    def merged_tiers(self) -> tiers.ValueTiers:
        return tiers.PopulationSketch.merged(s.sketch for s in self.shards).tiers()


# --------------------------------------------------------------------------- the protocol


def run(file: str | Path | None = None, calibration_end: str | None = None,
        holdout_end: str | None = None, shards: int = 4, threshold: float = 0.85,
        sample_fit: bool = True) -> dict[str, Any]:
    started = time.perf_counter()
    path = Path(file) if file else cdnow_file()
    events, skipped = read_events(path)
    if not events:
        raise SystemExit(f"{path}: no customer events")
    first_ts, last_ts = events[0].ts_ms, events[-1].ts_ms
    if file is None:
        calibration_end = calibration_end or CDNOW_CALIBRATION_END
        holdout_end = holdout_end or CDNOW_HOLDOUT_END
    cal_end = _day_end_ms(calibration_end) if calibration_end else first_ts + (last_ts - first_ts) // 2
    hold_end = _day_end_ms(holdout_end) if holdout_end else last_ts + 1
    if not first_ts < cal_end < hold_end:
        raise SystemExit("need first event < calibration end < holdout end")
    horizon = (hold_end - cal_end) / WEEK_MS

    # 1. calibration replay
    replay = Replay(shards=shards, threshold=threshold, horizon_weeks=horizon)
    calibration = [e for e in events if e.ts_ms < cal_end]
    holdout = [e for e in events if cal_end <= e.ts_ms < hold_end]
    replay.run(calibration)
    replay.tick(cal_end - 1)
    replay.refit_all(cal_end)
    calibration_alerts = len(replay.alerts)

    # 2. our AUC at calibration end
    bought_in_holdout = {e.customer_id for e in holdout if e.type == "purchase"}
    customers = sorted(c for c, r in replay.rhythms.items() if r.purchases > 0)
    labels = [0 if c in bought_in_holdout else 1 for c in customers]
    ours = [replay.shard(c).model.score(replay.rhythms[c], cal_end) for c in customers]
    # BG/NBD summaries in weeks of whole days, T to the calibration end day (as the paper counts)
    end_day = (cal_end - 1) // DAY_MS
    x, t_x, T = [], [], []
    for c in customers:
        r = replay.rhythms[c]
        first_day, last_day = r.first_purchase_ts // DAY_MS, r.last_purchase_ts // DAY_MS
        x.append(r.repeat)
        t_x.append((last_day - first_day) / 7)
        T.append((end_day - first_day) / 7)

    # 3. batch anchors on the same calibration data
    fit = fit_bgnbd_scipy(x, t_x, T)
    expected = bgnbd_expected(fit, x, t_x, T, horizon)
    recency = [tt - tx for tt, tx in zip(T, t_x)]
    result: dict[str, Any] = {
        "file": str(path),
        "customers": len(customers),
        "events": len(events),
        "skipped": dict(skipped),
        "calibration_end": calibration_end or _iso(cal_end),
        "holdout_end": holdout_end or _iso(hold_end),
        "holdout_weeks": round(horizon, 2),
        "churn_rate": round(sum(labels) / len(labels), 4),
        "auc": round(auc(ours, labels), 4),
        "auc_bgnbd": round(auc([-float(e) for e in expected], labels), 4),
        "auc_recency": round(auc(recency, labels), 4),
        "auc_frequency": round(auc([-v for v in x], labels), 4),
        "bgnbd": {k: round(v, 4) for k, v in fit.items()},
        "online_params": [{k: round(v, 4) for k, v in s.model.params.to_dict().items()} for s in replay.shards],
        "shards": shards,
        "threshold": threshold,
        "calibration_alerts": calibration_alerts,
    }

    # 4. alerts over the holdout, weekly watermark ticks (events routed to a shard also move
    #    its clock, so alerts are counted by their event time, not by the tick that found them)
    before = len(replay.alerts)
    start = cal_end
    index = 0
    while start < hold_end:
        stop = min(start + WEEK_MS, hold_end)
        while index < len(holdout) and holdout[index].ts_ms < stop:
            replay.apply(holdout[index])
            index += 1
        replay.tick(stop - 1)
        start = stop
    fired = replay.alerts[before:]
    weeks = [0] * math.ceil(horizon)
    for alert in fired:
        weeks[min(len(weeks) - 1, int((alert.ts_ms - cal_end) // WEEK_MS))] += 1
    purchases_after: dict[str, int] = {}
    for e in holdout:
        if e.type == "purchase":
            purchases_after[e.customer_id] = max(purchases_after.get(e.customer_id, 0), e.ts_ms)
    def correct(alert: churn.Alert) -> bool:
        return purchases_after.get(alert.customer_id, 0) <= alert.ts_ms
    top = [a for a in fired if a.tier in TOP_TIERS]
    result["alerts"] = {
        "total": len(fired),
        "per_week": weeks,
        "per_week_mean": round(len(fired) / max(1, len(weeks)), 1),
        "precision": round(sum(map(correct, fired)) / len(fired), 4) if fired else None,
        "top_tier": len(top),
        "precision_top_tier": round(sum(map(correct, top)) / len(top), 4) if top else None,
        "by_tier": dict(Counter(a.tier for a in fired)),
        "example": fired[0].to_dict() if fired else None,
    }
    result["tiers"] = replay.merged_tiers().to_dict()
    if sample_fit and file is None:
        try:
            sample = fit_cdnow_sample()
            result["bgnbd_sample"] = {k: round(v, 4) for k, v in sample.items()}
            result["bgnbd_sample_published"] = PUBLISHED_SAMPLE
        except Exception as exc:  # noqa: BLE001 - reported, not fatal
            result["bgnbd_sample"] = {"error": str(exc)}
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def _iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc).date().isoformat()


# --------------------------------------------------------------------------- output


def render(result: dict[str, Any], stream=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=stream or sys.stdout, width=120)
    table = Table(title=(f"omnirec evaluate-churn: {Path(result['file']).name} — calibration to "
                         f"{result['calibration_end']}, holdout to {result['holdout_end']}"),
                  caption=(f"{result['customers']:,} customers, churn rate (no purchase in holdout) "
                           f"{result['churn_rate']:.1%}; {result['seconds']} s"))
    table.add_column("score")
    table.add_column("AUC (no purchase in holdout)", justify="right")
    table.add_row("omnirec churn score (online, event time)", f"{result['auc']:.4f}")
    table.add_row("BG/NBD −E[purchases in holdout] (batch MLE)", f"{result['auc_bgnbd']:.4f}")
    table.add_row("weeks since last purchase", f"{result['auc_recency']:.4f}")
    table.add_row("frequency (repeat purchases)", f"{result['auc_frequency']:.4f}")
    console.print(table)

    params = Table(title="BG/NBD parameters (weeks)")
    for col in ("fit", "r", "α", "a", "b", "log-lik"):
        params.add_column(col, justify="right" if col != "fit" else "left")
    fit = result["bgnbd"]
    params.add_row("batch MLE, calibration", *(f"{fit[k]:.4f}" for k in ("r", "alpha", "a", "b")),
                   f"{fit['loglik']:.1f}")
    for i, p in enumerate(result["online_params"]):
        params.add_row(f"online, shard {i} sample", *(f"{p[k]:.4f}" for k in ("r", "alpha", "a", "b")), "")
    sample = result.get("bgnbd_sample")
    if sample and "r" in sample:
        params.add_row("batch MLE, CDNOW_sample", *(f"{sample[k]:.4f}" for k in ("r", "alpha", "a", "b")),
                       f"{sample['loglik']:.1f}")
        pub = result["bgnbd_sample_published"]
        params.add_row("published (FHL 2005)", *(f"{pub[k]:.3f}" for k in ("r", "alpha", "a", "b")), "-9582.4")
    console.print(params)

    al = result["alerts"]
    alerts = Table(title=f"churn alerts over the holdout (threshold {result['threshold']}, weekly watermark)")
    alerts.add_column("figure")
    alerts.add_column("value", justify="right")
    alerts.add_row("alerts fired in the calibration period", f"{result['calibration_alerts']:,}")
    alerts.add_row("alerts fired in the holdout", f"{al['total']:,}")
    alerts.add_row("per week (mean)", f"{al['per_week_mean']}")
    alerts.add_row("per week (first 8)", " ".join(str(n) for n in al["per_week"][:8]))
    alerts.add_row("precision (no purchase after the alert)", _pct(al["precision"]))
    alerts.add_row("top-tier alerts (platinum, gold)", f"{al['top_tier']:,}")
    alerts.add_row("precision among top-tier", _pct(al["precision_top_tier"]))
    alerts.add_row("by tier", ", ".join(f"{k} {v}" for k, v in sorted(al["by_tier"].items())))
    console.print(alerts)
    if al.get("example"):
        ex = al["example"]
        console.print(f"example alert: {ex['customer_id']} tier {ex['tier']} score {ex['score']} "
                      f"value at risk {ex['value_at_risk']}: " + "; ".join(ex["reasons"]))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def main(file: str | Path | None = None, calibration_end: str | None = None,
         holdout_end: str | None = None, as_json: bool = False, **options: Any) -> dict[str, Any]:
    """`omnirec evaluate-churn [FILE] [--calibration-end D --holdout-end D] [--json]`."""
    result = run(file, calibration_end, holdout_end, **options)
    render(result)
    if as_json:
        print_json_last(result)
    return result


def cli(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m omnirec.evaluate_churn",
                                     description="Churn AUC of the online score vs BG/NBD and recency.")
    parser.add_argument("file", nargs="?", type=Path, default=None,
                        help="JSONL of event envelopes (default: CDNOW master from the lifetimes wheel)")
    parser.add_argument("--calibration-end", default=None, metavar="DATE")
    parser.add_argument("--holdout-end", default=None, metavar="DATE")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--threshold", type=float, default=0.85)
    parser.add_argument("--json", dest="as_json", action="store_true")
    args = parser.parse_args(argv)
    return main(args.file, args.calibration_end, args.holdout_end, args.as_json,
                shards=args.shards, threshold=args.threshold)


if __name__ == "__main__":
    cli()
