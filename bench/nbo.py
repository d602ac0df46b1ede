"""Next-best-offer learning benchmark: the served policy against an oracle and a random offer.

Simulated shoppers (``omnirec.simulate``) get a history by replaying their events through
the same domain code the flow runs (identity stitching, ``CustomerState.apply``). Then,
in event time after the history, the benchmark asks ``online_models.offers.decide`` for
one customer at a time — live ``OfferStats``, ``ArbitrationSettings()`` (Thompson draws and
a 2 % control group, the contact policy), the demo offers — and the customer answers with
the planted truth of ``omnirec.offer_truth``. Feedback flows back as it does in the flow:
impression / accept / dismiss into the customer's contact history, and into the offer's
stats under the decision's cell unless the decision was a control one. The customers'
own events keep arriving between decisions.

On the same customers, at the same moments and with the same eligible offers (the same
gates), three reference policies are scored:

- **oracle**: the eligible offer with the highest true P(accept) × value;
- **random**: an eligible offer chosen uniformly;
- **cell**: the same ``decide`` with ``ArbitrationSettings(contextual=False)`` (a Beta per offer
  and customer cell, the policy before the contextual model), learning in its own ``OfferStats``
  through the engine's own ``offer_stats`` step from its own simulated reactions (a shadow: the
  customers' contact histories follow the served policy).

Each is scored by its *expected* value (true P(accept) × value, no reaction noise) and by
a realised value (a drawn reaction: value if accepted, else 0). The table shows, per
1k-decision window, the expected values and served ÷ oracle.

    python -m bench.nbo [--decisions 20000] [--customers 2000] [--seed 7] [--json]
    omnirec bench nbo --decisions 50000 --json

Writes bench/results/nbo.json and bench/results/nbo_learning.png.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from omnirec import offer_truth, replay, simulate
from omnirec.settings import Settings
from online_models import offers as nbo
from online_models.clock import DAY_MS
from online_models.customer import CustomerState
from online_models.engine import Engine, Runner
from online_models.events import Feedback, product_from_dict
from online_models.messages import OfferOutcome
from online_models.offers import ArbitrationSettings, Offer, OfferStats, Situation, check_gates

RESULTS = Path(__file__).resolve().parent / "results"
OFFERS_PATH = Path(simulate.__file__).parent / "data" / "demo_offers.json"
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: a fixed clock, so runs are reproducible
CHANNELS = ("web", "app", "store")
REACTION_DELAY_MS = 60_000


def load_offers(path: Path = OFFERS_PATH) -> list[Offer]:
    return [nbo.offer_from_dict(o) for o in json.loads(Path(path).read_text())]


# --- the world: customers, their replayed histories, the catalogue -------------------------


@dataclass
class World:
    """Latent customers and the flow's view of them, advanced in event time: the engine the
    flow runs (``online_models.engine.Runner``), fed the simulator's envelopes as records of
    their channel's topic."""

    customers: list[simulate.Customer]
    catalog: dict[str, Any]  # sku → Product
    offers: list[Offer]
    events: Iterator[dict]
    settings: Settings = field(default_factory=lambda: Settings(churn_wall_clock=False))
    runner: Runner | None = None
    clock_ms: int = 0
    applied: int = 0
    _next: dict | None = None
    _next_ts: int | None = None

    def __post_init__(self) -> None:
        if self.runner is None:
            self.runner = Runner(Engine(self.settings.engine()))

    @property
    def states(self) -> dict[str, CustomerState]:
        return self.runner.states["customers"]

    @property
    def offer_stats(self) -> dict[str, OfferStats]:
        return self.runner.states["offer_stats"]

    def advance(self, until_ms: int) -> None:
        """Feed every event up to `until_ms` to the engine."""
        while True:
            if self._next is None:
                self._next = next(self.events, None)
                if self._next is None:
                    break
                self._next_ts = simulate.parse_ts_ms(self._next["ts"])
            if self._next_ts > until_ms:
                break
            record = next(replay.as_records([orjson.dumps(self._next)], self.settings))
            self._next = None
            self.runner.feed(replace(record, offset=self.applied))
            self.applied += 1
        self.clock_ms = max(self.clock_ms, until_ms)

    def feedback(self, feedback: Feedback) -> None:
        """One `recs.feedback` record, as the flow takes it: the customer's contact history and,
        unless the decision was a control one, the offer's statistics."""
        self.runner.feed(feedback)


