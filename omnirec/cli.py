"""``omnirec``: the user's entry point (demo, stack, flow, api, replay, simulate, evaluate)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from omnirec.settings import Settings, get_settings

app = typer.Typer(help="omnirec: real-time omnichannel recommender", no_args_is_help=True,
                  add_completion=False)
stack_app = typer.Typer(help="Local stack without Docker (tansu broker + Redis)",
                        no_args_is_help=True)
app.add_typer(stack_app, name="stack")

DEMO_KEY = "demo-key"
DEMO_PREFIX = "omnirec-demo"


def err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- stack
@stack_app.command("up")
def stack_up_cmd() -> None:
    """Start what is missing; print `export` lines (use: eval "$(omnirec stack up)")."""
    from omnirec.stack import stack_up

    state = stack_up(Settings())
    sys.stdout.write(state.exports())
    sys.stdout.flush()


@stack_app.command("down")
def stack_down_cmd() -> None:
    """Stop only what `omnirec stack up` started."""
    from omnirec.stack import stack_down

    stack_down()


# ---------------------------------------------------------------- flow / api
@app.command()
def flow(
    workers: int | None = typer.Option(None, "--workers", "-w", help="worker threads per process"),
    process_id: int | None = typer.Option(None, "--process-id", "-i"),
    addresses: str | None = typer.Option(None, "--addresses", "-a",
                                            help='"host:port;host:port" of every process'),
    recovery_dir: str | None = typer.Option(None, "--recovery-dir", "-r"),
    reset_recovery: bool = typer.Option(
        False, "--reset-recovery",
        help="discard the recovery state and read the topics from the beginning (needed when it "
             "belongs to another broker or other topics)"),
) -> None:
    """Run the dataflow (python -m bytewax.run with recovery checked against the broker)."""
    from omnirec.recovery import RecoveryMismatch
    from omnirec.stack import flow_argv

    if (process_id is None) != (addresses is None):
        raise typer.BadParameter("--process-id and --addresses go together")
    settings = Settings()
    try:
        argv = flow_argv(settings, workers, process_id, addresses, recovery_dir,
                         reset_recovery=reset_recovery)
    except RecoveryMismatch as exc:
        err(f"omnirec flow: {exc}")
        raise typer.Exit(2) from None
    if reset_recovery:
        err(f"recovery state discarded: the flow reads {settings.kafka_bootstrap} from the beginning")
    err("exec " + " ".join(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


@app.command()
def api(host: str = typer.Option("127.0.0.1", "--host"),
        port: int = typer.Option(8000, "--port"),
        workers: int = typer.Option(1, "--workers", min=1, help="API processes sharing the port (one per core)")) -> None:
    """Serve the HTTP API (uvicorn, uvloop, httptools)."""
    import uvicorn

    uvicorn.run("api.main:app", host=host, port=port, loop="uvloop", http="httptools",
                access_log=False, log_config=None, workers=workers)  # logs: omnirec.logs


# ---------------------------------------------------------------- data in
@app.command()
def replay(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSONL of envelopes")],
    rate: float | None = typer.Option(None, "--rate", help="events per second"),
    max_speed: bool = typer.Option(False, "--max", help="as fast as possible (default)"),
    catalog: Annotated[Path | None, typer.Option("--catalog", exists=True, dir_okay=False)] = None,
) -> None:
    """Produce a JSONL file to the topics of its channels (products to the catalog)."""
    from omnirec.replay import replay as do_replay

    if rate is not None and max_speed:
        raise typer.BadParameter("--rate and --max are exclusive")
    counts = do_replay(file, Settings(), rate=rate, max_speed=max_speed, catalog=catalog)
    err(json.dumps(counts))


offers_app = typer.Typer(help="Offer definitions: validate and publish to the offers topic.")
app.add_typer(offers_app, name="offers")


@offers_app.command("load")
def offers_load(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    check: bool = typer.Option(False, "--check", help="validate only, publish nothing"),
) -> None:
    """Validate FILE.json (errors name the offer and the field) and publish it."""
    from omnirec.offers_file import publish, read_offers

    offers, errors = read_offers(file)
    for problem in errors:
        err(problem)
    if errors:
        raise typer.Exit(1)
    if check:
        err(f"{len(offers)} offers are valid")
        return
    err(f"published {publish(offers, get_settings())} offers → {get_settings().topic_offers}")


customers_app = typer.Typer(help="Customers: erase one (data-protection requests).", no_args_is_help=True)
app.add_typer(customers_app, name="customers")


@customers_app.command("erase")
def customers_erase(
    customer_id: Annotated[str, typer.Argument(help="the customer id")],
    alias: Annotated[list[str] | None, typer.Option("--alias", help="an alias the profile may not list")] = None,
) -> None:
    """Erase a customer: a tombstone to the flow, then every Redis key of them and their aliases."""
    from omnirec.customers import erase

    try:
        outcome = erase(get_settings(), customer_id, tuple(alias or ()))
    except RuntimeError as exc:
        err(f"omnirec customers erase: {exc}")
        raise typer.Exit(1) from None
    typer.echo(json.dumps(outcome))


@offers_app.command("report")
def offers_report(
    as_json: bool = typer.Option(False, "--json", help="print the report as one JSON object"),
    confidence: float = typer.Option(0.95, "--confidence", min=0.5, max=0.999),
) -> None:
    """Measured uplift: treated against control per offer and cell, with intervals, and the gates' removals."""
    from omnirec.offers_file import read_from_redis
    from online_models import uplift

    settings = get_settings()
    offers, stats = read_from_redis(settings)
    if not offers and not stats:  # say so, rather than print a report of zeros
        typer.echo(f"no offers nor offer statistics under the key prefix {settings.key_prefix!r} at "
                   f"{settings.redis_url} (the demo writes under 'omnirec-demo': OMNIREC_KEY_PREFIX=omnirec-demo)",
                   err=True)
    report = uplift.offers_report(offers, stats, confidence)
    if as_json:
        typer.echo(json.dumps(report))
        return
    for line in uplift.report_lines(report):
        typer.echo(line)


