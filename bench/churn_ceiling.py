"""How far a churn score can go on a data set: a model that is *told the answers*.

    python -m bench.churn_ceiling [EVENTS.jsonl] [--calibration-end D] [--holdout-end D] [--json]

``omnirec evaluate-churn`` scores every customer at the calibration end and reports the AUC of
"no purchase in the holdout". This asks what any score built from the same purchase history
could reach: a logistic regression fitted on the holdout labels themselves (two folds: fitted on
half the customers, scored on the other half, and the other way round) over 25 features of the
calibration period: repeat purchases, tenure, recency and the span between first and last
purchase (with their squares and pairwise products), spend, units, the first order's value,
purchases in the last 4 / 8 / 13 / 26 weeks, the recency of the purchase before the last, mean
and longest gap, average order value (logs, standardised).

A score learned online, without the labels, in event time, is not expected to beat it: when the
engine's AUC is close to this figure, the data set, not the model, is the limit. Defaults:
CDNOW, 39 weeks of calibration and a 39-week holdout, as ``omnirec evaluate-churn``.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import orjson

from omnirec.evaluate_churn import (
    CDNOW_CALIBRATION_END,
    CDNOW_HOLDOUT_END,
    _day_end_ms,
    auc,
    cdnow_file,
)
from online_models.clock import DAY_MS
from online_models.events import parse_ts

FOLDS = 2
RIDGE = 1e-3  # a whisper of L2: the features are standardised, and some are nearly collinear


def purchases_by_customer(path: Path) -> dict[str, list[tuple[int, float, float]]]:
    """customer → [(event ms, order value, units)] of every purchase in the file."""
    out: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    with open(path, "rb") as lines:
        for line in lines:
            event = orjson.loads(line)
            if event.get("type") != "purchase" or not event.get("customer_id"):
                continue
            items = event.get("items") or ()
            value = sum(float(i.get("qty", 1)) * float(i.get("price", 0.0)) for i in items)
            units = sum(float(i.get("qty", 1)) for i in items)
            out[event["customer_id"]].append((parse_ts(event["ts"]), value, units))
    return out


def features(history: list[tuple[int, float, float]], cal_end: int) -> list[float] | None:
    before = sorted(p for p in history if p[0] < cal_end)
    if not before:
        return None
    days = sorted({ts // DAY_MS for ts, _, _ in before})
    end = (cal_end - 1) // DAY_MS
    x, tenure, span = len(days) - 1, (end - days[0]) / 7, (days[-1] - days[0]) / 7
    recency = tenure - span
    spend, units = sum(v for _, v, _ in before), sum(u for _, _, u in before)
    first = sum(v for ts, v, _ in before if ts // DAY_MS == days[0])
    gaps = np.diff(days) if len(days) > 1 else np.zeros(1)
    recent = [sum(1 for d in days if end - d < 7 * weeks) for weeks in (4, 8, 13, 26)]
    before_last = (end - days[-2]) / 7 if len(days) > 1 else tenure
    base = [math.log1p(x), math.log1p(tenure), math.log1p(recency), math.log1p(span)]
    rest = [math.log1p(max(0.0, spend)), math.log1p(units), math.log1p(max(0.0, first)), *recent,
            math.log1p(before_last), math.log1p(float(gaps.mean())), math.log1p(float(gaps.max())),
            math.log1p(max(0.0, spend) / len(days))]
    squares = [b * b for b in base]
    products = [base[i] * base[j] for i in range(4) for j in range(i + 1, 4)]
    return base + rest + squares + products


def fit_logistic(x: np.ndarray, y: np.ndarray, iterations: int = 30) -> np.ndarray:
    a = np.hstack([np.ones((len(x), 1)), x])
    w = np.zeros(a.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-a @ w))
        grad = a.T @ (p - y) + RIDGE * w
        hess = (a * (p * (1 - p))[:, None]).T @ a + RIDGE * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def ceiling(path: Path, calibration_end: str, holdout_end: str) -> dict:
    cal_end, hold_end = _day_end_ms(calibration_end), _day_end_ms(holdout_end)
    rows, labels = [], []
    for customer, history in sorted(purchases_by_customer(path).items()):
        row = features(history, cal_end)
        if row is None:
            continue
        rows.append(row)
        labels.append(0 if any(cal_end <= ts < hold_end for ts, _, _ in history) else 1)
    x, y = np.array(rows), np.array(labels, dtype=float)
    x = (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
    fold = np.arange(len(y)) % FOLDS
    scores = np.zeros(len(y))
    for k in range(FOLDS):
        w = fit_logistic(x[fold != k], y[fold != k])
        scores[fold == k] = np.hstack([np.ones(((fold == k).sum(), 1)), x[fold == k]]) @ w
    by_fold = [auc(list(scores[fold == k]), list(y[fold == k])) for k in range(FOLDS)]
    return {"bench": "churn_ceiling", "file": str(path), "calibration_end": calibration_end,
            "holdout_end": holdout_end, "customers": len(y), "churn_rate": round(float(y.mean()), 4),
            "features": x.shape[1], "auc_told_the_answers": round(float(np.mean(by_fold)), 4),
            "auc_by_fold": [round(a, 4) for a in by_fold],
            "auc_recency": round(auc(list(np.array([r[2] for r in rows])), labels), 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.churn_ceiling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", nargs="?", help="events (JSON lines, the envelope); default CDNOW")
    parser.add_argument("--calibration-end", help=f"default {CDNOW_CALIBRATION_END} (CDNOW)")
    parser.add_argument("--holdout-end", help=f"default {CDNOW_HOLDOUT_END} (CDNOW)")
    parser.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    args = parser.parse_args(argv)
    if args.file is None:
        path, cal, hold = cdnow_file(), args.calibration_end or CDNOW_CALIBRATION_END, args.holdout_end or CDNOW_HOLDOUT_END
    elif not (args.calibration_end and args.holdout_end):
        parser.error("a file needs --calibration-end and --holdout-end")
    else:
        path, cal, hold = Path(args.file), args.calibration_end, args.holdout_end
    result = ceiling(path, cal, hold)
    print(f"{result['customers']:,} customers, churn rate {result['churn_rate']:.1%}: a logistic regression told "
          f"the holdout's answers (2 folds, {result['features']} RFM features) reaches AUC "
          f"{result['auc_told_the_answers']:.4f} (recency alone {result['auc_recency']:.4f})")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
