"""CPU per decision: what the API's ranking costs per request, without HTTP or Redis.

    python -m bench.decision [--customers 2000] [--days 60] [--requests 3000] [--json]
    omnirec bench decision --json

Simulated shoppers (``omnirec.simulate``, the demo catalogue) are replayed through the engine
in process (``omnirec.evaluate.Replayer``: the flow's own steps, and the part of Redis the API
reads). Then, for customers drawn at random, each kind of request is answered with the very
functions the API's route calls after its one Redis read: ``ranking.recommend`` and
``answers.recommendations_body`` (signed ids included). CPU time (``time.process_time``) per
request is printed per context beside the goal of issue "Speed and scale" (≤ 0.5 ms per
decision) and beside a reference measured in the same run: decoding the customer's stored
profile (``keys.decode_profile``), the least any answer about a customer has to do.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import statistics
import sys
import time
from collections.abc import Callable

import orjson

from omnirec import replay, simulate
from omnirec.evaluate import Replayer
from omnirec.settings import Settings
from online_models import answers, keys, ranking
from online_models.clock import DAY_MS
from online_models.customer import CustomerState
from online_models.refs import SigningKeys

START_MS = 1_780_000_000_000
GOAL_MS = 0.5
SIGNING = SigningKeys.of({"bench": "bench-secret-0123456789"})


def build(customers: int, days: float, seed: int) -> Replayer:
    """The demo catalogue and `customers` shoppers' `days` of events, learned by the engine."""
    settings = Settings()
    catalog = simulate.load_demo_catalog()
    lines = [orjson.dumps({"type": "product", **product}) for product in catalog]
    lines += [orjson.dumps(event) for event in simulate.iter_events(customers, START_MS, seed, catalog, days=days)]
    replayer = Replayer(settings)
    for raw in replay.as_records(lines, settings):
        replayer.learn(replayer.parse(raw))
    replayer.rebuild_index()
    return replayer


def requests_for(state: CustomerState, rng: random.Random, now_ms: int) -> dict[str, ranking.Request]:
    """One request of each context for this customer (product and cart from their own history)."""
    bought = sorted(state.bought) or [""]
    basket = tuple(rng.sample(bought, min(2, len(bought))))
    return {"home": ranking.Request("home", k=10, now_ms=now_ms),
            "product": ranking.Request("product", skus=basket[:1], k=10, now_ms=now_ms),
            "cart": ranking.Request("cart", skus=basket, channel="store", k=10, now_ms=now_ms)}


def answer(replayer: Replayer, state: CustomerState, request: ranking.Request) -> dict:
    """What the API's recommendation route computes once its Redis read is in hand."""
    suggestions = replayer.recommend_for(state, request)
    nonces = [secrets.randbits(32) for _ in suggestions]
    return answers.recommendations_body(state, state.customer_id, request, suggestions, request.now_ms, nonces,
                                        SIGNING)


def cpu_ms(work: Callable[[], object], repeat: int = 1) -> float:
    start = time.process_time()
    for _ in range(repeat):
        work()
    return (time.process_time() - start) * 1000 / repeat


def measure(replayer: Replayer, requests: int, seed: int, now_ms: int) -> dict[str, dict[str, float]]:
    rng = random.Random(seed)
    states = [s for s in replayer.customers.values() if s.bought]
    stored = {s.customer_id: keys.encode_customer(s) for s in states}
    per_context: dict[str, list[float]] = {}
    decode: list[float] = []
    for _ in range(requests):
        state = rng.choice(states)
        for context, request in requests_for(state, rng, now_ms).items():
            per_context.setdefault(context, []).append(cpu_ms(lambda r=request, s=state: answer(replayer, s, r)))
        blob = stored[state.customer_id]
        decode.append(cpu_ms(lambda b=blob: keys.decode_profile(b), repeat=5))
    out = {context: _figures(times) for context, times in per_context.items()}
    out["decode_profile"] = _figures(decode)
    return out


def _figures(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {"mean_ms": statistics.fmean(times), "p50_ms": times[len(times) // 2],
            "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.decision", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=float, default=60)
    parser.add_argument("--requests", type=int, default=3000, help="customers drawn; one request per context each")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    replayer = build(args.customers, args.days, args.seed)
    now_ms = START_MS + int(args.days * DAY_MS)
    print(f"learned {len(replayer.customers)} customers in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    # a first pass warms the caches the API warms in its first seconds (decoded neighbour lists)
    measure(replayer, min(200, args.requests), args.seed + 1, now_ms)
    figures = measure(replayer, args.requests, args.seed, now_ms)
    reference = figures.pop("decode_profile")
    print(f"{'context':<10}{'mean ms':>10}{'p50 ms':>10}{'p99 ms':>10}   goal ≤ {GOAL_MS} ms CPU")
    for context, f in figures.items():
        status = "MET" if f["mean_ms"] <= GOAL_MS else "NOT MET"
        print(f"{context:<10}{f['mean_ms']:>10.3f}{f['p50_ms']:>10.3f}{f['p99_ms']:>10.3f}   {status}")
    print(f"{'reference':<10}{reference['mean_ms']:>10.3f}{reference['p50_ms']:>10.3f}{reference['p99_ms']:>10.3f}"
          "   decoding the stored profile, same run")
    worst = max(f["mean_ms"] for f in figures.values())
    if args.json:
        print(json.dumps({"bench": "decision", "customers": len(replayer.customers), "requests": args.requests,
                          "contexts": figures, "reference_decode_profile": reference, "goal_ms": GOAL_MS,
                          "worst_mean_ms": worst, "goal_met": worst <= GOAL_MS,
                          "ratio_reference_to_worst": reference["mean_ms"] / worst if worst else None}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
