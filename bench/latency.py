"""API latency at fixed request rates (open loop), and the maximum sustained rate, beside a
trivial FastAPI endpoint on the same stack measured in the same run.

    omnirec bench latency [--customers 2000] [--rates 200,500,1000] [--duration 10] [--workers 2] [--json]

1. Demo data: `--customers` simulated shoppers (28 days) go through the real flow into Redis
   under a private prefix (the flow is stopped before the load starts).
2. The API (`uvicorn api.main:app`, uvloop + httptools, one worker) and the ceiling app
   (`bench.trivial_app`, same stack, constant orjson body) run as subprocesses.
3. `bench.loadgen` (own process, open loop, latency from the scheduled send time) drives each
   endpoint alone and the mix at each rate; then the rate is raised ×1.4 per step until
   p99 > 50 ms, errors, or the completed rate falls below 97 % of the target — for the mix and
   for the trivial endpoint. `wrk` (closed loop), if installed, adds its requests/s.
4. At 2× the max rate (mixed): the share answered 503 (load shedding, `OMNIREC_API_MAX_IN_FLIGHT`),
   how fast a 503 comes back, and the p99 of the accepted requests.
5. `--workers N` (default 2): the max rate again with `uvicorn --workers N`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import orjson

from bench import common as c
from omnirec import stack
from online_models import keys

KIND = {"own": "own time", "cumulative": "cumulative time",
        "project": "cumulative time, project code only"}

API_KEY = "bench"
P99_LIMIT_MS = 50.0


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 headers={"Authorization": f"Bearer {API_KEY}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def settle(port: int, path: str, fast_ms: float = 20.0, limit_s: float = 60.0) -> float:
    """Wait until the API has worked off what an overload left queued: three requests in a row
    answered within ``fast_ms`` (at most ``limit_s``). Without it a phase right after an overload
    measures the backlog (a max-rate search after 1,000 req/s alone once reported 80 req/s)."""
    start, in_a_row = time.perf_counter(), 0
    while in_a_row < 3 and time.perf_counter() - start < limit_s:
        t0 = time.perf_counter()
        http_get(port, path)
        in_a_row = in_a_row + 1 if (time.perf_counter() - t0) * 1000 <= fast_ms else 0
        time.sleep(0.05)
    return time.perf_counter() - start


def raw_get(path: str) -> str:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\n"
            f"Accept: application/json\r\n\r\n")


def raw_post(path: str, body: dict) -> str:
    data = orjson.dumps(body).decode()
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data.encode())}\r\n\r\n{data}")


def load_data(settings, customers: int, days: float, timeout: float) -> dict:
    """Simulated history through the real flow; returns ids and skus to query."""
    catalog, events = c.history(customers, days)
    info = c.produce_events(settings, events, catalog=catalog)
    sentinels = c.produce_sentinels(settings, info.last_purchase, info.last_ts_ms, "lat")
    scheme = keys.KeyScheme(settings.key_prefix)
    r = c.redis_client()
    with c.tempdir("latency-flow") as rdir:
        t0 = time.monotonic()
        flow = c.start_real_flow(settings, rdir, "bench-latency-flow.log")
        try:
            watch = c.SentinelWatch(settings, sentinels)
            try:
                c.wait_until(watch.done, timeout, interval=0.1, procs=[flow], what="demo data in Redis")
            finally:
                watch.close()
        except BaseException:
            c.log(c.tail("bench-latency-flow.log"))
            raise
        finally:
            c.stop(flow)
    known = [cid for cid in info.customers if r.exists(scheme.customer(cid))]
    skus_with_neighbors = [p["sku"] for p in catalog if r.exists(scheme.neighbors(p["sku"]))]
    c.log(f"demo data: {info.count:,} events, {len(known):,} customer profiles, "
          f"{len(skus_with_neighbors)} skus with neighbours, in {time.monotonic() - t0:.1f}s")
    return {"events": info.count, "customers": sorted(known), "skus": skus_with_neighbors or
            [p["sku"] for p in catalog], "catalog": catalog}


def start_uvicorn(target: str, port: int, env: dict, log_name: str, workers: int = 1) -> subprocess.Popen:
    argv = [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
            "--workers", str(workers)]
    return c.spawn(argv, log_name, env=env)


NBO_PATHS = ("/v1/customers/{cid}/next-best-offer", "/v1/next-best-offer?customer_id={cid}")


def endpoint_requests(data: dict, nbo: str | None, n: int = 400, seed: int = 7) -> dict[str, list[str]]:
    rng = random.Random(seed)
    cids, skus = data["customers"], data["skus"]
    out: dict[str, list[str]] = {"cross_sell": [], "recs_home": [], "recs_product": [], "profile": []}
    if nbo:
        out["next_best_offer"] = []
    for _ in range(n):
        cid = rng.choice(cids)
        basket = rng.sample(skus, k=min(len(skus), rng.choice((1, 2, 3))))
        out["cross_sell"].append(raw_post("/v1/cross-sell", {"customer_id": cid, "basket": basket,
                                                              "store_id": "s-1", "k": 5}))
        out["recs_home"].append(raw_get(f"/v1/recommendations?customer_id={cid}&context=home&k=10"))
        out["recs_product"].append(raw_get(
            f"/v1/recommendations?customer_id={cid}&context=product&sku={rng.choice(skus)}&k=10"))
        out["profile"].append(raw_get(f"/v1/customers/{cid}"))
        if nbo:
            out["next_best_offer"].append(raw_get(nbo.format(cid=cid)))
    return out


def mixed(reqs: dict[str, list[str]]) -> list[dict]:
    names = list(reqs)
    n = len(next(iter(reqs.values())))
    return [{"name": name, "raw": reqs[name][i]} for i in range(n) for name in names]


def loadgen(port: int, requests: list[dict], rate: float, duration: float, connections: int = 64) -> dict:
    spec = {"host": "127.0.0.1", "port": port, "rate": rate, "duration": duration,
            "connections": connections, "timeout": 5.0, "requests": requests}
    c.LOGS.mkdir(parents=True, exist_ok=True)
    path = c.LOGS / f"loadgen-spec-{os.getpid()}.json"
    out = path.with_suffix(".out.json")
    path.write_text(json.dumps(spec))
    try:
        proc = subprocess.run([sys.executable, "-m", "bench.loadgen", str(path), str(out)], capture_output=True,
                              text=True, timeout=duration + 60, cwd=str(c.ROOT), check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"loadgen failed: {proc.stderr[-2000:]}")
        res = json.loads(out.read_text())
    finally:
        path.unlink(missing_ok=True)
        out.unlink(missing_ok=True)
    all_lat = [x for v in res["latency_ms"].values() for x in v]
    res["summary"] = {name: c.summary(v) for name, v in res["latency_ms"].items()}
    res["summary"]["ALL"] = c.summary(all_lat)
    bad = sum(n for st in res["statuses"].values() for code, n in st.items() if not code.startswith("2"))
    res["non_2xx"] = bad
    res["by_status"] = {status: c.summary(v) for status, v in res.pop("latency_ms_by_status", {}).items()}
    del res["latency_ms"]
    return res


def passes(res: dict) -> bool:
    s = res["summary"]["ALL"]
    return (s["p99"] <= P99_LIMIT_MS and res["error_count"] == 0 and res["non_2xx"] == 0
            and res["completed"] >= 0.97 * res["scheduled"])


def max_rate(port: int, requests: list[dict], start: float, step_s: float, cap: float) -> tuple[float, list]:
    """×1.4 steps from `start` until a step fails, then two bisection steps in the last gap."""
    steps: list[dict] = []

    def attempt(rate: float) -> bool:
        res = loadgen(port, requests, rate, step_s)
        ok = passes(res)
        s = res["summary"]["ALL"]
        steps.append({"rate": rate, "ok": ok, "p50": s["p50"], "p99": s["p99"], "achieved": res["achieved_rps"],
                      "errors": res["error_count"] + res["non_2xx"], "loadgen_cpu_s": res["loadgen_cpu_s"]})
        c.log(f"  {rate:,.0f} req/s → p99 {s['p99']:.1f} ms, achieved {res['achieved_rps']:,.0f}/s "
              f"{'ok' if ok else 'FAIL'}")
        return ok

    best, rate, failed = 0.0, start, None
    while rate <= cap:
        if not attempt(rate):
            failed = rate
            break
        best = rate
        rate = round(rate * 1.4, -1)
    for _ in range(2):
        if failed is None or failed - best < 0.1 * failed:
            break
        mid = round((best + failed) / 2, -1)
        if mid <= best or mid >= failed:  # the gap is below the 10 req/s rounding (a starved machine)
            break
        if attempt(mid):
            best = mid
        else:
            failed = mid
    return best, steps


def _ready(port: int) -> bool:
    try:
        st, body = http_get(port, "/readyz", timeout=1)
        return st == 200 and orjson.loads(body).get("products", 0) > 0
    except OSError:
        return False


def overload_figures(res: dict, rate: float) -> dict:
    """What a client sees past the max rate: the share shed (503), how fast a 503 comes back,
    and the latency of the requests that were accepted."""
    accepted, shed = res["by_status"].get("2xx", c.summary([])), res["by_status"].get("503", c.summary([]))
    answered = sum(s["n"] for s in res["by_status"].values())
    return {"rate": rate, "answered": answered, "shed_share": shed["n"] / answered if answered else None,
            "accepted_p50_ms": accepted["p50"], "accepted_p99_ms": accepted["p99"],
            "shed_p50_ms": shed["p50"], "shed_p99_ms": shed["p99"], "errors": res["error_count"],
            "achieved_rps": res["achieved_rps"]}


def wrk(port: int, path: str, seconds: int, connections: int = 32) -> float | None:
    exe = shutil.which("wrk")
    if not exe:
        return None
    proc = subprocess.run([exe, "-t", "1", "-c", str(connections), "-d", f"{seconds}s",
                           "-H", f"Authorization: Bearer {API_KEY}", f"http://127.0.0.1:{port}{path}"],
                          capture_output=True, text=True, timeout=seconds + 30, check=False)
    m = re.search(r"Requests/sec:\s+([\d.]+)", proc.stdout)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", proc.stdout)
    if non2xx:
        c.log(f"[yellow]wrk {path}: {non2xx.group(1)} non-2xx responses[/]")
    return float(m.group(1)) if m else None


def main(argv: list[str] | None = None) -> dict:
    p = c.parser(__doc__.split("\n\n")[0])
    p.add_argument("--customers", type=int, default=2000)
    p.add_argument("--days", type=float, default=28)
    p.add_argument("--rates", default="200,500,1000")
    p.add_argument("--duration", type=float, default=10, help="seconds per rate and endpoint")
    p.add_argument("--step", type=float, default=5, help="seconds per step of the max-rate search")
    p.add_argument("--cap", type=float, default=20000, help="highest rate tried")
    p.add_argument("--search-from", type=float, default=100, help="first rate of the max-rate search")
    p.add_argument("--profile", action="store_true", help="py-spy the API under overload; top 10")
    p.add_argument("--workers", type=int, default=2, help="also find the max rate of uvicorn --workers N (1: skip)")
    p.add_argument("--timeout", type=float, default=300)
    args = p.parse_args(argv)
    rates = [float(x) for x in args.rates.split(",")]

    prefix = c.new_prefix()
    procs: list[subprocess.Popen] = []
    exit_stack = contextlib.ExitStack()
    try:
        # the broker stays up for the whole run: the API's feedback route and /readyz need it
        settings = exit_stack.enter_context(c.broker("latency", prefix))
        c.log(f"loading demo data: {args.customers:,} customers × {args.days:g} days …")
        data = load_data(settings, args.customers, args.days, args.timeout)
        env = c.flow_env(settings, OMNIREC_API_KEYS=json.dumps({API_KEY: ["recommend", "profile", "admin"]}),
                         OMNIREC_RATE_LIMIT_PER_S="0")  # the bench measures the API, not its limiter
        api_port, triv_port = stack.free_port(), stack.free_port()
        procs.append(start_uvicorn("api.main:app", api_port, env, "bench-latency-api.log"))
        procs.append(start_uvicorn("bench.trivial_app:app", triv_port, dict(os.environ), "bench-latency-trivial.log"))

        def ready() -> bool:
            try:
                return _ready(api_port) and http_get(triv_port, "/ping", timeout=1)[0] == 200
            except OSError:
                return False
        c.wait_until(ready, 300, interval=0.2, procs=procs, what="API and trivial app ready")

        cid = data["customers"][0]
        nbo_path = None
        tried = []
        for template in NBO_PATHS:
            st, _ = http_get(api_port, template.format(cid=cid))
            tried.append(f"{template.split('?')[0]} → {st}")
            if st == 200:
                nbo_path = template
                break
        nbo = nbo_path is not None
        nbo_note = f"next-best-offer: GET {nbo_path.split('?')[0]} answered 200, included" if nbo else \
            f"next-best-offer skipped ({'; '.join(tried)})"
        c.log(nbo_note)
        for name, reqs in endpoint_requests(data, nbo_path, n=3).items():  # sanity: every endpoint answers 2xx
            raw = reqs[0]
            path = raw.split(" ")[1]
            if raw.startswith("GET"):
                st, body = http_get(api_port, path)
                if st != 200:
                    raise RuntimeError(f"{name} {path} → {st}: {body[:300]!r}")

        reqs = endpoint_requests(data, nbo_path)
        mix = mixed(reqs)
        per_rate: list[dict] = []
        for rate in rates:
            for name in [*reqs, "mixed"]:
                requests = mix if name == "mixed" else [{"name": name, "raw": r} for r in reqs[name]]
                res = loadgen(api_port, requests, rate, args.duration)
                s = res["summary"]["ALL"]
                per_rate.append({"rate": rate, "endpoint": name, **{k: s[k] for k in ("n", "p50", "p90", "p99", "max")},
                                 "achieved_rps": res["achieved_rps"], "errors": res["error_count"] + res["non_2xx"],
                                 "loadgen_cpu_s": res["loadgen_cpu_s"]})
                c.log(f"{rate:,.0f} req/s {name}: p50 {s['p50']:.2f} p99 {s['p99']:.2f} max {s['max']:.1f} ms")
            triv = loadgen(triv_port, [{"name": "trivial", "raw": raw_get("/ping")}], rate, args.duration)
            s = triv["summary"]["ALL"]
            per_rate.append({"rate": rate, "endpoint": "trivial (ceiling)", **{k: s[k] for k in ("n", "p50", "p90", "p99", "max")},
                             "achieved_rps": triv["achieved_rps"], "errors": triv["error_count"] + triv["non_2xx"],
                             "loadgen_cpu_s": triv["loadgen_cpu_s"]})

        probe = reqs["profile"][0].split(" ")[1]
        c.log(f"max sustained rate, mixed endpoints (settled in {settle(api_port, probe):.1f} s) …")
        max_mixed, steps_mixed = max_rate(api_port, mix, args.search_from, args.step, args.cap)
        c.log("max sustained rate, trivial endpoint …")
        max_triv, steps_triv = max_rate(triv_port, [{"name": "trivial", "raw": raw_get("/ping")}],
                                        args.search_from, args.step, args.cap)
        # with no rate passing (a starved machine), "2× the max" is read as 2× the lowest rate tried
        over_rate = 2 * (max_mixed or min(step["rate"] for step in steps_mixed))
        c.log(f"2× the max rate ({over_rate:,.0f} req/s), mixed endpoints "
              f"(settled in {settle(api_port, probe):.1f} s) …")
        overload = overload_figures(loadgen(api_port, mix, over_rate, args.duration), over_rate)
        c.log(f"  {overload['shed_share']:.1%} answered 503; accepted p99 {overload['accepted_p99_ms']:.1f} ms, "
              f"503 p99 {overload['shed_p99_ms']:.1f} ms")
        workers_rps = None
        if args.workers > 1:
            c.log(f"max sustained rate, mixed endpoints, uvicorn --workers {args.workers} …")
            multi_port = stack.free_port()
            multi = start_uvicorn("api.main:app", multi_port, env, "bench-latency-api-multi.log", args.workers)
            procs.append(multi)
            c.wait_until(lambda: _ready(multi_port), 300, interval=0.2, procs=[multi], what="API workers ready")
            workers_rps, _steps = max_rate(multi_port, mix, args.search_from, args.step, args.cap)
            c.stop(multi)
        prof = None
        if args.profile:
            c.log("profiling the API under overload (mixed endpoints) with py-spy …")
            raw_prof = c.RESULTS / "latency_api_profile.txt"
            c.RESULTS.mkdir(parents=True, exist_ok=True)
            with c.py_spy_record(procs[0].pid, raw_prof):
                loadgen(api_port, mix, max(2 * max_mixed, 500), args.step)
            if raw_prof.exists():
                prof = c.profile_top(raw_prof)
        wrk_s = max(2, int(args.step))
        some_cid = data["customers"][1 % len(data["customers"])]
        wrk_real = wrk(api_port, f"/v1/recommendations?customer_id={some_cid}&context=home&k=10", wrk_s)
        wrk_triv = wrk(triv_port, "/ping", wrk_s)
    finally:
        for proc in procs:
            c.stop(proc)
        exit_stack.close()
        c.delete_prefix(prefix)

    top = max(rates)
    mixed_top = next(r for r in per_rate if r["rate"] == top and r["endpoint"] == "mixed")
    result = {
        "customers": args.customers, "events": data["events"], "duration_s": args.duration, "rates": rates,
        "p99_ms": mixed_top["p99"], "max_rps": max_mixed, "ceiling_rps": max_triv,
        "ratio": (max_mixed / max_triv) if max_triv else None,
        "wrk_closed_loop_rps": {"recs_home": wrk_real, "trivial": wrk_triv,
                                "ratio": (wrk_real / wrk_triv) if wrk_real and wrk_triv else None},
        "p50_ms": mixed_top["p50"], "overload": overload,
        "accepted_p99_at_2x_ms": overload["accepted_p99_ms"], "shed_share_at_2x": overload["shed_share"],
        "workers": args.workers, "workers_max_rps": workers_rps,
        "workers_speedup": (workers_rps / max_mixed) if workers_rps and max_mixed else None,
        "goals": {"p99_mixed_at_top_rate_ms<=10": mixed_top["p99"] <= 10.0,
                  "max_rps>=0.5*ceiling": bool(max_triv) and max_mixed >= 0.5 * max_triv,
                  "accepted_p99_at_2x_ms<=50": overload["accepted_p99_ms"] <= 50.0},
        "next_best_offer": nbo_note, "per_rate": per_rate,
        "max_rate_steps": {"mixed": steps_mixed, "trivial": steps_triv}, "api_profile": prof,
    }
    rows = [[f"{r['rate']:,.0f}", r["endpoint"], r["n"], r["p50"], r["p90"], r["p99"], r["max"],
             r["achieved_rps"], r["errors"]] for r in per_rate]
    c.out.print(c.table(
        f"API latency, open loop (ms from scheduled send), {args.duration:g} s per rate and endpoint; "
        f"{len(data['customers']):,} customer profiles",
        ["rate/s", "endpoint", "n", "p50", "p90", "p99", "max", "achieved/s", "errors"], rows,
        caption=nbo_note))
    c.out.print(c.table(
        f"Max sustained rate (p99 ≤ {P99_LIMIT_MS:g} ms, no errors, ≥ 97 % completed; ×1.4 steps of {args.step:g} s)",
        ["target", "req/s", "ceiling req/s", "ratio"],
        [["mixed endpoints (open loop)", max_mixed, max_triv, result["ratio"]],
         ["recs home vs trivial (wrk closed loop)", wrk_real or "–", wrk_triv or "–",
          result["wrk_closed_loop_rps"]["ratio"] or "–"]],
        caption=f"load generator shares the {os.cpu_count()} CPUs with the server; "
                f"load {os.getloadavg()[0]:.1f}"))
    c.out.print(c.table(
        f"At 2× the max rate ({overload['rate']:,.0f} req/s, mixed endpoints, {args.duration:g} s)",
        ["answered", "503 share", "503 p50 ms", "503 p99 ms", "accepted p50 ms", "accepted p99 ms", "errors"],
        [[overload["answered"], f"{overload['shed_share'] or 0:.1%}", overload["shed_p50_ms"], overload["shed_p99_ms"],
          overload["accepted_p50_ms"], overload["accepted_p99_ms"], overload["errors"]]]))
    if workers_rps is not None:
        c.out.print(c.table(f"uvicorn --workers {args.workers} (same host, {os.cpu_count()} CPUs shared with the "
                            "load generator)", ["workers", "max req/s", "× one worker"],
                            [[1, max_mixed, 1.0], [args.workers, workers_rps, result["workers_speedup"] or "–"]]))
    if prof:
        for kind in ("own", "project"):
            c.out.print(c.table(f"API under overload: py-spy top 10 by {KIND[kind]} ({prof['samples']:,} samples)",
                                ["function", "samples", "share"],
                                [[r["function"], r["samples"], f"{r['share']:.1%}"] for r in prof[kind]]))
    c.finish("latency", result, args.json)
    return result


if __name__ == "__main__":
    main()