@app.command()
def simulate(
    customers: int = typer.Option(200, "--customers"),
    rate: float = typer.Option(50.0, "--rate", help="events per second"),
    duration: float | None = typer.Option(None, "--duration", help="seconds (default: forever)"),
    seed: int = typer.Option(42, "--seed"),
    history_days: float = typer.Option(0.0, "--history-days", help="first send this many days of past"),
) -> None:
    """Feed live simulated traffic to Kafka."""
    from omnirec.simulate import main

    main(customers=customers, rate=rate, duration=duration, seed=seed, history_days=history_days)


@app.command("react-to-offers")
def react_to_offers_cmd(
    api_url: str = typer.Option("http://127.0.0.1:8000", "--api-url"),
    api_key: str | None = typer.Option(None, "--api-key", help="default: the first of OMNIREC_API_KEYS"),
    customers: int = typer.Option(200, "--customers", help="the population `omnirec simulate` plays"),
    rate: float = typer.Option(5.0, "--rate", help="decisions per second"),
    duration: float | None = typer.Option(None, "--duration", help="seconds (default: forever)"),
    seed: int = typer.Option(42, "--seed"),
) -> None:
    """Simulated shoppers answer the next best offers the API serves them: an impression, then
    accept or dismiss as their planted tastes decide (what `omnirec offers report` measures)."""
    from omnirec.simulate import react_to_offers

    react_to_offers(Settings(), api_url, api_key, customers, rate, duration, seed)


