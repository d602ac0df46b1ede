"""The offline evaluation: metric arithmetic, protocols, JSON output, and that the in-process
engine holds exactly the state the flow's domain calls would build."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from omnirec import evaluate, tifu_knn
from omnirec.evaluate import (
    Baselines,
    Evaluator,
    Filters,
    Replayer,
    Tally,
    held_out_baskets,
    read_records,
    score_list,
)
from omnirec.settings import Settings
from online_models import keys, ranking
from online_models.events import DAY_MS, Event, Item, format_ts

T0 = 1_795_601_700_000  # 2026-11-25T10:15:00Z
KEYS = ("hit_rate@{k}", "recall@{k}", "ndcg@{k}", "cross_sell_hit_rate@{k}", "n_evaluated")


def envelope(event_id, day, skus, customer="c-1", kind="purchase", store="s-1", **extra):
    line = {"event_id": event_id, "type": kind, "ts": format_ts(T0 + int(day * DAY_MS)),
            "channel": "store" if store else "web", "customer_id": customer, "store_id": store,
            "order_id": f"o-{event_id}" if kind == "purchase" else None}
    if kind in ("purchase", "add_to_cart", "return"):
        line["items"] = [{"sku": sku, "qty": 1, "price": 5.0, "category": f"grocery/{sku[0].lower()}"}
                         for sku in skus]
    line.update(extra)
    return line


def write(path: Path, lines) -> Path:
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return path


def planted(tmp_path: Path) -> Path:
    """c-1 buys A+B, the crowd buys X, Y (and X with its complement W), two others buy A twice
    each (so the stream shows A is rebought); then c-1 buys A again."""
    lines = [envelope("e1", 0, ["A", "B"])]
    for n in range(6):
        lines.append(envelope(f"x{n}", 0.1 + n / 100, ["X", "W", "Y"], customer=f"c-{10 + n}"))
    for n in range(2):
        lines += [envelope(f"a{n}-{day}", day, ["A"], customer=f"c-{20 + n}") for day in (-3, -2)]
    lines.append(envelope("e2", 1, ["A"]))
    return write(tmp_path / "planted.jsonl", lines)


# --- metric arithmetic -------------------------------------------------------------------


def test_score_list_known_case():
    hit, recall, ndcg = score_list(["x", "a", "y", "b"], ["a", "b", "c"], k=4)
    assert hit == 1.0
    assert recall == pytest.approx(2 / 3)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg == pytest.approx(dcg / ideal)


def test_score_list_cuts_at_k_and_caps_the_ideal_at_k():
    assert score_list(["x", "y", "a"], ["a"], k=2) == (0.0, 0.0, 0.0)
    hit, recall, ndcg = score_list(["a", "b"], ["a", "b", "c", "d"], k=2)
    assert (hit, recall, ndcg) == (1.0, 0.5, pytest.approx(1.0))  # ideal = min(k, |bought|) hits
    assert score_list(["a"], [], k=10) == (0.0, 0.0, 0.0)


def test_planted_repeat_purchase_is_a_gp_topfreq_hit(tmp_path):
    result = evaluate.run(planted(tmp_path), k=3, progress=False, workers=1)
    gp = result["baselines"]["gp_topfreq"]
    # Three evaluation points (the second purchases of c-20, c-21 and c-1), each of the
    # customer's own most frequent item A.
    assert result["n_evaluated"] == gp["n_evaluated"] == 3
    assert gp["hit_rate@3"] == gp["recall@3"] == gp["ndcg@3"] == 1.0
    # Global popularity ranks X, W, Y (6 baskets each) ahead of A (5 baskets): no hit.
    assert result["baselines"]["popularity"]["hit_rate@3"] == 0.0
    # c-20's second purchase is the first rebuy the stream shows: nothing said A comes back, a
    # miss. Once it has (no category named anywhere), buy-again puts A in the top 3 of c-21
    # and of c-1.
    assert result["hit_rate@3"] == pytest.approx(2 / 3, abs=1e-4)


def test_cross_sell_hides_the_last_item_and_excludes_the_cart(tmp_path):
    lines = [envelope(f"x{n}", n / 100, ["X", "W"], customer=f"c-{n}") for n in range(8)]
    lines += [envelope(f"y{n}", 0.5 + n / 100, ["Y", "Z"], customer=f"d-{n}") for n in range(12)]
    lines.append(envelope("probe", 1, ["X", "W"], customer="new"))
    result = evaluate.run(write(tmp_path / "cs.jsonl", lines), k=1, progress=False, workers=1)
    # every basket has 2 items: 21 cross-sell points, and no returning customer
    assert result["n_cross_sell"] == 21 and result["n_evaluated"] == 0
    # the probe's hidden W is X's complement: omnirec hits, popularity (Y/Z first) does not
    pop = result["baselines"]["popularity"]
    assert result["cross_sell_hit_rate@1"] > pop["cross_sell_hit_rate@1"]


def test_baselines_lists():
    base = Baselines(half_life_days=14)
    base.learn(("c", "a"), ["P", "Q"], T0)
    base.learn(("c", "b"), ["Q", "R"], T0 + 30 * DAY_MS)
    base.learn(("c", "b"), ["R"], T0 + 31 * DAY_MS)
    base.rebuild()
    assert base.recommend("popularity", ("c", "a"), 2) == ["Q", "R"]  # ties by SKU
    assert base.recommend("decayed_popularity", ("c", "a"), 1) == ["R"]  # recent counts more
    assert base.recommend("gp_topfreq", ("c", "a"), 3) == ["P", "Q", "R"]
    assert base.recommend("gp_topfreq", ("c", "a"), 3, exclude=["P"]) == ["Q", "R"]
    base.merge(("c", "a"), ("c", "b"))
    assert base.recommend("gp_topfreq", ("c", "b"), 3) == ["R", "Q", "P"]


# --- output ------------------------------------------------------------------------------


def test_json_last_line_has_the_keys(tmp_path, capsys):
    evaluate.cli([str(planted(tmp_path)), "--k", "5", "--json"])
    lines = capsys.readouterr().out.strip().splitlines()
    figures = json.loads(lines[-1])
    for key in KEYS:
        assert key.format(k=5) in figures
    assert set(figures["baselines"]) == {"popularity", "decayed_popularity", "top_personal", "gp_topfreq"}
    assert "tifu_knn" in figures["baselines_omitted"]  # prequential: said so, not silently missing
    assert figures["filters"]["applied"] is False
    for name, fig in figures["baselines"].items():
        for key in KEYS:
            assert key.format(k=5) in fig, (name, key)
    assert any("gp_topfreq" in line for line in lines[:-1])  # the table came first


def test_module_entry_point_and_leave_last_protocol(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "omnirec.evaluate", str(planted(tmp_path)), "--json",
         "--protocol", "leave-last-basket-out"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["protocol"] == "leave-last-basket-out"
    assert figures["n_evaluated"] == 3  # c-1, c-20 and c-21 have two baskets
    assert figures["baselines"]["gp_topfreq"]["hit_rate@10"] == 1.0


def test_workers_do_not_change_the_figures(tmp_path):
    lines = []
    for n in range(60):
        skus = ["A", "B", "C", "D", "E"][n % 3: n % 3 + 2 + n % 2]
        lines.append(envelope(f"e{n}", n / 7, skus, customer=f"c-{n % 9}", store=f"s-{n % 2}"))
    path = write(tmp_path / "workers.jsonl", lines)
    one = evaluate.run(path, progress=False, workers=1)
    two = evaluate.run(path, progress=False, workers=2)
    for key in ("seconds", "workers"):
        one.pop(key), two.pop(key)
    assert one == two
    assert one["n_evaluated"] > 0


# --- the engine is the domain ------------------------------------------------------------


def mixed_stream():
    """Known customers, an anonymous session stitched by identify, a cart, a duplicate."""
    return [
        envelope("p1", 0, ["A", "B", "C"], customer="c-1"),
        envelope("p2", 0.5, ["B", "C"], customer="c-2", store="s-2"),
        envelope("v1", 1, [], customer=None, kind="product_view", store=None, anonymous_id="anon-1", sku="A"),
        envelope("k1", 1.01, ["D"], customer=None, kind="add_to_cart", store=None, anonymous_id="anon-1"),
        envelope("k2", 1.02, ["A"], customer=None, kind="add_to_cart", store=None, anonymous_id="anon-1"),
        envelope("i1", 1.03, [], customer="c-3", kind="identify", store=None, anonymous_id="anon-1"),
        envelope("p3", 1.04, ["A", "D"], customer="c-3", store=None, anonymous_id="anon-1"),
        envelope("p3", 1.04, ["A", "D"], customer="c-3", store=None, anonymous_id="anon-1"),  # duplicate
        envelope("p4", 2, ["C", "D"], customer="c-1", loyalty_id="L-9"),
        envelope("p5", 3, ["A"], customer="c-2", store="s-2"),
    ]


def flow_bytes(records, settings):
    """The dataflow itself (TestingSource → wire → TestingSink): what Redis would hold."""
    from bytewax import operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, TestingSource, run_main

    from flows.dataflow import wire
    from online_models.engine import Engine
    from online_models.messages import coalesce

    from .helpers import MemoryPipe

    flow = Dataflow("evaluate-vs-flow")
    writes, _, _ = wire(flow, op.input("in", flow, TestingSource(records)), Engine(settings.engine()))
    out: list = []
    op.output("out", writes, TestingSink(out))
    run_main(flow)
    pipe = MemoryPipe()
    for write in coalesce(out).values():
        write.apply(pipe)
    return pipe.data


def test_the_evaluator_reaches_the_state_the_flow_writes(tmp_path):
    """One input through the dataflow and through the evaluator's engine: the same bytes."""
    settings = Settings(churn_wall_clock=False)
    records = list(read_records([write(tmp_path / "mixed.jsonl", mixed_stream())], settings))
    stored = flow_bytes(records, settings)

    replayer = Replayer(settings)
    for raw in records:
        replayer.learn(replayer.parse(raw))
    scheme = replayer.scheme
    assert replayer.customers and all(
        keys.encode_customer(state) == stored[(scheme.customer(cid), None)]
        for cid, state in replayer.customers.items())
    assert replayer._neighbor_states and all(
        keys.encode_neighbors(state) == stored[(key, None)] for key, state in replayer._neighbor_states.items())
    for key, members in replayer.zsets.items():
        assert members == {m: score for (k, m), score in stored.items() if k == key}, key
    assert replayer.customers["c-3"].orders == 1  # the duplicate did not count
    events = [m for raw in records for m in Replayer(settings).parse(raw) if isinstance(m, Event)]
    assert replayer.key_for(events[6]) == ("c", "c-3")  # the stitched alias reaches c-3


