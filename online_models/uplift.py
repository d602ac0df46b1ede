"""Measured uplift of the offers: treated decisions against the control group, with intervals.

The control group (``ArbitrationSettings.control_share``, 2 %) gets a random eligible offer
instead of the arbitrated one; its impressions and accepts are counted apart in each offer's
``OfferStats.control`` (they never steer learning). ``offers_report`` compares the two arms,
overall and per offer and cell: impressions, acceptance, value (accepts × the offer's margin
value), the uplift in acceptance with Newcombe's hybrid score interval (method 10 of Newcombe
1998, built on Wilson's score interval), the uplift in value per impression with a normal
interval, and how many offers each gate removed from the decisions that were shown.

Pure: the CLI (``omnirec offers report``) and the API (``GET /v1/offers/report``) read the
stats from Redis and call it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from statistics import NormalDist
from typing import Any

from online_models.offers import Offer, OfferStats


def z_value(confidence: float) -> float:
    """The two-sided normal quantile: 1.96 for 95 %.

    >>> round(z_value(0.95), 4)
    1.96
    """
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(successes: float, trials: float, z: float = 1.959964) -> tuple[float, float] | None:
    """Wilson's score interval for a proportion (``None`` without trials).

    >>> [round(x, 4) for x in wilson(56, 70)]
    [0.6918, 0.877]
    """
    if trials <= 0:
        return None
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(k1: float, n1: float, k2: float, n2: float, z: float = 1.959964) -> tuple[float, float, float] | None:
    """Difference of two proportions k1/n1 − k2/n2 with Newcombe's hybrid score interval
    (method 10): (difference, low, high); ``None`` when an arm has no trials.

    Newcombe (1998), Statistics in Medicine 17, 873–890, example (a): 56/70 − 48/80 = 0.2000,
    95 % interval 0.0524 to 0.3339.

    >>> [round(x, 4) for x in newcombe(56, 70, 48, 80)]
    [0.2, 0.0524, 0.3339]
    """
    a, b = wilson(k1, n1, z), wilson(k2, n2, z)
    if a is None or b is None:
        return None
    p1, p2 = k1 / n1, k2 / n2
    d = p1 - p2
    low = d - math.sqrt((p1 - a[0]) ** 2 + (b[1] - p2) ** 2)
    high = d + math.sqrt((a[1] - p1) ** 2 + (p2 - b[0]) ** 2)
    return d, low, high


def _arm(cells: Mapping[str, list[float]], value: float) -> dict[str, Any]:
    shown = sum(c[0] for c in cells.values())
    accepted = sum(c[1] for c in cells.values())
    return {
        "impressions": shown, "accepts": accepted,
        "acceptance": round(accepted / shown, 4) if shown else None,
        "value": round(accepted * value, 2),
        "cells": {cell: {"impressions": n, "accepts": k, "acceptance": round(k / n, 4) if n else None,
                         "value": round(k * value, 2)} for cell, (n, k) in sorted(cells.items())},
    }


def _interval(result: tuple[float, float, float] | None) -> dict[str, float] | None:
    if result is None:
        return None
    d, low, high = result
    return {"difference": round(d, 4), "low": round(low, 4), "high": round(high, 4)}


def _value_uplift(treated: list[tuple[float, float, float]], control: list[tuple[float, float, float]],
                  z: float) -> dict[str, float] | None:
    """Value per impression, treated − control, with a normal interval. Each arm is a list of
    (impressions, accepts, value per accept): an impression is worth the value if accepted, else 0."""
    def moments(rows):
        n = sum(r[0] for r in rows)
        if n <= 0:
            return None
        mean = sum(k * v for _, k, v in rows) / n
        second = sum(k * v * v for _, k, v in rows) / n
        return mean, max(0.0, second - mean * mean) / n

    t, c = moments(treated), moments(control)
    if t is None or c is None:
        return None
    d, se = t[0] - c[0], math.sqrt(t[1] + c[1])
    return {"difference": round(d, 4), "low": round(d - z * se, 4), "high": round(d + z * se, 4)}


def offers_report(offers: Mapping[str, Offer], stats: Iterable[OfferStats],
                  confidence: float = 0.95) -> dict[str, Any]:
    """Treated against control, overall and per offer (and per cell within each arm), with the
    uplift in acceptance and in value per impression, and the offers each gate removed.

    >>> from online_models.offers import offer_from_dict
    >>> o = offer_from_dict({"offer_id": "pts", "kind": "loyalty_points", "value": 4.0})
    >>> s = OfferStats("pts", {"a": [70.0, 56.0]}, {"a": [80.0, 48.0]}, {"suitability": 12.0})
    >>> r = offers_report({"pts": o}, [s])
    >>> r["uplift"]["acceptance"], r["gates"]
    ({'difference': 0.2, 'low': 0.0524, 'high': 0.3339}, {'suitability': 12.0})
    """
    z = z_value(confidence)
    rows, gates = [], {}
    all_t: list[tuple[float, float, float]] = []
    all_c: list[tuple[float, float, float]] = []
    for stat in sorted(stats, key=lambda s: s.offer_id):
        offer = offers.get(stat.offer_id)
        value = offer.value if offer is not None else 0.0
        treated, control = _arm(stat.cells, value), _arm(stat.control, value)
        all_t.append((treated["impressions"], treated["accepts"], value))
        all_c.append((control["impressions"], control["accepts"], value))
        for gate, n in stat.removed.items():
            gates[gate] = gates.get(gate, 0.0) + n
        rows.append({
            "offer_id": stat.offer_id, "name": offer.name if offer else stat.offer_id,
            "kind": offer.kind if offer else None, "value_per_accept": value,
            "treated": treated, "control": control,
            "uplift": {
                "acceptance": _interval(newcombe(treated["accepts"], treated["impressions"],
                                                 control["accepts"], control["impressions"], z)),
                "value_per_impression": _value_uplift(all_t[-1:], all_c[-1:], z),
            },
            "removed": dict(sorted(stat.removed.items())),
        })

    def total(arm):
        n, k = sum(r[0] for r in arm), sum(r[1] for r in arm)
        return {"impressions": n, "accepts": k, "acceptance": round(k / n, 4) if n else None,
                "value": round(sum(r[1] * r[2] for r in arm), 2),
                "value_per_impression": round(sum(r[1] * r[2] for r in arm) / n, 4) if n else None}

    t, c = total(all_t), total(all_c)
    return {
        "confidence": confidence,
        "treated": t, "control": c,
        "uplift": {
            "acceptance": _interval(newcombe(t["accepts"], t["impressions"], c["accepts"], c["impressions"], z)),
            "value_per_impression": _value_uplift(all_t, all_c, z),
        },
        "gates": dict(sorted(gates.items())),
        "offers": rows,
    }


def report_lines(report: Mapping[str, Any]) -> list[str]:
    """The report as text for a terminal: one line per offer, then the totals and the gates."""
    def arm(a):
        rate = "—" if a["acceptance"] is None else f"{a['acceptance']:.1%}"
        return f"{a['impressions']:>7g} shown {a['accepts']:>6g} accepted {rate:>6} value {a['value']:>9.2f}"

    def lift(u):
        if u is None:
            return "no control yet"
        return f"{u['difference']:+.1%} [{u['low']:+.1%}, {u['high']:+.1%}]"

    level = f"{report['confidence']:.0%}"
    lines = [f"{'offer':<22} {'treated':<50} {'control':<50} uplift in acceptance ({level} interval)"]
    for row in report["offers"]:
        lines.append(f"{row['offer_id']:<22} {arm(row['treated']):<50} {arm(row['control']):<50} "
                     f"{lift(row['uplift']['acceptance'])}")
    lines.append(f"{'all offers':<22} {arm({**report['treated'], 'cells': {}}):<50} "
                 f"{arm({**report['control'], 'cells': {}}):<50} {lift(report['uplift']['acceptance'])}")
    value = report["uplift"]["value_per_impression"]
    if value is not None:
        lines.append(f"value per impression, treated − control: {value['difference']:+.3f} "
                     f"[{value['low']:+.3f}, {value['high']:+.3f}]")
    gates = report["gates"]
    lines.append("offers removed by each gate (in decisions shown): "
                 + (", ".join(f"{g} {n:g}" for g, n in gates.items()) if gates else "none counted yet"))
    return lines