@app.command()
def evaluate(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    catalog: Annotated[Path | None, typer.Option("--catalog", exists=True, dir_okay=False)] = None,
    k: int = typer.Option(10, "--k"),
    as_json: bool = typer.Option(False, "--json"),
    protocol: str = typer.Option("prequential", "--protocol",
                                 help="prequential | leave-last-basket-out (alias leave-last-out)"),
    min_baskets: int = typer.Option(0, "--min-baskets", help="keep customers with >= N baskets (Romanov et al.: 5)"),
    min_item_count: int = typer.Option(0, "--min-item-count",
                                       help="keep items bought in >= N baskets (Romanov et al.: 10)"),
    drop_noise_users: bool = typer.Option(False, "--drop-noise-users",
                                          help="drop customers above mean + 2 sd purchase lines per day "
                                               "of tenure, and those buying on one day only"),
    plot: Path | None = typer.Option(None, "--plot", help="write a PNG: omnirec vs the baselines"),
) -> None:
    """Recommendation quality on any JSONL of envelopes, against baselines from the same run."""
    from omnirec.evaluate import PROTOCOL_ALIASES, PROTOCOLS, Filters, main

    if protocol not in PROTOCOLS and protocol not in PROTOCOL_ALIASES:
        err(f"--protocol must be one of {', '.join(PROTOCOLS)}; got {protocol!r}")
        raise typer.Exit(2)
    if k < 1:
        err("--k must be >= 1")
        raise typer.Exit(2)
    main(file, catalog=catalog, k=k, as_json=as_json, protocol=protocol,
         filters=Filters(min_baskets, min_item_count, drop_noise_users), plot=plot)