def parsed_events(path):
    replayer = Replayer()
    return [m for raw in read_records([path], Settings()) for m in replayer.parse(raw) if isinstance(m, Event)]


def test_engine_recommends_like_ranking_with_synthesised_products(tmp_path):
    path = write(tmp_path / "mixed.jsonl", mixed_stream())
    replayer = Replayer()
    for raw in read_records([path], Settings()):
        replayer.learn(replayer.parse(raw))
    replayer.rebuild_index()
    # no catalog in the file: products come from the items' categories
    assert replayer.products["D"].category == "grocery/d"
    request = ranking.Request("cart", skus=("C",), k=3)
    got = replayer.recommend("c-1", request)
    state = replayer.customers["c-1"]
    wanted = ranking.recommend(state, request, replayer.neighbors(ranking.anchors(state, request)),
                               replayer.index, replayer.products, replayer.rules)
    assert [s.sku for s in got] == [s.sku for s in wanted] and got
    assert "C" not in [s.sku for s in got]


def test_held_out_baskets_are_each_customers_last_of_two_or_more(tmp_path):
    path = write(tmp_path / "mixed.jsonl", mixed_stream())
    stream = parsed_events(path)
    held = held_out_baskets(stream)
    # c-1: p1, p4 (p4 goes via alias L-9, unlinked: its own profile) → c-1 has 1 basket only;
    # c-2: p2, p5 → p5 held; c-3 (anon-1 stitched): p3 once (the duplicate does not count).
    assert {stream[i].event_id for i in held} == {"p5"}


