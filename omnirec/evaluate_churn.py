"""Churn evaluation on real data: our online score against BG/NBD and recency, in one run.

    omnirec evaluate-churn [FILE.jsonl] [--calibration-end DATE --holdout-end DATE] [--json]
    python -m omnirec.evaluate_churn ...

Without a file, CDNOW_master.txt is read out of the ``lifetimes==0.11.3`` wheel
(``omnirec.datasets``; the package is never installed or imported) and turned into purchase
envelopes (same-day purchases merged). Protocol (Fader, Hardie & Lee 2005): calibration to
1997-09-30 (week 39), holdout to 1998-06-30 (week 78).

1. Replay the calibration events in event time through the engine the flow runs
   (``online_models.engine.Runner``: parse, customers, population shards with their BG/NBD
   sample re-fitted weekly on event time, timer buckets, alert gates).
2. At calibration end, score every customer with a calibration purchase and compute the AUC
   for "no purchase in the holdout" (ties count half).
3. Same run, same calibration data: BG/NBD and Pareto/NBD fitted by maximum likelihood (scipy) and the AUCs
   of −E[purchases in the holdout] and of weeks since the last purchase.
4. Keep replaying the holdout, the clock moved to each week's end: alerts per week and their precision
   (alerted customers who then did not buy again before the holdout end), overall and among the
   top tiers.

With ``--json`` the last line printed is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from omnirec import replay as replay_file
from omnirec.report import print_json_last
from omnirec.settings import Settings
from online_models import churn, tiers
from online_models.clock import DAY_MS, WEEK_MS
from online_models.customer import CustomerState
from online_models.engine import Engine, Runner
from online_models.events import parse_ts
from online_models.messages import DeadLetter, Raw
from online_models.profile import Population

CDNOW_CALIBRATION_END = "1997-09-30"
CDNOW_HOLDOUT_END = "1998-06-30"
CDNOW_SAMPLE_MEMBER = "lifetimes/datasets/CDNOW_sample.txt"
PUBLISHED_SAMPLE = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}  # FHL 2005, ll −9582.4
TOP_TIERS = ("platinum", "gold")
HISTORY_SINCE = "1990-01-01"


# --------------------------------------------------------------------------- reading


def read_records(path: str | Path, settings: Settings) -> list[Raw]:
    """The file's lines as the records of a topic replayed in event time: sorted by their
    timestamp (history files are often sorted by customer), each on the topic of its channel.
    Nothing is parsed here beyond the sort key: the engine's parse step judges every line."""
    keyed: list[tuple[int, int, bytes]] = []
    with open(path, "rb") as fh:
        for index, line in enumerate(fh):
            line = line.strip()
            if line:
                keyed.append((_sort_key(line), index, line))
    keyed.sort()
    return list(replay_file.as_records((line for _, _, line in keyed), settings))


def _sort_key(line: bytes) -> int:
    try:
        return parse_ts(orjson.loads(line)["ts"])
    except Exception:  # noqa: BLE001 - a line the parser will dead-letter; it goes last
        return 2**62


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


def _pnbd_log_a0(r, alpha, s, beta, x, t_x, T):
    """log A0 of the Pareto/NBD likelihood (Fader & Hardie 2005 note, eqs. 19-20), stable in
    log space (as the lifetimes package computes it)."""
    import numpy as np
    from scipy.special import hyp2f1, logsumexp

    if alpha < beta:
        low, high, second = alpha, beta, r + x
    else:
        low, high, second = beta, alpha, s + 1.0
    rsx = r + s + x
    p1 = hyp2f1(rsx, second, rsx + 1.0, (high - low) / (high + t_x))
    p2 = hyp2f1(rsx, second, rsx + 1.0, (high - low) / (high + T))
    q1, q2 = high + t_x, high + T
    ones = np.ones_like(x)
    both = logsumexp([np.log(p1) + rsx * np.log(q2), np.log(p2) + rsx * np.log(q1)], axis=0, b=[ones, -ones])
    return both - rsx * np.log(q1 * q2)


def pareto_nbd_loglik(params, x, t_x, T):
    """Per-customer Pareto/NBD log-likelihood (Schmittlein, Morrison & Colombo 1987)."""
    import numpy as np
    from scipy.special import gammaln

    r, alpha, s, beta = params
    head = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
    log_a0 = _pnbd_log_a0(r, alpha, s, beta, x, t_x, T)
    tail = np.logaddexp(-(r + x) * np.log(alpha + T) - s * np.log(beta + T),
                        np.log(s) + log_a0 - np.log(r + s + x))
    return head + tail


