"""`python -m bench.churn_ceiling`: what a score told the holdout's answers reaches on a data set."""

from __future__ import annotations

import json
import random

import orjson

from bench import churn_ceiling


def test_a_model_told_the_answers_separates_who_comes_back(tmp_path, capsys):
    """Regular buyers keep buying in the holdout, one-off buyers do not: the ceiling sees it."""
    rng = random.Random(4)
    lines = []
    for i in range(400):
        regular = i % 2 == 0
        days = range(0, 120, rng.choice((5, 7, 9))) if regular else [rng.randrange(0, 50)]
        for day in days:
            lines.append({"event_id": f"e-{i}-{day}", "type": "purchase",
                          "ts": 978_307_200_000 + day * 86_400_000,  # 2001-01-01 + day, epoch ms
                          "customer_id": f"c-{i}", "items": [{"sku": "s", "qty": 1, "price": 10.0}]})
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(line) for line in lines))
    assert churn_ceiling.main([str(path), "--calibration-end", "2001-02-28", "--holdout-end", "2001-04-30",
                               "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["customers"] == 400 and 0.4 < result["churn_rate"] < 0.6
    assert result["auc_told_the_answers"] > 0.95