def test_prequential_skips_duplicates_and_first_purchases(tmp_path):
    path = write(tmp_path / "mixed.jsonl", mixed_stream())
    evaluator = Evaluator(k=5)
    evaluator.prequential(read_records([path], Settings()))
    assert evaluator.counts["duplicates"] == 1
    assert evaluator.counts["purchases"] == 6
    # returning customers: c-2's p5 only (p4 lands on the unlinked loyalty alias)
    assert evaluator.tallies["omnirec"].n == 1


# --- protocols and baselines (issue 10, item 5) ------------------------------------------


def test_top_personal_is_the_customers_most_bought_items_and_nothing_else():
    base = Baselines(half_life_days=14)
    base.learn(("c", "a"), ["P", "Q"], T0)
    base.learn(("c", "a"), ["Q"], T0 + DAY_MS)
    base.learn(("c", "a"), ["R", "Q"], T0 + 2 * DAY_MS)
    for n in range(5):
        base.learn(("c", f"crowd-{n}"), ["X"], T0)
    base.rebuild()
    # Q three times; P and R once each, R bought more recently
    assert base.recommend("top_personal", ("c", "a"), 10) == ["Q", "R", "P"]
    assert base.recommend("top_personal", ("c", "a"), 2) == ["Q", "R"]
    # GP-TopFreq fills with the crowd's X; TopPersonal does not, and a newcomer gets nothing
    assert base.recommend("gp_topfreq", ("c", "a"), 4) == ["Q", "R", "P", "X"]
    assert base.recommend("top_personal", ("c", "new"), 10) == []