def fit_pareto_nbd_scipy(x, t_x, T) -> dict[str, float]:
    """Maximum likelihood Pareto/NBD, times in weeks: the classic anchor beside BG/NBD."""
    import numpy as np
    from scipy.optimize import minimize

    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))

    def nll(log_params):
        value = -pareto_nbd_loglik(np.exp(log_params), x, t_x, T).sum()
        return value if np.isfinite(value) else 1e300

    # One start (heterogeneous, slow buyers), then a polish: each likelihood costs four 2F1 per customer.
    start = np.log([0.5, 10.0, 0.5, 10.0])
    best = minimize(nll, start, method="L-BFGS-B")
    best = minimize(nll, best.x, method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-6, "maxiter": 2000})
    r, alpha, s, beta = (float(v) for v in np.exp(best.x))
    return {"r": r, "alpha": alpha, "s": s, "beta": beta, "loglik": -float(best.fun)}


def pareto_nbd_expected(params: dict[str, float], x, t_x, T, horizon: float):
    """E[purchases in (T, T + horizon]] given (x, t_x, T) under Pareto/NBD."""
    import numpy as np
    from scipy.special import gammaln

    r, alpha, s, beta = params["r"], params["alpha"], params["s"], params["beta"]
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    if abs(s - 1) < 1e-9:
        s += 1e-6
    loglik = pareto_nbd_loglik((r, alpha, s, beta), x, t_x, T)
    first = (gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
             - (r + x) * np.log(alpha + T) - s * np.log(beta + T))
    second = np.log(r + x) + np.log(beta + T) - np.log(alpha + T)
    third = np.log((1 - ((beta + T) / (beta + T + horizon)) ** (s - 1)) / (s - 1))
    return np.exp(first + second + third - loglik)


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
    """The engine, run in process as the flow runs it (``online_models.engine.Runner``): the
    flow's parse, customers, population shards, timer buckets and alert gates."""

    def __init__(self, shards: int = 4, threshold: float = 0.85) -> None:
        # History older than the live stream's sanity bound is what this evaluates: the one
        # parser, told explicitly how old a timestamp may be.
        self.settings = Settings(churn_shards=shards, churn_threshold=threshold, churn_wall_clock=False,
                                 earliest_event_date=HISTORY_SINCE)
        self.runner = Runner(Engine(self.settings.engine()), on_output=self._output)
        self.alerts: list[churn.Alert] = []
        self.dead_letters: Counter[str] = Counter()

    def _output(self, message: Any) -> None:
        if isinstance(message, churn.Alert):
            self.alerts.append(message)
        elif isinstance(message, DeadLetter):
            self.dead_letters[re.sub(r"[\d.:TZ-]{6,}", "…", message.reason)] += 1

    @property
    def customers(self) -> dict[str, CustomerState]:
        return self.runner.states["customers"]

    def shard(self, customer_id: str) -> churn.PopulationShard:
        shard = tiers.shard_of(customer_id, self.settings.churn_shards)
        return self.runner.states["population"].get(f"shard:{shard}") or churn.PopulationShard()

    def feed(self, records: Iterable[Raw]) -> None:
        self.runner.feed_all(records)

    def advance(self, until_ms: int) -> None:
        """The stream's clock moves to ``until_ms`` (silence passes): due timers fire."""
        self.runner.advance_clock(until_ms)

    def score(self, customer_id: str, now_ms: int) -> float | None:
        """The score the API's profile shows: the customer's shard model on their rhythm."""
        return self.shard(customer_id).model.score(self.customers[customer_id].rhythm_view(), now_ms)

    def population(self) -> Population:
        """What the API holds of the population shards (models and merged sketches)."""
        states = self.runner.states["population"]
        return Population.merge(self.settings.churn_shards, {
            int(key.split(":")[1]): (state.model, state.sketch, state.small_sample_rows())
            for key, state in states.items()})


# --------------------------------------------------------------------------- the protocol