def build_world(customers: int = 2000, seed: int = 7, history_days: float = 60,
                decision_days: float = 60) -> World:
    """`customers` shoppers with `history_days` of replayed history; their events continue for
    `decision_days` more (and a margin), applied as the decisions advance the clock."""
    raw_catalog = simulate.load_demo_catalog()
    catalog = {p["sku"]: product_from_dict(p) for p in raw_catalog}
    total_days = (history_days + decision_days) * 1.5
    latent = simulate.make_customers(customers, seed, raw_catalog, days=total_days)
    events = simulate.iter_events(customers, START_MS, seed, raw_catalog, days=total_days)
    world = World(latent, catalog, load_offers(), events)
    world.advance(START_MS + int(history_days * DAY_MS))
    return world


# --- the run ----------------------------------------------------------------------------


@dataclass
class Window:
    decisions: int = 0
    served_ev: float = 0.0
    oracle_ev: float = 0.0
    random_ev: float = 0.0
    cell_ev: float = 0.0
    served_value: float = 0.0
    oracle_value: float = 0.0
    random_value: float = 0.0
    accepts: int = 0
    control: int = 0
    explored: int = 0
    optimal: int = 0
    eligible: int = 0

    def row(self, index: int, size: int) -> dict[str, Any]:
        n = max(1, self.decisions)
        return {
            "window": index, "first": index * size + 1, "last": index * size + self.decisions,
            "served": self.served_ev / n, "oracle": self.oracle_ev / n, "random": self.random_ev / n,
            "served_realised": self.served_value / n, "oracle_realised": self.oracle_value / n,
            "random_realised": self.random_value / n,
            "cell": self.cell_ev / n,
            "served_vs_oracle": self.served_ev / self.oracle_ev if self.oracle_ev else 0.0,
            "random_vs_oracle": self.random_ev / self.oracle_ev if self.oracle_ev else 0.0,
            "cell_vs_oracle": self.cell_ev / self.oracle_ev if self.oracle_ev else 0.0,
            "accept_rate": self.accepts / n, "control": self.control, "explored": self.explored,
            "optimal_share": self.optimal / n, "mean_eligible": self.eligible / n,
        }


@dataclass
class Result:
    decisions: int
    attempts: int
    no_offer: int
    windows: list[dict[str, Any]]
    seconds: float
    stats: dict[str, OfferStats]
    decide_seconds: float = 0.0  # CPU time in the served policy's `decide` calls
    decide_calls: int = 0
    cell_decide_seconds: float = 0.0  # the same for the cell-level shadow (as many calls, when it runs)
    records: list[tuple] = field(default_factory=list)  # ({key name: key}, [(offer_id, value, p)])

    @property
    def last(self) -> dict[str, Any]:
        return self.windows[-1]