def test_recall_divides_by_the_basket_and_splits_into_repeat_and_explore():
    tally = Tally()
    # basket {A, B, C, D}; A and B bought before (repeat), C and D new (explore)
    tally.add(["A", "C", "X"], ["A", "B", "C", "D"], k=3, before=["A", "B", "Z"])
    fig = tally.figures(3)
    assert fig["recall@3"] == 0.5  # 2 hits ÷ 4 items bought
    assert fig["repeat"]["recall@3"] == 0.5 and fig["explore"]["recall@3"] == 0.5
    assert fig["repeat"]["recall_share@3"] == fig["explore"]["recall_share@3"] == 0.25
    # a basket of new items only counts for explore
    tally.add(["Y"], ["Y"], k=3, before=["A"])
    fig = tally.figures(3)
    assert fig["repeat"]["n_evaluated"] == 1 and fig["explore"]["n_evaluated"] == 2
    assert fig["explore"]["recall@3"] == 0.75 and fig["explore"]["hit_rate@3"] == 1.0
    shares = fig["repeat"]["recall_share@3"] + fig["explore"]["recall_share@3"]
    assert shares == pytest.approx(fig["recall@3"])


def baskets_file(tmp_path, plan):
    """plan: customer → list of baskets (one a day); returns the JSONL path."""
    lines = []
    for customer, baskets in plan.items():
        for day, skus in enumerate(baskets):
            lines.append(envelope(f"{customer}-{day}", day + 0.01 * len(lines), skus, customer=customer))
    lines.sort(key=lambda line: line["ts"])
    return write(tmp_path / "baskets.jsonl", lines)