def run(file: str | Path | None = None, calibration_end: str | None = None,
        holdout_end: str | None = None, shards: int = 4, threshold: float = 0.85,
        sample_fit: bool = True) -> dict[str, Any]:
    started = time.perf_counter()
    path = Path(file) if file else cdnow_file()
    replay = Replay(shards=shards, threshold=threshold)
    records = read_records(path, replay.settings)
    stamps = [_sort_key(r.value) for r in records if _sort_key(r.value) < 2**62]
    if not stamps:
        raise SystemExit(f"{path}: no customer events")
    first_ts, last_ts = stamps[0], stamps[-1]
    if file is None:
        calibration_end = calibration_end or CDNOW_CALIBRATION_END
        holdout_end = holdout_end or CDNOW_HOLDOUT_END
    cal_end = _day_end_ms(calibration_end) if calibration_end else first_ts + (last_ts - first_ts) // 2
    hold_end = _day_end_ms(holdout_end) if holdout_end else last_ts + 1
    if not first_ts < cal_end < hold_end:
        raise SystemExit("need first event < calibration end < holdout end")
    horizon = (hold_end - cal_end) / WEEK_MS

    # 1. calibration replay, through the engine
    keyed = [(_sort_key(r.value), r) for r in records]
    calibration = [r for ts, r in keyed if ts < cal_end]
    holdout = [(ts, r) for ts, r in keyed if cal_end <= ts < hold_end or ts >= 2**62]
    replay.feed(calibration)
    replay.advance(cal_end - 1)
    calibration_alerts = len(replay.alerts)

    # 2. our AUC at calibration end
    customers = sorted(c for c, state in replay.customers.items() if state.orders > 0)
    before_holdout = {c: replay.customers[c].last_purchase_ts for c in customers}
    ours = [replay.score(c, cal_end) for c in customers]
    rhythms = {c: replay.customers[c].rhythm_view() for c in customers}
    # BG/NBD summaries in weeks of whole days, T to the calibration end day (as the paper counts)
    end_day = (cal_end - 1) // DAY_MS
    x, t_x, T = [], [], []
    for c in customers:
        r = rhythms[c]
        first_day, last_day = r.first_purchase_ts // DAY_MS, r.last_purchase_ts // DAY_MS
        x.append(r.repeat)
        t_x.append((last_day - first_day) / 7)
        T.append((end_day - first_day) / 7)

    # 3. batch anchors on the same calibration data
    fit = fit_bgnbd_scipy(x, t_x, T)
    expected = bgnbd_expected(fit, x, t_x, T, horizon)
    pnbd = fit_pareto_nbd_scipy(x, t_x, T)
    expected_pnbd = pareto_nbd_expected(pnbd, x, t_x, T, horizon)
    recency = [tt - tx for tt, tx in zip(T, t_x)]
    # 4. the holdout, through the engine, with the clock moved to each week's end
    before = len(replay.alerts)
    start, index = cal_end, 0
    while start < hold_end:
        stop = min(start + WEEK_MS, hold_end)
        batch = []
        while index < len(holdout) and holdout[index][0] < stop:
            batch.append(holdout[index][1])
            index += 1
        seen = len(replay.alerts)
        replay.feed(batch)
        replay.advance(stop - 1)
        # as the API reads alerts, live: the tier from the population as it is when they are raised
        population = replay.population()
        replay.alerts[seen:] = [replace(a, tier=population.tier_of(replay.customers[a.customer_id]))
                                for a in replay.alerts[seen:]]
        start = stop
    replay.feed(r for _, r in holdout[index:])  # lines without a timestamp: dead letters
    fired = replay.alerts[before:]
    bought_in_holdout = {c for c in customers if replay.customers[c].last_purchase_ts != before_holdout[c]}
    labels = [0 if c in bought_in_holdout else 1 for c in customers]
    result: dict[str, Any] = {
        "file": str(path),
        "customers": len(customers),
        "events": len(records),
        "dead_letters": dict(replay.dead_letters),
        "calibration_end": calibration_end or _iso(cal_end),
        "holdout_end": holdout_end or _iso(hold_end),
        "holdout_weeks": round(horizon, 2),
        "churn_rate": round(sum(labels) / len(labels), 4),
        "auc": round(auc(ours, labels), 4),
        "auc_bgnbd": round(auc([-float(e) for e in expected], labels), 4),
        "auc_pareto_nbd": round(auc([-float(e) for e in expected_pnbd], labels), 4),
        "auc_recency": round(auc(recency, labels), 4),
        "auc_frequency": round(auc([-v for v in x], labels), 4),
        "bgnbd": {k: round(v, 4) for k, v in fit.items()},
        "pareto_nbd": {k: round(v, 4) for k, v in pnbd.items()},
        "online_params": [{k: round(v, 4) for k, v in state.model.params.to_dict().items()}
                          for _, state in sorted(replay.runner.states["population"].items())],
        "shards": shards,
        "threshold": threshold,
        "calibration_alerts": calibration_alerts,
    }

    # alerts over the holdout, counted by their event time
    weeks = [0] * math.ceil(horizon)
    for alert in fired:
        weeks[min(len(weeks) - 1, int((alert.ts_ms - cal_end) // WEEK_MS))] += 1
    def correct(alert: churn.Alert) -> bool:  # they did not buy again before the holdout end
        state = replay.customers.get(alert.customer_id)
        return state is None or (state.last_purchase_ts or 0) <= alert.ts_ms
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
    result["tiers"] = population.value_tiers.to_dict() if population.value_tiers else None
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
    table.add_row("Pareto/NBD −E[purchases in holdout] (batch MLE)", f"{result['auc_pareto_nbd']:.4f}")
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