def run(world: World, decisions: int = 20_000, seed: int = 7, *,
        settings: ArbitrationSettings | None = None, decision_days: float = 60,
        window: int = 1000, on_window: Callable[[dict[str, Any]], None] | None = None,
        learn: bool = True, shadow: bool = True) -> Result:
    """`decisions` served offers (impressions) in event time, learning as the flow does
    (`learn=False`: the offer stats stay empty, so decisions rest on the offers' priors), with the
    cell-level policy as a shadow (`shadow`)."""
    settings = settings or ArbitrationSettings()
    cell_settings = replace(settings, contextual=False)
    cell_stats: dict[str, OfferStats] = {}
    cell_rng = random.Random(f"nbo-cell:{seed}")
    decide_seconds = cell_decide_seconds = 0.0
    decide_calls = 0
    rng = random.Random(f"nbo-bench:{seed}")  # who, where, and the decisions' seeds
    served_rng = random.Random(f"nbo-served:{seed}")
    oracle_rng = random.Random(f"nbo-oracle:{seed}")
    random_rng = random.Random(f"nbo-random:{seed}")
    stats = world.offer_stats if learn else {}
    step_ms = decision_days * DAY_MS / decisions
    clock = float(world.clock_ms)
    started = time.perf_counter()
    windows: list[dict[str, Any]] = []
    current = Window()
    attempts = no_offer = served = 0
    records: list[tuple] = []
    while served < decisions:
        attempts += 1
        clock += step_ms
        now = int(clock)
        world.advance(now)
        _NOW[0] = now
        customer = rng.choice(world.customers)
        state = world.states.get(customer.customer_id)
        channel = rng.choices(CHANNELS, customer.channel_mix)[0]
        store_id = customer.home_store if channel == "store" else None
        situation = Situation(now, channel, store_id)
        decision_seed = rng.getrandbits(63)
        cpu = time.process_time()
        decision = nbo.decide(world.offers, stats, state, situation, world.catalog, settings, seed=decision_seed)
        decide_seconds += time.process_time() - cpu
        decide_calls += 1
        if decision.chosen is None:
            no_offer += 1
            continue
        served += 1
        cell = decision.cell
        eligible = [o for o in world.offers
                    if check_gates(o, state, cell, situation, world.catalog, settings.policy).passed]
        days = (now - START_MS) / DAY_MS
        truth = {o.offer_id: offer_truth.acceptance_probability(customer, o, days) for o in eligible}
        chosen = decision.chosen.offer
        best = max(eligible, key=lambda o: (truth[o.offer_id] * o.value, o.offer_id))
        other = random_rng.choice(eligible)

        reaction = offer_truth.react(customer, chosen, served_rng, days)
        keys = {name: key(customer, state, cell, world.catalog, days) for name, key in CEILING_KEYS.items()}
        records.append((keys, [(o.offer_id, o.value, truth[o.offer_id]) for o in eligible]))
        current.decisions += 1
        current.served_ev += truth[chosen.offer_id] * chosen.value
        current.oracle_ev += truth[best.offer_id] * best.value
        current.random_ev += sum(truth[o.offer_id] * o.value for o in eligible) / len(eligible)
        current.served_value += chosen.value if reaction == "accept" else 0.0
        current.oracle_value += best.value if offer_truth.react(customer, best, oracle_rng, days) == "accept" else 0.0
        current.random_value += other.value if offer_truth.react(customer, other, random_rng, days) == "accept" else 0.0
        if shadow:
            cpu = time.process_time()
            current.cell_ev += _shadow_step(world, cell_stats, state, situation, cell_settings, decision_seed,
                                            customer, truth, cell_rng, days, served)
            cell_decide_seconds += time.process_time() - cpu
        current.accepts += reaction == "accept"
        current.control += decision.control
        current.explored += decision.explored
        current.optimal += chosen.offer_id == best.offer_id
        current.eligible += len(eligible)

        feedback = [("impression", now)]
        if reaction != "ignore":
            feedback.append((reaction, now + REACTION_DELAY_MS))
        for kind, ts in feedback:
            record = Feedback(event_id=f"fb-{served}-{kind}", type=kind, ts_ms=ts, customer_id=customer.customer_id,
                              channel=channel, offer_id=chosen.offer_id, cell=decision.chosen.cell,
                              control=decision.control, features=decision.chosen.features)
            if learn:
                world.feedback(record)
            else:  # the offers' priors only: the customer's contact history, no offer statistics
                world.runner.apply("customers", record)

        if current.decisions == window or served == decisions:
            row = current.row(len(windows), window)
            windows.append(row)
            if on_window:
                on_window(row)
            current = Window()
    return Result(served, attempts, no_offer, windows, time.perf_counter() - started, stats, decide_seconds,
                  decide_calls, cell_decide_seconds, records)


def _shadow_step(world: World, cell_stats: dict[str, OfferStats], state, situation: Situation,
                 settings: ArbitrationSettings, seed: int, customer, truth: dict[str, float],
                 rng: random.Random, days: float, served: int) -> float:
    """The cell-level policy's decision for the same request, its expected value, and its learning
    from its own drawn reaction (the engine's `offer_stats` step, as the flow runs it)."""
    decision = nbo.decide(world.offers, cell_stats, state, situation, world.catalog, settings, seed=seed)
    if decision.chosen is None:
        return 0.0
    offer = decision.chosen.offer
    reaction = offer_truth.react(customer, offer, rng, days)
    events = ["impression"] + (["accept"] if reaction == "accept" else [])
    for kind in events:
        feedback = Feedback(event_id=f"cell-{served}-{kind}", type=kind, ts_ms=situation.now_ms,
                            customer_id=customer.customer_id, channel=situation.channel, offer_id=offer.offer_id,
                            cell=decision.chosen.cell, control=decision.control)
        cell_stats[offer.offer_id], _ = world.runner.engine.offer_stats(cell_stats.get(offer.offer_id),
                                                                         OfferOutcome(feedback))
    return truth.get(offer.offer_id, 0.0) * offer.value


# --- ceilings: the best a policy could do that only knows a given key ------------------------