def test_filter_drops_customers_with_too_few_baskets_and_rare_items(tmp_path):
    path = baskets_file(tmp_path, {
        "five": [["A", "R"], ["A"], ["B"], ["A", "B"], ["A"]],  # 5 baskets; R bought once
        "four": [["A"], ["B"], ["A"], ["B"]],
        "rare": [["A"], ["A"], ["A"], ["A"], ["R2"]],  # its 5th basket holds only a rare item
    })
    plan = evaluate.fit_filters([path], Settings(), Filters(min_baskets=5, min_item_count=2))
    assert plan.customers == {"c:five"}
    assert "R" not in plan.items and "A" in plan.items and "B" in plan.items
    assert plan.stats["customers_before"] == 3 and plan.stats["customers"] == 1
    assert plan.stats["baskets"] == 5 and plan.stats["lines"] == 6  # R went from the first basket
    events = parsed_events(path)
    first = next(e for e in events if e.event_id == "five-0")
    assert [i.sku for i in plan.apply(first).items] == ["A"]
    assert plan.apply(next(e for e in events if e.event_id == "four-0")) is None


def test_noise_filter_drops_dense_and_one_day_customers():
    events = []
    for n in range(12):  # 12 ordinary customers: one line a day over 10 days
        events += [Event(f"o{n}-{d}", "purchase", T0 + d * 5 * DAY_MS, "store", customer_id=f"o{n}",
                         items=(Item("A", 1, 1.0),)) for d in (0, 2)]
    heavy = tuple(Item(f"S{j}", 1, 1.0) for j in range(40))
    events += [Event(f"h-{d}", "purchase", T0 + d * DAY_MS, "store", customer_id="heavy", items=heavy)
               for d in (0, 1)]
    events += [Event(f"d-{n}", "purchase", T0 + n * 1000, "store", customer_id="oneday",
                     items=(Item("A", 1, 1.0),)) for n in range(3)]
    plan = Filters(drop_noise_users=True).fit(events)
    assert "c:heavy" not in plan.customers and "c:oneday" not in plan.customers
    assert len(plan.customers) == 12
    assert plan.stats["noise_users_one_day"] == 1 and plan.stats["noise_users_dense"] == 1
    assert Filters().active is False and Filters(min_baskets=5).active


def test_tifu_knn_groups_and_weights_by_hand():
    assert tifu_knn.group_of(3, 2) == ([0, 1, 1], [1, 2])  # the last group takes the extra basket
    assert tifu_knn.group_of(7, 3) == ([0, 0, 1, 1, 2, 2, 2], [2, 2, 3])
    assert tifu_knn.group_of(2, 7) == ([0, 1], [1, 1])  # fewer baskets than groups: one each
    # 3 baskets, 2 groups, decays 0.5: 0.5² · 0.5 / 1 / 2, 0.5 · 1 / 2 / 2, 1 · 1 / 2 / 2
    assert tifu_knn.user_weights(3, 0.5, 0.5, 2) == [0.0625, 0.125, 0.25]
    # fewer baskets than groups: the group decay still counts from n_groups (the authors' code)
    assert tifu_knn.user_weights(2, 0.5, 0.5, 3) == pytest.approx([0.5 * 0.25 / 2, 0.5 / 2])
    # the paper's formula: decay within each group, groups decayed over the real groups:
    # group 0 = [b0] → 1 · 0.5 / 1 / 2; group 1 = [b1, b2] → 0.5 / 2 / 2 and 1 / 2 / 2
    assert tifu_knn.user_weights(3, 0.5, 0.5, 2, within="group") == [0.25, 0.125, 0.25]