@app.command("fit-weights", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def fit_weights(ctx: typer.Context) -> None:
    """Fit the ranking blend weights on validation splits in event time (docs/weights.md)."""
    from omnirec.fit_weights import cli as fit_cli

    fit_cli(list(ctx.args))


@app.command("evaluate-churn")
def evaluate_churn(
    file: Annotated[Path | None, typer.Argument(exists=True, dir_okay=False)] = None,
    calibration_end: str | None = typer.Option(None, "--calibration-end", help="default 1997-09-30 (CDNOW)"),
    holdout_end: str | None = typer.Option(None, "--holdout-end", help="default 1998-06-30 (CDNOW)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Churn AUC of the online score against BG/NBD and recency (CDNOW when no file is given)."""
    from omnirec.evaluate_churn import main

    main(file, calibration_end, holdout_end, as_json)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(ctx: typer.Context, name: str = typer.Argument(..., help="throughput | scale | latency | freshness | memory | nbo | decision | run_all")) -> None:
    """Run a benchmark (python -m bench.NAME), passing any further options to it."""
    import runpy

    known = {"throughput", "scale", "latency", "freshness", "memory", "nbo", "decision", "run_all", "plots"}
    if name not in known:
        err(f"unknown bench {name!r}; one of {sorted(known)}")
        raise typer.Exit(2)
    sys.argv = [f"bench.{name}", *ctx.args]
    runpy.run_module(f"bench.{name}", run_name="__main__")


# ---------------------------------------------------------------- demo
def _demo_catalog() -> Path:
    return Path(__file__).parent / "data" / "demo_catalog.jsonl"


def _http_get(url: str, key: str, timeout: float = 2.0) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def _find_customer(settings: Settings, min_orders: int = 3) -> str | None:
    """The customer with the most orders among a sample of materialised profiles, once
    someone has `min_orders`: the demo's curl commands then show a real history."""
    import redis

    from online_models import keys

    r = redis.Redis.from_url(settings.redis_url)
    try:
        best, best_orders = None, min_orders - 1
        pattern = keys.KeyScheme(settings.key_prefix).customer("*")
        for n, key in enumerate(r.scan_iter(match=pattern, count=500)):
            raw = r.get(key)
            state = keys.decode_profile(raw) if raw else None
            if not isinstance(state, str) and state is not None and state.orders > best_orders:
                best, best_orders = state.customer_id, state.orders
            if n >= 300:
                break
        return best
    finally:
        r.close()


def _clear_prefix(settings: Settings) -> int:
    """The demo rebuilds its state from the topics, so it starts from an empty key prefix."""
    import redis

    r = redis.Redis.from_url(settings.redis_url)
    try:
        found = list(r.scan_iter(match=f"{settings.key_prefix}:*", count=1000))
        for start in range(0, len(found), 500):
            r.delete(*found[start:start + 500])
        return len(found)
    finally:
        r.close()


def _trousers_sku(path: Path) -> str | None:
    import orjson

    first = None
    try:
        with open(path, "rb") as f:
            for line in f:
                try:
                    p = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                first = first or p.get("sku")
                if "trousers" in str(p.get("category", "")):
                    return p.get("sku")
    except OSError:
        return None
    return first


@app.command()
def demo(
    customers: int = typer.Option(200, "--customers"),
    rate: float = typer.Option(50.0, "--rate"),
    port: int | None = typer.Option(None, "--port", help="API port (default: a free one)"),
    history_days: float = typer.Option(30.0, "--history-days", help="days of past traffic sent first"),
    key_prefix: str = typer.Option(DEMO_PREFIX, "--key-prefix", help="Redis key prefix (cleared at start)"),
    offer_rate: float = typer.Option(5.0, "--offer-rate", help="offers answered per second by the "
                                     "simulated shoppers (0: none), for `omnirec offers report`"),
) -> None:
    """Local stack + flow + API + live simulated traffic; Ctrl-C (SIGINT) or SIGTERM stops
    everything it started: each child's process group, then the broker (and Redis) it started."""
    from omnirec.replay import produce_catalog
    from omnirec.stack import LocalStack, free_port, settings_env, spawn, start_flow, stop_pids

    base = Settings()
    base = base.model_copy(update={
        "key_prefix": key_prefix,
        "api_keys": {DEMO_KEY: ["recommend", "profile", "admin"], "demo-app-key": ["recommend", "profile"]},
    })
    children: list[subprocess.Popen] = []
    stack = LocalStack(base, always_start_broker=False)
    stopping = False
    rdir: Path | None = None

    def shutdown(*_a) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        # A second signal must not cut the shutdown short: `timeout -s INT` sends two (one to the
        # demo, one to its process group), and the second one used to abort the shutdown while it
        # waited for the first child, leaving the flow, API, simulator and broker running.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        err("\nstopping the demo …")
        stop_pids([p.pid for p in reversed(children)], timeout=10, sig=signal.SIGINT)
        stack.stop()
        if rdir is not None:
            import shutil

            shutil.rmtree(rdir, ignore_errors=True)
        err("demo stopped")

    def check_children() -> None:
        for p in children:
            if p.poll() is not None:
                log = {0: "demo-flow.log", 1: "demo-api.log", 2: "demo-simulate.log", 3: "demo-offers.log"}.get(
                    children.index(p), "")
                tail = ""
                try:
                    tail = (Path(".omnirec/logs") / log).read_text(errors="replace")[-1500:]
                except OSError:
                    pass
                raise RuntimeError(f"child {' '.join(map(str, p.args))} exited with "
                                   f"{p.returncode}; .omnirec/logs/{log}:\n{tail}")

    starting = interrupted = False

    def on_signal(signum, _frame):
        nonlocal interrupted
        if stopping or interrupted:  # one is enough: `timeout -s INT` sends two, the second must not
            return                   # escape between the first and shutdown() taking over
        interrupted = True
        if not starting:  # else taken up once the child being started is remembered (start_child)
            raise KeyboardInterrupt

    def start_child(start) -> subprocess.Popen:
        """Start a child and remember it before a SIGINT/SIGTERM is acted on, so that no signal
        can arrive between its start and the moment shutdown() knows of it. (Blocking the
        signals meanwhile, as before, passed the mask on to the children: the flow, the API and
        the simulator never saw their SIGINT and were killed after 10 s each.)"""
        nonlocal starting
        starting = True
        try:
            children.append(start())
        finally:
            starting = False
        if interrupted:
            raise KeyboardInterrupt
        return children[-1]

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        stack.start()
        settings = stack.settings
        cleared = _clear_prefix(settings)
        if cleared:
            err(f"cleared {cleared} keys of an earlier demo under {settings.key_prefix}:*")
        rdir = Path(tempfile.mkdtemp(prefix="omnirec-demo-recovery-"))
        settings = settings.model_copy(update={"recovery_dir": str(rdir)})
        catalog = _demo_catalog()
        if not catalog.exists():
            try:  # the simulator can build the same catalogue
                from omnirec.simulate import write_demo_catalog

                catalog = rdir / "demo_catalog.jsonl"
                write_demo_catalog(catalog)
            except Exception as e:  # noqa: BLE001
                err(f"could not build the demo catalogue: {e}")
        if catalog.exists():
            n = produce_catalog(catalog, settings)
            err(f"catalog: {n} products → {settings.topic_catalog}")
        else:
            err(f"warning: {catalog} missing; no catalog loaded")
        from omnirec.offers_file import publish, read_offers

        demo_offers, problems = read_offers(Path(__file__).parent / "data" / "demo_offers.json")
        if problems:
            raise RuntimeError("; ".join(problems))
        err(f"offers: {publish(demo_offers, settings)} → {settings.topic_offers}")
        env = settings_env(settings)
        env.setdefault("PYTHONUNBUFFERED", "1")
        start_child(lambda: start_flow(settings, log_name="demo-flow.log"))
        err(f"flow started (pid {children[-1].pid}); log .omnirec/logs/demo-flow.log")
        api_port = port or free_port()
        omnirec_bin = [sys.executable, "-m", "omnirec.cli"]
        start_child(lambda: spawn(omnirec_bin + ["api", "--host", "127.0.0.1", "--port", str(api_port)],
                                  "demo-api.log", env=env))
        err(f"api started (pid {children[-1].pid}) on port {api_port}; log .omnirec/logs/demo-api.log")
        start_child(lambda: spawn(omnirec_bin + ["simulate", "--customers", str(customers),
                                                 "--rate", str(rate), "--history-days", str(history_days)],
                                  "demo-simulate.log", env=env))
        err(f"simulator started (pid {children[-1].pid}); log .omnirec/logs/demo-simulate.log")

        base_url = f"http://127.0.0.1:{api_port}"
        customer = None
        deadline = time.monotonic() + 180
        ready = False
        while time.monotonic() < deadline:
            check_children()
            if not ready:
                ready = _http_get(base_url + "/readyz", DEMO_KEY)[0] == 200
            if ready:
                customer = _find_customer(settings)
                if customer:
                    break
            time.sleep(0.5)
        if not customer:
            raise RuntimeError("API not ready or no profile after 180 s; see .omnirec/logs")
        if offer_rate > 0:  # the shoppers answer the offers they are served: the uplift report's data
            start_child(lambda: spawn(omnirec_bin + ["react-to-offers", "--api-url", base_url, "--api-key", DEMO_KEY,
                                                     "--customers", str(customers), "--rate", str(offer_rate)],
                                      "demo-offers.log", env=env))
            err(f"offer reactions started (pid {children[-1].pid}); log .omnirec/logs/demo-offers.log")
        sku = _trousers_sku(catalog) or "TR-001"
        auth = f'-H "Authorization: Bearer {DEMO_KEY}"'
        print(f"\nomnirec demo is live: API at {base_url}  (key {DEMO_KEY})\n", flush=True)
        print(f"apps (type the key demo-app-key once): checkout {base_url}/app  "
              f"retention {base_url}/app/retention  (try customer {customer})\n")
        print(f"curl -s {auth} {base_url}/v1/customers/{customer}")
        print(f"curl -s {auth} '{base_url}/v1/recommendations?customer_id={customer}&context=home'")
        body = json.dumps({"customer_id": customer, "basket": [sku]})
        print(f"curl -s {auth} -H 'Content-Type: application/json' -X POST "
              f"{base_url}/v1/cross-sell -d '{body}'")
        print(f"curl -s {auth} '{base_url}/v1/customers/{customer}/next-best-offer?channel=store'")
        print(f"curl -s {auth} '{base_url}/v1/alerts/churn?limit=5'   # and -N …/v1/alerts/churn/stream")
        print(f"# then: curl -s {auth} -H 'Content-Type: application/json' -X POST {base_url}/v1/feedback "
              "-d '{\"decision_id\": \"<decision_id>\", \"event\": \"dismiss\"}'")
        print("\nCtrl-C stops the demo.", flush=True)
        while True:
            check_children()
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    except Exception as e:  # noqa: BLE001 - report, then clean up
        err(f"demo failed: {e}")
        shutdown()
        raise typer.Exit(1)
    finally:
        shutdown()


if __name__ == "__main__":
    app()