def ceilings(records: list[tuple], last: int = 1000) -> dict[str, float]:
    """For each key (the customer cell, richer cells, latent truths), the share of the oracle's
    value a policy would get that knew every offer's *mean* true propensity per key and
    picked by it: what learning per cell can reach at best, in the last `last` decisions."""
    out = {}
    for name in CEILING_KEYS:
        sums: dict[tuple[str, str], list[float]] = {}
        for keys, eligible in records:
            for offer_id, _value, p in eligible:
                acc = sums.setdefault((keys[name], offer_id), [0.0, 0.0])
                acc[0] += p
                acc[1] += 1
        got = best = 0.0
        for keys, eligible in records[-last:]:
            mean = {o: sums[(keys[name], o)][0] / sums[(keys[name], o)][1] for o, _, _ in eligible}
            _, value, p = max(eligible, key=lambda e: (mean[e[0]] * e[1], e[0]))
            got += p * value
            best += max(pv * v for _, v, pv in eligible)
        out[name] = round(got / best, 4) if best else 0.0
    return out



CEILING_KEYS: dict[str, Callable[..., str]] = {  # (customer, state, cell, catalog, days) → key
    "offer_only": lambda c, state, cell, catalog, days: "-",
    "cell": lambda c, state, cell, catalog, days: cell,
    "latent segment+lapse": lambda c, state, cell, catalog, days: (
        f"{c.segment}|{offer_truth.is_lapsing(c, days)}"),
    "latent segment+lapse+household": lambda c, state, cell, catalog, days: (
        f"{c.segment}|{offer_truth.is_lapsing(c, days)}|{c.household}"),
}


# --- variants: candidate domain changes, measured by monkeypatching ------------------------


_NOW = [None]  # the decision's event time, set by `run`

VARIANTS: dict[str, dict[str, Any]] = {  # module attributes of online_models.offers to patch
    "baseline": {},
    "greedy": {},  # ArbitrationSettings(explore=False): the posterior mean, no Thompson draw
    "temperature-4": {},  # Thompson draws from a posterior narrowed 4×
    "customer-cell-only": {"offer_cell": lambda cell, offer, state, catalog: cell},
}
VARIANT_SETTINGS = {"greedy": {"explore": False}, "temperature-4": {"explore_temperature": 4.0}}


@contextmanager
def variant(name: str):
    """Monkeypatch `online_models.offers` for the duration of one run."""
    patches = VARIANTS[name]
    saved = {attr: getattr(nbo, attr) for attr in patches}
    try:
        for attr, value in patches.items():
            setattr(nbo, attr, value)
        yield
    finally:
        for attr, value in saved.items():
            setattr(nbo, attr, value)


# --- report -------------------------------------------------------------------------------


HEADER = (f"{'window':>13} {'served':>7} {'oracle':>7} {'random':>7} {'srv/orc':>8} {'rnd/orc':>8} {'cell/orc':>8}"
          f" {'srv real':>8} {'orc real':>8} {'acc%':>5} {'best%':>6} {'expl':>5} {'ctrl':>4}")


def format_row(row: dict[str, Any]) -> str:
    return (f"{row['first']:>6}-{row['last']:<6} {row['served']:>7.3f} {row['oracle']:>7.3f}"
            f" {row['random']:>7.3f} {row['served_vs_oracle']:>8.3f} {row['random_vs_oracle']:>8.3f}"
            f" {row['cell_vs_oracle']:>8.3f}"
            f" {row['served_realised']:>8.3f} {row['oracle_realised']:>8.3f}"
            f" {100 * row['accept_rate']:>5.1f} {100 * row['optimal_share']:>6.1f}"
            f" {row['explored']:>5} {row['control']:>4}")


def summary(result: Result, args: argparse.Namespace) -> dict[str, Any]:
    last = result.last
    totals = {k: sum(w[k] * (w["last"] - w["first"] + 1) for w in result.windows) / result.decisions
              for k in ("served", "oracle", "random", "served_realised", "oracle_realised",
                        "random_realised")}
    return {
        "bench": "nbo", "variant": args.variant, "decisions": result.decisions,
        "attempts": result.attempts, "no_eligible_offer": result.no_offer,
        "customers": args.customers, "seed": args.seed, "history_days": args.history_days,
        "decision_days": args.decision_days, "window": args.window,
        "value_vs_oracle": round(last["served_vs_oracle"], 4),
        "random_vs_oracle": round(last["random_vs_oracle"], 4),
        "cell_policy_vs_oracle": round(last["cell_vs_oracle"], 4),
        "decide_cpu_ms": round(1000 * result.decide_seconds / max(1, result.decide_calls), 4),
        "cell_decide_cpu_ms": round(1000 * result.cell_decide_seconds / max(1, result.decide_calls), 4),
        "realised_value_vs_oracle": round(last["served_realised"] / last["oracle_realised"], 4)
        if last["oracle_realised"] else None,
        "first_window_vs_oracle": round(result.windows[0]["served_vs_oracle"], 4),
        "overall_vs_oracle": round(totals["served"] / totals["oracle"], 4) if totals["oracle"] else None,
        "per_decision": {k: round(v, 4) for k, v in totals.items()},
        "ceilings_last_window": ceilings(result.records, args.window),
        "seconds": round(result.seconds, 1),
        "windows": [{k: round(v, 4) if isinstance(v, float) else v for k, v in w.items()}
                    for w in result.windows],
    }