def test_tifu_knn_on_a_toy_matrix_gives_the_hand_computed_answer():
    histories = [[["A"], ["B"]], [["B"], ["C"]], [["A"], ["D"]]]
    params = dict(within_decay=0.5, group_decay=0.5, n_groups=2)
    matrix, items = tifu_knn.user_matrix(histories, **params)
    assert items == ["A", "B", "C", "D"]
    assert matrix.toarray().tolist() == [[0.125, 0.5, 0, 0], [0, 0.125, 0.5, 0], [0.125, 0, 0, 0.5]]
    # cosine: u0·u1 = 0.0625 > u0·u2 = 0.015625, so u0's one neighbour is u1 (and u1's is u0);
    # 0.5·u0 + 0.5·u1 = {A: 0.0625, B: 0.3125, C: 0.25}
    got = tifu_knn.predict(histories, [0, 1, 2], depth=10, k=1, alpha=0.5, **params)
    assert got[0] == ["B", "C", "A"] and got[1] == ["B", "C", "A"]
    # u2's nearest is u0 (0.015625 vs 0): {B: 0.25, D: 0.25, A: 0.125}, the tie by SKU
    assert got[2] == ["B", "D", "A"]
    assert tifu_knn.predict(histories, [0], depth=1, k=1, alpha=0.5, **params) == [["B"]]
    assert tifu_knn.predict(histories, [0], depth=10, k=1, alpha=1.0, **params) == [["B", "A"]]


def test_leave_last_basket_out_with_the_filter_reports_it_and_scores_tifu_knn(tmp_path):
    plan = {f"c{n}": [["A", "B"], ["A"], ["B", "C"], ["A", "B"], ["A", "B"]] for n in range(4)}
    plan["short"] = [["A"], ["D"]]
    result = evaluate.run(baskets_file(tmp_path, plan), k=2, protocol="leave-last-out", progress=False,
                          workers=1, filters=Filters(min_baskets=5, min_item_count=2))
    assert result["protocol"] == "leave-last-basket-out"
    assert result["filters"]["applied"] and result["filters"]["customers"] == 4
    assert result["filters"]["min_baskets"] == 5 and result["filters"]["drop_noise_users"] is False
    assert result["n_evaluated"] == 4 and result["filtered_out"] == 2  # short's two baskets
    assert set(result["baselines"]) == set(evaluate.BASELINES) and "baselines_omitted" not in result
    tifu = result["baselines"]["tifu_knn"]
    assert tifu["n_evaluated"] == 4 and tifu["recall@2"] == 1.0  # A and B lead everyone's history
    assert tifu["repeat"]["n_evaluated"] == 4 and tifu["explore"]["n_evaluated"] == 0
    assert result["baselines"]["top_personal"]["recall@2"] == 1.0


def test_plot_of_runs_by_protocol(tmp_path):
    pytest.importorskip("matplotlib")
    from bench import quality_plot
    from omnirec.quality_plot import run_label

    tally = Tally()
    tally.add(["A", "B"], ["A", "C"], k=10, before=["A"])
    figures = tally.figures(10)
    runs = []
    for protocol, filters in (("prequential", {"applied": False}),
                              ("leave-last-basket-out", {"applied": True, "min_baskets": 5,
                                                         "min_item_count": 10, "customers": 7515})):
        baselines = {"popularity": figures, "gp_topfreq": figures}
        if protocol != "prequential":
            baselines["tifu_knn"] = figures
        runs.append({"file": "x.jsonl", "protocol": protocol, "k": 10, **figures, "filters": filters,
                     "baselines": baselines})
    (tmp_path / "a.out").write_text("a table\n" + json.dumps(runs[0]) + "\n")  # captured stdout
    (tmp_path / "b.json").write_text(json.dumps(runs[1]))
    out = quality_plot.main([str(tmp_path / "q.png"), str(tmp_path / "a.out"), str(tmp_path / "b.json")])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "≥5 baskets" in run_label(runs[1]) and run_label(runs[0]) == "prequential"