def plot(data: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib missing (pip install -e '.[bench]'): no plot", file=sys.stderr)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["windows"]
    x = [w["last"] for w in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
    top.plot(x, [w["oracle"] for w in rows], "k--", label="oracle (knows the planted propensities)")
    top.plot(x, [w["served"] for w in rows], "o-", color="tab:blue", label="served (Thompson + 2% control)")
    top.plot(x, [w["random"] for w in rows], ":", color="tab:gray", label="random eligible offer")
    top.plot(x, [w["served_realised"] for w in rows], ".", color="tab:blue", alpha=0.4,
             label="served, realised")
    top.set_ylabel("expected value per decision")
    top.legend(loc="lower right", fontsize=8)
    top.set_title(f"Next-best-offer learning ({data['customers']} customers, seed {data['seed']}, "
                  f"variant {data['variant']})")
    bottom.plot(x, [w["served_vs_oracle"] for w in rows], "o-", color="tab:blue", label="served ÷ oracle")
    bottom.plot(x, [w["random_vs_oracle"] for w in rows], ":", color="tab:gray", label="random ÷ oracle")
    bottom.axhline(0.9, color="tab:green", lw=0.8, label="goal 0.90")
    bottom.set_ylim(0, 1.05)
    bottom.set_xlabel("decisions (impressions)")
    bottom.set_ylabel("share of oracle")
    bottom.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.nbo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--history-days", type=float, default=60)
    parser.add_argument("--decision-days", type=float, default=60)
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="baseline",
                        help="a candidate domain change, monkeypatched for this run")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="directory for nbo.json and nbo_learning.png")
    parser.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    world = build_world(args.customers, args.seed, args.history_days, args.decision_days)
    print(f"nbo: {len(world.customers)} customers, {world.applied} events replayed "
          f"({args.history_days:g} days) in {time.perf_counter() - t0:.1f}s; {len(world.offers)} offers",
          file=sys.stderr)
    print(f"variant: {args.variant}  (expected value per decision = true P(accept) × value)")
    print(HEADER)
    with variant(args.variant):
        settings = ArbitrationSettings(**VARIANT_SETTINGS.get(args.variant, {}))
        result = run(world, args.decisions, args.seed, settings=settings, decision_days=args.decision_days,
                     window=args.window, on_window=lambda row: print(format_row(row), flush=True))
    data = summary(result, args)
    print(f"final: {data['decisions']} decisions ({data['no_eligible_offer']} requests had no eligible "
          f"offer); last window served/oracle {data['value_vs_oracle']:.3f}, random/oracle "
          f"{data['random_vs_oracle']:.3f}, cell-level policy/oracle {data['cell_policy_vs_oracle']:.3f}, realised served/oracle {data['realised_value_vs_oracle']}; "
          f"overall {data['overall_vs_oracle']:.3f}; decide {data['decide_cpu_ms']:.3f} ms CPU per call "
          f"({len(world.offers)} offers; the cell-level shadow's, learning included, "
          f"{data['cell_decide_cpu_ms']:.3f}); {data['seconds']:.0f}s")
    print("ceilings (share of oracle, last window) of a policy knowing each offer's mean true "
          "propensity per key: " + ", ".join(f"{k} {v:.3f}" for k, v in data["ceilings_last_window"].items()))
    suffix = "" if args.variant == "baseline" else f"_{args.variant}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"nbo{suffix}.json").write_text(json.dumps(data, indent=2) + "\n")
    png = plot(data, args.out / f"nbo_learning{suffix}.png")
    print(f"wrote {args.out / f'nbo{suffix}.json'}" + (f" and {png}" if png else ""), file=sys.stderr)
    if args.json:
        print(json.dumps({k: v for k, v in data.items() if k != "windows"}))
    return data


if __name__ == "__main__":
    main()
